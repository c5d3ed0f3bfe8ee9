"""`python -m benchmarks.capbench.vector_recall --real LIB --rows 100000 --dir SCRATCH`: the
vector index's settings side by side: CPU ms per query and recall@10 / recall@100 against
exact scoring, on vectors like real ones.

The rows: a library's real image vectors (`--real`, e.g. the Flickr8k val library's 1,000)
repeated to `--rows`, each copy moved by Gaussian noise of length `--noise` (a copy keeps a
cosine of about 1 / sqrt(1 + noise^2) to its photo: 0.89 at 0.5, 0.71 at 1),
or (`--real` left out) the clustered random vectors of the scale benchmark. The queries:
the text queries of `web_speed.QUERIES` and generated ones (`captions.make_query`), encoded
by the shipped query encoder as search encodes them. Each setting is a `VectorIndex` file
written by its `reconcile` in --dir (a catalogue stand-in feeds it the rows), searched
through `VectorIndex.search`, in turn per query, on one BLAS thread.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

import numpy as np

from .captions import make_query
from .report import write_json
from .scale_data import unit_vectors
from .search import _percentile

SETTINGS = {  # name -> VectorConfig fields
    "exact": {"exact_limit": 10**9},
    "ivf_shipped": {},
    "ivf_p20k": {"exact_limit": 20_000},
    "ivf_p10k": {"exact_limit": 20_000, "probe_rows": 10_000},
    "ivf_p3pct": {"exact_limit": 20_000, "probe_share": 0.03},
    "ivf_p2pct": {"exact_limit": 20_000, "probe_share": 0.02},
}


class _Rows:
    """What `VectorIndex.reconcile` reads from a catalogue, over an array of vectors."""

    def __init__(self, vectors: np.ndarray, model: str) -> None:
        self.vectors, self.model = vectors, model

    def embedding_seqs(self, model_id: str) -> dict[int, int]:
        return {i + 1: i + 1 for i in range(len(self.vectors))}

    def embeddings(self, model_id: str):
        for i, vector in enumerate(self.vectors):
            yield i + 1, i + 1, vector.astype("<f2").tobytes()


def real_rows(library: Path, rows: int, noise: float, seed: int = 0) -> np.ndarray:
    """The library's stored vectors repeated to `rows`, each copy moved by noise."""
    from capindex.store.library_dir import LibraryDir

    base = np.array(LibraryDir(library).vector_index()._open().vectors, np.float32)
    rng = np.random.default_rng(seed)
    out = np.empty((rows, base.shape[1]), np.float32)
    for start in range(0, rows, 20_000):
        part = base[np.arange(start, min(rows, start + 20_000)) % len(base)]
        moved = part + noise * rng.normal(size=part.shape).astype(np.float32) / np.sqrt(part.shape[1])
        out[start:start + len(part)] = moved / np.linalg.norm(moved, axis=1, keepdims=True)
    return out


def query_vectors(count: int) -> list[np.ndarray]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from web_speed import QUERIES

    from capindex.search.semantic import query_vector

    rng = random.Random(11)
    texts = list(QUERIES) + [make_query(rng) for _ in range(max(0, count - len(QUERIES)))]
    return [query_vector(text) for text in texts[:count]]


def measure(directory: Path, vectors: np.ndarray, queries: list[np.ndarray],
            settings: list[str]) -> dict:
    from capindex.model import EMBEDDING_DIM, embedding_id
    from capindex.store.vectors import VectorConfig, VectorIndex

    model = embedding_id()
    indexes = {}
    for name in settings:
        config = VectorConfig(**SETTINGS[name])
        folder = directory / f"{len(vectors)}-{config.clusters(len(vectors))}"
        index = VectorIndex(folder, config)
        started = time.process_time()
        index.reconcile(_Rows(vectors, model), model, EMBEDDING_DIM)
        indexes[name] = (index, round(time.process_time() - started, 1))
    exact = VectorIndex(directory / f"{len(vectors)}-0", VectorConfig(exact_limit=10**9))
    exact.reconcile(_Rows(vectors, model), model, EMBEDDING_DIM)
    truth = [exact.search(q, 100) for q in queries]
    out = {}
    for name, (index, build_s) in indexes.items():
        index.search(queries[0], 100)  # warm: the mapping, the page cache
        cpu, at10, at100 = [], [], []
        for query, want in zip(queries, truth):
            started = time.thread_time()
            got = index.search(query, 100)
            cpu.append((time.thread_time() - started) * 1000)
            at10.append(len({i for i, _ in got[:10]} & {i for i, _ in want[:10]}) / 10)
            at100.append(len({i for i, _ in got} & {i for i, _ in want}) / 100)
        cpu.sort()
        opened = index._open()
        out[name] = {"clusters": 0 if opened.centres is None else len(opened.centres),
                     "build_cpu_s": build_s,
                     "cpu_p50_ms": round(_percentile(cpu, 50), 1),
                     "cpu_p95_ms": round(_percentile(cpu, 95), 1),
                     "recall_at_10": round(float(np.mean(at10)), 4),
                     "min_recall_at_10": min(at10),
                     "recall_at_100": round(float(np.mean(at100)), 4)}
    return out


def main(argv=None) -> None:
    from threadpoolctl import threadpool_limits

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", type=Path, help="a library whose vectors are repeated")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--noise", type=float, default=0.5)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--settings", default=",".join(SETTINGS))
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    vectors = (real_rows(args.real, args.rows, args.noise) if args.real
               else unit_vectors(np.random.default_rng(7), args.rows))
    with threadpool_limits(1):
        queries = query_vectors(args.queries)
        args.dir.mkdir(parents=True, exist_ok=True)
        result = {"rows": args.rows, "real": str(args.real) if args.real else None,
                  "noise": args.noise if args.real else None, "queries": len(queries),
                  "load_average": [round(x, 1) for x in os.getloadavg()],
                  "settings": measure(args.dir, vectors, queries, args.settings.split(","))}
    print(json.dumps(result, indent=1))
    if args.out:
        write_json(args.out, result)


if __name__ == "__main__":
    main()
