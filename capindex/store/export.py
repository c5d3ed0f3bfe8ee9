"""`capindex export`: the whole catalogue as Parquet, CSV or JSON Lines.

Read from SQLite (the source of truth) in id order, so an export is exactly the
catalogue, whatever the state of the Parquet mirror. Columns and their order are
`capindex.store.schema.COLUMNS` (documented in docs/architecture.md). Parquet keeps
the types (tags as list<struct<label, prob>>, timestamps as timestamp[us]); CSV
writes tags as JSON text and timestamps as ISO 8601; JSON Lines writes one object
per row.
"""

from __future__ import annotations

import base64
import csv
import json
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:  # pyarrow and SQLAlchemy load when an export runs, not for `--help`
    from capindex.store.catalog import Catalog

FORMATS = ("parquet", "csv", "jsonl")
SUFFIXES = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".jsonl": "jsonl",
            ".ndjson": "jsonl"}
_BATCH = 10_000


def format_from_suffix(path: str) -> str | None:
    return SUFFIXES.get(Path(path).suffix.lower())


def export(catalog: Catalog, out: Path, fmt: str) -> int:
    """Write every catalogue row to `out` (replaced atomically); returns the row count."""
    out = Path(out)
    tmp = out.with_name(f".{out.name}.partial")
    try:
        if fmt == "parquet":
            count = _write_parquet(catalog.rows(batch=_BATCH), tmp)
        else:
            with open(tmp, "w", encoding="utf-8", newline="") as stream:
                count = write_text(catalog.rows(batch=_BATCH), fmt, stream)
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    return count


def _write_parquet(rows: Iterable[dict], path: Path) -> int:
    import pyarrow.parquet as pq

    from capindex.store.parquet import write_rows
    from capindex.store.schema import ARROW_SCHEMA, to_arrow

    with pq.ParquetWriter(path, ARROW_SCHEMA) as writer:
        count = write_rows(writer, rows, _BATCH)
        if not count:
            writer.write_table(to_arrow([]))  # an empty catalogue still gets its schema
    return count


def write_text(rows: Iterable[dict], fmt: str, stream: TextIO) -> int:
    """Rows as CSV (with a header) or JSON Lines on a text stream; returns the row count."""
    from capindex.store.schema import COLUMN_NAMES

    count = 0
    if fmt == "csv":
        writer = csv.writer(stream)
        writer.writerow(COLUMN_NAMES)
        for row in rows:
            writer.writerow([_csv_value(row[name]) for name in COLUMN_NAMES])
            count += 1
    elif fmt == "jsonl":
        for row in rows:
            stream.write(json.dumps({name: _json_value(row[name]) for name in COLUMN_NAMES},
                                    ensure_ascii=False) + "\n")
            count += 1
    else:
        raise ValueError(f"unknown text format {fmt!r}")
    return count


def _json_value(value):
    if isinstance(value, bytes):  # the embedding
        return base64.b64encode(value).decode("ascii")
    return value.isoformat() if isinstance(value, datetime) else value


def _csv_value(value):
    if value is None:
        return ""
    if isinstance(value, list):
        return json.dumps(value, ensure_ascii=False)
    return _json_value(value)
