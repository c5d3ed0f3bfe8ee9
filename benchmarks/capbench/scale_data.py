"""A synthetic library of N photos for the scale benchmark: empty files in a tree and their
catalogue rows, written in bulk through the real schema (not through ingest).

Each file is empty (an inode, no data block), 1,000 to a folder; its row records the size
and mtime that stat() gives, so a re-run finds every file unchanged. Rows carry a generated
caption, five tags, a detector id and a random unit vector (float16) from one embedding
model (the shipped embedding's id, so that search uses them), as ingest would write them.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
from datetime import datetime
from pathlib import Path

import numpy as np

from .captions import make_caption

PER_FOLDER = 1000
MODEL_ID = "bench-captioner"
WEIGHTS_HASH = "hash-of-bench-captioner"
DETECTOR_ID = "bench-detector"
DIM = 384


def photo_path(photos: Path, i: int) -> Path:
    return photos / f"{i // PER_FOLDER:05d}" / f"IMG_{i:07d}.jpg"


def make_files(photos: Path, rows: int) -> list[tuple[int, int]]:
    """Create `rows` empty files under `photos`; (size, mtime_ns) of each."""
    stats = []
    for i in range(rows):
        path = photo_path(photos, i)
        if i % PER_FOLDER == 0:
            path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o644)
        try:
            info = os.fstat(fd)
        finally:
            os.close(fd)
        stats.append((info.st_size, info.st_mtime_ns))
    return stats


def unit_vectors(rng: np.random.Generator, n: int, dim: int = DIM) -> np.ndarray:
    """n random unit vectors (n, dim) float32, in a few hundred clusters (photos of alike
    scenes lie near each other, as real embeddings do)."""
    centres = np.random.default_rng(12345).normal(size=(256, dim)).astype(np.float32)
    v = centres[rng.integers(0, len(centres), n)] + 0.8 * rng.normal(size=(n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def fill_catalogue(catalog_path: Path, photos: Path, stats: list[tuple[int, int]],
                   labels: list[str], embedding: str, chunk: int = 20_000) -> None:
    """Insert one 'ok' row per file into the (empty, created) catalogue at `catalog_path`."""
    rng = random.Random(7)
    vrng = np.random.default_rng(7)
    now = datetime(2026, 1, 1).isoformat(sep=" ")
    columns = ("id", "seq", "path", "size", "mtime_ns", "sha256", "width", "height", "format",
               "caption", "caption_score", "alt_captions", "tags", "objects", "detector_id",
               "embedding", "embedding_model", "model_id", "weights_hash", "decoding",
               "ingested_at", "status")
    sql = (f"INSERT INTO images ({', '.join(columns)}) "
           f"VALUES ({', '.join('?' for _ in columns)})")
    connection = sqlite3.connect(catalog_path)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=OFF")
    try:
        for start in range(0, len(stats), chunk):
            vectors = unit_vectors(vrng, min(chunk, len(stats) - start)).astype("<f2")
            batch = []
            for k, (size, mtime_ns) in enumerate(stats[start:start + chunk]):
                i = start + k
                tags = [{"label": rng.choice(labels), "prob": round(0.5 / (j + 1), 3)}
                        for j in range(5)]
                batch.append((i + 1, i + 1, str(photo_path(photos, i)), size, mtime_ns,
                              f"{i:064x}", 640, 480, "JPEG", make_caption(rng), -0.5,
                              json.dumps([make_caption(rng)]), json.dumps(tags), "[]",
                              DETECTOR_ID, vectors[k].tobytes(), embedding, MODEL_ID,
                              WEIGHTS_HASH, '{"method": "beam"}', now, "ok"))
            connection.executemany(sql, batch)
            connection.commit()
        connection.execute("UPDATE meta SET value = ? WHERE key = 'next_seq'",
                           (str(len(stats) + 1),))
        connection.commit()
    finally:
        connection.close()


def build_library(root: Path, rows: int, log=lambda text: None) -> dict:
    """The catalogue of `rows` photos under `root` (root/library, root/photos); returns the
    seconds each step took. The indexes are built by `build_indexes`."""
    import time

    from capindex.model import embedding_id
    from capindex.store.catalog import create_catalog
    from capindex.store.library_dir import LibraryDir

    from .capindex_api import imagenet_labels

    library = LibraryDir(root / "library")
    library.make_root()
    started = time.perf_counter()
    stats = make_files(root / "photos", rows)
    seconds = {"files": time.perf_counter() - started}
    log(f"{rows} files in {seconds['files']:.0f} s")
    started = time.perf_counter()
    create_catalog(library.catalog_path)
    fill_catalogue(library.catalog_path, root / "photos", stats, imagenet_labels(),
                   embedding_id())
    seconds["catalogue"] = time.perf_counter() - started
    log(f"catalogue in {seconds['catalogue']:.0f} s")
    return {name: round(value, 1) for name, value in seconds.items()}


def build_indexes(root: Path, log=lambda text: None, vectors: bool = True,
                  keyword: bool = True) -> dict:
    """The vector and keyword indexes of the library under `root` (those asked for), each
    rebuilt from the catalogue as `capindex ingest` rebuilds a missing one (`reconcile`);
    seconds of each."""
    import time

    from capindex.model import EMBEDDING_DIM, embedding_id
    from capindex.store.catalog import Catalog
    from capindex.store.keyword import KeywordIndex
    from capindex.store.library_dir import LibraryDir
    from capindex.store.vectors import VectorIndex

    library = LibraryDir(root / "library")
    seconds = {}
    with Catalog(library.catalog_path) as catalog:
        if vectors:
            started = time.perf_counter()
            VectorIndex(library.vectors_dir).reconcile(catalog, embedding_id(), EMBEDDING_DIM)
            seconds["vector_index"] = time.perf_counter() - started
            log(f"vector index in {seconds['vector_index']:.0f} s")
        if keyword:
            started = time.perf_counter()
            KeywordIndex(library.keyword_path).reconcile(catalog)
            seconds["keyword_index"] = time.perf_counter() - started
            log(f"keyword index in {seconds['keyword_index']:.0f} s")
    return {name: round(value, 1) for name, value in seconds.items()}
