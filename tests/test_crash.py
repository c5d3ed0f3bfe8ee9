"""Killing ingest mid-run (kill -9, Ctrl-C) loses nothing committed; the next run finishes
the job without duplicates; search works while an ingest runs. Real subprocesses."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fakes import FakeCaptioner, solid
from helpers import check_library

from capindex.store.library_dir import LibraryDir as Library

RUNNER = Path(__file__).with_name("run_fake_ingest.py")
COUNT = 60


@pytest.fixture
def many(tmp_path) -> Path:
    root = tmp_path / "many"
    for i in range(COUNT):
        solid(root / f"img-{i:02d}.jpg", ((i * 37) % 256, (i * 91) % 256, (i * 53) % 256))
    return root


def start_ingest(folder: Path, library: Path, workers: int, delay: float = 0.25):
    """`capindex ingest` in its own process group, captioning 2 images per `delay` seconds
    and writing Parquet row groups of 4 rows."""
    return subprocess.Popen(
        [sys.executable, str(RUNNER), str(delay), "4", "ingest", str(folder), "--batch-size", "2",
         "--workers", str(workers)],
        env={**os.environ, "CAPINDEX_HOME": str(library)}, start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def committed(library: Path) -> int:
    try:
        with sqlite3.connect(f"file:{library / 'catalog.sqlite'}?mode=ro", uri=True) as db:
            return db.execute("select count(*) from images").fetchone()[0]
    except sqlite3.Error:
        return 0


def wait_for(condition, proc, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"ingest ended early: {proc.communicate()}"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def cleanup(proc) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # any DataLoader worker left behind
    except ProcessLookupError:
        pass
    proc.communicate()


def test_kill_9_then_rerun(cli, many, capindex_home):
    proc = start_ingest(many, capindex_home, workers=1)
    try:
        from capindex.store.keyword import KeywordIndex

        index = KeywordIndex(capindex_home / "keyword.sqlite")
        wait_for(lambda: committed(capindex_home) >= 6 and index.doc_count() > 0, proc)

        # search works while the ingest runs (SQLite WAL readers)
        result = cli("search", "picture")
        assert result.exit_code == 0, result.output
        assert "img-" in result.stdout
        # a second writer is refused
        result = cli("ingest", many, "--workers", "0")
        assert result.exit_code == 1 and "another capindex ingest" in result.stderr

        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
        assert list((capindex_home / "parquet").glob("*.parquet.partial"))  # killed mid-part
        with Library(capindex_home).open_catalog() as catalog:
            before = {row["path"]: row for row in catalog.rows()}
        assert 6 <= len(before) < COUNT
    finally:
        cleanup(proc)

    again = FakeCaptioner()
    result = cli("ingest", many, "--workers", "0", captioner=again)
    assert result.exit_code == 0, result.output
    assert result.stderr.startswith(f"{COUNT - len(before)} new, {len(before)} unchanged, ")
    assert again.captioned == COUNT - len(before)  # nothing committed is captioned twice
    rows = check_library(capindex_home)  # no duplicates in SQLite, Parquet or the index
    assert len(rows) == COUNT and all(r["status"] == "ok" for r in rows.values())
    for path, old in before.items():
        assert (rows[path]["id"], rows[path]["caption"], rows[path]["ingested_at"]) == \
            (old["id"], old["caption"], old["ingested_at"])


@pytest.mark.parametrize("presses", [1, 2])
def test_ctrl_c_then_rerun(cli, many, capindex_home, presses):
    proc = start_ingest(many, capindex_home, workers=1)
    try:
        wait_for(lambda: committed(capindex_home) >= 6, proc)
        for _ in range(presses):
            os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C reaches the whole process group
            time.sleep(0.05)
        _, stderr = proc.communicate(timeout=60)
    finally:
        cleanup(proc)
    assert proc.returncode == 130, stderr
    assert "stopping after the current batch (Ctrl-C again to stop now)" in stderr
    assert stderr.rstrip().endswith(
        "interrupted: what was written is kept; run the same command again to finish")
    assert "Traceback" not in stderr
    saved = committed(capindex_home)
    assert saved < COUNT
    if presses == 1:  # a clean stop: everything is consistent already
        assert len(check_library(capindex_home)) == saved

    result = cli("ingest", many, "--workers", "0")
    assert result.exit_code == 0, result.output
    rows = check_library(capindex_home)
    assert len(rows) == COUNT and all(r["status"] == "ok" for r in rows.values())
