"""Search: a Whoosh index of generated captions built as ingest feeds it, then timed queries."""

from __future__ import annotations

import random
import shutil
import statistics
import time
from pathlib import Path

from .captions import make_caption, make_query


def measure_search(directory: Path, documents: int, queries: int, batch: int) -> dict:
    """Index `documents` generated rows through KeywordIndex as ingest does, then query it."""
    from .capindex_api import KeywordIndex, imagenet_labels

    rng = random.Random(1)
    labels = imagenet_labels()
    if directory.exists():
        shutil.rmtree(directory)
    index = KeywordIndex(directory)
    rows = []
    for i in range(documents):
        rows.append({"id": i + 1, "seq": i + 1, "status": "ok",
                     "path": f"/photos/{2010 + i % 15}/{rng.choice(['IMG', 'DSC', 'PXL'])}_{i:06d}.jpg",
                     "caption": make_caption(rng),
                     "tags": [{"label": rng.choice(labels), "prob": 0.1} for _ in range(5)]})
    started = time.perf_counter()
    for start in range(0, documents, batch):  # as ingest feeds it: one update per batch
        index.update(rows[start:start + batch])
    index.flush(final=True)  # as at the end of an ingest (merges small segments)
    index_seconds = time.perf_counter() - started
    del rows

    texts = [make_query(rng) for _ in range(queries)]
    index.search(texts[0])  # warm the OS cache and Python's imports
    times, hits = [], 0
    for text in texts:
        t = time.perf_counter()
        hits += bool(index.search(text, limit=10))
        times.append(time.perf_counter() - t)
    times.sort()
    ms = [t * 1000 for t in times]
    return {
        "documents": documents,
        "index_seconds": round(index_seconds, 2),
        "docs_per_s": round(documents / index_seconds, 1),
        "update_batch": batch,
        "segments": _segment_count(directory),
        "index_mb": round(sum(p.stat().st_size for p in directory.iterdir()) / 2**20, 1),
        "queries": queries,
        "queries_with_hits": hits,
        "p50_ms": round(_percentile(ms, 50), 2),
        "p95_ms": round(_percentile(ms, 95), 2),
        "mean_ms": round(statistics.fmean(ms), 2),
        "max_ms": round(ms[-1], 2),
    }


def _segment_count(directory: Path) -> int:
    from whoosh import index as whoosh_index

    return len(whoosh_index.open_dir(str(directory)).reader().leaf_readers()) \
        if whoosh_index.exists_in(str(directory)) else 0


def _percentile(sorted_values: list[float], pct: float) -> float:
    if not sorted_values:
        return float("nan")
    k = (len(sorted_values) - 1) * pct / 100
    lo, hi = int(k), min(int(k) + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)
