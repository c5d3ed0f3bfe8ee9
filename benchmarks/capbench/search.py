"""Search at scale: a library of generated rows (catalogue, keyword index, vector index),
then timed queries, side by side.

- keyword, new fields against old: the index of the rows as capindex writes them now
  (caption, the beam's next best captions, detected objects, tags, WordNet's broader words,
  file name) against one with only the fields it had before them (caption, tags, file name),
  each query timed on both in turn through `KeywordIndex.search`;
- the whole search in a warm process (`capindex.search.search`: catalogue, keyword index,
  the query's vector, vector index, fusion, rows of the hits) in keyword, hybrid and
  semantic modes, in turn per query;
- encoding a query: the torch-free encoder search uses against the torch one.

The rows' vectors are random unit vectors (a search costs the same whatever they hold).
"""

from __future__ import annotations

import random
import shutil
import statistics
import time
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from .captions import make_alternates, make_caption, make_objects, make_query

MODES = ("keyword", "hybrid", "semantic")


def make_rows(documents: int, seed: int = 1) -> list[dict]:
    """`documents` catalogue rows (without id and seq) as an ingest with every signal writes them."""
    import numpy as np

    from .capindex_api import embedding_id, imagenet_labels

    rng = random.Random(seed)
    vectors = np.random.default_rng(seed).standard_normal((documents, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    labels, model = imagenet_labels(), embedding_id()
    rows = []
    for i in range(documents):
        caption = make_caption(rng)
        rows.append({
            "path": f"/photos/{2010 + i % 15}/{rng.choice(['IMG', 'DSC', 'PXL'])}_{i:06d}.jpg",
            "size": 50_000, "mtime_ns": i, "sha256": f"{i:064x}", "width": 500, "height": 375,
            "format": "JPEG", "caption": caption, "caption_score": -0.5,
            "alt_captions": make_alternates(rng, caption),
            "tags": _tags(rng, labels),
            "objects": make_objects(rng, caption), "detector_id": "bench",
            "embedding": vectors[i].astype("<f2").tobytes(), "embedding_model": model,
            "model_id": "bench", "weights_hash": "bench", "decoding": "{}",
            "ingested_at": datetime(2026, 1, 1), "status": "ok"})
    return rows


def _tags(rng: random.Random, labels: list[str]) -> list[dict]:
    """Five ImageNet tags, falling in probability as the classifier's do: on Flickr8k val
    1.5 of the five reach 0.1 (TAG_WORDS_MIN_PROB, which gives the `words` field theirs)."""
    prob, tags = rng.uniform(0.1, 0.6), []
    for _ in range(5):
        tags.append({"label": rng.choice(labels), "prob": round(prob, 3)})
        prob *= rng.uniform(0.2, 0.7)
    return tags


@contextmanager
def _old_documents():
    """Index documents as before the new signals: caption, tags and file name only."""
    from .capindex_api import keyword_module

    build, broader = keyword_module.document, keyword_module.broader_words
    keyword_module.document = lambda row: build({**row, "alt_captions": None, "objects": None})
    keyword_module.broader_words = lambda row: ""
    try:
        yield
    finally:
        keyword_module.document, keyword_module.broader_words = build, broader


def _build_index(path: Path, rows: list[dict], batch: int) -> float:
    """Feed `rows` (with id and seq) to a KeywordIndex as ingest does; seconds taken."""
    from .capindex_api import KeywordIndex

    index = KeywordIndex(path)
    started = time.perf_counter()
    for start in range(0, len(rows), batch):  # as ingest feeds it: one update per batch
        index.update(rows[start:start + batch])
    index.flush(final=True)  # as at the end of an ingest (merges the b-trees)
    return time.perf_counter() - started


def build_library(root: Path, rows: list[dict], batch: int) -> tuple[list[dict], float]:
    """Catalogue, keyword index and vector index of `rows`; (rows as written, seconds the
    keyword index took)."""
    from .capindex_api import EMBEDDING_DIM, Changes, LibraryDir, VectorIndex, embedding_id

    library = LibraryDir(root)
    written = []
    with library.open_catalog(create=True) as catalog:
        for start in range(0, len(rows), 1000):
            written += catalog.write(Changes(upserts=rows[start:start + 1000])).rows
        seconds = _build_index(library.keyword_path, written, batch)
        VectorIndex(library.vectors_dir).reconcile(catalog, embedding_id(), EMBEDDING_DIM)
    return written, seconds


def measure_search(directory: Path, documents: int, queries: int, batch: int,
                   library_queries: int | None = None) -> dict:
    """The library of `documents` generated rows, `queries` keyword queries on the new and
    the old index, `library_queries` (default: as many) whole searches in each mode."""
    from .capindex_api import LibraryDir, search

    if directory.exists():
        shutil.rmtree(directory)
    rows, index_seconds = build_library(directory / "library", make_rows(documents), batch)
    with _old_documents():
        old_seconds = _build_index(directory / "old-keyword.sqlite", rows, batch)
    del rows

    from .capindex_api import KeywordIndex

    rng = random.Random(1)
    texts = [make_query(rng) for _ in range(queries)]
    new = KeywordIndex(directory / "library" / "keyword.sqlite")
    old = KeywordIndex(directory / "old-keyword.sqlite")
    new.search(texts[0])  # warm the OS cache and Python's imports
    old.search(texts[0])  # its rows hold nothing in the new fields
    times: dict[str, _Times] = {"new": _Times(), "old": _Times()}
    hits = 0
    for text in texts:  # in turn, so that the machine's load weighs on both alike
        hits += bool(times["new"].call(new.search, text, limit=10))
        times["old"].call(old.search, text, limit=10)

    library = LibraryDir(directory / "library")
    modes = {mode: _Times() for mode in MODES}
    for mode in MODES:
        search(library, texts[0], 10, mode=mode)  # load the models and warm the caches
    for text in texts[:library_queries or queries]:
        for mode in MODES:
            modes[mode].call(search, library, text, 10, mode=mode)

    result = {
        "documents": documents,
        "index_seconds": round(index_seconds, 2),
        "docs_per_s": round(documents / index_seconds, 1),
        "update_batch": batch,
        "index_mb": _megabytes(directory / "library" / "keyword.sqlite"),
        "queries": queries,
        "queries_with_hits": hits,
        **times["new"].summary(),
        "old_fields": {"docs_per_s": round(documents / old_seconds, 1),
                       "index_mb": _megabytes(directory / "old-keyword.sqlite"),
                       **times["old"].summary()},
        "library": {mode: modes[mode].summary() for mode in MODES},
        "library_queries": len(modes["keyword"].wall),
        "vector_index_mb": _megabytes(directory / "library" / "vectors"),
    }
    result["keyword_p95_new_vs_old"] = round(result["p95_ms"] / result["old_fields"]["p95_ms"], 3)
    result["query_encoding"] = measure_query_encoding(texts[:200])
    return result


def measure_query_encoding(texts: list[str]) -> dict:
    """ms to encode one query: the numpy encoder (what search uses) and the torch one, in
    turn per query; wall time and the process's CPU time."""
    import torch

    from .capindex_api import ImageEmbedder, QueryEncoder, TextEncoder

    torch.set_num_threads(1)  # as search/semantic.py does for the torch path
    fast = QueryEncoder.load()
    text_encoder, embedder = TextEncoder.load(), ImageEmbedder.load()
    ways = {"numpy": lambda text: fast.encode([text]),
            "torch": lambda text: embedder.embed_query(text_encoder.encode([text]))}
    times = {name: _Times() for name in ways}
    for encode in ways.values():
        encode(texts[0])
    for text in texts:
        for name, encode in ways.items():
            times[name].call(encode, text)
    return {name: times[name].summary() for name in ways} | {"queries": len(texts)}


class _Times:
    """Wall and CPU (this process's) seconds of each call; on a busy machine the CPU time
    says what the code costs, the wall time what a user waits."""

    def __init__(self) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def call(self, function, *args, **kwargs):
        t, c = time.perf_counter(), time.process_time()
        out = function(*args, **kwargs)
        self.cpu.append(time.process_time() - c)
        self.wall.append(time.perf_counter() - t)
        return out

    def summary(self) -> dict:
        cpu = _latency(self.cpu)
        return {**_latency(self.wall), "cpu_p50_ms": cpu["p50_ms"], "cpu_p95_ms": cpu["p95_ms"]}


def _latency(seconds: list[float]) -> dict:
    ms = sorted(t * 1000 for t in seconds)
    return {"p50_ms": round(_percentile(ms, 50), 2), "p95_ms": round(_percentile(ms, 95), 2),
            "mean_ms": round(statistics.fmean(ms), 2) if ms else None,
            "max_ms": round(ms[-1], 2) if ms else None}


def _megabytes(path: Path) -> float:
    """Size of a file (with its -wal), or of the files in a folder."""
    files = [p for p in path.iterdir() if p.is_file()] if path.is_dir() else \
        [p for p in (path, path.with_name(path.name + "-wal")) if p.exists()]
    return round(sum(p.stat().st_size for p in files) / 2**20, 1)


def _percentile(sorted_values: list[float], pct: float) -> float:
    if not sorted_values:
        return float("nan")
    k = (len(sorted_values) - 1) * pct / 100
    lo, hi = int(k), min(int(k) + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)
