"""Assertions about a whole library, shared by the ingest tests."""

from __future__ import annotations

from pathlib import Path

from whoosh import index as whoosh_index

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

    ix = whoosh_index.open_dir(str(library.index_dir))
    with ix.searcher() as searcher:
        docs = [(int(f["id"]), f["seq"]) for f in searcher.reader().all_stored_fields()]
    assert sorted(docs) == sorted((r["id"], r["seq"]) for r in rows if r["status"] == "ok")
    return {row["path"]: row for row in rows}
