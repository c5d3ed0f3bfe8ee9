#!/usr/bin/env python
"""How fast `capindex ingest` and `capindex search` are on this machine.

    python benchmarks/throughput.py                   # defaults: a few minutes on 2 cores
    python benchmarks/throughput.py --quick           # seconds: a smoke test (tests/test_benchmarks.py)
    python benchmarks/throughput.py --images 500 --memory-sizes 300,3000 --out results.json

It makes its own JPEGs (see `make_sets`): `small`, about 500x375 like web photos,
and `large`, 4000x3000 (12 MP) like a camera's, with real texture (crops of
sample_images/ plus sensor-like noise) so that file sizes and decode work are
realistic. On the same images, in one run, it measures:

- decode:  files -> model-ready tensors through the pipeline's own decode stage
           (DecodeDataset + ingest.decode_loader, the ingest settings), images/s
           and CPU-ms per image (workers and main process);
- model:   Captioner.caption_batch on tensors already in memory, same batch size,
           images/s and CPU-ms per image; with the model on the CPU, the two give
           the most ingest/model can reach when the model keeps every core busy;
- data path: ingest in this process with a captioner that answers at once (the
           same settings): how fast everything but the model goes, images/s and the
           main process's CPU-ms per image (what a fast GPU leaves as the limit);
- ingest:  the real `capindex ingest` into a fresh library, in a subprocess:
           images/s over the run (from its summary) and the whole process's wall
           time, peak RSS and CPU time of the process tree (main process and
           decode workers); its stderr is a pseudo-terminal, so it draws its
           progress bar as for a user, and the counts the bar shows give the rate
           of the run's steady part (`steady_rate`), without its start and finish;
           model-only and ingest alternate for --rounds rounds and the median round
           of each, and the median of the rounds' ratios, are reported;
- memory:  peak RSS of `capindex ingest` at two sizes (--memory-sizes), which
           should not grow with the number of images; the images the larger run
           adds, over the time it adds, give the sustained rate (what a run pays
           once cancels out), compared with the small set's model-only rate; then
           re-runs over the larger library: every file unchanged, then every file
           moved into a subfolder (hashed, not captioned);
- search:  a Whoosh index of --search-docs generated captions built through
           capindex.indexer.SearchIndex as ingest feeds it (docs/s), then
           --queries queries through SearchIndex.search (p50/p95 ms).

Prints a table (stdout) and writes JSON (--out). Progress goes to stderr.
The machine's description includes the load average at the start and the end:
numbers taken while something else ran are not comparable with a quiet run.
"""

from __future__ import annotations

import argparse
import codecs
import fcntl
import io
import json
import os
import platform
import pty
import random
import re
import resource
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "sample_images"
SETS = {"small": (500, 375), "large": (4000, 3000)}
DATA_VERSION = 2  # bump when the generated images change (a --data-dir is then remade)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def write_json(path: Path, results: dict) -> None:
    """The results as indented JSON at `path` (its folder made as needed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    log(f"wrote {path}")


# -- the machine -----------------------------------------------------------------

def machine_info() -> dict:
    import PIL
    import torch
    from PIL import features

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gb = None
    try:
        memory_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    gpu = None
    if torch.cuda.is_available():
        gpu = {"name": torch.cuda.get_device_name(0), "count": torch.cuda.device_count(),
               "cuda": torch.version.cuda}
    return {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_gb": memory_gb,
        "gpu": gpu,
        "os": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "pillow": PIL.__version__,
        "libjpeg_turbo": bool(features.check_feature("libjpeg_turbo")),
        "load_average_start": _loadavg(),
    }


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


# -- the images ------------------------------------------------------------------

def _texture(rng: random.Random, size: tuple[int, int], sources: list) -> "Image.Image":
    """A jittered crop of a sample photo, resized to `size` (width, height)."""
    from PIL import Image, ImageOps

    src = sources[rng.randrange(len(sources))]
    w, h = src.size
    cw, ch = int(w * rng.uniform(0.45, 0.95)), int(h * rng.uniform(0.45, 0.95))
    x, y = rng.randrange(w - cw + 1), rng.randrange(h - ch + 1)
    img = src.crop((x, y, x + cw, y + ch))
    if rng.random() < 0.5:
        img = ImageOps.mirror(img)
    resample = Image.Resampling.BICUBIC if size[0] <= 1000 else Image.Resampling.BILINEAR
    return img.resize(size, resample)


def _add_noise(img, np_rng, sigma: float, noise_field=None):
    """Sensor-like noise, so that JPEG sizes are those of real photos, not of smooth upscales."""
    import numpy as np
    from PIL import Image

    pixels = np.asarray(img, dtype=np.int16)
    if noise_field is None:
        noise = np_rng.normal(0, sigma, size=pixels.shape[:2] + (1,)).astype(np.int16)
    else:  # a shared field, shifted: generating 12 MP of fresh noise per image is slow
        dy, dx = (int(v) for v in np_rng.integers(0, 64, size=2))
        noise = np.roll(noise_field, (dy, dx), axis=(0, 1))
    return Image.fromarray(np.clip(pixels + noise, 0, 255).astype(np.uint8))


def _camera_exif(index: int):
    from PIL import Image

    exif = Image.Exif()
    exif[0x010F] = "BenchCam"  # Make
    exif[0x0110] = "Model 12"  # Model
    exif[0x0112] = 1  # Orientation: upright
    exif.get_ifd(0x8769)[0x9003] = f"2024:06:{1 + index % 28:02d} 12:{index % 60:02d}:00"
    return exif


def _with_comment(jpeg: bytes, text: str) -> bytes:
    """The same JPEG with a COM segment after SOI: same pixels, different bytes (and hash)."""
    payload = text.encode()
    return jpeg[:2] + b"\xff\xfe" + (len(payload) + 2).to_bytes(2, "big") + payload + jpeg[2:]


_SOURCES: list = []  # the sample photos, for the processes that make small images


def _make_small(task: tuple[str, int, int]) -> None:
    """One small JPEG, from its own seed: image i is the same whatever the set's size."""
    import numpy as np

    path, index, seed = task
    rng = random.Random(f"small-{seed}-{index}")
    img = _add_noise(_texture(rng, SETS["small"], _SOURCES),
                     np.random.default_rng([seed, index]), sigma=3.0)
    img.save(path, "JPEG", quality=rng.choice([85, 90, 95]))


def _on_every_core(function, tasks: list) -> None:
    """function(task) for each task, in forked processes (here where fork is unavailable)."""
    import multiprocessing

    if len(tasks) < 64 or "fork" not in multiprocessing.get_all_start_methods():
        for task in tasks:
            function(task)
        return
    with multiprocessing.get_context("fork").Pool(os.cpu_count()) as pool:
        for _ in pool.imap_unordered(function, tasks, chunksize=16):
            pass


def make_set(directory: Path, name: str, count: int, seed: int = 0) -> list[Path]:
    """`count` JPEGs of set `name` in `directory` (reused when that many or more are there)."""
    import numpy as np
    from PIL import Image

    manifest = directory / "manifest.json"
    want = {"version": DATA_VERSION, "set": name, "seed": seed}
    paths = [directory / f"{name}_{i:05d}.jpg" for i in range(count)]
    if manifest.is_file():
        have = json.loads(manifest.read_text())
        if ({k: have.get(k) for k in want} == want and have.get("count", 0) >= count
                and all(p.is_file() for p in paths)):
            return paths
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    _SOURCES[:] = [Image.open(p).convert("RGB") for p in sorted(SAMPLES.glob("*.jpg"))]
    started = time.monotonic()
    if name == "small":
        _on_every_core(_make_small, [(str(path), i, seed) for i, path in enumerate(paths)])
    else:
        # Distinct 12 MP frames are slow to make (~0.5 s each); the set cycles through
        # a pool of them, each file made unique by a JPEG comment (decode work is the same).
        rng = random.Random(f"{name}-{seed}")
        np_rng = np.random.default_rng(seed)
        size = SETS[name]
        pool = min(count, 16)
        field = np_rng.normal(0, 5.0, size=(size[1], size[0], 1)).astype(np.int16)
        frames = []
        for i in range(pool):
            img = _add_noise(_texture(rng, size, _SOURCES), np_rng, 5.0, noise_field=field)
            buf = io.BytesIO()
            img.save(buf, "JPEG", quality=92, exif=_camera_exif(i))
            frames.append(buf.getvalue())
        for i, path in enumerate(paths):
            path.write_bytes(_with_comment(frames[i % pool], f"capindex benchmark image {i}"))
    manifest.write_text(json.dumps({**want, "count": count}))
    log(f"made {count} {name} images in {directory} ({time.monotonic() - started:.1f} s)")
    return paths


def describe_set(paths: list[Path]) -> dict:
    from PIL import Image

    sizes = [p.stat().st_size for p in paths]
    with Image.open(paths[0]) as img:
        width, height = img.size
    return {"images": len(paths), "width": width, "height": height,
            "mean_file_kb": round(statistics.fmean(sizes) / 1024, 1),
            "total_mb": round(sum(sizes) / 2**20, 1)}


def linked_subset(paths: list[Path], directory: Path) -> Path:
    """A folder holding `paths` (hard links; copies where links are not possible)."""
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    for path in paths:
        try:
            os.link(path, directory / path.name)
        except OSError:
            shutil.copyfile(path, directory / path.name)
    return directory


# -- decode and model, in this process -------------------------------------------

def cpu_seconds() -> tuple[float, float]:
    """User + system CPU seconds of this process, and of its children waited for."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


def cpu_ms_per_image(before: tuple[float, float], images: int) -> float:
    """CPU-ms per image since `before` (cpu_seconds()), this process and its children."""
    spent = sum(now - then for now, then in zip(cpu_seconds(), before))
    return round(spent * 1000 / images, 2)


def measure_decode(paths: list[Path], options, keep: int = 0):
    """Files -> model-ready tensors through the pipeline's decode stage, with ingest's
    loader settings (`options`, an IngestOptions); returns (result, kept tensors)."""
    import torch

    from capindex.pipeline.decode import DecodeDataset
    from capindex.pipeline.ingest import decode_loader

    dataset = DecodeDataset([str(p) for p in paths])
    kept: list[torch.Tensor] = []
    failed = 0
    cpu_before = cpu_seconds()
    started = time.perf_counter()
    for batch in decode_loader(dataset, options):  # the workers are reaped at its end
        failed += sum(1 for item in batch.items if item.error)
        if batch.images is not None and len(kept) < keep:
            kept.extend(batch.images[: keep - len(kept)].clone())
    seconds = time.perf_counter() - started
    return {"images_per_s": round(len(paths) / seconds, 2), "seconds": round(seconds, 3),
            "cpu_ms_per_image": cpu_ms_per_image(cpu_before, len(paths)),
            "workers": options.workers, "failed": failed}, kept


def measure_model(captioner, tensors: list, batch_size: int) -> dict:
    """Captioner.caption_batch on in-memory tensors: the steady state, so one batch of each
    size is captioned untimed first (a new size costs set-up: cuDNN's, oneDNN's)."""
    import torch

    batches = [torch.stack(tensors[i:i + batch_size]) for i in range(0, len(tensors), batch_size)]
    for size in sorted({len(batch) for batch in batches}, reverse=True):
        captioner.caption_batch(next(batch for batch in batches if len(batch) == size))
    cpu_before = cpu_seconds()
    started = time.perf_counter()
    for batch in batches:
        captioner.caption_batch(batch)
    seconds = time.perf_counter() - started
    cpu_ms = cpu_ms_per_image(cpu_before, len(tensors))
    return {"images_per_s": round(len(tensors) / seconds, 2), "seconds": round(seconds, 3),
            "cpu_ms_per_image": cpu_ms,
            "cores_busy": round(cpu_ms * len(tensors) / 1000 / seconds, 2),
            "images": len(tensors)}


class InstantCaptioner:
    """The captioner interface without a model: a generated caption and five tags per image,
    at once, for a model on `device` (so ingest picks the same settings as for the real one)."""

    model_id = "instant"
    weights_hash = "instant"
    decoding = {"method": "none"}

    def __init__(self, device: str, device_memory_gib: float | None) -> None:
        self.device = device
        self.device_memory_gib = device_memory_gib
        self.rng = random.Random(0)

    def caption_batch(self, images) -> list:
        from capindex.model.captioner import Caption

        tags = [("golden retriever", 0.5), ("tennis ball", 0.2), ("lawn", 0.1), ("dog", 0.05),
                ("park", 0.01)]
        return [Caption(make_caption(self.rng), -1.0, tags) for _ in images]


def measure_data_path(folder: Path, library_dir: Path, captioner, options) -> dict:
    """`ingest` of `folder` into a fresh library in this process, with an InstantCaptioner
    for `captioner`'s device: everything but the model (discover, read, hash, decode, write)."""
    from capindex.library import Library
    from capindex.pipeline.ingest import ingest

    if library_dir.exists():
        shutil.rmtree(library_dir)
    instant = InstantCaptioner(str(captioner.device), captioner.device_memory_gib)
    own_before, children_before = cpu_seconds()
    started = time.perf_counter()
    summary = ingest(Library(library_dir), [str(folder)], instant, options)
    seconds = time.perf_counter() - started
    own, children = cpu_seconds()
    shutil.rmtree(library_dir)
    images = summary.captioned
    return {"images_per_s": round(images / seconds, 2), "seconds": round(seconds, 3),
            "main_cpu_ms_per_image": round((own - own_before) * 1000 / images, 3),
            "workers_cpu_ms_per_image": round((children - children_before) * 1000 / images, 2)}


def cpu_bound(model: dict, decode: dict, cpus: int) -> float | None:
    """The most ingest/model can reach when the model alone keeps every core busy (on a
    CPU): then each CPU-ms spent decoding is one the model loses. None when the model left
    cores idle (a GPU, or more cores than it uses). Writing, about 0.5 CPU-ms an image, is
    left out, so the real bound is a little lower."""
    if model["cores_busy"] < 0.9 * cpus:
        return None
    return round(model["cpu_ms_per_image"]
                 / (model["cpu_ms_per_image"] + decode["cpu_ms_per_image"]), 3)


def side_by_side(models: list[dict], ingests: list[dict]) -> dict:
    """Rounds of model-only and ingest runs -> the median round of each, and the median of
    the rounds' ingest/model ratios (a noisy machine moves both runs of a round together)."""
    def median_run(runs: list[dict]) -> dict:
        ranked = sorted(runs, key=lambda run: run["images_per_s"])
        return {**ranked[(len(ranked) - 1) // 2],
                "rounds_images_per_s": [run["images_per_s"] for run in runs]}

    ratios = [i["images_per_s"] / m["images_per_s"] for m, i in zip(models, ingests)]
    # the steady part of each ingest (steady_rate) against the same round's model-only rate
    steady = [i.get("steady_images_per_s") for i in ingests]
    steady_ratios = ([s / m["images_per_s"] for m, s in zip(models, steady)]
                     if all(steady) else None)
    ingest = median_run(ingests)
    # memory is a maximum, not a median: the largest peak of any round
    for key in ("peak_rss_mb", "tree_peak_rss_mb", "tree_peak_pss_mb"):
        values = [run[key] for run in ingests if run[key] is not None]
        ingest[key] = max(values) if values else None
    return {"model": median_run(models), "ingest": ingest,
            "ingest_vs_model": round(statistics.median(ratios), 3),
            "rounds_ingest_vs_model": [round(r, 3) for r in ratios],
            "steady_ingest_vs_model": (round(statistics.median(steady_ratios), 3)
                                       if steady_ratios else None),
            "rounds_steady_ingest_vs_model": ([round(r, 3) for r in steady_ratios]
                                              if steady_ratios else None)}


# -- full ingest, in a subprocess -------------------------------------------------

class TreeMemory(threading.Thread):
    """Polls /proc for the peak RSS (and PSS) summed over a process and its descendants.

    Cheap on purpose, since it runs beside the ingest it measures: children are
    found through /proc/PID/task/TID/children, RSS is read every `interval` and
    PSS (smaps_rollup, which walks page tables) every fifth time. The largest single
    process's peak is its VmHWM (not the child's ru_maxrss, which for a process started
    by vfork includes the peak of this benchmark's own process).
    """

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.interval = interval
        self.peak_rss = self.peak_pss = self.peak_processes = self.peak_process = 0
        self.stop = threading.Event()

    def run(self) -> None:
        polls = 0
        while not self.stop.is_set():
            tree = self._tree()
            status = [_proc_kb(f"/proc/{pid}/status", "VmRSS:", "VmHWM:") for pid in tree]
            self.peak_rss = max(self.peak_rss, sum(s["VmRSS:"] for s in status))
            self.peak_process = max([self.peak_process, *(s["VmHWM:"] for s in status)])
            if polls % 5 == 0:
                pss = sum(_proc_kb(f"/proc/{pid}/smaps_rollup", "Pss:")["Pss:"] for pid in tree)
                self.peak_pss = max(self.peak_pss, pss)
            self.peak_processes = max(self.peak_processes, len(tree))
            polls += 1
            self.stop.wait(self.interval)

    def _tree(self) -> list[int]:
        tree, frontier = [], [self.pid]
        while frontier:
            pid = frontier.pop()
            tree.append(pid)
            try:
                for task in os.listdir(f"/proc/{pid}/task"):
                    with open(f"/proc/{pid}/task/{task}/children") as f:
                        frontier.extend(int(child) for child in f.read().split())
            except OSError:  # gone, or a kernel without the children file
                continue
        return tree


def _proc_kb(path: str, *keys: str) -> dict[str, int]:
    """Fields of a /proc file such as /proc/PID/status, in kB (0 for a process gone)."""
    found = dict.fromkeys(keys, 0)
    try:
        with open(path) as f:
            for line in f:
                fields = line.split()
                if fields and fields[0] in found:
                    found[fields[0]] = int(fields[1])
    except (OSError, ValueError, IndexError):
        pass
    return found


_SUMMARY = re.compile(r"(\d+) captioned in ([\d.]+) s \(([\d.]+) images/s\)")
_BAR_COUNT = re.compile(r"(\d+)/(\d+) \[[^\]]*\]")  # tqdm's "135/300 [00:02<00:02, 61.2 images/s]"


class ProgressClock(threading.Thread):
    """Reads a process's stderr from a pseudo-terminal and notes when its progress bar
    first showed each count of images: (seconds, count) in `points`; all text in `text`.

    The ingest sees a terminal, so it draws its bar (tqdm, at most every 0.1 s) as it
    does for a user; the bar advances after each batch is written.
    """

    def __init__(self, master_fd: int, started: float) -> None:
        super().__init__(daemon=True)
        self.fd = master_fd
        self.started = started
        self.points: list[tuple[float, int]] = []
        self.text = ""

    def run(self) -> None:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        pending, seen = "", set()
        while True:
            try:
                data = os.read(self.fd, 65536)
            except OSError:  # EIO: every process holding the terminal has closed it
                break
            if not data:
                break
            now = time.perf_counter() - self.started
            chunk = decoder.decode(data)
            self.text += chunk
            pending += chunk
            while found := _BAR_COUNT.search(pending):  # a refresh may arrive in pieces
                count = int(found.group(1))
                if count not in seen:
                    seen.add(count)
                    self.points.append((now, count))
                pending = pending[found.end():]
            pending = pending[-512:]
        os.close(self.fd)


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


def images_ahead(options) -> int:
    """Images the decode workers keep decoded ahead of the model (IngestOptions)."""
    return options.workers * options.prefetch_batches * options.batch_size


def _terminal() -> tuple[int, int]:
    """(read end, write end) for the ingest's stderr: a pseudo-terminal 120 columns wide,
    so that it draws its progress bar; a pipe where the system lends no pseudo-terminal
    (then there is no bar and no steady rate)."""
    try:
        master, slave = pty.openpty()
    except OSError:
        return os.pipe()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    return master, slave


def capindex_command() -> list[str]:
    """The `capindex` console script of this interpreter's environment."""
    script = Path(sys.executable).with_name("capindex")
    if script.is_file():
        return [sys.executable, str(script)]
    return [sys.executable, "-m", "capindex"]


def run_ingest(folder: Path, library: Path, args, profile: Path | None = None,
               fresh: bool = True, ahead: int = 0) -> dict:
    """`capindex ingest FOLDER` into a fresh `library` (or the one there, with fresh=False);
    time, rate (also its steady part: `steady_rate`, with `ahead`) and peak memory."""
    if fresh and library.exists():
        shutil.rmtree(library)
    command = capindex_command()
    if profile is not None:
        command = [sys.executable, "-m", "cProfile", "-o", str(profile), *command[1:]]
    command += ["--library", str(library), "ingest", str(folder),
                "--batch-size", str(args.batch_size), "--device", args.device]
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
    master, slave = _terminal()
    started = time.perf_counter()
    try:
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=slave)
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
    found = _SUMMARY.search(text)
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


# -- search --------------------------------------------------------------------

_SUBJECTS = ["man", "woman", "dog", "child", "boy", "girl", "people", "group of people",
             "black dog", "brown dog", "white dog", "cat", "bird", "horse", "cyclist", "skier",
             "surfer", "climber", "player", "crowd", "baby", "couple", "cow", "sheep", "car",
             "truck", "bus", "train", "boat", "plane", "rocket", "astronaut", "cup of coffee",
             "old camera", "motorbike", "snowboarder", "swimmer", "runner", "puppy", "kitten"]
_ADJECTIVES = ["young", "little", "old", "smiling", "small", "large", "red", "blue", "green",
               "yellow", "black", "white", "brown", "wet", "happy", "tall"]
_VERBS = ["runs", "jumps", "sits", "stands", "walks", "plays", "rides", "climbs", "swims",
          "looks", "lies", "waits", "smiles", "poses", "races", "flies", "drives", "holds"]
_PLACES = ["on the grass", "on a beach", "in the water", "in the snow", "on the street",
           "in a field", "on a rock", "in front of a building", "near a lake", "in the park",
           "on a bench", "down a hill", "on a table", "in the sky", "on the road",
           "in a kitchen", "at night", "under a tree", "by the sea", "in the mountains"]
_WITH = ["", "", "", " with a ball", " with a stick", " in a red shirt", " with a frisbee",
         " wearing a hat", " with sunglasses", " next to a fence", " holding a flag"]


def _zipf(rng: random.Random, words: list[str]) -> str:
    return rng.choices(words, weights=[1 / (i + 1) for i in range(len(words))])[0]


def make_caption(rng: random.Random) -> str:
    adjective = _zipf(rng, _ADJECTIVES) + " " if rng.random() < 0.5 else ""
    return (f"a {adjective}{_zipf(rng, _SUBJECTS)} {_zipf(rng, _VERBS)} "
            f"{_zipf(rng, _PLACES)}{_zipf(rng, _WITH)}")


def make_query(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.4:
        return _zipf(rng, _SUBJECTS).split()[-1]
    if kind < 0.8:
        return f"{_zipf(rng, _SUBJECTS).split()[-1]} {_zipf(rng, _PLACES).split()[-1]}"
    return f"{_zipf(rng, _SUBJECTS)} {_zipf(rng, _PLACES)}"


def measure_search(directory: Path, documents: int, queries: int, batch: int) -> dict:
    """Index `documents` generated rows through SearchIndex as ingest does, then query it."""
    from capindex.indexer import SearchIndex
    from capindex.model.encoder import imagenet_labels

    rng = random.Random(1)
    labels = imagenet_labels()
    if directory.exists():
        shutil.rmtree(directory)
    index = SearchIndex(directory)
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


# -- the run -------------------------------------------------------------------

TARGETS = {
    "small_ingest_vs_model": 0.85,
    "small_steady_ingest_vs_model": 0.85,
    "small_sustained_ingest_vs_model": 0.85,
    "large_ingest_vs_model": 0.85,
    "large_steady_ingest_vs_model": 0.85,
    "large_vs_small_ingest": 0.80,
    "large_vs_small_steady_ingest": 0.80,
    "search_p95_ms": 50.0,  # at most
    "search_docs_per_s": 2000.0,
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Benchmark capindex ingest (decode, model, full run, memory) and search.",
        epilog="Example: python benchmarks/throughput.py --images 300 --out results.json")
    parser.add_argument("--images", type=int, default=200, help="images per set (default 200)")
    parser.add_argument("--sets", default="small,large",
                        help="comma-separated image sets: small (500x375), large (4000x3000)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="model-only and ingest are measured this many times, alternating; "
                             "the medians are reported (default 3; --quick: 1)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="images per model call (default: what capindex ingest picks, "
                             "16 on a CPU, 256 on a GPU (64 with under 8 GiB))")
    parser.add_argument("--workers", type=int, default=None,
                        help="decode worker processes (default: what capindex ingest picks)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads for model-only (default: what capindex ingest uses)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                        help="where the model runs (default auto: cuda when available)")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                        help="encoder autocast, as capindex ingest --precision")
    parser.add_argument("--pin-memory", action="store_true",
                        help="with a GPU, batches from page-locked memory, as ingest --pin-memory")
    parser.add_argument("--model", type=Path, default=None,
                        help="checkpoint (default: the model shipped with capindex)")
    parser.add_argument("--memory-sizes", default=None,
                        help="image counts for the peak-memory scaling runs of small images, "
                             "e.g. 300,3000; '' skips them (default 100,300; --quick: none)")
    parser.add_argument("--search-docs", type=int, default=100_000,
                        help="captions in the search index (default 100000; 0 skips search)")
    parser.add_argument("--queries", type=int, default=1000, help="search queries to time")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="keep the generated images here and reuse them next time "
                             "(default: a temporary folder, removed at the end)")
    parser.add_argument("--profile", type=Path, default=None,
                        help="also write a cProfile of each full ingest's main process here")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    parser.add_argument("--quick", action="store_true",
                        help="a tiny run (4 images a set, no memory runs, 500 search "
                             "documents) to check that everything works; its numbers mean nothing")
    args = parser.parse_args(argv)
    if args.quick:
        args.images = min(args.images, 4)
        args.rounds = 1
        args.batch_size = min(args.batch_size or 4, 4)
        args.search_docs = min(args.search_docs, 500)
        args.queries = min(args.queries, 20)
        if args.memory_sizes is None:
            args.memory_sizes = ""
    if args.memory_sizes is None:
        args.memory_sizes = "100,300"
    args.sets = [s.strip() for s in args.sets.split(",") if s.strip()]
    for name in args.sets:
        if name not in SETS:
            parser.error(f"unknown set {name!r}; choose from {', '.join(SETS)}")
    try:
        args.memory_sizes = sorted({int(s) for s in args.memory_sizes.split(",") if s.strip()})
    except ValueError:
        parser.error("--memory-sizes takes image counts such as 300,3000")
    if args.images < 1:
        parser.error("--images must be at least 1")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    started = time.monotonic()
    import capindex  # noqa: F401  (before torch: its OpenMP setting applies here as in ingest)
    import torch

    from capindex.model.captioner import Captioner
    from capindex.pipeline.ingest import IngestOptions, tuned_options

    if args.threads:
        torch.set_num_threads(args.threads)
    results: dict = {
        "benchmark": "capindex-throughput",
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "settings": {"images": args.images, "sets": args.sets, "device": args.device,
                     "quick": args.quick},
        "sets": {},
        "ratios": {},
        "memory": None,
        "search": None,
    }
    temp = Path(tempfile.mkdtemp(prefix="capindex-bench-"))
    data_dir = args.data_dir or temp / "data"
    try:
        log("loading the model")
        captioner = Captioner.load(args.model, device=args.device, precision=args.precision)
        options = tuned_options(IngestOptions(batch_size=args.batch_size, workers=args.workers,
                                              pin_memory=args.pin_memory),
                                str(captioner.device), captioner.device_memory_gib)
        args.batch_size, workers = options.batch_size, options.workers
        ahead = images_ahead(options)  # images decoded ahead of the model: see steady_rate
        results["settings"].update(batch_size=args.batch_size, workers=workers,
                                   worker_priority=options.worker_priority,
                                   pin_memory=options.pin_memory, precision=args.precision,
                                   channels_last=captioner.channels_last,
                                   model_id=captioner.model_id, decoding=captioner.decoding,
                                   model_device=str(captioner.device),
                                   torch_threads=torch.get_num_threads(),
                                   gomp_spincount=os.environ.get("GOMP_SPINCOUNT"))
        for name in args.sets:
            paths = make_set(data_dir / name, name, args.images)
            entry = describe_set(paths)
            log(f"{name}: decode ({workers} workers)")
            entry["decode"], tensors = measure_decode(paths, options,
                                                      keep=min(len(paths), 1024))
            log(f"{name}: the data path alone (an instant captioner)")
            entry["data_path"] = measure_data_path(data_dir / name, temp / "library-data-path",
                                                   captioner, options)
            profile = None
            if args.profile:
                args.profile.mkdir(parents=True, exist_ok=True)
                profile = args.profile / f"ingest-{name}.prof"
            models, ingests = [], []
            for round_ in range(args.rounds):
                log(f"{name}: model only ({len(tensors)} images), round {round_ + 1}")
                models.append(measure_model(captioner, tensors, args.batch_size))
                log(f"{name}: capindex ingest, round {round_ + 1}")
                ingests.append(run_ingest(data_dir / name, temp / f"library-{name}", args,
                                          profile if round_ == 0 else None,
                                          ahead=ahead))
            del tensors
            entry.update(side_by_side(models, ingests))
            entry["cpu_bound_ingest_vs_model"] = cpu_bound(entry["model"], entry["decode"],
                                                           os.cpu_count() or 1)
            results["sets"][name] = entry
            log(f"{name}: decode {entry['decode']['images_per_s']}/s, model "
                f"{entry['model']['images_per_s']}/s, ingest {entry['ingest']['images_per_s']}/s")
        sets = results["sets"]
        for name, entry in sets.items():
            results["ratios"][f"{name}_ingest_vs_model"] = entry["ingest_vs_model"]
            if entry["steady_ingest_vs_model"] is not None:
                results["ratios"][f"{name}_steady_ingest_vs_model"] = entry["steady_ingest_vs_model"]
        if "small" in sets and "large" in sets:
            for stage in ("decode", "model", "ingest"):
                results["ratios"][f"large_vs_small_{stage}"] = round(
                    sets["large"][stage]["images_per_s"] / sets["small"][stage]["images_per_s"], 3)
            steady = [sets[name]["ingest"]["steady_images_per_s"] for name in ("large", "small")]
            if all(steady):
                results["ratios"]["large_vs_small_steady_ingest"] = round(steady[0] / steady[1], 3)

        if args.memory_sizes:
            results["memory"] = memory = measure_memory(args, data_dir, temp, ahead)
            if memory["marginal_images_per_s"] and "small" in sets:
                # the memory runs are small images too: their added images against model-only
                results["ratios"]["small_sustained_ingest_vs_model"] = round(
                    memory["marginal_images_per_s"] / sets["small"]["model"]["images_per_s"], 3)
        if args.search_docs:
            log(f"search: indexing {args.search_docs} captions")
            results["search"] = measure_search(temp / "search-index", args.search_docs,
                                               args.queries, args.batch_size)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    results["machine"]["load_average_end"] = _loadavg()
    results["duration_s"] = round(time.monotonic() - started, 1)
    results["targets"] = check_targets(results)
    print(format_table(results))
    if args.out:
        write_json(args.out, results)
    return results


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


# The larger memory run must last this much longer for its added images to give a rate:
# the per-run costs it cancels (about 0.4 s) vary by a tenth of a second or so.
MIN_ADDED_SECONDS = 20.0


def marginal_rate(smaller: dict, larger: dict) -> float | None:
    """Images/s of the images the larger run adds: the sustained rate, since what a run pays
    once (workers' start, the model's first batch, the last commit) cancels out. None when
    the larger run is not at least MIN_ADDED_SECONDS longer (e.g. --memory-sizes 300,3000)."""
    seconds = [run["images"] / run["images_per_s"] for run in (smaller, larger)]  # unrounded
    if seconds[1] - seconds[0] < MIN_ADDED_SECONDS:
        return None
    return round((larger["images"] - smaller["images"]) / (seconds[1] - seconds[0]), 2)


def check_targets(results: dict) -> dict:
    ratios, search = results["ratios"], results.get("search") or {}
    checks = {}
    for key in ("small_ingest_vs_model", "small_steady_ingest_vs_model",
                "small_sustained_ingest_vs_model", "large_ingest_vs_model",
                "large_steady_ingest_vs_model", "large_vs_small_ingest",
                "large_vs_small_steady_ingest"):
        if key in ratios:
            checks[key] = {"value": ratios[key], "target": f">= {TARGETS[key]}",
                           "met": ratios[key] >= TARGETS[key]}
    if search:
        checks["search_p95_ms"] = {"value": search["p95_ms"], "target": "< 50",
                                   "met": search["p95_ms"] < TARGETS["search_p95_ms"]}
        checks["search_docs_per_s"] = {"value": search["docs_per_s"], "target": ">= 2000",
                                       "met": search["docs_per_s"] >= TARGETS["search_docs_per_s"]}
    memory = results.get("memory")
    if memory and len(memory["runs"]) > 1:
        growth = memory["tree_peak_rss_growth_mb"]
        base = memory["runs"][0]["tree_peak_rss_mb"]
        checks["memory_flat"] = {"value": growth, "target": "growth < 10% of the smaller run",
                                 "met": growth < 0.1 * base}
    return checks


def format_table(results: dict) -> str:
    m = results["machine"]
    s = results["settings"]
    lines = [
        f"capindex throughput: {m['cpu']}, {m['logical_cpus']} CPUs, "
        f"GPU: {m['gpu']['name'] if m['gpu'] else 'none'}, torch {m['torch']} "
        f"({s.get('torch_threads')} threads), load average {m['load_average_start']} -> "
        f"{m.get('load_average_end')}",
        f"model {s.get('model_id')} on {s.get('model_device')}, {s.get('decoding')}, "
        f"batch {s['batch_size']}, {s['workers']} decode workers",
        "",
        f"{'set':<7}{'size':>11}{'file KB':>9}{'decode/s':>10}{'model/s':>9}{'ingest/s':>10}"
        f"{'ingest/model':>14}{'wall s':>8}{'peak RSS MB':>13}{'tree RSS MB':>13}",
    ]
    for name, e in results["sets"].items():
        i = e["ingest"]
        lines.append(
            f"{name:<7}{e['width']:>6}x{e['height']:<4}{e['mean_file_kb']:>9.0f}"
            f"{e['decode']['images_per_s']:>10.1f}{e['model']['images_per_s']:>9.1f}"
            f"{i['images_per_s']:>10.1f}{e['ingest_vs_model']:>14.2f}{i['wall_seconds']:>8.1f}"
            f"{i['peak_rss_mb']:>13.0f}{i['tree_peak_rss_mb']:>13.0f}")
    for name, e in results["sets"].items():
        bound = e.get("cpu_bound_ingest_vs_model")
        lines.append(
            f"  {name}: CPU-ms per image: decode {e['decode']['cpu_ms_per_image']}, model "
            f"{e['model']['cpu_ms_per_image']} ({e['model']['cores_busy']} cores busy)"
            + (f"; ingest/model can reach at most {bound:.2f}" if bound else ""))
        if e["steady_ingest_vs_model"] is not None:
            lines.append(f"  {name}: steady part of the ingest (see steady_rate) "
                         f"{e['ingest']['steady_images_per_s']}/s, ingest/model "
                         f"{e['steady_ingest_vs_model']:.2f} (rounds "
                         f"{', '.join(f'{r:.2f}' for r in e['rounds_steady_ingest_vs_model'])})")
        path = e["data_path"]
        lines.append(f"  {name}: data path alone (instant captioner): {path['images_per_s']}/s, "
                     f"main process {path['main_cpu_ms_per_image']} CPU-ms per image")
    for key, value in results["ratios"].items():
        if key.startswith("large_vs_small"):
            lines.append(f"  {key.replace('_', ' ')}: {value:.2f}")
    if results.get("memory"):
        lines.append("")
        for run in results["memory"]["runs"]:
            lines.append(f"memory: {run['images']:>6} images  peak RSS {run['peak_rss_mb']:.0f} MB, "
                         f"tree {run['tree_peak_rss_mb']:.0f} MB (PSS {run['tree_peak_pss_mb']}) "
                         f"at {run['images_per_s']}/s (steady {run['steady_images_per_s']}/s)")
        again = results["memory"]["rescan"]
        lines.append(f"memory: re-run over {again['images']} unchanged files: {again['seconds']} s "
                     f"(wall {again['wall_seconds']} s), peak RSS {again['peak_rss_mb']:.0f} MB")
        moved = results["memory"]["after_move"]
        lines.append(f"memory: re-run after moving all {moved['images']} files: {moved['seconds']} s "
                     f"(wall {moved['wall_seconds']} s), peak RSS {moved['peak_rss_mb']:.0f} MB")
        if results["memory"]["marginal_images_per_s"]:
            lines.append(f"sustained: the larger run's added images at "
                         f"{results['memory']['marginal_images_per_s']}/s (per-run costs cancel)")
    if results.get("search"):
        q = results["search"]
        lines += ["", f"search: {q['documents']} captions indexed at {q['docs_per_s']:.0f}/s "
                      f"({q['segments']} segments, {q['index_mb']} MB); {q['queries']} queries "
                      f"p50 {q['p50_ms']:.1f} ms, p95 {q['p95_ms']:.1f} ms, max {q['max_ms']:.1f} ms"]
    if results.get("targets"):
        lines.append("")
        for key, check in results["targets"].items():
            lines.append(f"target {key}: {check['value']} (want {check['target']}) "
                         f"{'met' if check['met'] else 'NOT met'}")
    lines.append(f"took {results['duration_s']} s")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
