"""The Python API: `capindex.Library` ingests, searches, exports and reports, as the CLI does."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pyarrow.parquet as pq
import pytest
from helpers import check_library

import capindex


def test_library_ingests_searches_exports_and_reports(tmp_path, photos, fake):
    lib = capindex.Library(tmp_path / "lib")
    summary = lib.ingest([photos], captioner=fake, workers=0)
    assert (summary.new, summary.failed) == (4, 0)
    check_library(lib.root)

    hits = lib.search("red")
    assert [h.path.rsplit("/", 1)[-1] for h in hits] == ["red.jpg"]
    assert hits[0].caption.endswith("red picture") and hits[0].score > 0
    assert hits[0].tags[0]["label"] == "red thing"

    assert lib.export(tmp_path / "out.parquet") == 4
    assert pq.read_table(tmp_path / "out.parquet").num_rows == 4
    stream = io.StringIO()
    assert lib.export(stream, format="jsonl") == 4
    assert sorted(json.loads(line)["path"].rsplit("/", 1)[-1]
                  for line in stream.getvalue().splitlines()) == [
        "blue.jpg", "gray.jpg", "green.png", "red.jpg"]

    info = lib.info()
    assert (info["images"], info["ok"], info["index_documents"], info["parquet_rows"]) == (4, 4, 4, 4)
    assert info["library"] == str(lib.root)


def test_library_options_reach_the_ingest(tmp_path, photos, fake):
    lib = capindex.Library(tmp_path / "lib")
    lib.ingest([photos], captioner=fake, workers=0, exclude=("*.png",))
    assert lib.info()["images"] == 3
    with pytest.raises(TypeError):
        lib.ingest([photos], captioner=fake, no_such_option=1)


def test_export_refuses_an_unknown_format_and_parquet_on_a_stream(tmp_path, photos, fake):
    lib = capindex.Library(tmp_path / "lib")
    lib.ingest([photos], captioner=fake, workers=0)
    with pytest.raises(ValueError, match="format must be one of"):
        lib.export(tmp_path / "out.txt")
    with pytest.raises(ValueError, match="Parquet needs a file name"):
        lib.export(io.StringIO(), format="parquet")


def test_default_location_follows_capindex_home(capindex_home):
    assert capindex.Library().root == capindex_home


def test_import_capindex_loads_no_heavy_module():
    code = ("import sys, capindex\n"
            "print(sorted(m for m in ('torch', 'sqlalchemy', 'pyarrow', 'whoosh') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
