"""Ingest with each search signal on and off, side by side: what the detected objects and
the text-image embedding cost.

The real `capindex ingest` of the same small JPEGs, four ways, in turn for --rounds rounds
(a noisy machine weighs on each alike): captions alone (`--no-objects`, no embedding),
with objects, with the embedding, and with both (what `capindex ingest` does by default).
Each way's median round, and each way's rate over the plain one's, per round and median.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from .ingest import run_ingest
from .report import log

WAYS = {"plain": (False, False), "objects": (True, False), "embedding": (False, True),
        "all": (True, True)}  # name: (objects, embedding)


def measure_signals(folder: Path, temp: Path, args, ahead: int) -> dict:
    runs: dict[str, list[dict]] = {name: [] for name in WAYS}
    for round_ in range(args.rounds):
        for name, (objects, embedding) in WAYS.items():
            log(f"signals: capindex ingest, {name}, round {round_ + 1}")
            runs[name].append(run_ingest(folder, temp / "library-signals", args, ahead=ahead,
                                         objects=objects, embedding=embedding))
    result: dict = {"images": runs["plain"][0]["captioned"], "rounds": args.rounds}
    for name, rounds in runs.items():
        ranked = sorted(rounds, key=lambda run: run["images_per_s"])
        median = ranked[(len(ranked) - 1) // 2]
        result[name] = {key: median[key] for key in (
            "images_per_s", "steady_images_per_s", "wall_seconds", "cpu_seconds",
            "peak_rss_mb", "tree_peak_rss_mb")}
        result[name]["rounds_images_per_s"] = [run["images_per_s"] for run in rounds]
        if name != "plain":
            ratios = [run["images_per_s"] / plain["images_per_s"]
                      for run, plain in zip(rounds, runs["plain"])]
            result[name]["vs_plain"] = round(statistics.median(ratios), 3)
            result[name]["rounds_vs_plain"] = [round(r, 3) for r in ratios]
            steady = [run["steady_images_per_s"] for run in rounds]
            plain_steady = [run["steady_images_per_s"] for run in runs["plain"]]
            if all(steady) and all(plain_steady):
                result[name]["steady_vs_plain"] = round(statistics.median(
                    [s / p for s, p in zip(steady, plain_steady)]), 3)
    # the embedding's own cost, with the objects on in both (what a user turns on or off)
    ratios = [a["images_per_s"] / o["images_per_s"] for a, o in zip(runs["all"], runs["objects"])]
    result["all_vs_objects"] = round(statistics.median(ratios), 3)
    result["rounds_all_vs_objects"] = [round(r, 3) for r in ratios]
    return result
