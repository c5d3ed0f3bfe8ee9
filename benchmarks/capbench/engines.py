"""The Ray engine against the local engine on the same photos, side by side in one run.

    python -m benchmarks.capbench.engines --images 200 --rounds 1 --out engines.json

Makes --images `small` JPEGs (`data.make_set`), then, --rounds times, alternating, runs
`capindex ingest FOLDER --json` into a fresh library with `--engine local` and with
`--engine ray` (a local Ray started by the run, with this machine's CPUs), each in its own
process. Reports per engine the run's images/s (its summary: captioned over the run's
seconds, model loading and Ray's start-up left out), the whole process's wall time and
images/s over it, and the medians' ratio ray / local: the Ray engine's overhead on one
machine. With `--model` and `--device` as `capindex ingest` takes them.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from .data import make_set
from .ingest import capindex_command
from .machine import loadavg, machine_info
from .report import log, write_json

ENGINES = ("local", "ray")


def run_engine(folder: Path, library: Path, engine: str, args) -> dict:
    """One `capindex ingest --engine ENGINE --json` into a fresh library: its summary's
    rate and the process's wall time."""
    shutil.rmtree(library, ignore_errors=True)
    command = [*capindex_command(), "--library", str(library), "ingest", str(folder),
               "--engine", engine, "--json", "--device", args.device]
    if args.model:
        command += ["--model", str(args.model)]
    if args.batch_size:
        command += ["--batch-size", str(args.batch_size)]
    started = time.perf_counter()
    done = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"capindex ingest --engine {engine} exited {done.returncode}:\n"
                           f"{done.stderr[-3000:]}")
    summary = json.loads(done.stdout)
    return {"images_per_s": round(summary["captioned"] / summary["seconds"], 2),
            "seconds": round(summary["seconds"], 2),
            "setup_seconds": round(summary["loading_seconds"], 2),
            "wall_seconds": round(wall, 2),
            "wall_images_per_s": round(summary["captioned"] / wall, 2),
            "captioned": summary["captioned"], "failed": summary["failed"]}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=200, help="small JPEGs (default 200)")
    parser.add_argument("--rounds", type=int, default=1, help="runs per engine, alternating")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--model", type=Path, default=None, help="checkpoint (default: shipped)")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    results = {"benchmark": "capindex-engines",
               "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "machine": machine_info(), "images": args.images, "runs": {e: [] for e in ENGINES}}
    temp = Path(tempfile.mkdtemp(prefix="capindex-engines-"))
    try:
        folder = temp / "small"
        make_set(folder, "small", args.images)
        for round_ in range(args.rounds):
            for engine in ENGINES:
                log(f"--engine {engine}, round {round_ + 1}")
                results["runs"][engine].append(run_engine(folder, temp / "library", engine, args))
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    medians = {engine: {key: statistics.median(run[key] for run in runs)
                        for key in ("images_per_s", "wall_seconds", "wall_images_per_s")}
               for engine, runs in results["runs"].items()}
    results["medians"] = medians
    results["ratio_ray_vs_local"] = {
        key: round(medians["ray"][key] / medians["local"][key], 3)
        for key in ("images_per_s", "wall_images_per_s")}
    results["machine"]["load_average_end"] = loadavg()
    print(json.dumps({"medians": medians, "ratio_ray_vs_local": results["ratio_ray_vs_local"]},
                     indent=2))
    if args.out:
        write_json(args.out, results)
    return results


if __name__ == "__main__":
    main()
