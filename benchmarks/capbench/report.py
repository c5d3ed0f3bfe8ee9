"""What a benchmark says: progress lines (stderr), the results table (stdout) and JSON."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def write_json(path: Path, results: dict) -> None:
    """The results as indented JSON at `path` (its folder made as needed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    log(f"wrote {path}")


def timed(main) -> None:
    """main(), then how long it took (stderr): the device scripts' entry point."""
    started = time.monotonic()
    main()
    log(f"took {time.monotonic() - started:.1f} s")


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
    if results.get("signals"):
        g = results["signals"]
        lines += ["", f"signals: capindex ingest of {g['images']} small images, {g['rounds']} "
                      "rounds in turn (images/s, median round; rate over captions alone)"]
        for name in ("plain", "objects", "embedding", "guide", "unguided", "all"):
            e = g[name]
            lines.append(f"  {name:<10}{e['images_per_s']:>8.1f}/s  steady "
                         f"{e['steady_images_per_s']}/s  CPU {e['cpu_seconds']} s"
                         + (f"  x{e['vs_plain']:.2f} (rounds "
                            f"{', '.join(f'{r:.2f}' for r in e['rounds_vs_plain'])}), "
                            f"+{e['added_cpu_ms_per_image']} CPU-ms an image"
                            if "vs_plain" in e else ""))
        lines.append(f"  unguided / objects (the embedding's cost): {g['embedding_own']:.2f}; "
                     f"all / unguided (guided decoding's): {g['guide_own']:.2f}; load average "
                     f"{min(g['load_average']):.1f}-{max(g['load_average']):.1f}")
    if results.get("search"):
        q = results["search"]
        o = q["old_fields"]
        lines += ["", f"search: {q['documents']} rows indexed at {q['docs_per_s']:.0f}/s "
                      f"({q['index_mb']} MB; old fields only "
                      f"{o['docs_per_s']:.0f}/s, {o['index_mb']} MB); {q['queries']} keyword "
                      f"queries p50 {q['p50_ms']:.1f} ms, p95 {q['p95_ms']:.1f} ms, max "
                      f"{q['max_ms']:.1f} ms; old fields only p50 {o['p50_ms']:.1f}, p95 "
                      f"{o['p95_ms']:.1f} ms (p95 new/old {q['keyword_p95_new_vs_old']:.2f}; "
                      f"CPU p95 {q['cpu_p95_ms']:.1f} / {o['cpu_p95_ms']:.1f} ms)"]
        for mode, e in q["library"].items():
            lines.append(f"  whole search, {mode:<9} ({q['library_queries']} queries, warm): "
                         f"p50 {e['p50_ms']:.1f} ms, p95 {e['p95_ms']:.1f} ms, max "
                         f"{e['max_ms']:.1f} ms (CPU p50 {e['cpu_p50_ms']:.1f}, p95 "
                         f"{e['cpu_p95_ms']:.1f} ms)")
        for way in ("numpy", "torch"):
            e = q["query_encoding"][way]
            lines.append(f"  encoding a query, {way}: p50 {e['p50_ms']:.1f} ms, p95 "
                         f"{e['p95_ms']:.1f} ms (CPU p50 {e['cpu_p50_ms']:.1f}, p95 "
                         f"{e['cpu_p95_ms']:.1f} ms)")
    if results.get("targets"):
        lines.append("")
        for key, check in results["targets"].items():
            lines.append(f"target {key}: {check['value']} (want {check['target']}) "
                         f"{'met' if check['met'] else 'NOT met'}")
    lines.append(f"took {results['duration_s']} s")
    return "\n".join(lines)
