#!/usr/bin/env python
"""Object detection next to captioning on one batch, on a GPU or a CPU: is the detector the bottleneck?

    python benchmarks/detector_gpu.py --device cuda --batch 256          # a GPU: torch port
    python benchmarks/detector_gpu.py --device cpu --batch 32 --threads 1,2

The batch is the sample photos (repeated up to --batch), as ingest holds them: uint8
224x224 pixels and each photo's size. Timed, each the median over --rounds rounds after a
warm-up, as ms per batch, images/s and (CPU) process CPU ms per image:
- detect: what `pipeline/detect.py` does with a batch: letterbox (on the batch's device,
  stretched back to each photo's shape) + `Detector.detect_batch` (network, candidates,
  NMS). On a GPU the torch port in one call, and its parts (letterbox, network alone in
  fp32, and as what-ifs channels-last, fp16, bf16: the ingest runs fp32); on a CPU the
  shipped backend (onnxruntime) and the torch port, at batch 1 (--batch calls of one
  image) and at --batch, per --threads;
- caption: `Captioner.caption_batch` of the shipped captioner (and embedding) on the same
  pixels;
- the detector's share of detect + caption, the part of a batch's model time it takes.
On a GPU it also checks the port there against onnxruntime on the CPU: how many of the
distinct photos get the same labels. Needs only the repository (sample_images/, the
shipped weights) and its Python dependencies; --json FILE writes the numbers. On the
device machine (its image lacks the encoder's wheels: benchmarks/device/fetch_wheels.sh
here first, .whl carried):
    source benchmarks/device/device_env.sh && $py benchmarks/detector_gpu.py --device cuda
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from PIL import Image, ImageOps  # noqa: E402

from capindex.model.detector import INPUT_SIZE, Detector, letterbox_batch  # noqa: E402
from capindex.model.preprocess import load_pixels  # noqa: E402


def sample_batch(folder: Path, count: int) -> tuple[torch.Tensor, list[tuple[int, int]], int]:
    """(uint8 pixels (count, 3, 224, 224), each photo's (width, height), distinct photos)."""
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    pixels, sizes = [], []
    for p in paths:
        with Image.open(p) as img:
            sizes.append(ImageOps.exif_transpose(img).size)
        pixels.append(load_pixels(p))
    picks = [i % len(paths) for i in range(count)]
    return torch.stack([pixels[i] for i in picks]), [sizes[i] for i in picks], min(count, len(paths))


def timed(fn: Callable[[], object], rounds: int, device: torch.device) -> dict:
    """Median wall ms and process CPU ms of `fn` over `rounds` calls, after one warm-up."""
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    fn()
    sync()
    walls, cpus = [], []
    for _ in range(rounds):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        sync()
        walls.append((time.perf_counter() - t0) * 1000)
        cpus.append((time.process_time() - c0) * 1000)
    return {"ms": statistics.median(walls), "min_ms": min(walls), "cpu_ms": statistics.median(cpus)}


def detect_fn(det: Detector, pixels: torch.Tensor, sizes, batch: int) -> Callable[[], object]:
    """What pipeline/detect.py does, `batch` images a call."""
    def run():
        for i in range(0, len(pixels), batch):
            boxes, ratios = letterbox_batch(pixels[i:i + batch], sizes[i:i + batch], det.input_size)
            det.detect_batch(boxes, ratios, sizes[i:i + batch])
    return run


def labels(found) -> list[tuple[str, ...]]:
    return [tuple(sorted(d.label for d in dets)) for dets in found]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", default="1,2", help="CPU: torch/onnxruntime threads to try")
    parser.add_argument("--images", type=Path, default=ROOT / "sample_images")
    parser.add_argument("--skip-captioner", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()
    device = torch.device(args.device)
    on_gpu = device.type == "cuda"
    pixels, sizes, distinct = sample_batch(args.images, args.batch)
    n = len(pixels)
    rows: list[dict] = []

    def add(what: str, backend: str, threads, batch: int, result: dict, images: int = n) -> dict:
        row = {"what": what, "backend": backend, "threads": threads, "batch": batch,
               "images": images, **result,
               "images_per_s": images / result["ms"] * 1000,
               "cpu_ms_per_image": result["cpu_ms"] / images}
        rows.append(row)
        return row

    if on_gpu:
        gpu_pixels = pixels.to(device)
        det = Detector.load(device=device)  # the torch port
        torch.cuda.reset_peak_memory_stats(device)
        detect = add("detect (letterbox + network + NMS)", "torch", "-", n,
                     timed(detect_fn(det, gpu_pixels, sizes, n), args.rounds, device))
        detect["peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        add("  copy of the uint8 batch to the GPU", "-", "-", n,
            timed(lambda: pixels.to(device), args.rounds, device))
        boxes, ratios = letterbox_batch(gpu_pixels, sizes, det.input_size)
        add("  letterbox", "torch", "-", n,
            timed(lambda: letterbox_batch(gpu_pixels, sizes, det.input_size), args.rounds, device))
        bgr = boxes.flip(1).float()
        for name, dtype, layout in (("fp32", torch.float32, torch.contiguous_format),
                                    ("fp32 channels-last", torch.float32, torch.channels_last),
                                    ("fp16", torch.float16, torch.contiguous_format),
                                    ("bf16", torch.bfloat16, torch.contiguous_format)):
            model = det.model if name == "fp32" else \
                Detector.load(device=device).model.to(dtype, memory_format=layout)
            x = bgr.to(dtype).contiguous(memory_format=layout)

            def network(model=model, x=x):
                with torch.inference_mode():
                    return model(x)
            add(f"  network alone, {name}", "torch", "-", n, timed(network, args.rounds, device))
        # The photos' labels as a GPU ingest finds them, and as a CPU ingest does (the
        # letterbox on the CPU, onnxruntime): the same, unless a score sits at the threshold.
        raw = det.raw_output(boxes)
        add("  threshold + boxes + NMS (decode_batch)", "torch", "-", n,
            timed(lambda: det.decode_batch(raw, ratios, sizes), args.rounds, device))
        found = labels(det.detect_batch(boxes, ratios, sizes)[:distinct])
        cpu_boxes, cpu_ratios = letterbox_batch(pixels[:distinct], sizes[:distinct], det.input_size)
        reference = labels(Detector.load(threads=2).detect_batch(cpu_boxes, cpu_ratios,
                                                                 sizes[:distinct]))
        agreement = {"photos": distinct, "gpu": found, "cpu_onnxruntime": reference,
                     "same_labels_as_onnxruntime": sum(a == b for a, b in zip(found, reference))}
        threads = ["-"]
    else:
        agreement = None
        threads = [int(t) for t in args.threads.split(",")]
        for t in threads:
            torch.set_num_threads(t)
            for backend in ("onnxruntime", "torch"):
                det = Detector.load(threads=t, backend=backend)
                for batch in (1, n):
                    add("detect (letterbox + network + NMS)", backend, t, batch,
                        timed(detect_fn(det, pixels, sizes, batch), args.rounds, device))
    if not args.skip_captioner:
        from capindex.model import DEFAULT_EMBEDDING
        from capindex.model.captioner import Captioner

        # As ingest runs it: with the text-image embedding, guided by the batch's objects.
        source = gpu_pixels if on_gpu else pixels
        det = Detector.load(device=device)
        boxes, ratios = letterbox_batch(source, sizes, det.input_size)
        objects = [[d.to_dict() for d in dets] for dets in det.detect_batch(boxes, ratios, sizes)]
        captioner = Captioner.load(device=device, embedding=DEFAULT_EMBEDDING
                                   if DEFAULT_EMBEDDING.is_file() else None)
        for t in threads:
            if t != "-":
                torch.set_num_threads(t)
            add("caption (caption_batch)", "torch", t, n,
                timed(lambda: captioner.caption_batch(source, objects=objects), args.rounds,
                      device))
    shares = {}
    for t in threads:
        caption = next((r for r in rows if r["what"].startswith("caption") and r["threads"] == t),
                       None)
        for r in rows:
            if r["what"].startswith("detect") and r["threads"] == t and r["batch"] == n and caption:
                shares[f"{r['backend']} threads={t}"] = r["ms"] / (r["ms"] + caption["ms"])

    gpu_name = torch.cuda.get_device_name(device) if on_gpu else None
    print(f"{n} images ({distinct} sample photos repeated), {args.rounds} rounds, device {device}"
          f"{f' ({gpu_name})' if gpu_name else ''}, torch {torch.__version__}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}, input {INPUT_SIZE}")
    print(f"{'what':40} {'backend':>11} {'thr':>3} {'batch':>5} {'ms/batch':>9} {'img/s':>8} "
          f"{'cpu ms/img':>10}")
    for r in rows:
        per_call = r["ms"] * r["batch"] / r["images"]
        print(f"{r['what']:40} {r['backend']:>11} {r['threads']!s:>3} {r['batch']:>5} "
              f"{per_call:9.1f} {r['images_per_s']:8.0f} {r['cpu_ms_per_image']:10.2f}"
              + (f"   peak {r['peak_gib']:.2f} GiB" if "peak_gib" in r else ""))
    for key, share in shares.items():
        print(f"detector's share of detect + caption ({key}): {share:.0%}")
    if agreement:
        print(f"labels equal to onnxruntime's (CPU) on {agreement['same_labels_as_onnxruntime']} "
              f"of {agreement['photos']} photos")
    if args.json:
        args.json.write_text(json.dumps({
            "device": str(device), "gpu": gpu_name, "torch": torch.__version__,
            "input_size": INPUT_SIZE, "images": n, "rounds": args.rounds, "rows": rows,
            "detector_share": shares, "agreement": agreement}, indent=1))


if __name__ == "__main__":
    main()
