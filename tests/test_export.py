"""`capindex export`: the whole catalogue, stable schema, read back by pyarrow (and pandas, DuckDB)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import resource
import signal
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fakes import solid

from capindex.store.schema import ARROW_SCHEMA, COLUMN_NAMES

REPO = Path(__file__).resolve().parent.parent


def capindex_env(library: Path) -> dict:
    """The environment of a `python -m capindex` subprocess: this checkout, `library`."""
    return {**os.environ, "CAPINDEX_HOME": str(library), "PYTHONPATH": str(REPO)}


@pytest.fixture
def library_with_a_failure(cli, photos):
    (photos / "broken.jpg").write_text("not a picture")
    assert cli("ingest", photos, "--workers", "0").exit_code == 3
    return photos


def test_parquet_export_reads_back_in_pyarrow(cli, library_with_a_failure, tmp_path):
    photos = library_with_a_failure
    out = tmp_path / "catalogue.parquet"
    result = cli("export", out)
    assert result.exit_code == 0
    assert result.stderr == f"exported 5 rows to {out} (parquet)\n"
    table = pq.read_table(out)
    assert table.schema.equals(ARROW_SCHEMA, check_metadata=False)
    assert table.column_names == list(COLUMN_NAMES)
    rows = {r["path"]: r for r in table.to_pylist()}
    assert rows[f"{photos}/red.jpg"]["caption"] == "a dark red picture"
    assert rows[f"{photos}/red.jpg"]["tags"][0] == {"label": "red thing", "prob": 0.9}
    assert rows[f"{photos}/broken.jpg"]["status"] == "error"
    assert rows[f"{photos}/broken.jpg"]["error"] == "not a readable image"
    assert table.schema.field("ingested_at").type == pa.timestamp("us")
    assert not list(tmp_path.glob(".*partial"))


def test_parquet_export_opens_in_pandas_and_duckdb(cli, library_with_a_failure, tmp_path):
    out = tmp_path / "catalogue.parquet"
    cli("export", out)
    import duckdb  # both come with the test extra
    import pandas

    frame = pandas.read_parquet(out)
    assert {"path", "caption"} <= set(frame.columns) and len(frame) == 5
    assert duckdb.sql(f"select count(*) from '{out}' where caption like '%red%'").fetchall() \
        == [(1,)]


def test_csv_export(cli, library_with_a_failure, tmp_path):
    out = tmp_path / "catalogue.csv"
    assert cli("export", out).exit_code == 0
    with open(out, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == COLUMN_NAMES
        rows = {r["path"]: r for r in reader}
    red = rows[f"{library_with_a_failure}/red.jpg"]
    assert json.loads(red["tags"])[0] == {"label": "red thing", "prob": 0.9}
    assert red["ingested_at"][:2] == "20" and "T" in red["ingested_at"]
    assert rows[f"{library_with_a_failure}/broken.jpg"]["caption"] == ""


def test_jsonl_export_to_stdout(cli, library_with_a_failure):
    result = cli("export", "-", "--format", "jsonl")
    assert result.exit_code == 0
    rows = [json.loads(line) for line in io.StringIO(result.stdout)]
    assert len(rows) == 5 and list(rows[0]) == list(COLUMN_NAMES)
    assert [r["id"] for r in rows] == sorted(r["id"] for r in rows)


def test_export_replaces_an_old_file(cli, photos, tmp_path):
    cli("ingest", photos, "--workers", "0")
    out = tmp_path / "c.jsonl"
    out.write_text("old\n")
    cli("export", out)
    assert len(out.read_text().splitlines()) == 4


def test_mirror_matches_export(cli, photos, tmp_path, capindex_home):
    """The library's own Parquet files hold the same rows as an export."""
    from capindex.store.parquet import ParquetMirror

    cli("ingest", photos, "--workers", "0")
    solid(photos / "later.png", (10, 200, 10))
    cli("ingest", photos, "--workers", "0")
    cli("export", tmp_path / "all.parquet")
    exported = pq.read_table(tmp_path / "all.parquet").sort_by("id")
    mirrored = ParquetMirror(capindex_home / "parquet").read().sort_by("id")
    assert mirrored.equals(exported)


# -- where OUT is not a plain new file: never replace a special file, never leave a partial --

@pytest.fixture
def ingested(cli, photos):
    assert cli("ingest", photos, "--workers", "0").exit_code == 0
    return photos


def one_error_line(result) -> str:
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]


def test_export_through_a_symlink_writes_its_target(cli, ingested, tmp_path):
    target = tmp_path / "real" / "catalogue.csv"
    target.parent.mkdir()
    target.write_text("old\n")
    link = tmp_path / "link.csv"
    link.symlink_to(target)
    assert cli("export", link).exit_code == 0
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert len(target.read_text().splitlines()) == 5
    assert not list(tmp_path.rglob(".*partial"))


def test_export_to_a_device_streams_into_it(cli, ingested, tmp_path):
    link = tmp_path / "null.jsonl"
    link.symlink_to("/dev/null")
    result = cli("export", link)
    assert result.exit_code == 0, result.output
    assert link.is_symlink() and stat.S_ISCHR(os.stat("/dev/null").st_mode)
    assert not list(tmp_path.glob(".*partial"))


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod needs root")
def test_export_never_replaces_a_device_node(cli, ingested, tmp_path):
    null = tmp_path / "dev_null"
    full = tmp_path / "dev_full"
    os.mknod(null, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    os.mknod(full, 0o666 | stat.S_IFCHR, os.makedev(1, 7))
    assert cli("export", null, "--format", "csv").exit_code == 0
    line = one_error_line(cli("export", full, "--format", "csv"))
    assert line == f"Error: cannot export to {full}: no space left on device"
    line = one_error_line(cli("export", null, "--format", "parquet"))
    assert line.startswith(f"Error: cannot export Parquet to {null}: it is a character device")
    for node in (null, full):
        assert stat.S_ISCHR(node.lstat().st_mode)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_export_to_a_fifo_streams_to_its_reader(cli, ingested, tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_text()), daemon=True)
    reader.start()
    try:
        result = cli("export", fifo, "--format", "jsonl")
    finally:
        reader.join(timeout=30)
        if reader.is_alive():  # nothing was written to the FIFO: let the reader go
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            reader.join(timeout=30)
    assert result.exit_code == 0, result.output
    assert len(received[0].splitlines()) == 4
    assert stat.S_ISFIFO(fifo.lstat().st_mode)


def test_export_to_a_fifo_nobody_reads_does_not_hang(ingested, tmp_path, capindex_home):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    proc = subprocess.run([sys.executable, "-m", "capindex", "export", str(fifo), "--format",
                           "csv"], capture_output=True, text=True, timeout=60,
                          env=capindex_env(capindex_home))
    assert proc.returncode == 1
    assert proc.stderr == f"Error: cannot export to {fifo}: nothing is reading from the pipe\n"
    assert stat.S_ISFIFO(fifo.lstat().st_mode)


def test_export_to_a_process_substitution(ingested, tmp_path, capindex_home):
    out = tmp_path / "got.csv"
    env = capindex_env(capindex_home)
    capindex = f"{sys.executable} -m capindex"
    proc = subprocess.run(["bash", "-c", f"{capindex} export >(cat > {out}) --format csv; "
                           f"wait; {capindex} export >(cat > /dev/null) --format parquet"],
                          capture_output=True, text=True, timeout=60, env=env)
    assert len(out.read_text().splitlines()) == 5
    lines = proc.stderr.splitlines()
    assert lines[0].startswith("exported 4 rows to /dev/fd/")
    assert lines[1].startswith("Error: cannot export Parquet to /dev/fd/")
    assert "Traceback" not in proc.stderr and len(lines) == 2


def test_export_into_a_missing_folder(cli, ingested, tmp_path):
    out = tmp_path / "nope" / "catalogue.parquet"
    line = one_error_line(cli("export", out))
    assert line == f"Error: cannot export to {out}: the folder {out.parent} does not exist"
    assert not (tmp_path / "nope").exists()


@pytest.fixture
def many_rows(capindex_home) -> int:
    """3,000 catalogue rows (exports of 300-600 kB), written straight to the catalogue."""
    from capindex.store.catalog import Changes, utcnow
    from capindex.store.library_dir import LibraryDir

    rows = []
    for i in range(3000):
        row = dict.fromkeys(name for name in COLUMN_NAMES if name not in ("id", "seq"))
        row.update(path=f"/photos/{i}.jpg", size=i, mtime_ns=i, caption=f"picture {i}",
                   sha256=hashlib.sha256(str(i).encode()).hexdigest(), status="ok",
                   tags=[{"label": "thing", "prob": 0.5}], ingested_at=utcnow())
        rows.append(row)
    with LibraryDir(capindex_home).open_catalog(create=True) as catalog:
        catalog.write(Changes(upserts=rows))
    return len(rows)


@pytest.mark.parametrize("name", ["catalogue.parquet", "catalogue.csv"])
def test_export_onto_a_full_disk_leaves_no_partial_file(many_rows, tmp_path, capindex_home,
                                                        name):
    """A file-size limit (RLIMIT_FSIZE, SIGXFSZ ignored) makes writes fail as a full disk does;
    100 kB leaves room for SQLite's shared-memory file (32 kB)."""
    out = tmp_path / "out" / name
    out.parent.mkdir()
    out.write_text("the old export\n")

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    proc = subprocess.run([sys.executable, "-m", "capindex", "export", str(out)],
                          capture_output=True, text=True, timeout=60, preexec_fn=small_files,
                          env=capindex_env(capindex_home))
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr == f"Error: cannot export to {out}: file too large\n"
    assert out.read_text() == "the old export\n"  # the old file is untouched
    assert sorted(p.name for p in out.parent.iterdir()) == [name]
