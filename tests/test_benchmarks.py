"""benchmarks/throughput.py (the benchmarks.capbench package) runs and writes its JSON.

Benchmarks are not tests: this only checks that the script works end to end on
a tiny set (--quick, a small random model), not what its numbers are, and that the
pieces its numbers come from compute what they say.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from PIL import Image

from benchmarks.capbench import cpu, data, ingest, memory, summary, watch

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "throughput.py"


def test_quick_run_writes_every_measure_as_json(tmp_path, tiny_checkpoint):
    out = tmp_path / "results.json"
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--sets", "small", "--model", str(tiny_checkpoint),
         "--device", "cpu", "--out", str(out)],
        capture_output=True, text=True, timeout=600)  # a busy machine
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads(out.read_text())

    assert {"machine", "settings", "sets", "ratios", "memory", "search", "targets",
            "duration_s"} <= set(data)
    assert {"cpu", "logical_cpus", "gpu", "torch", "load_average_start"} <= set(data["machine"])
    assert data["settings"]["model_id"] == "tiny"
    small = data["sets"]["small"]
    assert (small["width"], small["height"], small["images"]) == (500, 375, 4)
    assert small["decode"]["images_per_s"] > 0 and small["decode"]["failed"] == 0
    assert small["model"]["images_per_s"] > 0 and small["model"]["images"] == 4
    assert small["decode"]["cpu_ms_per_image"] > 0 and small["model"]["cpu_ms_per_image"] > 0
    assert small["model"]["cores_busy"] > 0
    assert "cpu_bound_ingest_vs_model" in small
    assert small["data_path"]["images_per_s"] > 0 and small["data_path"]["main_cpu_ms_per_image"] > 0
    ingest = small["ingest"]
    assert ingest["captioned"] == 4 and ingest["images_per_s"] > 0
    assert ingest["cpu_seconds"] > 0 and ingest["cores_busy"] > 0
    assert ingest["steady_images_per_s"] is None  # 4 images: no steady part to measure
    assert small["steady_ingest_vs_model"] is None
    assert ingest["peak_rss_mb"] > 50 and ingest["tree_peak_rss_mb"] >= ingest["peak_rss_mb"] / 2
    assert data["ratios"]["small_ingest_vs_model"] == small["ingest_vs_model"] > 0
    search = data["search"]
    assert search["documents"] == 500 and search["docs_per_s"] > 0
    assert search["queries"] == 20 and search["queries_with_hits"] > 0
    assert 0 < search["p50_ms"] <= search["p95_ms"] <= search["max_ms"]
    assert search["old_fields"]["p95_ms"] > 0 and search["keyword_p95_new_vs_old"] > 0
    assert search["library_queries"] == 5
    for mode in ("keyword", "hybrid", "semantic"):
        assert 0 < search["library"][mode]["p50_ms"] <= search["library"][mode]["p95_ms"]
    assert search["query_encoding"]["numpy"]["p50_ms"] > 0
    assert data["signals"] is None  # only with --signals (test_signals_side_by_side)
    assert data["memory"] is None  # --quick skips the scaling runs
    assert {"small_ingest_vs_model", "search_p95_ms", "search_docs_per_s"} <= set(data["targets"])
    # the table on stdout
    assert "ingest/s" in result.stdout and "search:" in result.stdout


def test_large_images_are_distinct_12_megapixel_camera_jpegs(tmp_path):
    paths = data.make_set(tmp_path / "large", "large", 2)
    assert len({p.read_bytes()[:64] for p in paths}) == 2  # a comment makes each file unique
    for path in paths:
        with Image.open(path) as img:
            assert img.format == "JPEG" and img.size == (4000, 3000)
            assert img.getexif()[0x010F] == "BenchCam"
        assert path.stat().st_size > 1_000_000  # textured like a photo, not a smooth upscale
    # a second call reuses the files
    mtimes = [p.stat().st_mtime_ns for p in paths]
    assert data.make_set(tmp_path / "large", "large", 2) == paths
    assert [p.stat().st_mtime_ns for p in paths] == mtimes


def test_small_images_are_the_same_whatever_the_set_size(tmp_path):
    three = data.make_set(tmp_path / "a", "small", 3)
    two = data.make_set(tmp_path / "b", "small", 2)
    assert [p.read_bytes() for p in two] == [p.read_bytes() for p in three[:2]]
    assert len({p.read_bytes() for p in three}) == 3
    with Image.open(three[0]) as img:
        assert img.size == (500, 375)
    # a smaller set is taken from a larger one already made, without remaking it
    mtimes = [p.stat().st_mtime_ns for p in three]
    assert data.make_set(tmp_path / "a", "small", 2) == three[:2]
    assert [p.stat().st_mtime_ns for p in three] == mtimes


def test_rounds_report_the_median_run_and_the_median_ratio():
    models = [{"images_per_s": r} for r in (70.0, 50.0, 60.0)]
    ingests = [{"images_per_s": r, "peak_rss_mb": m, "tree_peak_rss_mb": m + 1,
                "tree_peak_pss_mb": None} for r, m in ((63.0, 900), (40.0, 950), (54.0, 920))]
    entry = summary.side_by_side(models, ingests)
    assert entry["model"]["images_per_s"] == 60.0 and entry["ingest"]["images_per_s"] == 54.0
    assert entry["model"]["rounds_images_per_s"] == [70.0, 50.0, 60.0]
    assert entry["rounds_ingest_vs_model"] == [0.9, 0.8, 0.9]
    assert entry["ingest_vs_model"] == 0.9  # the median of the rounds' ratios
    assert entry["ingest"]["peak_rss_mb"] == 950  # memory: the largest peak of any round


def test_cpu_bound_is_the_models_share_of_the_cpu_time_when_it_fills_the_cores():
    decode = {"cpu_ms_per_image": 9.0}
    assert cpu.cpu_bound({"cpu_ms_per_image": 27.0, "cores_busy": 1.95}, decode, 2) == 0.75
    # a model that leaves cores idle (a GPU's, or few threads on many cores): no such bound
    assert cpu.cpu_bound({"cpu_ms_per_image": 27.0, "cores_busy": 1.2}, decode, 2) is None


def test_steady_rate_leaves_out_the_start_and_the_images_decoded_ahead():
    # a slow first batch (workers' start), then 16 images every 0.25 s; the last 64 images
    # (the workers' buffers) go faster, the model then running alone
    points = [(0.0, 0), (0.5, 16)]
    points += [(0.5 + 0.25 * k, 16 + 16 * k) for k in range(1, 12)]  # up to 192 at 3.25 s
    points += [(3.25 + 0.2 * k, 192 + 16 * k) for k in range(1, 5)]  # up to 256 at 4.05 s
    rate = ingest.steady_rate(points, total=256, ahead=64)
    assert rate == round((192 - 32) / (3.25 - 0.75), 2) == 64.0  # from 32 (>= 10%) to 192
    assert ingest.steady_rate(points, total=256, ahead=0) > rate  # with the fast tail it is higher
    assert ingest.steady_rate(points[:3], total=48, ahead=32) is None  # too short for a steady part


def test_progress_clock_reads_the_bar_counts_even_when_a_refresh_arrives_in_pieces():
    import os
    import time

    read, write = os.pipe()
    clock = watch.ProgressClock(read, time.perf_counter())
    clock.start()
    for piece in ("\rcaptioning:  5%|\u2588 | 16/300 [00:00<00:04, 60.1 images/s]",
                  "\rcaptioning: 10%|\u2588 | 3", "2/300 [00:00<00:04, 6",
                  "2.0 images/s]\r\n300 new; 300 captioned in 5.0 s (60.4 images/s)\r\n"):
        os.write(write, piece.encode())
        time.sleep(0.05)
    os.close(write)
    clock.join(timeout=5)
    assert [count for _, count in clock.points] == [16, 32]
    assert clock.points[0][0] < clock.points[1][0]
    assert ingest.SUMMARY.search(clock.text).group(1) == "300"


def test_without_pseudo_terminals_the_ingest_writes_to_a_pipe(monkeypatch):
    import os

    def no_terminal():
        raise OSError("out of pty devices")

    monkeypatch.setattr(watch.pty, "openpty", no_terminal)
    read, write = watch.terminal()
    os.write(write, b"0/300")
    os.close(write)
    assert os.read(read, 16) == b"0/300" and not os.isatty(read)
    os.close(read)


def test_sustained_rate_is_what_the_larger_run_adds():
    # 300 images in 5 s and 3000 in 47 s: 2700 more images in 42 s more
    small, large = {"images": 300, "images_per_s": 60.0}, {"images": 3000, "images_per_s": 3000 / 47}
    assert memory.marginal_rate(small, large) == round(2700 / 42, 2)
    five_seconds_more = {"images": 600, "images_per_s": 60.0}  # noise, not a rate
    assert memory.marginal_rate(small, five_seconds_more) is None


def test_ratios_set_each_sets_ingest_against_its_model_and_12_mp_against_small():
    def entry(decode, model, ingest, steady, ratio, steady_ratio):
        return {"decode": {"images_per_s": decode}, "model": {"images_per_s": model},
                "ingest": {"images_per_s": ingest, "steady_images_per_s": steady},
                "ingest_vs_model": ratio, "steady_ingest_vs_model": steady_ratio}

    sets = {"small": entry(600.0, 70.0, 60.0, 66.0, 0.86, 0.94),
            "large": entry(45.0, 75.0, 30.0, None, 0.4, None)}
    assert summary.set_ratios(sets) == {
        "small_ingest_vs_model": 0.86, "small_steady_ingest_vs_model": 0.94,
        "large_ingest_vs_model": 0.4,  # no steady part: no steady ratios
        "large_vs_small_decode": 0.075, "large_vs_small_model": round(75 / 70, 3),
        "large_vs_small_ingest": 0.5}
    assert summary.set_ratios({"small": sets["small"]}) == {
        "small_ingest_vs_model": 0.86, "small_steady_ingest_vs_model": 0.94}


def test_bad_options_are_refused():
    result = subprocess.run([sys.executable, str(SCRIPT), "--sets", "huge"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "unknown set 'huge'" in result.stderr


def test_signals_side_by_side(monkeypatch, tmp_path):
    from benchmarks.capbench import signals

    # (objects, embedding, guide) -> each round's rate; CPU seconds: 100 / rate
    rates = {(False, False, False): [10.0, 20.0, 10.0], (True, False, False): [8.0, 14.0, 7.0],
             (False, True, False): [9.5, 19.0, 9.0], (False, False, True): [9.0, 18.0, 10.0],
             (True, True, False): [8.0, 14.0, 7.0], (True, True, True): [7.0, 14.0, 6.0]}
    calls = []

    def fake_ingest(folder, library, args, ahead=0, objects=True, embedding=True, guide=True):
        calls.append((objects, embedding, guide))
        rate = rates[calls[-1]][calls.count(calls[-1]) - 1]
        return {"images_per_s": rate, "steady_images_per_s": rate, "wall_seconds": 1.0,
                "cpu_seconds": 100 / rate, "cores_busy": 1.0, "peak_rss_mb": 1.0,
                "tree_peak_rss_mb": 1.0, "captioned": 4}

    monkeypatch.setattr(signals, "run_ingest", fake_ingest)
    args = type("Args", (), {"rounds": 3})()
    result = signals.measure_signals(tmp_path, tmp_path, args, ahead=0)
    ways = list(signals.WAYS.values())
    assert calls[:6] == ways  # in turn, and each round starts one way later
    assert calls[6:12] == ways[1:] + ways[:1]
    assert result["plain"]["images_per_s"] == 10.0  # the median round
    assert result["objects"]["rounds_vs_plain"] == [0.8, 0.7, 0.7]
    assert result["objects"]["vs_plain"] == 0.7
    assert result["embedding"]["vs_plain"] == 0.95
    assert result["guide"]["vs_plain"] == 0.9
    # added CPU: (100/8 - 100/10) s over 4 images in round 1, ...
    assert result["objects"]["rounds_added_cpu_ms_per_image"] == [625.0, 535.7, 1071.4]
    assert result["embedding_own"] == 1.0  # unguided / objects
    assert result["guide_own"] == 0.875  # all / unguided: median of 7/8, 14/14, 6/7
