#!/usr/bin/env python
"""Where one batch's time goes on a GPU, for one setting (one process per setting, since
cuDNN's choices last for the process): the first caption_batch at each new batch size
(cuDNN autotuning, under benchmark mode, happens there), then the steady state split into
the encoder and the caption search (beam and greedy; the beam search also as its Python
loop and as its batched form, side by side); --profile adds torch.profiler's table for one
batch. Prints one JSON line.

    python benchmarks/device/gpu_timing.py --photos .photos --precision bf16 --cudnn-benchmark 0
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = str(Path(__file__).resolve().parents[2])  # benchmarks.capbench and this capindex
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from benchmarks.capbench.stages import decoded  # noqa: E402


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=Path, required=True, help="a folder of JPEGs")
    parser.add_argument("--device", default="cuda", choices=["cpu", "cuda"])
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--channels-last", type=int, default=None, choices=[0, 1])
    parser.add_argument("--cudnn-benchmark", type=int, default=0, choices=[0, 1],
                        help="cuDNN benchmark mode (autotuning); capindex leaves it off")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steady", type=int, default=8, help="batches timed in the steady state")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args(argv)

    # capindex before torch, as in ingest
    import torch

    from benchmarks.capbench.capindex_api import Captioner, beam_search, beam_search_batched

    started = time.perf_counter()
    captioner = Captioner.load(device=args.device, precision=args.precision,
                               channels_last=None if args.channels_last is None
                               else bool(args.channels_last))
    torch.backends.cudnn.benchmark = bool(args.cudnn_benchmark)
    load_s = time.perf_counter() - started
    photos = sorted(args.photos.glob("*.jpg"))
    tensors = decoded(photos)
    while len(tensors) < args.batch * (args.steady + 1):
        tensors = tensors + tensors
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)

    def timed(fn) -> float:
        sync()
        t = time.perf_counter()
        fn()
        sync()
        return round((time.perf_counter() - t) * 1000, 2)

    def batch(i: int, size: int | None = None):
        size = size or args.batch
        return torch.stack(tensors[i * args.batch:i * args.batch + size])

    result = {"precision": args.precision, "channels_last": captioner.channels_last,
              "cudnn_benchmark": bool(args.cudnn_benchmark), "batch": args.batch,
              "load_s": round(load_s, 2)}
    result["first_call_ms"] = timed(lambda: captioner.caption_batch(batch(0)))
    result["second_call_ms"] = timed(lambda: captioner.caption_batch(batch(1)))
    result["new_size_40_ms"] = timed(lambda: captioner.caption_batch(batch(2, 40)))
    result["new_size_17_ms"] = timed(lambda: captioner.caption_batch(batch(3, 17)))

    encoder_ms, beam_ms, greedy_ms, whole_ms, loop_ms, batched_ms = [], [], [], [], [], []
    beam_size = captioner.beam_size
    for i in range(args.steady):
        images = batch(i)
        out = {}
        encoder_ms.append(timed(lambda: out.update(f=captioner.encode(images))))
        features, _ = out["f"]
        beam_ms.append(timed(lambda: captioner.caption_features(features)))
        search = (captioner.decoder, features.float(), captioner.vocab, beam_size,
                  captioner.max_len)
        loop_ms.append(timed(lambda: beam_search(*search)))
        batched_ms.append(timed(lambda: beam_search_batched(*search)))
        captioner.beam_size = 1
        greedy_ms.append(timed(lambda: captioner.caption_features(features)))
        captioner.beam_size = beam_size
        whole_ms.append(timed(lambda: captioner.caption_batch(images)))
    result.update(encoder_ms=_mean(encoder_ms), beam_search_ms=_mean(beam_ms),
                  beam_search_loop_ms=_mean(loop_ms), beam_search_batched_ms=_mean(batched_ms),
                  greedy_search_ms=_mean(greedy_ms), caption_batch_ms=_mean(whole_ms),
                  caption_batch_images_per_s=round(args.batch * 1000 / _mean(whole_ms), 1))
    print(json.dumps(result), flush=True)
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if args.device == "cuda"
                                               else [])
        with profile(activities=activities) as prof:
            captioner.caption_batch(batch(0))
            sync()
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))
        if args.device == "cuda":
            print(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=12))
    return result


def _mean(values: list[float]) -> float:
    return round(statistics.fmean(values), 2)


if __name__ == "__main__":
    main()
