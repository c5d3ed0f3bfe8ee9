"""The catalogue read with Python's sqlite3 alone: the reads every search makes.

Importing SQLAlchemy takes about 0.5 s of CPU, more than all the rest of a `capindex
search` from the shell. Search reads a few rows, so `CatalogReader` makes those reads
(`has_ok_rows`, `rows`, `id_of`, `next_seq`) in plain SQL over the same read-only connection as
`Catalog`, decoding each column by the type the catalogue declares (JSON, DATETIME): rows
equal `Catalog.rows`'s. Any other call, and any SQLite error (a damaged file, say), goes
to a `Catalog` opened on first need, which loads SQLAlchemy and reports the problem as
usual (catalog.py). A catalogue written by an older capindex is read as it is (its rows
lack the newer columns) until the next ingest upgrades it.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from urllib.parse import quote

_CHUNK = 500  # ids per IN (...) clause
_DECODERS = {"JSON": json.loads, "DATETIME": datetime.fromisoformat}  # by declared type


def connect_read_only(path: Path) -> sqlite3.Connection:
    """A read-only connection; immutable where SQLite could not make its -shm file (a
    folder we cannot write) and no unmerged WAL would be ignored."""
    uri = f"file:{quote(os.fsencode(path))}?mode=ro"
    wal = path.with_name(path.name + "-wal")
    if not os.access(path.parent, os.W_OK) and not (wal.exists() and wal.stat().st_size):
        uri += "&immutable=1"
    connection = sqlite3.connect(uri, uri=True)
    connection.isolation_level = None  # BEGIN comes from the "begin" event, as for writers
    connection.execute("PRAGMA busy_timeout=10000")
    return connection


class CatalogReader:
    """Search's reads of the catalogue at `path`; `open_catalog()` gives the full Catalog
    for everything else."""

    def __init__(self, path: Path, open_catalog: Callable) -> None:
        self.path = Path(path)
        self._open_catalog = open_catalog
        self._catalog = None
        self._connection: sqlite3.Connection | None = None
        self._decoders: dict[str, Callable] = {}
        self._columns: set[str] = set()
        try:
            self._connection = connect_read_only(self.path)
            columns = self._connection.execute("PRAGMA table_info(images)").fetchall()
            tables = {name for (name,) in self._connection.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
        except sqlite3.Error:
            columns, tables = [], set()
        if not columns or "meta" not in tables:  # damaged or no catalogue: Catalog says why
            try:
                self.catalog()
            except BaseException:
                self.close()
                raise
        self._columns = {name for _, name, *_ in columns}
        self._decoders = {name: _DECODERS[kind.upper()] for _, name, kind, *_ in columns
                          if kind.upper() in _DECODERS}

    def catalog(self):
        """The full Catalog (SQLAlchemy), opened on first need."""
        if self._catalog is None:
            self._catalog = self._open_catalog()
        return self._catalog

    def __getattr__(self, name: str):
        return getattr(self.catalog(), name)

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
        if self._catalog is not None:
            self._catalog.close()

    def __enter__(self) -> CatalogReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _query(self, sql: str, params: tuple = ()) -> sqlite3.Cursor:
        return self._connection.execute(sql, params)

    def has_ok_rows(self) -> bool:
        """Whether any image is captioned (as Catalog.has_ok_rows)."""
        if self._catalog is not None:
            return self._catalog.has_ok_rows()
        try:
            return self._query("SELECT 1 FROM images WHERE status = 'ok' LIMIT 1").fetchone() \
                is not None
        except sqlite3.Error:
            return self.catalog().has_ok_rows()

    def next_seq(self) -> int:
        """The seq the next write will give (as Catalog.next_seq): it changes whenever the
        catalogue does."""
        if self._catalog is None:
            try:
                found = self._query("SELECT value FROM meta WHERE key = 'next_seq'").fetchone()
                if found is not None:
                    return int(found[0])
            except sqlite3.Error:
                pass
        return self.catalog().next_seq()

    def id_of(self, path: str) -> int | None:
        """The id of the 'ok' row at catalogue path `path`, if any (as Catalog.id_of)."""
        if self._catalog is not None:
            return self._catalog.id_of(path)
        try:
            found = self._query("SELECT id FROM images WHERE path = ? AND status = 'ok'",
                                (path,)).fetchone()
        except sqlite3.Error:
            return self.catalog().id_of(path)
        return found[0] if found else None

    def rows(self, ids: list[int] | None = None,
             columns: tuple[str, ...] | None = None) -> Iterator[dict]:
        """Whole rows of `ids` as dicts, ordered by id (as Catalog.rows); every row when None.
        `columns`: at least these columns (and `id`) of each row, those the catalogue has
        (search's hits need a few, not the vector and the n-best)."""
        if ids is None or self._catalog is not None:
            yield from self.catalog().rows(ids)
            return
        try:
            found = self._rows(sorted(ids), columns)
        except sqlite3.Error:
            found = list(self.catalog().rows(ids))
        yield from found

    def _rows(self, ids: list[int], columns: tuple[str, ...] | None) -> list[dict]:
        out = []
        names = "*" if columns is None else ", ".join(
            name for name in ("id", *columns) if name in self._columns)
        self._query("BEGIN")  # one snapshot for every chunk
        try:
            for start in range(0, len(ids), _CHUNK):
                chunk = ids[start:start + _CHUNK]
                cursor = self._query(f"SELECT {names} FROM images WHERE id IN "
                                     f"({', '.join('?' * len(chunk))}) ORDER BY id", tuple(chunk))
                names = [d[0] for d in cursor.description]
                for values in cursor:
                    row = dict(zip(names, values))
                    for name, decode in self._decoders.items():
                        if row.get(name) is not None:
                            row[name] = decode(row[name])
                    out.append(row)
        finally:
            self._query("COMMIT")
        return out
