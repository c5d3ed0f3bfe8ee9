"""Peak memory of `capindex ingest` at two sizes, the sustained rate their difference
gives, and re-runs over the larger library (files unchanged, then moved)."""

from __future__ import annotations

import shutil
from pathlib import Path

from .data import linked_subset, make_set
from .ingest import run_ingest
from .report import log

# The larger memory run must last this much longer for its added images to give a rate:
# the per-run costs it cancels (about 0.4 s) vary by a tenth of a second or so.
MIN_ADDED_SECONDS = 20.0


def measure_memory(args, data_dir: Path, temp: Path, ahead: int) -> dict:
    """Peak memory of `capindex ingest` of small images at each of --memory-sizes, then of a
    re-run over the largest library (every file unchanged: planning only), and of one after
    every file moved to a subfolder (each is hashed and keeps its caption)."""
    largest = max(args.memory_sizes)
    pool = make_set(data_dir / "memory", "small", largest, seed=1)
    runs = []
    keys = ("images_per_s", "steady_images_per_s", "seconds", "wall_seconds", "peak_rss_mb",
            "tree_peak_rss_mb", "tree_peak_pss_mb")
    for count in args.memory_sizes:
        log(f"memory: capindex ingest of {count} small images")
        folder = linked_subset(pool[:count], temp / f"memory-{count}")
        library = temp / f"library-memory-{count}"
        run = run_ingest(folder, library, args, ahead=ahead)
        runs.append({"images": count, **{k: run[k] for k in keys}})
        if count == largest:
            log(f"memory: capindex ingest again, {count} files unchanged")
            again = run_ingest(folder, library, args, fresh=False)
            rescan = {"images": count, **{k: again[k] for k in keys if "images_per_s" not in k}}
            log(f"memory: capindex ingest again, {count} files moved")
            moved = folder / "moved"
            moved.mkdir()
            for path in folder.glob("*.jpg"):
                path.rename(moved / path.name)
            again = run_ingest(folder, library, args, fresh=False)
            after_move = {"images": count, "captioned": again["captioned"],  # 0: all moved
                          **{k: again[k] for k in keys if "images_per_s" not in k}}
        shutil.rmtree(folder)
    first, last = runs[0], runs[-1]
    return {
        "runs": runs,
        "marginal_images_per_s": marginal_rate(first, last),
        "peak_rss_growth_mb": round(last["peak_rss_mb"] - first["peak_rss_mb"], 1),
        "tree_peak_rss_growth_mb": round(last["tree_peak_rss_mb"] - first["tree_peak_rss_mb"], 1),
        "rescan": rescan,
        "after_move": after_move,
    }


def marginal_rate(smaller: dict, larger: dict) -> float | None:
    """Images/s of the images the larger run adds: the sustained rate, since what a run pays
    once (workers' start, the model's first batch, the last commit) cancels out. None when
    the larger run is not at least MIN_ADDED_SECONDS longer (e.g. --memory-sizes 300,3000)."""
    seconds = [run["images"] / run["images_per_s"] for run in (smaller, larger)]  # unrounded
    if seconds[1] - seconds[0] < MIN_ADDED_SECONDS:
        return None
    return round((larger["images"] - smaller["images"]) / (seconds[1] - seconds[0]), 2)
