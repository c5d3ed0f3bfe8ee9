"""`capindex ingest --engine ray`: the same rows as the local engine, bad files and dying
workers as error rows, a killed driver repaired by the next run. One local Ray (2 CPUs,
no dashboard) serves the module; the tests that need it are skipped without the [ray] extra."""

from __future__ import annotations

import logging
import math
import os
import shutil
import signal
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import pytest
from fakes import DyingCaptioner, exif_rotated_jpeg, solid
from helpers import check_library

import capindex
from capindex.pipeline import ray_engine
from capindex.pipeline.ray_engine import RayEngine
from capindex.pipeline.report import Events

HAVE_RAY = find_spec("ray") is not None and find_spec("ray.data") is not None
needs_ray = pytest.mark.skipif(not HAVE_RAY, reason="Ray is not installed: pip install -e '.[ray]'")
REPO = Path(__file__).resolve().parent.parent
RUNNER = Path(__file__).with_name("run_fake_ingest.py")
# Columns that differ between two libraries of the same photos: ids, write order, time.
_OWN_COLUMNS = ("id", "seq", "ingested_at")


@pytest.fixture(scope="module")
def ray_address():
    """A local Ray for the module; the engine uses it as it is. Its GCS address."""
    import fakes
    import ray
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(fakes)  # the workers do not import tests/
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             logging_level=logging.ERROR)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def alike(a, b, column: str) -> bool:
    """Equal, but for float rounding: the engines' models run with different numbers of
    torch threads (a Ray actor has the CPUs it reserves), which moves scores in the 6th
    digit. Words, labels, hashes, sizes and provenance must be equal."""
    if column == "embedding" and a is not None and b is not None:
        import numpy as np

        return np.allclose(np.frombuffer(a, "<f2"), np.frombuffer(b, "<f2"), atol=2e-3)
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-5)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(alike(a[k], b[k], column) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(alike(x, y, column) for x, y in zip(a, b))
    return a == b


def rows_of(library: Path) -> dict[str, dict]:
    return {path: {k: v for k, v in row.items() if k not in _OWN_COLUMNS}
            for path, row in check_library(library).items()}


@needs_ray
def test_both_engines_write_the_same_rows_with_the_real_models(ray_address, tmp_path):
    photos = Path(shutil.copytree(REPO / "sample_images", tmp_path / "photos"))
    solid(photos / "red.jpg", (220, 20, 20))
    solid(photos / "gray.png", colour=100, mode="L", size=(90, 60))
    exif_rotated_jpeg(photos / "rotated.jpg")
    (photos / "text.jpg").write_text("this is not a picture\n")
    (photos / "empty.jpg").write_bytes(b"")
    libraries = {}
    for engine in ("local", "ray"):
        libraries[engine] = tmp_path / f"library-{engine}"
        summary = capindex.Library(libraries[engine]).ingest(
            [photos], device="cpu", engine=engine, batch_size=4)
        assert (summary.new, summary.failed, summary.captioned) == (8, 2, 8), engine
    local, ray_rows = rows_of(libraries["local"]), rows_of(libraries["ray"])
    assert sorted(local) == sorted(ray_rows) and len(local) == 10
    for path, row in local.items():
        for column, value in row.items():
            assert alike(ray_rows[path][column], value, column), f"{path}: {column} differs"
    ok = [row for row in local.values() if row["status"] == "ok"]
    assert all(row["caption"] and row["embedding"] and row["objects"] is not None for row in ok)
    errors = {Path(p).name: row["error"] for p, row in local.items() if row["status"] == "error"}
    assert errors == {"text.jpg": "not a readable image", "empty.jpg": "empty file"}


@needs_ray
def test_a_file_that_keeps_killing_its_actor_becomes_an_error_row(ray_address, tmp_path,
                                                                   capindex_home):
    from capindex.pipeline.ingest import ingest
    from capindex.pipeline.options import IngestOptions
    from capindex.store.library_dir import LibraryDir

    photos = tmp_path / "photos"
    for k, colour in enumerate([(220, 20, 20), (20, 220, 20), (20, 20, 220)]):
        solid(photos / f"plain-{k}.jpg", colour)
    solid(photos / "poison.png", (255, 0, 255))
    skipped = []

    class Skips(Events):
        def skipped(self, path, reason):
            skipped.append((path, reason))

    # batch size 1: the chunk that dies is the file (a larger one is read again file by
    # file); one retry: the actor dies twice, is restarted, and goes on with the rest
    summary = ingest(LibraryDir(capindex_home), [str(photos)], DyingCaptioner(),
                     IngestOptions(batch_size=1), Skips(), engine=RayEngine(retries=1))
    assert (summary.new, summary.failed, summary.captioned) == (3, 1, 3)
    poison = str(photos / "poison.png")
    assert skipped == [(poison, ray_engine.WORKER_DIED)]
    rows = check_library(capindex_home)
    assert rows[poison]["status"] == "error" and rows[poison]["error"] == ray_engine.WORKER_DIED
    assert {rows[str(photos / f"plain-{k}.jpg")]["caption"] for k in range(3)} == {
        "a dark red picture", "a dark green picture", "a dark blue picture"}


@needs_ray
def test_a_killed_driver_leaves_a_library_the_next_run_completes(ray_address, tmp_path, cli):
    photos = tmp_path / "many"
    count = 30
    for i in range(count):
        solid(photos / f"img-{i:02d}.jpg", ((i * 37) % 256, (i * 91) % 256, (i * 53) % 256))
    library = Path(os.environ["CAPINDEX_HOME"])
    proc = subprocess.Popen(  # 2 images a batch, 0.3 s each, on the module's Ray
        [sys.executable, str(RUNNER), "0.3", "4", "ingest", str(photos), "--engine", "ray",
         "--address", ray_address, "--no-objects", "--batch-size", "2"],
        env={**os.environ, "CAPINDEX_HOME": str(library), "PYTHONPATH": str(REPO)},
        start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        from test_crash import committed, wait_for

        wait_for(lambda: committed(library) >= 6, proc, timeout=120)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert committed(library) < count
    result = cli("ingest", photos, "--no-objects", "--workers", "0")  # the local engine
    assert result.exit_code == 0, result.output
    rows = check_library(library)
    assert sorted(rows) == sorted(str(photos / f"img-{i:02d}.jpg") for i in range(count))
    assert all(row["status"] == "ok" for row in rows.values())


def test_without_ray_the_engine_says_how_to_install_it(cli, photos, monkeypatch):
    monkeypatch.setattr(ray_engine, "find_spec", lambda name: None)
    result = cli("ingest", photos, "--engine", "ray")
    assert result.exit_code == 1
    assert result.stderr == "Error: the Ray engine needs Ray: pip install 'capindex[ray]'\n"


def test_address_needs_the_ray_engine(cli, photos):
    result = cli("ingest", photos, "--address", "auto")
    assert result.exit_code == 2
    assert "--address needs --engine ray" in result.stderr
