"""`capindex export`: the whole catalogue, stable schema, read back by pyarrow (and pandas, DuckDB)."""

from __future__ import annotations

import csv
import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fakes import solid

from capindex.store.schema import ARROW_SCHEMA, COLUMN_NAMES


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
