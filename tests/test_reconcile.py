"""The repair step behind crash safety: the Parquet mirror and the index follow the catalogue."""

from __future__ import annotations

import shutil
import sqlite3

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import check_library

from capindex.store.catalog import Changes
from capindex.store.keyword import KeywordIndex
from capindex.store.library_dir import LibraryDir as Library
from capindex.store.parquet import ParquetMirror


@pytest.fixture
def library(cli, photos, capindex_home) -> Library:
    assert cli("ingest", photos, "--workers", "0").exit_code == 0
    return Library(capindex_home)


def test_parquet_reconcile_fixes_every_kind_of_damage(library):
    mirror = ParquetMirror(library.parquet_dir)
    (part,) = mirror.parts()
    table = pq.read_table(part)
    shutil.copy(part, library.parquet_dir / "part-99990101T000000-copy.parquet")  # duplicates
    pq.write_table(table.slice(0, 1), part)  # three rows lost...
    (library.parquet_dir / "part-x.parquet.partial").write_bytes(b"PAR1 killed mid-write")
    stale = table.slice(0, 1).set_column(1, "seq", pa.array([999], pa.int64()))
    pq.write_table(stale, library.parquet_dir / "part-00000000T000000-stale.parquet")
    other = table.replace_schema_metadata({b"capindex.schema_version": b"0"})
    pq.write_table(other, library.parquet_dir / "part-00000000T000001-old.parquet")
    (library.parquet_dir / "part-00000000T000002-junk.parquet").write_bytes(b"junk")

    with library.open_catalog() as catalog:
        assert mirror.reconcile(catalog) > 0
        assert mirror.reconcile(catalog) == 0  # idempotent
    check_library(library.root)


def test_parquet_reconcile_drops_rows_the_catalogue_superseded(library):
    mirror = ParquetMirror(library.parquet_dir)
    with library.open_catalog() as catalog:
        red = next(r for r in catalog.rows() if r["path"].endswith("red.jpg"))
        catalog.write(Changes(relocations=[(red["id"], {"path": red["path"] + ".moved",
                                                        "size": 1, "mtime_ns": 1})]))
        catalog.write(Changes(deletes=[red["id"] + 1]))
        mirror.reconcile(catalog)
    table = mirror.read()
    assert red["path"] + ".moved" in table.column("path").to_pylist()
    assert red["path"] not in table.column("path").to_pylist()
    assert table.num_rows == 3


def test_index_reconcile(library):
    index = KeywordIndex(library.keyword_path)
    with library.open_catalog() as catalog:
        rows = list(catalog.rows())
        index.update([], [rows[0]["id"]])  # one document lost
        ghost = dict(rows[1], id=12345, seq=12345, caption="ghost")
        index.update([ghost])  # one that the catalogue does not have
        index.flush()
        assert index.doc_count() == 4
        assert index.reconcile(catalog) == 2
        assert index.reconcile(catalog) == 0
    check_library(library.root)


def test_the_index_check_trusts_only_the_file_its_writer_recorded(tmp_path):
    index = KeywordIndex(tmp_path / "keyword.sqlite")
    index.update([{"id": 1, "seq": 1, "status": "ok", "path": "/p/a.jpg", "caption": "a red bus",
                   "tags": []}])
    index.flush(final=True)
    assert index._as_recorded() and index.problem(thorough=True) is None
    # text changed under the full-text index: pages stay sound (quick_check passes), the
    # record no longer matches, so FTS5's integrity-check runs and finds it
    db = sqlite3.connect(index.path)
    db.execute("UPDATE docs_content SET c0 = 'a blue car' WHERE id = 1")
    db.commit()
    db.close()
    assert not index._as_recorded()
    assert index.problem(thorough=True).startswith("damaged: ")
