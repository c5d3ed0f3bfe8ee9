#!/usr/bin/env python
"""Where a hybrid search's time goes, side by side for two checkouts:

    python benchmarks/capbench/search_split.py --library LIB --before ../main \
        [--before-library LIB2] --out split.json

Each checkout is measured in a child process of its own (its `capindex` on PYTHONPATH) over
the same queries (`web_speed.QUERIES` and generated ones, `captions.make_query`), in a warm
process: the parts of one hybrid search at the depth it fuses (FUSION_DEPTH): encoding the
query (not cached), the keyword side, the vector side (the library's vector index as that
checkout's ranking opens it), fusion, the catalogue rows of a page of 50 hits; then the
whole of what `/api/search?limit=50` runs (`web.data.search_results`: search and count, the
result dicts, JSON text), with the query's vector not yet cached (a new query) and cached
(the same query again: a page scrolled, the count of the page, a repeated search), and in
semantic mode (all but the keyword side).
CPU is the searching thread's time (`time.thread_time`); on a loaded machine it is what an
idle core would take, while wall time grows with the load (reported).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEPTH_PAGE = 50


def _percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


def _timed(items, call) -> dict:
    """p50/p95 CPU and wall ms of call(item) over `items` (one warm-up call first)."""
    call(items[0])
    cpu, wall = [], []
    for item in items:
        c, w = time.thread_time(), time.perf_counter()
        call(item)
        cpu.append((time.thread_time() - c) * 1000)
        wall.append((time.perf_counter() - w) * 1000)
    return {"cpu_p50_ms": round(_percentile(cpu, 50), 1), "cpu_p95_ms": round(_percentile(cpu, 95), 1),
            "wall_p50_ms": round(_percentile(wall, 50), 1),
            "wall_p95_ms": round(_percentile(wall, 95), 1)}


def queries(count: int) -> list[str]:
    sys.path.insert(0, str(HERE.parent))
    sys.path.insert(0, str(HERE))
    from captions import make_query
    from web_speed import QUERIES

    rng = random.Random(4)
    return (list(QUERIES) + [make_query(rng) for _ in range(count)])[:count]


def child(library_path: Path, count: int) -> dict:
    """The measures, in this process, with whichever capindex is first on sys.path."""
    import capindex
    from capindex.api import Library
    from capindex.search import ranking, semantic
    from capindex.store.keyword import KeywordIndex
    from capindex.web import data

    texts = queries(count)
    library = Library(library_path)
    lib_dir = library.dir
    index_at = getattr(lib_dir, "keyword_path", None) or lib_dir.index_dir  # an older checkout: Whoosh
    keyword = KeywordIndex(index_at)
    vectors = ranking._vector_side(lib_dir, [], required=False)  # as this checkout's ranking opens it
    encode = getattr(semantic.query_vector, "__wrapped__", semantic.query_vector)
    meaning = {t: semantic.meaning_text(t) for t in texts}
    vector_of = {t: semantic.query_vector(meaning[t]) for t in texts}
    keyword_of = {t: keyword.search(t, ranking.FUSION_DEPTH) for t in texts}
    vector_hits = {t: vectors.search(vector_of[t], ranking.FUSION_DEPTH) for t in texts}
    fused = {t: ranking.fuse_scores(keyword_of[t], vector_hits[t], ranking.semantic_share(t))
             for t in texts}

    def api(text: str) -> str:
        return json.dumps(data.search_results(library, data.SearchRequest(q=text, limit=50)))

    def api_new_query(text: str) -> str:
        semantic.query_vector.cache_clear()
        return api(text)

    def fresh_vectors(text: str):  # a ranking that opens the vector index anew each search
        return ranking._vector_side(lib_dir, [], required=False).search(vector_of[text],
                                                                        ranking.FUSION_DEPTH)

    out = {"capindex": str(Path(capindex.__file__).parent.parent), "queries": len(texts),
           "rows": library.info()["ok"],
           "encode_query": _timed(texts, lambda t: encode(meaning[t])),
           "keyword_side": _timed(texts, lambda t: keyword.search(t, ranking.FUSION_DEPTH)),
           "vector_side": _timed(texts, fresh_vectors),
           "fusion": _timed(texts, lambda t: ranking.fuse_scores(
               keyword_of[t], vector_hits[t], ranking.semantic_share(t))),
           "catalogue_rows_50": _timed(texts, lambda t: ranking._hits(
               lib_dir, fused[t][:DEPTH_PAGE], dict(keyword_of[t]), dict(vector_hits[t]), True))}
    results = data.search_results(library, data.SearchRequest(q=texts[0], limit=50))
    out["json_text_50"] = _timed(texts, lambda t: json.dumps(results))
    out["api_search_new_query"] = _timed(texts, api_new_query)
    out["api_search_same_query"] = _timed(texts, api)

    def semantic_api(text: str) -> str:  # everything but the keyword side
        semantic.query_vector.cache_clear()
        return json.dumps(data.search_results(library, data.SearchRequest(q=text, limit=50,
                                                                          mode="semantic")))

    out["api_search_semantic_new_query"] = _timed(texts, semantic_api)
    out["load_average"] = [round(x, 1) for x in os.getloadavg()]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--library", type=Path, required=True)
    parser.add_argument("--queries", type=int, default=60)
    parser.add_argument("--before", type=Path, help="another checkout measured beside this one")
    parser.add_argument("--before-library", type=Path,
                        help="the library the --before checkout searches (default: --library; "
                             "another when its keyword index is of another format)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.library, args.queries)))
        return
    report = {"library": str(args.library), "load_average_start": os.getloadavg()}
    sides = [("before", args.before, args.before_library or args.library),
             ("after", HERE.parents[1], args.library)]
    for name, source, library in sides:
        if source is None:
            continue
        done = subprocess.run([sys.executable, __file__, "--child", "--library", str(library),
                               "--queries", str(args.queries)], capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": str(Path(source).resolve())})
        report[name] = (json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0
                        else {"error": done.stderr.strip().splitlines()[-3:]})
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
