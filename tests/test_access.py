"""A folder that cannot be read right now costs nothing: its rows are kept unchanged and
come back untouched; deletion only follows a listing that lacks the file. And a file
reached through two paths in one run is catalogued once."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from fakes import solid
from helpers import check_library

import capindex
from capindex.pipeline.discover import discover

REPO = Path(__file__).resolve().parent.parent
RUNNER = Path(__file__).with_name("run_fake_ingest.py")


def skipping_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("skipping ")]


def summary_line(stderr: str) -> str:
    return next(line for line in stderr.splitlines() if " new, " in line)


def snapshot(library: Path) -> dict[str, tuple]:
    """path -> (id, seq, status, caption) of every row, after checking the stores agree."""
    return {path: (row["id"], row["seq"], row["status"], row["caption"])
            for path, row in check_library(library).items()}


@pytest.fixture
def linked(tmp_path):
    """photos/red.jpg and photos/ext -> external/ (a.jpg, deep/b.jpg): a folder on a drive."""
    photos, external = tmp_path / "photos", tmp_path / "external"
    solid(photos / "red.jpg", (220, 20, 20))
    solid(external / "a.jpg", (20, 220, 20))
    solid(external / "deep" / "b.jpg", (20, 20, 220))
    os.symlink(external, photos / "ext")
    return photos, external


def test_a_folder_link_whose_target_is_gone_keeps_its_rows(cli, linked, capindex_home, fake):
    photos, external = linked
    assert cli("ingest", photos, "--workers", "0").exit_code == 0
    before = snapshot(capindex_home)
    assert len(before) == 3

    external.rename(external.with_name("unplugged"))  # the drive is unmounted
    result = cli("ingest", photos, "--workers", "0")
    assert result.exit_code == 3, result.output
    assert skipping_lines(result.stderr) == [f"skipping {photos}/ext: target missing"]
    assert summary_line(result.stderr).startswith("0 new, 1 unchanged, 0 moved, 1 failed; ")
    assert snapshot(capindex_home) == before  # nothing deleted, nothing turned into an error

    external.with_name("unplugged").rename(external)  # plugged in again
    fake.batches.clear()
    result = cli("ingest", photos, "--workers", "0")
    assert result.exit_code == 0, result.output
    assert summary_line(result.stderr).startswith("0 new, 3 unchanged, 0 moved, 0 failed; 0 captioned")
    assert snapshot(capindex_home) == before and fake.batches == []


def test_a_root_link_whose_target_is_gone_keeps_its_rows(linked, capindex_home, fake):
    """Through the API (the CLI refuses a PATH that does not exist)."""
    photos, external = linked
    library = capindex.Library(capindex_home)
    library.ingest([photos / "ext"], captioner=fake, workers=0)
    before = snapshot(capindex_home)
    assert len(before) == 2

    shutil.rmtree(external)
    summary = library.ingest([photos / "ext"], captioner=fake, workers=0)
    assert (summary.deleted, summary.failed) == (0, 1)
    assert snapshot(capindex_home) == before


def test_a_dangling_link_that_holds_nothing_catalogued_is_not_reported(cli, tmp_path):
    photos = tmp_path / "photos"
    solid(photos / "red.jpg")
    os.symlink(tmp_path / "nowhere", photos / "notes")  # not an image name, never was a folder
    result = cli("ingest", photos, "--workers", "0")
    assert result.exit_code == 0, result.output
    assert skipping_lines(result.stderr) == []


def test_a_folder_that_is_really_gone_is_deleted(cli, linked, capindex_home):
    photos, _ = linked
    cli("ingest", photos, "--workers", "0")
    (photos / "ext").unlink()  # the listing of photos/ lacks it: its files are gone
    result = cli("ingest", photos, "--workers", "0")
    assert result.exit_code == 0
    assert "2 deleted" in summary_line(result.stderr)
    assert set(check_library(capindex_home)) == {f"{photos}/red.jpg"}


def test_discover_reports_a_folder_it_can_list_but_not_enter_once(tmp_path, monkeypatch):
    """Search permission refused (chmod a-x), as the kernel would for a user without it."""
    solid(tmp_path / "open" / "a.jpg")
    for name in ("x.jpg", "y.jpg"):
        solid(tmp_path / "locked" / name)
    locked = str(tmp_path / "locked")
    real_stat = os.stat

    def stat(path, *args, **kwargs):
        if os.fspath(path).startswith(locked + os.sep):
            raise PermissionError(13, "Permission denied", path)
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", stat)
    found = list(discover([tmp_path]))
    assert [(os.path.relpath(f.path, tmp_path), f.error, f.is_dir) for f in found] == [
        ("locked", "permission denied", True), ("open/a.jpg", None, False)]


def _run_without_root_powers(args: list[str], library: Path) -> tuple[int, str]:
    """`capindex ARGS` (fake captioner, this checkout's code) as root without
    CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH, or as the user it is, so permissions count."""
    command = [sys.executable, str(RUNNER), "0", "1024", *args]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv: permissions do not apply to root")
        drop = "-dac_override,-dac_read_search"
        command = [setpriv, f"--bounding-set={drop}", f"--inh-caps={drop}", *command]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "CAPINDEX_HOME": str(library),
                               "PYTHONPATH": str(REPO)})
    if proc.returncode not in (0, 3) and "setpriv" in proc.stderr:
        pytest.skip(f"setpriv cannot drop capabilities here: {proc.stderr.strip()}")
    return proc.returncode, proc.stderr


def test_a_folder_listed_but_not_entered_keeps_its_rows(cli, tmp_path, capindex_home):
    photos = tmp_path / "photos"
    solid(photos / "open.jpg")
    solid(photos / "private" / "x.jpg", (20, 220, 20))
    solid(photos / "private" / "y.jpg", (20, 20, 220))
    assert cli("ingest", photos, "--workers", "0").exit_code == 0
    before = snapshot(capindex_home)

    (photos / "private").chmod(0o644)  # r--: the names can be read, the files not reached
    try:
        code, stderr = _run_without_root_powers(["ingest", str(photos), "--workers", "0"],
                                                capindex_home)
    finally:
        (photos / "private").chmod(0o755)
    assert code == 3, stderr
    assert skipping_lines(stderr) == [f"skipping {photos}/private: permission denied"]
    assert snapshot(capindex_home) == before

    result = cli("ingest", photos, "--workers", "0")
    assert result.exit_code == 0
    assert summary_line(result.stderr).startswith("0 new, 3 unchanged, 0 moved, 0 failed")
    assert snapshot(capindex_home) == before


def test_a_file_reached_through_two_paths_is_catalogued_once(cli, tmp_path, capindex_home):
    """Links keep their path (the first path in walk order wins); the same file or folder
    reached again in the run, by a symlink or a hard link, is skipped."""
    photos = tmp_path / "photos"
    solid(photos / "a" / "x.jpg", (220, 20, 20))
    solid(photos / "b" / "y.jpg", (20, 220, 20))
    os.symlink(photos / "a" / "x.jpg", photos / "b" / "alias.jpg")  # a file link
    os.link(photos / "b" / "y.jpg", photos / "hard.jpg")  # a hard link
    os.symlink(photos / "b", photos / "c-link")  # a folder link
    result = cli("ingest", photos, tmp_path / "photos" / "c-link", "--workers", "0")
    assert result.exit_code == 0, result.output
    assert set(check_library(capindex_home)) == {f"{photos}/a/x.jpg", f"{photos}/b/y.jpg"}
