#!/usr/bin/env python
"""Can the detector run on the captioner's 224x224 squashed pixels instead of its own decode?

    PYTHONPATH=. python scripts/detector_agreement.py /work/shared/datasets/coco-1997 \\
        --dynamic /tmp/yolox_nano_dyn.onnx        # from scripts/make_dynamic_detector.py

On the 200 hold-out images of a dataset (capindex.training.datasets.read_dataset, seed 0),
the reference is the detector's own input: the decoded photo letterboxed to 416. Each
variant's per-image label set (labels above the threshold after NMS) is compared with
the reference's: mean Jaccard (1 where both are empty), recall and precision of labels
(pooled over images), the images whose set is identical, and the recall of the
reference's surer labels (score >= 0.5, less at the mercy of the threshold). Variants:
- controls, how much labels move when the pixels change a little: "416 no antialias",
  the letterbox resized without antialiasing (as YOLOX's own cv2 preprocessing), and
  "416 JPEG q90", the photo saved again as a JPEG (quality 90) before the letterbox;
- squash224->416: the captioner's input (preprocess.load_pixels, 224x224 squashed)
  stretched back to the photo's aspect ratio and letterboxed to 416;
- letterbox S / squash224->S: the same at a smaller input S (needs --dynamic: an
  export with a free input size; the shipped one is fixed at 416);
- squash224 as is: the 224x224 squashed pixels fed unchanged (needs --dynamic);
- "squash224->416 NAME": the ingest's input given to another export of the same model
  (--also NAME=PATH, e.g. an int8 quantization), against both references;
and per image: the preprocessing's CPU ms (from the decoded photo or from the 224
tensor) and the model's (session.run, one thread). One thread throughout.
"""

from __future__ import annotations

import argparse
import io
import time
from collections import Counter, defaultdict
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from capindex.model.detector import Detector, DetectorConfig, letterbox, letterbox_pixels, summarize
from capindex.model.preprocess import load_pixels, to_pixels
from capindex.training.datasets import read_dataset


def cpu_ms(fn):
    start = time.process_time()
    result = fn()
    return result, (time.process_time() - start) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--dynamic", default=None, help="an export with free input size")
    parser.add_argument("--sizes", default="320,256,224")
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--threshold", type=float, default=None,
                        help="the detectors' score threshold (default: detector.SCORE_THRESHOLD)")
    parser.add_argument("--also", action="append", default=[], metavar="NAME=PATH",
                        help="another export of the model (fixed 416 input) to run on the "
                             "ingest's input; repeatable")
    parser.add_argument("--lost", default="squash224->416",
                        help="list the reference labels this variant misses most often")
    args = parser.parse_args()
    torch.set_num_threads(1)

    dataset = read_dataset(args.dataset)
    paths = [dataset.image_dir / name for name in dataset.val[: args.count]]
    config = DetectorConfig(threshold=args.threshold) if args.threshold else None
    fixed = Detector.load(threads=1, config=config)
    dynamic = {}
    if args.dynamic:
        for size in [int(s) for s in args.sizes.split(",")]:
            dynamic[size] = Detector.load(args.dynamic, threads=1, config=config, input_size=size)

    def run(det: Detector, pixels: torch.Tensor, ratio: float):
        (found,), ms = cpu_ms(lambda: det.detect_batch(pixels[None], [ratio]))
        return {e["label"]: e["score"] for e in summarize(found)}, ms

    others = {name: Detector.load(path, threads=1, config=config)
              for name, path in (a.split("=", 1) for a in args.also)}
    for det in [fixed, *dynamic.values(), *others.values()]:  # warm up: first runs allocate
        run(det, torch.zeros(3, det.input_size, det.input_size, dtype=torch.uint8), 1.0)

    def plain_bilinear(photo: Image.Image, size: int):
        """Control 1: the letterbox without antialiasing (as YOLOX's own cv2 INTER_LINEAR)."""
        pixels = to_pixels(photo)
        ratio = min(size / photo.height, size / photo.width)
        new_h, new_w = int(photo.height * ratio), int(photo.width * ratio)
        out = torch.full((3, size, size), 114, dtype=torch.uint8)
        out[:, :new_h, :new_w] = F.interpolate(pixels[None].float(), size=(new_h, new_w),
                                               mode="bilinear").round().clamp(0, 255)[0]
        return out, ratio

    def recompressed(photo: Image.Image, size: int):
        """Control 2: the photo saved again as a JPEG at quality 90, then letterboxed."""
        buffer = io.BytesIO()
        photo.save(buffer, "JPEG", quality=90)
        with Image.open(buffer) as again:
            return letterbox(again.convert("RGB"), size)

    labels = defaultdict(list)  # variant -> per-image {label: max score}
    prep_ms = defaultdict(float)
    model_ms = defaultdict(float)
    for path in paths:
        with Image.open(path) as img:
            photo = ImageOps.exif_transpose(img).convert("RGB")  # decoded in full
        small = load_pixels(path)  # (3, 224, 224) the captioner's input
        original = photo.size
        variants = {  # name -> (detector, () -> (letterbox pixels, ratio))
            "letterbox 416": (fixed, partial(letterbox, photo, 416)),
            "416 no antialias": (fixed, partial(plain_bilinear, photo, 416)),
            "416 JPEG q90": (fixed, partial(recompressed, photo, 416)),
            "squash224->416": (fixed, partial(letterbox_pixels, small, 416, original))}
        for size, det in dynamic.items():
            variants[f"letterbox {size}"] = (det, partial(letterbox, photo, size))
            variants[f"squash224->{size}"] = (det, partial(letterbox_pixels, small, size, original))
        for name, det in others.items():
            variants[f"squash224->416 {name}"] = (det, partial(letterbox_pixels, small, 416,
                                                               original))
        if 224 in dynamic:  # ratio 1: boxes are in squashed pixels, only labels compared
            variants["squash224 as is"] = (dynamic[224], partial(tuple, (small, 1.0)))
        for name, (det, prepare) in variants.items():
            (pixels, ratio), ms = cpu_ms(prepare)
            prep_ms[name] += ms
            found, ms = run(det, pixels, ratio)
            model_ms[name] += ms
            labels[name].append(found)

    n = len(paths)
    scored = labels["letterbox 416"]
    ref = [set(r) for r in scored]
    sure = [{k for k, v in r.items() if v >= 0.5} for r in scored]  # the reference's surer labels
    print(f"{n} images of {args.dataset} (hold-out), threshold {fixed.config.threshold}, "
          f"reference: letterbox 416 ({sum(map(len, ref))} labels, "
          f"{sum(1 for r in ref if r)} images with any)")
    print(f"{'variant':18} {'jaccard':>7} {'recall':>6} {'precis':>6} {'same':>5} "
          f"{'labels':>6} {'rec@.5':>6} {'prep ms':>7} {'model ms':>8}")
    for name, found in labels.items():
        sets = [set(f) for f in found]
        jac = sum(len(a & r) / len(a | r) if a | r else 1.0 for a, r in zip(sets, ref)) / n
        hit = sum(len(a & r) for a, r in zip(sets, ref))
        recall = hit / max(1, sum(map(len, ref)))
        precision = hit / max(1, sum(map(len, sets)))
        same = sum(a == r for a, r in zip(sets, ref))
        recall_sure = sum(len(a & r) for a, r in zip(sets, sure)) / max(1, sum(map(len, sure)))
        print(f"{name:18} {jac:7.3f} {recall:6.3f} {precision:6.3f} {same:5d} "
              f"{sum(map(len, sets)):6d} {recall_sure:6.3f} {prep_ms[name] / n:7.2f} "
              f"{model_ms[name] / n:8.1f}")
    ingest = [set(r) for r in labels["squash224->416"]]  # what ingest stores today
    for name in others:
        found = [set(f) for f in labels[f"squash224->416 {name}"]]
        jac = sum(len(a & r) / len(a | r) if a | r else 1.0 for a, r in zip(found, ingest)) / n
        same = sum(a == r for a, r in zip(found, ingest))
        print(f"squash224->416 {name} against squash224->416 (today's ingest): Jaccard "
              f"{jac:.3f}, identical label sets {same} of {n}")
    if args.lost in labels:
        lost = Counter(k for a, r in zip(labels[args.lost], ref) for k in r - set(a))
        added = Counter(k for a, r in zip(labels[args.lost], ref) for k in set(a) - r)
        print(f"{args.lost} misses: {dict(lost.most_common(12))}; "
              f"adds: {dict(added.most_common(8))}")


if __name__ == "__main__":
    main()
