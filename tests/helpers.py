"""Assertions about a whole library, shared by the ingest tests."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from capindex.store.library_dir import LibraryDir as Library
from capindex.store.parquet import ParquetMirror


def check_library(root: Path) -> dict[str, dict]:
    """Assert the catalogue, the Parquet mirror and the index agree exactly; return path -> row.

    Each catalogue row appears once in Parquet (same seq) and, when its status is
    'ok', once in the index (same id and seq); nothing else is there.
    """
    library = Library(root)
    with library.open_catalog() as catalog:
        rows = list(catalog.rows())
    paths = [row["path"] for row in rows]
    assert len(paths) == len(set(paths)), "duplicate paths in SQLite"

    assert not list(library.parquet_dir.glob("*.partial")), "a Parquet part was left unfinished"
    table = ParquetMirror(library.parquet_dir).read()
    assert sorted(table.column("seq").to_pylist()) == sorted(row["seq"] for row in rows)
    assert sorted(table.column("path").to_pylist()) == sorted(paths)

    index = sqlite3.connect(f"file:{library.keyword_path}?mode=ro", uri=True)
    try:
        docs = index.execute("SELECT id, seq FROM seqs").fetchall()
        assert sorted(docs) == sorted(index.execute(
            "SELECT docs.rowid, seqs.seq FROM docs JOIN seqs ON seqs.id = docs.rowid"))
    finally:
        index.close()
    assert sorted(docs) == sorted((r["id"], r["seq"]) for r in rows if r["status"] == "ok")
    return {row["path"]: row for row in rows}


def make_whoosh_era(root: Path) -> None:
    """Make the library at `root` look as capindex 0.x with Whoosh left it (catalogue schema
    3, the same as now): no keyword.sqlite, an `index/` folder of Whoosh's files (their
    names and a record; nothing reads their contents any more)."""
    for suffix in ("", "-wal", "-shm"):
        (root / f"keyword.sqlite{suffix}").unlink(missing_ok=True)
    index = root / "index"
    index.mkdir(mode=0o700)
    for name in ("_MAIN_2.toc", "MAIN_a1b2c3d4e5f6g7h8.trm", "MAIN_a1b2c3d4e5f6g7h8.pst",
                 "MAIN_a1b2c3d4e5f6g7h8.seg", "MAIN_WRITELOCK", "capindex-files.json"):
        (index / name).write_bytes(b"whoosh data")
