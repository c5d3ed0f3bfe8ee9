#!/usr/bin/env python
"""Would decoding JPEGs on the GPU (nvJPEG, through torchvision.io.decode_jpeg on "cuda")
beat capindex's CPU decode workers? On a GPU machine ingest is bound by decoding (12 MP
photos: about 100/s on 15 cores against a model that runs 3,400/s, docs/performance.md).
Nothing in capindex decodes on the GPU yet; this measures whether it should.

For each generated set (small 500x375, large 12 MP), in one run, images/s of:
- workers: ingest's own decode stage (DecodeDataset + decode_loader with the device's
  defaults), files -> the model's uint8 input;
- read+hash: what a GPU decode would leave to the CPU (read each file, SHA-256 it), in a
  pool of as many threads as ingest has workers;
- gpu-decode: bytes already in memory -> decode_jpeg on the device in batches of
  --decode-batch -> `preprocess.resize` (in float) -> uint8 (n, 3, 224, 224);
- gpu-decode+model: the same, then Captioner.caption_batch on each batch of the
  device's batch size, one after the other;
- model: caption_batch alone on the workers' tensors (capbench.stages.measure_model);
and how far the GPU's input is from the workers' (absolute difference in 8-bit levels:
the workers decode 12 MP frames at a reduced DCT scale, the GPU in full) and how many of
--compare captions stay the same (also on real photos, with --photos). Prints one line
per measure, writes JSON.

    python benchmarks/device/gpu_decode.py --device cuda --out gpu-results/gpu-decode.json
    python benchmarks/device/gpu_decode.py --device cpu --images 16 --compare 8   # smoke test
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = str(Path(__file__).resolve().parents[2])  # benchmarks.capbench and this capindex
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from benchmarks.capbench.data import describe_set, make_set  # noqa: E402
from benchmarks.capbench.machine import machine_info  # noqa: E402
from benchmarks.capbench.report import log, timed, write_json  # noqa: E402
from benchmarks.capbench.stages import decoded, measure_decode, measure_model  # noqa: E402


def read_and_hash(path: Path) -> bytearray:
    """The file's bytes (writable, for torch.frombuffer), hashed as a decode worker does."""
    data = bytearray(path.stat().st_size)
    with open(path, "rb") as f:
        f.readinto(data)
    hashlib.sha256(data).hexdigest()
    return data


def device_inputs(datas: list[bytearray], device: str, batch: int):
    """JPEG bytes -> the model's uint8 input (n, 3, 224, 224) on `device`, a batch at a time."""
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    from benchmarks.capbench.capindex_api import resize

    for start in range(0, len(datas), batch):
        encoded = [torch.frombuffer(d, dtype=torch.uint8) for d in datas[start:start + batch]]
        frames = decode_jpeg(encoded, mode=ImageReadMode.RGB, device=device)
        yield torch.stack([resize(f.float()).round_().clamp_(0, 255).to(torch.uint8)
                           for f in frames])


def rate(count: int, seconds: float) -> dict:
    return {"images_per_s": round(count / seconds, 2), "seconds": round(seconds, 3)}


def measure_set(name: str, paths: list[Path], captioner, args) -> dict:
    import torch

    from benchmarks.capbench.capindex_api import IngestOptions, tuned_options

    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    options = tuned_options(IngestOptions(), args.device,
                            getattr(captioner, "device_memory_gib", None))
    result = {"set": describe_set(paths), "batch_size": options.batch_size,
              "workers": options.workers, "decode_batch": args.decode_batch}

    result["workers_decode"], tensors = measure_decode(paths, options, keep=len(paths))
    with ThreadPoolExecutor(max(1, options.workers)) as pool:
        started = time.perf_counter()
        datas = list(pool.map(read_and_hash, paths))
        result["read_hash"] = rate(len(paths), time.perf_counter() - started)

    for _ in device_inputs(datas[:args.decode_batch], args.device, args.decode_batch):
        pass  # untimed: the decoder's set-up (nvJPEG handles, buffers)
    sync()
    started = time.perf_counter()
    inputs = list(device_inputs(datas, args.device, args.decode_batch))
    sync()
    result["gpu_decode"] = rate(len(paths), time.perf_counter() - started)

    result["model"] = measure_model(captioner, tensors, options.batch_size)
    sync()
    started = time.perf_counter()
    pending: list = []  # decoded in chunks of --decode-batch, captioned in batches
    for chunk in device_inputs(datas, args.device, args.decode_batch):
        pending.append(chunk)
        if sum(map(len, pending)) >= options.batch_size:
            captioner.caption_batch(torch.cat(pending))
            pending = []
    if pending:
        captioner.caption_batch(torch.cat(pending))
    sync()
    result["gpu_decode_model"] = rate(len(paths), time.perf_counter() - started)

    result["input_difference"] = compare(captioner, torch.cat(inputs), tensors, args.compare)
    for key in ("workers_decode", "read_hash", "gpu_decode", "gpu_decode_model", "model"):
        log(f"{name:>5} {key:<17} {result[key]['images_per_s']:>9.1f} images/s")
    log_difference(name, result["input_difference"])
    return result


def compare(captioner, device_input, workers_input: list, count: int) -> dict:
    """How far the device's model input is from the workers', and how many captions change."""
    import torch

    gpu = device_input[:count].cpu()
    cpu = torch.stack(workers_input[:count])
    difference = (gpu.int() - cpu.int()).abs()
    same = sum(a.text == b.text for a, b in zip(captioner.caption_batch(gpu),
                                                captioner.caption_batch(cpu)))
    return {"mean_levels": round(difference.float().mean().item(), 3),
            "max_levels": int(difference.max()), "same_captions": same, "compared": len(gpu)}


def log_difference(name: str, found: dict) -> None:
    log(f"{name:>5} input difference: mean {found['mean_levels']} levels, max "
        f"{found['max_levels']}; {found['same_captions']}/{found['compared']}"
        " captions the same")


def compare_photos(photos: list[Path], captioner, args) -> dict:
    """`compare` on real photos (the generated sets are crops with synthetic noise)."""
    import torch

    tensors = decoded(photos, args.device)
    datas = [read_and_hash(path) for path in photos]
    device_input = torch.cat(list(device_inputs(datas, args.device, args.decode_batch)))
    found = compare(captioner, device_input, tensors, len(photos))
    log_difference("photos", found)
    return found


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", choices=["cpu", "cuda"])
    parser.add_argument("--images", type=int, default=512, help="images per set")
    parser.add_argument("--sets", default="small,large")
    parser.add_argument("--decode-batch", type=int, default=64,
                        help="images per decode_jpeg call (12 MP frames take 36 MB each)")
    parser.add_argument("--compare", type=int, default=256, help="images whose inputs and "
                        "captions are compared with the workers'")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="where the generated JPEGs are kept (throughput.py's layout)")
    parser.add_argument("--photos", type=Path, default=None,
                        help="a folder of JPEGs (real photos) to compare inputs and captions on")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    from benchmarks.capbench.capindex_api import Captioner

    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="capindex-gpu-decode-"))
    captioner = Captioner.load(device=args.device, precision="fp32")
    results = {"benchmark": "capindex-gpu-decode", "machine": machine_info(), "sets": {}}
    for name in args.sets.split(","):
        paths = make_set(data_dir / name, name, args.images)
        results["sets"][name] = measure_set(name, paths, captioner, args)
    if args.photos:
        photos = sorted(args.photos.glob("*.jpg"))[:args.compare]
        results["photos"] = compare_photos(photos, captioner, args)
    if args.out:
        write_json(args.out, results)
    return results


if __name__ == "__main__":
    timed(main)
