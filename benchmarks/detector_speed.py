#!/usr/bin/env python
"""What the object detector costs per image on this machine, next to the captioner.

    PYTHONPATH=. python benchmarks/detector_speed.py          # sample_images/, a minute or two
    PYTHONPATH=. python benchmarks/detector_speed.py --images DIR --rounds 7 --model other.onnx
    PYTHONPATH=. python benchmarks/detector_speed.py --skip-captioner --opt-levels all,disable

For 16 photos (from --images, repeated if fewer), letterboxed once:
- detector: `Detector.detect_batch` on the 16 as one call (an export with a fixed batch
  of 1 is run image by image inside it) and as 16 calls of one image, with 1 and 2
  onnxruntime intra-op threads, for each graph optimisation level asked for; also the
  model alone (session.run) and the CPU time of the process per image;
- letterbox: `letterbox` per image (from the decoded PIL image);
- captioner: `Captioner.load(device="cpu").caption_batch` on the same 16 as 224x224 uint8
  (preprocess.load_pixels), with torch at 1 and 2 threads.
Each figure is the median (and min) over --rounds rounds of ms per image; the rounds
go through all cases in turn, after an untimed warm-up (torch's threads are set per
case: the letterbox runs on one). Prints a table and the load average: numbers taken while
something else ran are not comparable with a quiet run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch
from PIL import Image, ImageOps

from capindex.model.detector import Detector, letterbox
from capindex.model.preprocess import load_pixels

LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC",
          "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}


def images_from(folder: Path, count: int) -> list[Path]:
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    return [paths[i % len(paths)] for i in range(count)]


def measure(cases: list[tuple[str, object, object, int]], rounds: int) -> list[tuple]:
    """cases: (what, threads, fn, items). Rounds go through every case in turn (after one
    untimed warm-up each), so a burst of load elsewhere hits them alike. Returns per case
    (what, threads, median wall ms/item, min wall ms/item, median process CPU ms/item)."""
    for _, _, fn, _ in cases:
        fn()
    walls = [[] for _ in cases]
    cpus = [[] for _ in cases]
    for _ in range(rounds):
        for i, (_, threads, fn, per) in enumerate(cases):
            if threads != "-":
                torch.set_num_threads(threads)
            c0, t0 = time.process_time(), time.perf_counter()
            fn()
            walls[i].append((time.perf_counter() - t0) * 1000 / per)
            cpus[i].append((time.process_time() - c0) * 1000 / per)
    return [(what, threads, statistics.median(w), min(w), statistics.median(c))
            for (what, threads, _, _), w, c in zip(cases, walls, cpus)]


def session_with(model: str | None, threads: int, level: str, spinning: bool) -> Detector:
    import onnxruntime as ort

    det = Detector.load(model, threads=threads)
    options = ort.SessionOptions()
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, LEVELS[level])
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    path = model or str(Path(__import__("capindex").__file__).parent / "weights/yolox_nano.onnx")
    return Detector(ort.InferenceSession(path, options, providers=["CPUExecutionProvider"]),
                    det.labels, det.model_id, det.weights_hash, det.config)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path,
                        default=Path(__file__).resolve().parent.parent / "sample_images")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--model", default=None, help="an ONNX export (default: the shipped one)")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--opt-levels", default="all", help="comma list of " + ",".join(LEVELS))
    parser.add_argument("--spinning", choices=("on", "off", "both"), default="both",
                        help="onnxruntime's busy-waiting threads (its default: on)")
    parser.add_argument("--skip-captioner", action="store_true")
    args = parser.parse_args()

    paths = images_from(args.images, args.batch)
    opened = []
    for p in paths:
        with Image.open(p) as img:
            opened.append(ImageOps.exif_transpose(img).convert("RGB"))
    boxes = [letterbox(img) for img in opened]
    pixels = torch.stack([b[0] for b in boxes])  # (B, 3, 416, 416) uint8
    ratios = [b[1] for b in boxes]
    n = len(paths)
    rows = []

    def letterbox_all():
        for img in opened:
            letterbox(img)

    rows.append(("letterbox 416 (PIL image -> tensor)", 1, letterbox_all, n))
    threads = [int(t) for t in args.threads.split(",")]
    for level in args.opt_levels.split(","):
        for spinning in {"on": [True], "off": [False], "both": [True, False]}[args.spinning]:
            for t in threads:
                det = session_with(args.model, t, level, spinning)
                tag = f"opt={level}{'' if spinning else ' nospin'}"
                rows.append((f"detector: one call of {n} ({tag})", t,
                             lambda det=det: det.detect_batch(pixels, ratios), n))

                def one_by_one(det=det):
                    for i in range(n):
                        det.detect_batch(pixels[i:i + 1], ratios[i:i + 1])

                rows.append((f"detector: {n} calls of 1 ({tag})", t, one_by_one, n))
                bgr = pixels.flip(1).float().numpy()
                step = det.max_batch or n

                def model_only(det=det, step=step, bgr=bgr):
                    for i in range(0, n, step):
                        det.session.run(None, {det.input_name: bgr[i:i + step]})

                rows.append((f"detector: session.run only ({tag})", t, model_only, n))
    if not args.skip_captioner:
        from capindex.model.captioner import Captioner

        cap = Captioner.load(device="cpu")
        small = torch.stack([load_pixels(p) for p in paths])  # (B, 3, 224, 224) uint8
        for t in threads:
            rows.append((f"captioner: caption_batch of {n} (224 uint8)", t,
                         lambda: cap.caption_batch(small), n))

    load_before = os.getloadavg()[0]
    results = measure(rows, args.rounds)
    print(f"{n} images from {args.images}, {args.rounds} rounds, {os.cpu_count()} CPUs, "
          f"load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after")
    print(f"{'what':56} {'threads':>7} {'median ms/img':>13} {'min':>7} {'cpu ms/img':>10}")
    for what, t, med, low, cpu in results:
        print(f"{what:56} {t!s:>7} {med:13.1f} {low:7.1f} {cpu:10.1f}")


if __name__ == "__main__":
    main()
