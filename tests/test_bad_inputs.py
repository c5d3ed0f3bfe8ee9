"""Every awkward input of issue 3: one stderr line, a status=error row, the run carries on."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
from fakes import solid
from helpers import check_library

import capindex.pipeline.decode as decode
import capindex.pipeline.supervise as supervise
from capindex.errors import DecodeWorkerDied

RUNNER = Path(__file__).with_name("run_fake_ingest.py")
REPO = Path(__file__).resolve().parent.parent  # the subprocess runs this checkout's code
SAMPLES = Path(__file__).resolve().parent.parent / "sample_images"


def skipping_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("skipping ")]


def test_every_bad_input(cli, bad_inputs, capindex_home, fake):
    root, expected = bad_inputs
    result = cli("ingest", root, "--workers", "2", "--batch-size", "4")  # real DataLoader workers
    assert result.exit_code == 3, result.output
    rows = check_library(capindex_home)
    assert set(rows) == {f"{root}/{name}" for name in expected}  # no .txt, no hidden, no loop
    lines = skipping_lines(result.stderr)
    failing = {name: reason for name, reason in expected.items() if reason != "ok"}
    assert len(lines) == len(failing)
    for name, outcome in expected.items():
        row = rows[f"{root}/{name}"]
        if outcome == "ok":
            assert (row["status"], row["error"]) == ("ok", None), name
            assert row["caption"] and row["model_id"] == "fake-v1"
        else:
            assert row["status"] == "error" and row["caption"] is None, name
            assert row["error"].startswith(outcome), (name, row["error"])
            assert f"skipping {root}/{name}: {row['error']}" in lines
    assert result.stderr.splitlines()[-1].startswith(
        f"{len(expected) - len(failing)} new, 0 unchanged, 0 moved, {len(failing)} failed; ")


def test_odd_images_reach_the_model_as_they_look(cli, bad_inputs, capindex_home):
    root, _ = bad_inputs
    cli("ingest", root, "--workers", "0")
    rows = check_library(capindex_home)

    def caption(name):
        return rows[f"{root}/{name}"]["caption"]

    assert caption("cmyk.jpg") == "a dark red picture"
    assert caption("gray.png") == "a dark gray picture"
    assert caption("gray16.png") == "a bright gray picture"  # 16-bit rescaled, not clipped
    assert caption("palette-alpha.png").startswith("a dark blue picture")
    assert caption("animated.gif") == "a dark gray picture"  # first frame
    assert caption("caf\\xe9.jpg") == "a dark green picture"
    # Stored left red | right blue, EXIF orientation 6: displayed red above blue.
    assert caption("rotated.jpg").endswith("with red above blue")


def test_exif_metadata_is_recorded(cli, bad_inputs, capindex_home):
    root, _ = bad_inputs
    cli("ingest", root, "--workers", "0")
    row = check_library(capindex_home)[f"{root}/rotated.jpg"]
    assert (row["width"], row["height"], row["format"]) == (40, 80, "JPEG")  # as displayed
    assert (row["camera_make"], row["camera_model"]) == ("FakeCam", "Model 1")
    assert row["taken_at"] == datetime(2021, 7, 4, 12, 30, 45)
    assert row["gps_lat"] == pytest.approx(48.8581, abs=1e-4)
    assert row["gps_lon"] == pytest.approx(-2.2944, abs=1e-4)
    plain = check_library(capindex_home)[f"{root}/good.jpg"]
    assert (plain["width"], plain["height"], plain["taken_at"], plain["gps_lat"]) == (64, 48, None, None)
    assert len(plain["sha256"]) == 64 and plain["size"] == (root / "good.jpg").stat().st_size


def test_failed_files_are_skipped_until_retried(cli, photos, capindex_home, monkeypatch):
    real_read = decode.read_file

    def flaky(path, *limits):
        if path.endswith("red.jpg"):
            raise PermissionError(13, "Permission denied", path)
        return real_read(path, *limits)

    monkeypatch.setattr(decode, "read_file", flaky)
    result = cli("ingest", photos, "--workers", "0")
    assert result.exit_code == 3
    assert skipping_lines(result.stderr) == [f"skipping {photos}/red.jpg: permission denied"]
    monkeypatch.setattr(decode, "read_file", real_read)

    result = cli("ingest", photos, "--workers", "0")  # unchanged: not read again, not an error
    assert result.exit_code == 0
    assert "1 files failed in an earlier run and were not read again (use --retry-failed)" \
        in result.stderr
    assert check_library(capindex_home)[f"{photos}/red.jpg"]["status"] == "error"

    result = cli("ingest", photos, "--workers", "0", "--retry-failed")
    assert result.exit_code == 0
    assert "1 retried" in result.stderr
    row = check_library(capindex_home)[f"{photos}/red.jpg"]
    assert (row["status"], row["error"], row["caption"]) == ("ok", None, "a dark red picture")


def test_unreadable_file_and_folder(cli, tmp_path, capindex_home):
    """A real EACCES. As root (who reads any file) the second run drops root's
    CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH with setpriv, so the kernel refuses the open."""
    folder = tmp_path / "shared"
    solid(folder / "open.jpg")
    secret = solid(folder / "secret.jpg", (20, 220, 20))
    inside = solid(folder / "private" / "inside.jpg", (20, 20, 220))
    assert cli("ingest", folder, "--workers", "0").exit_code == 0

    secret.chmod(0)
    os.utime(secret, ns=(secret.stat().st_atime_ns, secret.stat().st_mtime_ns + 10**9))
    (folder / "private").chmod(0)
    try:
        if os.geteuid() != 0:
            result = cli("ingest", folder, "--workers", "0")
            code, stderr = result.exit_code, result.stderr
        else:
            code, stderr = _run_without_root_powers(["ingest", str(folder), "--workers", "0"],
                                                    capindex_home)
    finally:
        secret.chmod(0o644)
        (folder / "private").chmod(0o755)
    assert code == 3, stderr
    assert skipping_lines(stderr) == [f"skipping {folder}/private: permission denied",
                                      f"skipping {folder}/secret.jpg: permission denied"]
    rows = check_library(capindex_home)
    assert (rows[str(secret)]["status"], rows[str(secret)]["error"]) == ("error", "permission denied")
    assert rows[str(inside)]["status"] == "ok"  # a folder we cannot list keeps its rows


def _run_without_root_powers(args: list[str], library: Path) -> tuple[int, str]:
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: cannot make a file unreadable to root")
    drop = "-dac_override,-dac_read_search"
    proc = subprocess.run(
        [setpriv, f"--bounding-set={drop}", f"--inh-caps={drop}", sys.executable, str(RUNNER),
         "0", "1024", *args],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "CAPINDEX_HOME": str(library), "PYTHONPATH": str(REPO)})
    if proc.returncode != 3 and "setpriv" in proc.stderr:
        pytest.skip(f"setpriv cannot drop capabilities here: {proc.stderr.strip()}")
    return proc.returncode, proc.stderr


def _crash_on(names: tuple[str, ...]):
    """A read_file that kills its decode worker, as a crashing native decoder would."""
    real_read = decode.read_file

    def read(path, *limits):
        if path.endswith(names):
            os.kill(os.getpid(), signal.SIGSEGV)
        return real_read(path, *limits)

    return read


def test_a_file_that_crashes_its_decode_worker_fails_alone(cli, tmp_path, capindex_home,
                                                           monkeypatch):
    photos = tmp_path / "photos"
    for i in range(10):
        solid(photos / f"p{i}.jpg", (20 * i, 20, 20))
    crashing = ("p0.jpg", "p3.jpg", "p4.jpg", "p9.jpg")  # first, same batch, last
    real_read = decode.read_file
    monkeypatch.setattr(decode, "read_file", _crash_on(crashing))
    result = cli("ingest", photos, "--workers", "2", "--batch-size", "2")
    assert result.exit_code == 3, result.output
    assert sorted(line.split(": ")[0] for line in skipping_lines(result.stderr)) == \
        [f"skipping {photos}/{name}" for name in crashing]
    rows = check_library(capindex_home)
    for i in range(10):
        row = rows[f"{photos}/p{i}.jpg"]
        if f"p{i}.jpg" in crashing:
            assert row["status"] == "error"
            assert row["error"] == "the image decoder crashed on it (Segmentation fault)"
        else:
            assert row["status"] == "ok" and row["caption"] and row["model_id"] == "fake-v1"

    monkeypatch.setattr(decode, "read_file", real_read)
    # The next run does not read them again (so cannot crash on them) unless asked to.
    result = cli("ingest", photos, "--workers", "2")
    assert result.exit_code == 0
    assert "4 files failed in an earlier run" in result.stderr


def test_a_worker_death_that_no_file_explains_still_stops_the_run(monkeypatch):
    def dying_collate(samples):
        os.kill(os.getpid(), signal.SIGKILL)

    monkeypatch.setattr(decode, "collate", dying_collate)  # dies after its files were read
    dataset = decode.DecodeDataset([str(p) for p in sorted(SAMPLES.glob("*.jpg"))])
    with pytest.raises(DecodeWorkerDied, match=r"died between files \(Killed\)"):
        list(supervise.decode_batches(dataset, batch_size=2, workers=1))


def test_an_error_that_is_no_death_is_raised_as_it_is(monkeypatch):
    def failing_collate(samples):
        raise RuntimeError("a bug in collate")

    monkeypatch.setattr(decode, "collate", failing_collate)
    dataset = decode.DecodeDataset([str(p) for p in sorted(SAMPLES.glob("*.jpg"))])
    with pytest.raises(RuntimeError, match="a bug in collate"):
        list(supervise.decode_batches(dataset, batch_size=2, workers=1))


def test_worker_deaths_are_raised_between_batches_not_during_one():
    seen = []

    def record(signum, frame):  # stands for torch's handler
        seen.append(signum)

    def spin():  # Python runs signal handlers between bytecodes
        for _ in range(1000):
            pass

    previous = signal.signal(signal.SIGCHLD, record)
    try:
        with supervise._WorkerWatch(supervise._Tracked(decode.DecodeDataset([]), [], 1)) as watch:
            os.kill(os.getpid(), signal.SIGCHLD)
            spin()
            assert seen  # passed on at once
            watch.hold()
            before = len(seen)  # (an earlier test's worker may end meanwhile: counted too)
            os.kill(os.getpid(), signal.SIGCHLD)
            spin()
            assert len(seen) == before  # held while a batch is handled
            watch.release()
            assert len(seen) == before + 1
        assert signal.getsignal(signal.SIGCHLD) is record  # put back
    finally:
        signal.signal(signal.SIGCHLD, previous)


def _decode_all(paths: list[str], read, **limits) -> dict[int, decode.Decoded]:
    dataset = decode.DecodeDataset(paths, read=read)
    batches = supervise.decode_batches(dataset, batch_size=2, workers=2, **limits)
    return {item.index: item for batch in batches for item in batch.items}


def test_a_file_that_hangs_its_worker_is_stopped_and_fails_alone(monkeypatch):
    paths = [str(p) for p in sorted(SAMPLES.glob("*.jpg"))]

    def read(path, *limits):
        if path == paths[1]:
            time.sleep(20)  # a decoder caught in a loop (for longer than the limit)
        return decode.read_file(path, *limits)

    monkeypatch.setattr(supervise, "_CHECK_EVERY", 0.2)
    items = _decode_all(paths, read, file_time_limit=1.0)
    assert sorted(items) == list(range(len(paths)))
    assert items[1].error == "decoding took over 1 s; stopped"
    assert all(items[i].has_image for i in items if i != 1)


def test_a_slow_file_under_the_time_limit_is_waited_for(monkeypatch):
    paths = [str(p) for p in sorted(SAMPLES.glob("*.jpg"))]

    def read(path, *limits):
        if path == paths[1]:
            time.sleep(1.0)  # five checks pass while it is read
        return decode.read_file(path, *limits)

    monkeypatch.setattr(supervise, "_CHECK_EVERY", 0.2)
    items = _decode_all(paths, read, file_time_limit=30.0)
    assert sorted(items) == list(range(len(paths)))
    assert all(item.has_image for item in items.values())
