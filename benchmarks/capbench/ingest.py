"""The real `capindex ingest`, in a subprocess: its rate (whole run and steady part), wall
time, CPU time and peak memory of its process tree."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .watch import ProgressClock, TreeMemory, terminal

SUMMARY = re.compile(r"(\d+) captioned in ([\d.]+) s \(([\d.]+) images/s\)")


def steady_rate(points: list[tuple[float, int]], total: int, ahead: int) -> float | None:
    """Images/s in a run's steady part, from the counts its progress bar showed: from the
    first at or past 10% of `total` to the last with still `ahead` images (what the decode
    workers keep ready) to come. Before it, the workers start, fill their buffers and the
    model captions its first batch; after it, the workers have nothing left to decode and
    the model runs alone, then the last commit comes. None when fewer than two counts fall
    in between (a run shorter than a few batches past the workers' buffers)."""
    inner = [(t, n) for t, n in points if 0.1 * total <= n <= total - ahead]
    if len(inner) < 2:
        return None
    (t0, n0), (t1, n1) = inner[0], inner[-1]
    return round((n1 - n0) / (t1 - t0), 2)


# `capindex` with the captioner loaded another way (without the text-image embedding, or
# with plain decoding instead of the shipped guide): the CLI has no switch for these, but
# takes its captioner loader from the click context (cli/__init__.py).
_WITH_LOADER = (
    "import functools\n"
    "from capindex.cli import main\n"
    "from capindex.model.guide import GuideConfig\n"
    "from capindex.pipeline.caption import load_captioner\n"
    "main(prog_name='capindex', obj={{'load_captioner': functools.partial(load_captioner, "
    "embedding={embedding}, guide={guide})}})\n")


def capindex_command() -> list[str]:
    """The `capindex` console script of this interpreter's environment."""
    script = Path(sys.executable).with_name("capindex")
    if script.is_file():
        return [sys.executable, str(script)]
    return [sys.executable, "-m", "capindex"]


def this_checkout_env() -> dict:
    """The environment for a subprocess that should import the capindex this process
    imports (an editable install's console script would import its own checkout)."""
    import capindex

    root = str(Path(capindex.__file__).resolve().parent.parent)
    return {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (root, os.environ.get("PYTHONPATH")) if p)}


def run_ingest(folder: Path, library: Path, args, profile: Path | None = None,
               fresh: bool = True, ahead: int = 0, objects: bool = True,
               embedding: bool = True, guide: bool = True) -> dict:
    """`capindex ingest FOLDER` into a fresh `library` (or the one there, with fresh=False);
    time, rate (also its steady part: `steady_rate`, with `ahead`) and peak memory.
    `objects`, `embedding`, `guide`: False runs it without the detector, without the
    embedding, or with plain beam search instead of the shipped guided decoding."""
    if fresh and library.exists():
        shutil.rmtree(library)
    command = capindex_command()
    if not (embedding and guide):
        command = [sys.executable, "-c", _WITH_LOADER.format(
            embedding=embedding, guide="None" if guide else "GuideConfig()")]
    if profile is not None:
        command = [sys.executable, "-m", "cProfile", "-o", str(profile), *command[1:]]
    command += ["--library", str(library), "ingest", str(folder),
                "--batch-size", str(args.batch_size), "--device", args.device]
    if not objects:
        command += ["--no-objects"]
    if args.workers is not None:
        command += ["--workers", str(args.workers)]
    if args.threads:
        command += ["--threads", str(args.threads)]
    if args.precision != "auto":
        command += ["--precision", args.precision]
    if args.pin_memory:
        command += ["--pin-memory"]
    if args.model:
        command += ["--model", str(args.model)]
    master, slave = terminal()
    started = time.perf_counter()
    try:
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=slave, env=this_checkout_env())
    except BaseException:
        os.close(master)
        raise
    finally:
        os.close(slave)  # the child holds it now; the reader sees EIO when the child is gone
    progress = ProgressClock(master, started)
    progress.start()
    memory = TreeMemory(proc.pid)
    memory.start()
    _, status, usage = os.wait4(proc.pid, 0)  # usage: with the workers it reaped
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    memory.stop.set()
    memory.join()
    progress.join(timeout=10)
    text = progress.text
    if proc.returncode != 0:
        raise RuntimeError(f"capindex ingest exited {proc.returncode}:\n{text[-3000:]}")
    found = SUMMARY.search(text)
    if not found:
        raise RuntimeError(f"no summary in the output of capindex ingest:\n{text[-3000:]}")
    captioned, seconds, rate = int(found.group(1)), float(found.group(2)), float(found.group(3))
    return {
        "images_per_s": rate,  # printed from the unrounded time
        "seconds": seconds,  # the run itself: discover .. last write (model already loaded)
        "wall_seconds": round(wall, 3),  # the whole process: start-up and model loading too
        "wall_images_per_s": round(captioned / wall, 2),
        # the steady part of the run, from its progress bar (None for a short run)
        "steady_images_per_s": steady_rate(progress.points, captioned, ahead),
        # CPU time of the whole process tree, start-up included, and over its wall time
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 2),
        "cores_busy": round((usage.ru_utime + usage.ru_stime) / wall, 2),
        "captioned": captioned,
        # the largest single process (main or a decode worker): its VmHWM, sampled
        "peak_rss_mb": round(memory.peak_process / 1024, 1),
        # summed over the process tree, sampled every 0.2 s (PSS every 1 s)
        "tree_peak_rss_mb": round(memory.peak_rss / 1024, 1),
        "tree_peak_pss_mb": round(memory.peak_pss / 1024, 1) if memory.peak_pss else None,
        "processes": memory.peak_processes,
    }
