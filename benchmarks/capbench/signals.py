"""Ingest with each search signal on and off, side by side: what the detected objects, the
text-image embedding and guided decoding cost.

The real `capindex ingest` of the same small JPEGs, six ways, in turn for --rounds rounds
(a noisy machine weighs on each alike; each round starts one way later, so no way always
follows the same one): captions alone (`--no-objects`, no embedding, plain beam search:
the ingest before these signals), with objects, with the embedding, with the shipped
guided decoding (from the ImageNet tags alone, without objects), objects and embedding
with plain decoding ("unguided"), and all of them (what `capindex ingest` does by
default). Each way's median round, and each way's rate over the plain one's, per round
and median; and the CPU time each way adds per image: the process tree's CPU seconds
(start-up included, which every way pays alike) less the plain run's of the same round,
over the images.
"""

from __future__ import annotations

import os
import statistics
from pathlib import Path

from .ingest import run_ingest
from .report import log

WAYS = {"plain": (False, False, False), "objects": (True, False, False),
        "embedding": (False, True, False), "guide": (False, False, True),
        "unguided": (True, True, False), "all": (True, True, True)}
# name: (objects, embedding, guided decoding)


def measure_signals(folder: Path, temp: Path, args, ahead: int) -> dict:
    runs: dict[str, list[dict]] = {name: [] for name in WAYS}
    names = list(WAYS)
    for round_ in range(args.rounds):
        for name in names[round_ % len(names):] + names[:round_ % len(names)]:
            objects, embedding, guide = WAYS[name]
            log(f"signals: capindex ingest, {name}, round {round_ + 1}")
            load = os.getloadavg()[0]
            run = run_ingest(folder, temp / "library-signals", args, ahead=ahead,
                             objects=objects, embedding=embedding, guide=guide)
            runs[name].append({**run, "load_average": round(load, 2)})
    images = runs["plain"][0]["captioned"]
    result: dict = {"images": images, "rounds": args.rounds,
                    "load_average": [run["load_average"] for way in runs.values() for run in way]}
    for name, rounds in runs.items():
        ranked = sorted(rounds, key=lambda run: run["images_per_s"])
        median = ranked[(len(ranked) - 1) // 2]
        result[name] = {key: median[key] for key in (
            "images_per_s", "steady_images_per_s", "wall_seconds", "cpu_seconds",
            "cores_busy", "peak_rss_mb", "tree_peak_rss_mb")}
        result[name]["rounds_images_per_s"] = [run["images_per_s"] for run in rounds]
        result[name]["rounds_cpu_seconds"] = [run["cpu_seconds"] for run in rounds]
        if name != "plain":
            ratios = [run["images_per_s"] / plain["images_per_s"]
                      for run, plain in zip(rounds, runs["plain"])]
            result[name]["vs_plain"] = round(statistics.median(ratios), 3)
            result[name]["rounds_vs_plain"] = [round(r, 3) for r in ratios]
            added = [(run["cpu_seconds"] - plain["cpu_seconds"]) * 1000 / images
                     for run, plain in zip(rounds, runs["plain"])]
            result[name]["added_cpu_ms_per_image"] = round(statistics.median(added), 1)
            result[name]["rounds_added_cpu_ms_per_image"] = [round(a, 1) for a in added]
            steady = [run["steady_images_per_s"] for run in rounds]
            plain_steady = [run["steady_images_per_s"] for run in runs["plain"]]
            if all(steady) and all(plain_steady):
                result[name]["steady_vs_plain"] = round(statistics.median(
                    [s / p for s, p in zip(steady, plain_steady)]), 3)
    # one signal's own cost, the others on in both: the embedding's (issue 17: under 10%)
    # and the guided decoding's, which in ingest also reads the objects (issue 18)
    for key, (way, without) in {"embedding_own": ("unguided", "objects"),
                                "guide_own": ("all", "unguided")}.items():
        ratios = [a["images_per_s"] / o["images_per_s"] for a, o in zip(runs[way], runs[without])]
        result[key] = round(statistics.median(ratios), 3)
        result[f"rounds_{key}"] = [round(r, 3) for r in ratios]
    return result
