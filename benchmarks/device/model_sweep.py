#!/usr/bin/env python
"""The model's knobs side by side, in one process: images/s of Captioner.caption_batch for
each precision (fp32, bf16, fp16 autocast), layout (channels-last or not) and batch size,
on the same decoded tensors; and how many captions each setting changes against fp32 on
the CPU (the default, so the reference every library was captioned with), on real photos
when --photos names a folder of them (else on the generated images).

    python benchmarks/device/model_sweep.py --out sweep.json            # on the GPU
    python benchmarks/device/model_sweep.py --device cpu --images 32 --batches 8,16 \\
        --precisions fp32 --compare 8                                  # a smoke test

Part of the prepared GPU check (gpu_benchmark.sh); throughput.py measures the whole run.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = str(Path(__file__).resolve().parents[2])  # benchmarks.capbench and this capindex
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from benchmarks.capbench.data import make_set  # noqa: E402
from benchmarks.capbench.machine import machine_info  # noqa: E402
from benchmarks.capbench.report import log, timed, write_json  # noqa: E402
from benchmarks.capbench.stages import decoded, measure_model  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", choices=["cpu", "cuda"])
    parser.add_argument("--images", type=int, default=1024, help="decoded small images to time")
    parser.add_argument("--batches", default="32,64,128,256", help="batch sizes, comma-separated")
    parser.add_argument("--precisions", default="fp32,bf16,fp16")
    parser.add_argument("--compare", type=int, default=256,
                        help="images whose captions are compared with fp32 on the CPU")
    parser.add_argument("--photos", type=Path, default=None,
                        help="a folder of photos for the comparison (its first --compare JPEGs)")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="where the generated JPEGs are kept (made once)")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    args.batches = [int(b) for b in args.batches.split(",")]
    args.precisions = args.precisions.split(",")
    return args


def captions(captioner, tensors: list, batch_size: int = 64) -> list[str]:
    import torch

    out = []
    for i in range(0, len(tensors), batch_size):
        out += [c.text for c in captioner.caption_batch(torch.stack(tensors[i:i + batch_size]))]
    return out


def main(argv=None) -> dict:
    args = parse_args(argv)
    import torch

    from benchmarks.capbench.capindex_api import Captioner  # capindex before torch, as in ingest

    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="capindex-sweep-"))
    paths = make_set(data_dir / "small", "small", args.images)
    tensors = decoded(paths)
    compared = tensors[:args.compare]
    if args.photos:
        photos = sorted(args.photos.glob("*.jpg"))[:args.compare]
        compared = decoded(photos)

    log(f"reference: fp32 captions of {len(compared)} images on the CPU")
    reference = captions(Captioner.load(device="cpu", precision="fp32"), compared)
    results = {"benchmark": "capindex-model-sweep", "machine": machine_info(),
               "images": len(tensors), "compared": len(reference),
               "compared_on": "photos" if args.photos else "generated images", "runs": []}
    for precision in args.precisions:
        for channels_last in (False, True):
            captioner = Captioner.load(device=args.device, precision=precision,
                                       channels_last=channels_last)
            same = sum(a == b for a, b in zip(captions(captioner, compared), reference))
            for batch in args.batches:
                run = measure_model(captioner, tensors, batch)
                if args.device == "cuda":
                    run["max_gpu_memory_mb"] = round(torch.cuda.max_memory_allocated() / 2**20)
                    torch.cuda.reset_peak_memory_stats()
                results["runs"].append({"precision": precision, "channels_last": channels_last,
                                        "batch_size": batch, "same_as_cpu_fp32": same, **run})
                log(f"{precision:>5} channels_last={channels_last!s:<5} batch {batch:>4}:"
                    f" {run['images_per_s']:>8.1f} images/s,"
                    f" {same}/{len(reference)} captions as fp32 on the CPU")
            del captioner
    if args.out:
        write_json(args.out, results)
    return results


if __name__ == "__main__":
    timed(main)
