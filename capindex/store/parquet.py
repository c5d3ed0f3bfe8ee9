"""The Parquet mirror of the catalogue: `parquet/part-*.parquet`, rebuildable from SQLite.

It only ever receives rows already committed to the catalogue. Every write gives a row
a fresh `seq`, so "the rows the catalogue holds" is exactly the set of live seqs;
`ParquetMirror.reconcile` compares the parts with that set and fixes any difference:
rows superseded or deleted are dropped, rows missing (a killed run's unflushed buffer)
are added, duplicates cannot survive.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from capindex.store.catalog import Catalog
from capindex.store.schema import ARROW_SCHEMA, SCHEMA_VERSION, to_arrow

ROW_GROUP_SIZE = 1024
PART_GLOB = "part-*.parquet"
PARTIAL = ".partial"  # a part still being written; never matched by *.parquet


def new_part_name() -> str:
    """Sorts by creation time: part-20250101T120000-1a2b3c4d.parquet."""
    return f"part-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}.parquet"


class ParquetMirror:
    """The catalogue as Parquet files `parquet/part-*.parquet`, one part per run.

    A run appends its committed rows to `part-....parquet.partial` in row groups of
    `row_group_size` rows and renames it to `.parquet` when it ends (normally or
    by Ctrl-C). A part left `.partial` by kill -9 has no footer and is deleted
    by the next reconcile, which re-adds its rows from the catalogue.
    """

    def __init__(self, directory: Path, row_group_size: int | None = None) -> None:
        self.directory = Path(directory)
        self.row_group_size = row_group_size or ROW_GROUP_SIZE
        self._buffer: list[dict] = []
        self._writer: pq.ParquetWriter | None = None
        self._path: Path | None = None

    def parts(self) -> list[Path]:
        return sorted(self.directory.glob(PART_GLOB))

    def row_count(self) -> int:
        """Rows in the parts that can be read (see `unreadable`)."""
        return sum(rows for rows in map(_footer_rows, self.parts()) if rows is not None)

    def unreadable(self) -> list[Path]:
        """Parts whose footer cannot be read (damaged): the next reconcile replaces them."""
        return [part for part in self.parts() if _footer_rows(part) is None]

    def read(self) -> pa.Table:
        """All rows of the mirror (for tests and `capindex info`)."""
        parts = self.parts()
        if not parts:
            return ARROW_SCHEMA.empty_table()
        return pa.concat_tables(pq.read_table(p, schema=ARROW_SCHEMA) for p in parts)

    # -- one run's part ------------------------------------------------------

    def append(self, rows: list[dict]) -> None:
        """Buffer committed rows; a full buffer becomes one row group."""
        self._buffer.extend(rows)
        if len(self._buffer) >= self.row_group_size:
            self._flush()

    def _flush(self) -> None:
        if not self._buffer:
            return
        if self._writer is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._path = self.directory / new_part_name()
            self._writer = pq.ParquetWriter(self._partial(self._path), ARROW_SCHEMA)
        self._writer.write_table(to_arrow(self._buffer), row_group_size=self.row_group_size)
        self._buffer.clear()

    def finish(self) -> None:
        """Write what is buffered and publish the part under its final name."""
        self._flush()
        if self._writer is not None:
            self._writer.close()
            self._partial(self._path).replace(self._path)
            self._writer = self._path = None

    def discard(self) -> None:
        """Drop this run's part (its rows come back from the catalogue at the next reconcile)."""
        self._buffer.clear()
        if self._writer is not None:
            try:
                self._writer.close()
            finally:
                self._partial(self._path).unlink(missing_ok=True)
                self._writer = self._path = None

    @staticmethod
    def _partial(path: Path) -> Path:
        return path.with_name(path.name + PARTIAL)

    # -- repair ---------------------------------------------------------------

    def reconcile(self, catalog: Catalog) -> int:
        """Make the mirror hold each live catalogue row exactly once; returns rows changed.

        Must run under the ingest lock (no other writer). Each file operation is
        atomic (write a temporary file, then rename), so a crash here leaves a
        state the next reconcile fixes in the same way.
        """
        if not self.directory.is_dir():
            self.directory.mkdir(parents=True, exist_ok=True)
        for leftover in self.directory.glob("*" + PARTIAL):
            leftover.unlink()
        live = catalog.live_seqs()  # seq -> id
        have: set[int] = set()
        changed = 0
        for part in self.parts():
            try:
                version = (pq.read_schema(part).metadata or {}).get(b"capindex.schema_version")
                seqs = None
                if version == str(SCHEMA_VERSION).encode():
                    seqs = pq.read_table(part, columns=["seq"]).column("seq").to_pylist()
            except (OSError, pa.ArrowException, KeyError):
                seqs = None  # unreadable or from another schema version: rebuilt below
            if seqs is None:
                part.unlink()
                changed += 1
                continue
            keep = []
            for seq in seqs:
                keep.append(seq in live and seq not in have)
                have.add(seq)
            if all(keep):
                continue
            changed += keep.count(False)
            if any(keep):
                self._write_atomic(part, pq.read_table(part).filter(pa.array(keep)))
            else:
                part.unlink()
        missing = [live[seq] for seq in live if seq not in have]
        if missing:
            path = self.directory / new_part_name()
            tmp = self._partial(path)
            with pq.ParquetWriter(tmp, ARROW_SCHEMA) as writer:
                write_rows(writer, catalog.rows(missing), self.row_group_size)
            tmp.replace(path)
            changed += len(missing)
        return changed

    def _write_atomic(self, path: Path, table: pa.Table) -> None:
        tmp = self._partial(path)
        pq.write_table(table.cast(ARROW_SCHEMA), tmp, row_group_size=self.row_group_size)
        tmp.replace(path)


def _footer_rows(part: Path) -> int | None:
    try:
        return pq.ParquetFile(part).metadata.num_rows
    except (OSError, pa.ArrowException):
        return None


def write_rows(writer: pq.ParquetWriter, rows: Iterable[dict], batch_size: int) -> int:
    """Stream row dicts into `writer`, `batch_size` rows per row group; returns the count."""
    count = 0
    batch: list[dict] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= batch_size:
            writer.write_table(to_arrow(batch))
            count += len(batch)
            batch.clear()
    if batch:
        writer.write_table(to_arrow(batch))
        count += len(batch)
    return count
