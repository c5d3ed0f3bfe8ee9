"""Stage 4 of ingest: one batch goes to the catalogue, then to the stores derived from it.

Crash safety rests on one rule: SQLite is the source of truth, committed once per
batch; the Parquet mirror and the keyword index only ever receive rows that are
already committed, and each can be rebuilt from the catalogue (their `reconcile`).
Ingest reconciles at the start of every run (repairing a kill -9) and the mirror
again at the end (dropping rows this run superseded).
"""

from __future__ import annotations

from capindex.store.catalog import Catalog, Changes, Written
from capindex.store.keyword import KeywordIndex
from capindex.store.parquet import ParquetMirror


class Sinks:
    """Fan-out of one batch: commit to the catalogue, then feed the derived stores."""

    def __init__(self, catalog: Catalog, mirror: ParquetMirror, index: KeywordIndex) -> None:
        self.catalog = catalog
        self.mirror = mirror
        self.index = index

    def write(self, changes: Changes) -> Written:
        if not changes:
            return Written([], [])
        written = self.catalog.write(changes)  # committed: nothing below can lose it
        self.mirror.append(written.rows)
        self.index.update(written.rows, written.deleted)
        return written

    def close(self) -> None:
        self.mirror.finish()
        self.index.flush(final=True)  # also merges the run's small index segments

    def abandon(self) -> None:
        """After an error: drop buffers; the next run's reconcile rebuilds from the catalogue."""
        try:
            self.mirror.discard()
        finally:
            self.index.discard()
