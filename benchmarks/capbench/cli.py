"""The throughput benchmark's options and its run: every measure, in order, into one
results dict (printed as a table, written as JSON with --out)."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from .cpu import cpu_bound
from .data import SETS, describe_set, make_set
from .ingest import run_ingest
from .machine import loadavg, machine_info
from .memory import measure_memory
from .report import format_table, log, write_json
from .search import measure_search
from .signals import measure_signals
from .stages import detect_tensors, images_ahead, measure_data_path, measure_decode, measure_model
from .summary import check_targets, set_ratios, side_by_side


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
    parser.add_argument("--queries", type=int, default=1000,
                        help="keyword queries to time on the new and the old index (default 1000)")
    parser.add_argument("--library-queries", type=int, default=300,
                        help="of those, how many go through the whole search in each mode, "
                             "keyword, hybrid and semantic (default 300)")
    parser.add_argument("--signals", action="store_true",
                        help="also ingest the small set with each signal off, --rounds times in "
                             "turn: captions alone, + objects, + embedding, + guided decoding, "
                             "all but the guide, all (the default)")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="keep the generated images here and reuse them next time "
                             "(default: a temporary folder, removed at the end)")
    parser.add_argument("--profile", type=Path, default=None,
                        help="also write a cProfile of each full ingest's main process here")
    parser.add_argument("--guide-vs-plain", action="store_true",
                        help="also measure model-only with the shipped guided decoding and "
                             "with plain decoding, alternating in each round (model/guide.py)")
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
        args.library_queries = min(args.library_queries, 5)
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
    # capindex before torch: its OpenMP setting applies here as in ingest
    import torch

    from . import capindex_api as api

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
        "signals": None,
        "search": None,
    }
    temp = Path(tempfile.mkdtemp(prefix="capindex-bench-"))
    data_dir = args.data_dir or temp / "data"
    try:
        log("loading the model")
        captioner = api.Captioner.load(args.model, device=args.device, precision=args.precision)
        options = api.tuned_options(
            api.IngestOptions(batch_size=args.batch_size, workers=args.workers,
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
        args.decodings = None
        if args.guide_vs_plain:
            from capindex.model.guide import GuideConfig, shipped_guide

            args.decodings = {
                "plain": api.Captioner.load(args.model, device=args.device,
                                            precision=args.precision, guide=GuideConfig()),
                "guided": api.Captioner.load(args.model, device=args.device,
                                             precision=args.precision, guide=shipped_guide())}
            results["settings"]["guide"] = args.decodings["guided"].decoding.get("guide")
        for name in args.sets:
            results["sets"][name] = measure_set(name, args, captioner, options, data_dir,
                                                temp, ahead)
        sets = results["sets"]
        results["ratios"].update(set_ratios(sets))
        if args.signals:
            folder = data_dir / "small"
            make_set(folder, "small", args.images)
            results["signals"] = signals = measure_signals(folder, temp, args, ahead)
            for name in ("objects", "embedding", "guide", "unguided", "all"):
                results["ratios"][f"ingest_{name}_vs_plain"] = signals[name]["vs_plain"]
            for name in ("embedding_own", "guide_own"):
                results["ratios"][f"ingest_{name}"] = signals[name]

        if args.memory_sizes:
            results["memory"] = memory = measure_memory(args, data_dir, temp, ahead)
            if memory["marginal_images_per_s"] and "small" in sets:
                # the memory runs are small images too: their added images against model-only
                results["ratios"]["small_sustained_ingest_vs_model"] = round(
                    memory["marginal_images_per_s"] / sets["small"]["model"]["images_per_s"], 3)
        if args.search_docs:
            log(f"search: indexing {args.search_docs} captions")
            results["search"] = search = measure_search(
                temp / "search", args.search_docs, args.queries, args.batch_size,
                args.library_queries)
            results["ratios"]["keyword_p95_new_vs_old_fields"] = search["keyword_p95_new_vs_old"]
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    results["machine"]["load_average_end"] = loadavg()
    results["duration_s"] = round(time.monotonic() - started, 1)
    results["targets"] = check_targets(results)
    print(format_table(results))
    if args.out:
        write_json(args.out, results)
    return results


def measure_set(name: str, args, captioner, options, data_dir: Path, temp: Path,
                ahead: int) -> dict:
    """One image set: decode, the data path, then --rounds rounds of model-only and ingest."""
    paths = make_set(data_dir / name, name, args.images)
    entry = describe_set(paths)
    log(f"{name}: decode ({options.workers} workers)")
    entry["decode"], tensors = measure_decode(paths, options, keep=min(len(paths), 1024))
    log(f"{name}: the data path alone (an instant captioner)")
    entry["data_path"] = measure_data_path(data_dir / name, temp / "library-data-path",
                                           captioner, options)
    profile = None
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
        profile = args.profile / f"ingest-{name}.prof"
    models, ingests = [], []
    decodings = {key: [] for key in args.decodings or {}}
    objects = detect_tensors(paths, tensors) if args.decodings else None
    for round_ in range(args.rounds):
        log(f"{name}: model only ({len(tensors)} images), round {round_ + 1}")
        models.append(measure_model(captioner, tensors, args.batch_size))
        for key, other in (args.decodings or {}).items():
            log(f"{name}: model only, {key} decoding, round {round_ + 1}")
            decodings[key].append(measure_model(other, tensors, args.batch_size, objects))
        log(f"{name}: capindex ingest, round {round_ + 1}")
        ingests.append(run_ingest(data_dir / name, temp / f"library-{name}", args,
                                  profile if round_ == 0 else None, ahead=ahead))
    del tensors
    entry.update(side_by_side(models, ingests))
    if decodings:
        ratios = [g["images_per_s"] / p["images_per_s"]
                  for p, g in zip(decodings["plain"], decodings["guided"])]
        entry["guided_vs_plain_model"] = round(sorted(ratios)[(len(ratios) - 1) // 2], 3)
        entry["rounds_guided_vs_plain_model"] = [round(r, 3) for r in ratios]
        entry["decodings"] = {key: [run["images_per_s"] for run in runs]
                              for key, runs in decodings.items()}
        log(f"{name}: guided/plain model-only {entry['guided_vs_plain_model']} "
            f"(rounds {entry['rounds_guided_vs_plain_model']})")
    entry["cpu_bound_ingest_vs_model"] = cpu_bound(entry["model"], entry["decode"],
                                                   os.cpu_count() or 1)
    log(f"{name}: decode {entry['decode']['images_per_s']}/s, model "
        f"{entry['model']['images_per_s']}/s, ingest {entry['ingest']['images_per_s']}/s")
    return entry
