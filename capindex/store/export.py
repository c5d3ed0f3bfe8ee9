"""`capindex export`: the whole catalogue as Parquet, CSV or JSON Lines.

Read from SQLite (the source of truth) in id order, so an export is exactly the
catalogue, whatever the state of the Parquet mirror. Columns and their order are
`capindex.store.schema.COLUMNS` (documented in docs/architecture.md). Parquet keeps
the types (tags as list<struct<label, prob>>, timestamps as timestamp[us]); CSV
writes tags as JSON text and timestamps as ISO 8601; JSON Lines writes one object
per row.

Where the rows go (`export`): a regular file, or a new name, is replaced atomically (the
rows are written to a hidden `.NAME.partial` beside it, renamed over it when complete);
a symbolic link is followed, so its target is written and the link stays; a character
or block device, a FIFO or a process substitution (`>(...)`) gets CSV or JSON Lines
streamed into it, never replaced by a file (a FIFO nobody reads is refused, not waited
on); Parquet needs a regular file. Any failure (a missing folder, a full disk, a reader
that went away) raises CapindexError in one line and leaves no partial file.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import errno
import json
import os
import stat
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from capindex.errors import CapindexError

if TYPE_CHECKING:  # pyarrow and SQLAlchemy load when an export runs, not for `--help`
    from capindex.store.catalog import Catalog

FORMATS = ("parquet", "csv", "jsonl")
SUFFIXES = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".jsonl": "jsonl",
            ".ndjson": "jsonl"}
_BATCH = 10_000


def format_from_suffix(path: str) -> str | None:
    return SUFFIXES.get(Path(path).suffix.lower())


def export(catalog: Catalog, out: Path, fmt: str) -> int:
    """Write every catalogue row to `out` (see the module docstring for what kind of `out`
    gets what); returns the row count. CapindexError when `out` cannot be written."""
    out = Path(out)
    try:
        info = os.stat(out)  # follows links, /dev/fd/N of a process substitution too
    except FileNotFoundError:
        info = None  # a new file, or a link to one
    except OSError as exc:
        raise _cannot(out, exc) from exc
    if info is not None and not stat.S_ISREG(info.st_mode):
        if stat.S_ISDIR(info.st_mode):
            raise CapindexError(f"cannot export to {out}: it is a folder")
        if fmt == "parquet":
            raise CapindexError(f"cannot export Parquet to {out}: it is a {_kind(info)}, and "
                                "Parquet needs a regular file; give a file name, or use "
                                "--format csv or jsonl")
        return _stream(catalog, out, fmt, stat.S_ISFIFO(info.st_mode))
    return _replace(catalog, out, Path(os.path.realpath(out)), fmt)


def _replace(catalog: Catalog, out: Path, target: Path, fmt: str) -> int:
    """Write `target` (the file `out` names, links followed) atomically."""
    if not target.parent.is_dir():
        raise CapindexError(f"cannot export to {out}: the folder {target.parent} does not exist")
    tmp = target.with_name(f".{target.name}.partial")
    try:
        if fmt == "parquet":
            count = _write_parquet(catalog.rows(batch=_BATCH), tmp)
        else:
            with open(tmp, "w", encoding="utf-8", newline="") as stream:
                count = write_text(catalog.rows(batch=_BATCH), fmt, stream)
        tmp.replace(target)
    except OSError as exc:  # pyarrow's I/O errors are OSErrors too
        raise _cannot(out, exc) from exc
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
    return count


def _stream(catalog: Catalog, out: Path, fmt: str, fifo: bool) -> int:
    """CSV or JSON Lines written into a device or a FIFO, as it is (never truncated or
    replaced). A FIFO is opened without waiting: nobody reading it is an error, not a hang."""
    try:
        fd = os.open(out, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if fifo and exc.errno == errno.ENXIO:
            raise CapindexError(f"cannot export to {out}: nothing is reading from the pipe") \
                from exc
        raise _cannot(out, exc) from exc
    os.set_blocking(fd, True)
    try:
        with open(fd, "w", encoding="utf-8", newline="") as stream:
            return write_text(catalog.rows(batch=_BATCH), fmt, stream)
    except OSError as exc:
        raise _cannot(out, exc) from exc


def _cannot(out: Path, exc: OSError) -> CapindexError:
    if isinstance(exc, BrokenPipeError):
        why = "the program reading it stopped early"
    else:  # pyarrow puts its own text in strerror: name the errno as the C library does
        why = os.strerror(exc.errno).lower() if exc.errno else str(exc)
    return CapindexError(f"cannot export to {out}: {why}")


def _kind(info: os.stat_result) -> str:
    mode = info.st_mode
    if stat.S_ISCHR(mode):
        return "character device"
    if stat.S_ISBLK(mode):
        return "block device"
    if stat.S_ISFIFO(mode):
        return "pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "socket"
    return "special file"


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
