"""`python -m benchmarks.capbench.scale --rows 1000000 --dir SCRATCH`: a library of N
synthetic photos (`scale_data`), then, side by side in one run:

- planning a re-run that finds nothing new (discover + plan_ingest), time and peak RSS,
  each in its own process (`scale_child`), for this checkout and for `--before SRC`;
- adding the planning index to a catalogue written before it (`Catalog`'s upgrade);
- a whole `capindex ingest` re-run that finds nothing new (its reconciles and planning);
- vector search: the index as shipped (exact up to 200,000 vectors, clusters above), every
  vector scored with numpy (exact), and the float16 torch product used before, with the
  clustered search's recall@10 against exact;
- keyword search (SQLite FTS5, top 10) and hybrid search (`search.ranking.search`, the query
  encoded by the shipped text encoder) over the same library.

Times are wall-clock and CPU time of the searching thread (p50, p95): on a machine shared
with other work the CPU time is what one idle core would take. Files are empty (an inode
each, 1,000 a folder) and the library is kept in --dir for the next run (delete it after).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from .captions import make_query
from .scale_data import DETECTOR_ID, WEIGHTS_HASH, build_indexes, build_library
from .search import _percentile

REPO = Path(__file__).resolve().parents[2]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Planning and search over a synthetic library of N photos.",
        epilog="Example: python -m benchmarks.capbench.scale --rows 1000000 "
               "--dir /work/scratch/m1 --before ../main --out scale.json")
    parser.add_argument("--rows", type=int, default=100_000, help="photos (default 100000)")
    parser.add_argument("--dir", type=Path, required=True,
                        help="scratch folder for the photos and the library (reused when "
                             "it holds a library of --rows photos)")
    parser.add_argument("--before", type=Path, default=None,
                        help="another capindex checkout whose planning is measured beside "
                             "this one's (e.g. the main branch)")
    parser.add_argument("--queries", type=int, default=200, help="queries per search measure")
    parser.add_argument("--skip", default="",
                        help="comma-separated measures to leave out: plan,upgrade,ingest,"
                             "vectors,keyword,hybrid")
    parser.add_argument("--out", type=Path, default=None, help="also write the results as JSON")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))
    results: dict = {"rows": args.rows, "command": " ".join(["python -m benchmarks.capbench.scale",
                                                            *sys.argv[1:]])}
    library_root = args.dir / "library"
    photos = str(args.dir / "photos")
    marker = args.dir / "built.json"
    built = json.loads(marker.read_text()) if marker.exists() else {}
    if built.get("rows") != args.rows:
        built = {"rows": args.rows, **build_library(args.dir, args.rows, _log)}
        marker.write_text(json.dumps(built))
    # An index is built only for a measure that reads it (planning alone needs neither).
    vectors = not {"ingest", "vectors", "hybrid"} <= skip and "vector_index" not in built
    keyword = not {"ingest", "keyword", "hybrid"} <= skip and "keyword_index" not in built
    if vectors or keyword:
        built.update(build_indexes(args.dir, _log, vectors=vectors, keyword=keyword))
        marker.write_text(json.dumps(built))
    results["build_seconds"] = built
    results["loadavg_before"] = _loadavg()
    embedding = _embedding_id()
    child = [sys.executable, str(Path(__file__).with_name("scale_child.py"))]
    common = [str(library_root), photos, WEIGHTS_HASH, DETECTOR_ID, embedding]
    if "plan" not in skip:
        for name, source in (("before", args.before), ("after", REPO)):
            if source is not None:
                results[f"plan_{name}"] = _child([*child, "plan", *common], source)
                _log(f"planning ({name}): {results[f'plan_{name}']}")
    if "upgrade" not in skip:
        # A catalogue from before the planning index gets it when first opened for writing.
        results["upgrade"] = _child([*child, "upgrade", str(library_root)], REPO)
        _log(f"planning index added: {results['upgrade']}")
    if "ingest" not in skip:
        # The first run may write what is missing (the Parquet mirror); the second finds
        # nothing to do.
        results["ingest_first"] = _child([*child, "ingest", *common], REPO)
        results["ingest_again"] = _child([*child, "ingest", *common], REPO)
        _log(f"ingest re-runs: {results['ingest_first']}, {results['ingest_again']}")
    if "vectors" not in skip:
        results["vectors"] = measure_vectors(library_root, args.queries)
        _log(f"vector search: {results['vectors']}")
    if "keyword" not in skip:
        results["keyword"] = measure_keyword(library_root, args.queries)
        _log(f"keyword search: {results['keyword']}")
    if "hybrid" not in skip:
        results["hybrid"] = measure_hybrid(library_root, args.queries)
        _log(f"hybrid search: {results['hybrid']}")
    results["loadavg_after"] = _loadavg()
    print(json.dumps(results, indent=1))
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))


def _loadavg() -> str:
    """The 1, 5 and 15-minute load averages: on a shared machine, wall time follows them."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def _embedding_id() -> str:
    from capindex.model import embedding_id

    return embedding_id()


def _child(command: list[str], source: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(source)}
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        return {"error": done.stderr.strip().splitlines()[-1:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def _timed(queries, call) -> dict:
    """p50/p95 of wall-clock and thread CPU milliseconds of `call(query)` per query."""
    call(queries[0])  # warm: imports, memory maps, the OS cache
    wall, cpu = [], []
    for query in queries:
        w, c = time.perf_counter(), time.thread_time()
        call(query)
        cpu.append((time.thread_time() - c) * 1000)
        wall.append((time.perf_counter() - w) * 1000)
    wall.sort()
    cpu.sort()
    return {"wall_p50_ms": round(_percentile(wall, 50), 1),
            "wall_p95_ms": round(_percentile(wall, 95), 1),
            "cpu_p50_ms": round(_percentile(cpu, 50), 1),
            "cpu_p95_ms": round(_percentile(cpu, 95), 1)}


def _vector_queries(vectors: np.ndarray, count: int) -> np.ndarray:
    """Queries near stored photos (a stored vector plus noise), as a text query lands near
    the photos it describes."""
    rng = np.random.default_rng(3)
    picked = np.asarray(vectors[np.sort(rng.choice(len(vectors), count, replace=False))])
    queries = picked + 0.3 * rng.normal(size=picked.shape) / np.sqrt(picked.shape[1])
    return (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)


def measure_vectors(library_root: Path, queries: int, depth: int = 100) -> dict:
    """The vector index as shipped, exact numpy over every vector, and the float16 torch
    product used before; recall@10 of the shipped search against exact."""
    from capindex.store.library_dir import LibraryDir
    from capindex.store.vectors import VectorConfig, VectorIndex

    directory = LibraryDir(library_root).vectors_dir
    shipped = VectorIndex(directory)
    exact = VectorIndex(directory, VectorConfig(probe_share=1.0))
    opened = shipped._open()
    found = _vector_queries(opened.vectors, queries)
    out = {"vectors": len(opened.ids), "clusters": 0 if opened.centres is None
           else len(opened.centres), "file_mb": round(shipped.path.stat().st_size / 2**20)}
    out["shipped"] = _timed(found, lambda q: shipped.search(q, depth))
    out["exact_numpy"] = _timed(found, lambda q: exact.search(q, depth))
    hits = [len({i for i, _ in shipped.search(q, 10)} & {i for i, _ in exact.search(q, 10)})
            for q in found]
    out["recall_at_10"] = round(sum(hits) / (10 * len(hits)), 3)
    try:
        import torch
    except ImportError:
        return out
    torch.set_num_threads(1)
    matrix = torch.from_numpy(np.asarray(opened.vectors, np.float16))  # (N, dim), as before

    def torch_fp16(query):
        scores = (matrix @ torch.from_numpy(query).half()).float()
        return torch.topk(scores, depth)

    out["torch_fp16_before"] = _timed(found, torch_fp16)
    return out


def measure_keyword(library_root: Path, queries: int) -> dict:
    import random

    from capindex.store.keyword import KeywordIndex
    from capindex.store.library_dir import LibraryDir

    index = KeywordIndex(LibraryDir(library_root).keyword_path)
    rng = random.Random(5)
    texts = [make_query(rng) for _ in range(queries)]
    return {"documents": index.doc_count(), "top10": _timed(texts, lambda t: index.search(t, 10)),
            "top100": _timed(texts, lambda t: index.search(t, 100))}


def measure_hybrid(library_root: Path, queries: int) -> dict:
    """`search.ranking.search` in a warm process: hybrid (the default) and semantic only."""
    import random

    from capindex.search.ranking import search
    from capindex.search.semantic import query_vector
    from capindex.store.library_dir import LibraryDir

    library = LibraryDir(library_root)
    rng = random.Random(6)
    texts = [make_query(rng) for _ in range(queries)]
    return {"encode_query": _timed(texts, query_vector),
            "semantic": _timed(texts, lambda t: search(library, t, mode="semantic")),
            "hybrid": _timed(texts, lambda t: search(library, t, mode="hybrid"))}


def _log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
