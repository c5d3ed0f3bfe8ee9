#!/usr/bin/env python
"""What a photo browser's calls cost on a library of `--rows` synthetic rows: a caption
edit (catalogue, Parquet mirror, index), keyword search with and without filters, the
count of its matches, the newest-taken listing and the filter menus (docs/performance.md,
"Thumbnails").

    python benchmarks/browse_cost.py --rows 100000 --out browse.json

The rows are written straight to the stores, as ingest's writer does (no images, no
model): captions of 6 words drawn from `--vocabulary` words, one detected object, EXIF
dates over 8 years, two camera makes. Wall times in milliseconds, median of 3.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from datetime import date, datetime
from pathlib import Path

REPO = str(Path(__file__).resolve().parent.parent)
if REPO not in sys.path:
    sys.path.insert(0, REPO)

WORDS = ("dog cat man woman child girl boy beach grass snow street water ball bike car red "
         "blue green black white brown runs jumps sits plays rides walks field park road wall "
         "tree sky sand ocean river mountain hill city crowd table chair bench shirt hat").split()


def _ms(call) -> float:
    times = []
    for _ in range(3):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(times), 1)


def build(root: Path, rows: int, vocabulary: int, seed: int = 0) -> None:
    import numpy as np

    from capindex.store.catalog import Changes
    from capindex.store.keyword import KeywordIndex
    from capindex.store.library_dir import LibraryDir
    from capindex.store.parquet import ParquetMirror

    rng = np.random.default_rng(seed)
    words = np.array((WORDS * (vocabulary // len(WORDS) + 1))[:vocabulary])
    words = np.array([f"{w}{k // len(WORDS) or ''}" for k, w in enumerate(words)])
    library = LibraryDir(root)
    with library.ingest_lock(), library.open_catalog(create=True) as catalog:
        mirror, index = ParquetMirror(library.parquet_dir), KeywordIndex(library.keyword_path)
        for start in range(0, rows, 5000):
            batch = []
            for i in range(start, min(rows, start + 5000)):
                batch.append(dict(
                    path=f"/photos/{i:07d}.jpg", size=1, mtime_ns=1, sha256=f"{i:064x}",
                    width=640, height=480, format="JPEG",
                    caption="a " + " ".join(rng.choice(words, 6)), caption_score=-1.0,
                    alt_captions=[], tags=[{"label": "tabby", "prob": 0.5}],
                    objects=[{"label": str(rng.choice(["dog", "cat", "person", "car"])),
                              "score": 0.9, "box": [0.0, 0.0, 1.0, 1.0]}],
                    detector_id="d", embedding=None, embedding_model=None,
                    taken_at=datetime(2015 + i % 8, 1 + i % 12, 1 + i % 28),
                    camera_make=("Canon", "NIKON")[i % 2], camera_model="X", gps_lat=None,
                    gps_lon=None, model_id="m", weights_hash="h", decoding="{}",
                    ingested_at=datetime(2026, 1, 1), status="ok", error=None))
            written = catalog.write(Changes(upserts=batch))
            mirror.append(written.rows)
            index.update(written.rows)
        mirror.finish()
        index.flush(final=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--vocabulary", type=int, default=2000)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    import capindex
    from capindex.search.filters import Filters

    root = Path(tempfile.mkdtemp(prefix="capindex-browse-"))
    started = time.monotonic()
    build(root, args.rows, args.vocabulary)
    lib = capindex.Library(root)
    lib.edit_caption(1, "a first edit, which also loads what edits need")
    results = {"rows": args.rows, "build_s": round(time.monotonic() - started, 1),
               "edit_ms": _ms(lambda: lib.edit_caption(2, "an edited caption"))}
    filters = {"none": None, "camera": Filters(camera="canon"),
               "object+after": Filters(object="dog", after=date(2019, 1, 1)),
               "nothing": Filters(camera="no such camera")}
    for name, chosen in filters.items():
        results[name] = {
            "search_ms": {q: _ms(lambda q=q, f=chosen: lib.search(q, 50, mode="keyword",
                                                                   filters=f))
                          for q in ("dog", "man grass", "red ball water")},
            "count_ms": _ms(lambda f=chosen: lib.count("dog", mode="keyword", filters=f)),
            "newest_ms": _ms(lambda f=chosen: lib.search("", 50, filters=f)),
        }
    results["facets_ms"] = _ms(lambda: capindex.Library(root).facets())  # not cached
    print(json.dumps(results, indent=1))
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
