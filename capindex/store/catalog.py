"""The SQLite catalogue, the source of truth: every SQL statement capindex runs is here.

One row per image (columns: schema.py). Each write is one transaction that gives every
row written a fresh `seq`; the Parquet mirror and the keyword index reconcile on it.

Damage is reported, never worked around: a file that is empty, not SQLite, malformed or
without the catalogue's tables raises CatalogDamaged (one line: restore it, or
`capindex ingest --rebuild`), as does SQLite's "malformed" or "not a database" at any
later statement (the `handle_error` hook); a catalogue that cannot be opened or written
(permissions, a read-only or full disk) raises CapindexError. A new catalogue is built
under a temporary name and renamed when complete, so a file named catalog.sqlite always
has its tables. Readers open it read-only (`mode=ro`; `immutable=1` in a folder they
cannot write, where SQLite could not make its shared-memory file).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from datetime import time as dt_time
from functools import lru_cache
from itertools import groupby
from pathlib import Path
from typing import NamedTuple

import sqlalchemy as sa
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from capindex.errors import CapindexError, CatalogDamaged
from capindex.store.catalog_reader import connect_read_only as _connect_read_only
from capindex.store.schema import SCHEMA_VERSION, images_table, meta_table

_T = images_table
_CHUNK = 500  # ids per IN (...) clause
_LOOKUP_CHUNK = 5000  # paths per IN (...) clause of `states_of` (SQLite allows 32,766)


# (path, size, mtime_ns, current, same_captioner): `Catalog.plan_rows`.
PlanRow = tuple[str, "int | None", "int | None", int, int]


class FileState(NamedTuple):
    """What planning an ingest needs to know about a catalogued file."""

    id: int
    size: int | None
    mtime_ns: int | None
    sha256: str | None
    status: str
    error: str | None
    model_id: str | None
    weights_hash: str | None
    detector_id: str | None  # None: objects not looked for yet
    embedding_model: str | None  # None: no vector yet


@dataclass
class Changes:
    """One batch of catalogue writes, applied in one transaction.

    upserts: whole rows (every column but id and seq; user_caption only where given),
        inserted or, for a path already catalogued, replacing that row's values (its id,
        and its user_caption unless given, are kept).
    relocations: (id, {"path", "size", "mtime_ns"}) for a moved or touched file
        whose caption is kept; a different row already at the new path is deleted.
    updates: (id, {column: value}) for a row that gains columns and keeps the rest (its
        objects filled in, say), without captioning again.
    deletes: ids of rows whose files are gone.
    """

    upserts: list[dict] = field(default_factory=list)
    relocations: list[tuple[int, dict]] = field(default_factory=list)
    updates: list[tuple[int, dict]] = field(default_factory=list)
    deletes: list[int] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.upserts or self.relocations or self.updates or self.deletes)


@dataclass
class Written:
    rows: list[dict]  # every row written, as now stored (with id and seq)
    deleted: list[int]  # ids removed


def _chunks(items: list, size: int = _CHUNK) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


class Catalog:
    """The SQLite catalogue (WAL mode: readers never wait for the writer)."""

    def __init__(self, path: Path, read_only: bool = False) -> None:
        self.path = Path(path)
        # Checked read-only first: a writer's first statement (journal_mode=WAL) would
        # write into a damaged file.
        self.engine = self._make_engine(read_only=True)
        try:
            self._check()
            if not read_only:
                self.engine.dispose()
                self.engine = self._make_engine(read_only=False)
            self._upgrade(read_only)
        except BaseException:
            self.close()
            raise

    def _make_engine(self, read_only: bool) -> sa.Engine:
        if read_only:
            engine = sa.create_engine("sqlite://", poolclass=sa.pool.NullPool,
                                      creator=lambda: _connect_read_only(self.path))
        else:
            engine = sa.create_engine(f"sqlite:///{self.path}")
            sa.event.listen(engine, "connect", _on_connect)
        sa.event.listen(engine, "begin", _on_begin)
        sa.event.listen(engine, "handle_error", self._on_error)
        return engine

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _upgrade(self, read_only: bool) -> None:
        """Add the columns and indexes a catalogue written by an older capindex lacks (the
        new columns' values are null: the next ingest fills in what it can without
        captioning again; a missing index only makes a reader slower)."""
        with self.engine.begin() as conn:
            have = {row[1] for row in conn.exec_driver_sql("PRAGMA table_info(images)")}
            missing = [column for column in _T.columns if column.name not in have]
            indexes = {row[1] for row in conn.exec_driver_sql("PRAGMA index_list(images)")}
            unindexed = [index for index in _T.indexes if index.name not in indexes]
            if not have or not (missing or unindexed) or (read_only and not missing):
                return  # no table yet, or nothing to add (or nothing a reader needs)
            if read_only:
                raise CapindexError(f"the catalogue {self.path} was written by an older "
                                    "capindex; run capindex ingest once to bring it up to date")
            for column in missing:
                kind = column.type.compile(dialect=self.engine.dialect)
                conn.exec_driver_sql(f'ALTER TABLE images ADD COLUMN "{column.name}" {kind}')
            for index in unindexed:
                index.create(conn)
            conn.execute(sqlite_insert(meta_table).values(key="schema_version",
                                                          value=str(SCHEMA_VERSION))
                         .on_conflict_do_update(index_elements=[meta_table.c.key],
                                                set_={"value": str(SCHEMA_VERSION)}))

    def _check(self) -> None:
        """CatalogDamaged unless the file holds the catalogue's tables."""
        with self.engine.begin() as conn:
            tables = set(conn.exec_driver_sql(
                "SELECT name FROM sqlite_master WHERE type = 'table'").scalars())
        if not {images_table.name, meta_table.name} <= tables:
            empty = self.path.stat().st_size == 0
            raise CatalogDamaged(str(self.path), "is empty (0 bytes)" if empty
                                 else "holds no capindex catalogue (its tables are missing)")

    def _on_error(self, context) -> None:
        """SQLite's damage and I/O errors as one line (SQLAlchemy's handle_error hook)."""
        self._raise_for(context.original_exception)

    def _raise_for(self, error: BaseException) -> None:
        """CatalogDamaged or CapindexError for SQLite's damage and I/O errors; else nothing."""
        name = getattr(error, "sqlite_errorname", "") or ""
        if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")):
            raise CatalogDamaged(str(self.path), f"is damaged ({error})") from error
        if name.startswith("SQLITE_FULL"):
            raise CapindexError(f"cannot write the catalogue {self.path}: the disk is full; "
                                "make room and run again (what was committed is kept)") from error
        if name.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM",
                            "SQLITE_IOERR", "SQLITE_AUTH")):
            raise CapindexError(f"cannot use the catalogue {self.path} ({error}); check the "
                                "library's permissions and its disk") from error

    # -- reads -------------------------------------------------------------

    def states_of(self, paths: Sequence[str]) -> dict[str, FileState]:
        """path -> FileState of those of `paths` that are catalogued (planning asks for one
        chunk of the files discovery found at a time, never for every row)."""
        sql = "SELECT {} FROM images WHERE path IN ({{}})".format(
            ", ".join(("path", *FileState._fields)))
        states = {}
        with self.engine.begin() as conn:
            # The driver's own cursor: SQLAlchemy's statement and row objects took a
            # quarter of planning's time at a million files.
            cursor = conn.connection.driver_connection.cursor()
            try:
                for chunk in _chunks(list(paths), _LOOKUP_CHUNK):
                    cursor.execute(sql.format(", ".join("?" * len(chunk))), chunk)
                    for row in cursor.fetchall():
                        states[row[0]] = FileState._make(row[1:])
            except sqlite3.Error as exc:
                self._raise_for(exc)
                raise
            finally:
                cursor.close()
        return states

    def plan_rows(self, roots: Sequence[str], weights_hash: str, detector_id: str | None = None,
                  embedding_id: str | None = None) -> Iterator[PlanRow]:
        """(path, size, mtime_ns, current, same_captioner) of every row that is one of
        `roots` or inside one, in path order, streamed from the planning index alone
        (`ix_images_plan`, never the wide rows). `current`: 1 when the row is 'ok' with its
        objects and vector from `detector_id` and `embedding_id` (None: any);
        `same_captioner`: 1 when `weights_hash` captioned it."""
        one = _PLAN_ROWS.format("path = ?4")
        inside = _PLAN_ROWS.format("path >= ?4 AND path < ?5")
        # A root's own path and the paths inside it (root + "/" ...) sort apart when a
        # sibling's name starts with the root's and a character below "/" ("a" < "a-b/x" <
        # "a/x"), so each is a range of its own; in order of those keys the ranges of
        # roots that do not nest follow one another in path order.
        outermost = _outermost(roots)
        ranges = sorted([(root, None) for root in outermost]
                        + [(prefix, _after(prefix)) for prefix in
                           (root.rstrip(os.sep) + os.sep for root in outermost)],
                        key=lambda item: item[0])  # "/" itself before what is inside it
        with self.engine.begin() as conn:
            cursor = conn.connection.driver_connection.cursor()
            try:
                for low, high in ranges:
                    if high is None:
                        cursor.execute(one, (detector_id, embedding_id, weights_hash, low))
                    else:
                        cursor.execute(inside, (detector_id, embedding_id, weights_hash, low,
                                                high))
                    yield from cursor
            except sqlite3.Error as exc:
                self._raise_for(exc)
                raise
            finally:
                cursor.close()

    def has_paths_under(self, root: str) -> bool:
        """Whether any catalogue path is `root` or inside it."""
        with self.engine.begin() as conn:
            return conn.execute(sa.select(_T.c.id).where(_under(root)).limit(1)).first() is not None

    def live_seqs(self, ok_only: bool = False) -> dict[int, int]:
        """seq -> id of every row (of every 'ok' row when ok_only)."""
        query = sa.select(_T.c.seq, _T.c.id)
        if ok_only:
            query = query.where(_T.c.status == "ok")
        with self.engine.begin() as conn:
            return {seq: row_id for seq, row_id in conn.execute(query)}

    def rows(self, ids: list[int] | None = None, batch: int = 1000) -> Iterator[dict]:
        """Whole rows as dicts, ordered by id (only `ids` when given)."""
        with self.engine.begin() as conn:
            if ids is None:
                result = conn.execution_options(yield_per=batch).execute(
                    sa.select(_T).order_by(_T.c.id))
                for row in result.mappings():
                    yield dict(row)
                return
            for chunk in _chunks(sorted(ids)):
                query = sa.select(_T).where(_T.c.id.in_(chunk)).order_by(_T.c.id)
                for row in conn.execute(query).mappings():
                    yield dict(row)

    def id_of(self, path: str) -> int | None:
        """The id of the 'ok' row at catalogue path `path`, if any."""
        query = sa.select(_T.c.id).where(_T.c.path == path, _T.c.status == "ok")
        with self.engine.begin() as conn:
            return conn.execute(query).scalar()

    def embedding_seqs(self, model_id: str) -> dict[int, int]:
        """id -> seq of every 'ok' row whose embedding `model_id` wrote."""
        query = sa.select(_T.c.id, _T.c.seq).where(
            _T.c.status == "ok", _T.c.embedding_model == model_id, _T.c.embedding.is_not(None))
        with self.engine.begin() as conn:
            return dict(conn.execute(query).all())

    def embeddings(self, model_id: str, batch: int = 10_000) -> Iterator[tuple[int, int, bytes]]:
        """(id, seq, embedding bytes) of those rows, ordered by id."""
        query = (sa.select(_T.c.id, _T.c.seq, _T.c.embedding)
                 .where(_T.c.status == "ok", _T.c.embedding_model == model_id,
                        _T.c.embedding.is_not(None)).order_by(_T.c.id))
        with self.engine.begin() as conn:
            yield from conn.execution_options(yield_per=batch).execute(query)

    def contents_by_hash(self, hashes: Iterable[str], columns: Sequence[str]) -> dict[str, dict]:
        """sha256 -> `columns` of an 'ok' row with that content, for each hash catalogued."""
        found: dict[str, dict] = {}
        cols = [_T.c.sha256, *(getattr(_T.c, name) for name in columns)]
        with self.engine.begin() as conn:
            for chunk in _chunks(sorted(hashes)):
                query = sa.select(*cols).where(_T.c.sha256.in_(chunk), _T.c.status == "ok")
                for row in conn.execute(query).mappings():
                    found.setdefault(row["sha256"], {name: row[name] for name in columns})
        return found

    def ids_by_hash(self, hashes: Iterable[str]) -> dict[str, list[int]]:
        """sha256 -> ids of the 'ok' rows with that content, for each hash catalogued."""
        found: dict[str, list[int]] = {}
        with self.engine.begin() as conn:
            for chunk in _chunks(sorted(hashes)):
                query = sa.select(_T.c.sha256, _T.c.id).where(_T.c.sha256.in_(chunk),
                                                              _T.c.status == "ok")
                for sha256, row_id in conn.execute(query):
                    found.setdefault(sha256, []).append(row_id)
        return found

    def has_ok_rows(self) -> bool:
        """Whether any image is captioned (so the search index should hold something)."""
        with self.engine.begin() as conn:
            return conn.execute(sa.select(_T.c.id).where(_T.c.status == "ok").limit(1)) \
                .first() is not None

    def stats(self) -> dict:
        """Counts for `capindex info`."""
        with self.engine.begin() as conn:
            total, ok, failed, last = conn.execute(sa.select(
                sa.func.count(),
                sa.func.coalesce(sa.func.sum(sa.case((_T.c.status == "ok", 1), else_=0)), 0),
                sa.func.coalesce(sa.func.sum(sa.case((_T.c.status == "error", 1), else_=0)), 0),
                sa.func.max(_T.c.ingested_at),
            )).one()
            models = conn.execute(
                sa.select(_T.c.model_id, _T.c.weights_hash, sa.func.count())
                .where(_T.c.status == "ok")
                .group_by(_T.c.model_id, _T.c.weights_hash)
                .order_by(sa.func.count().desc())
            ).all()
        return {
            "images": total,
            "ok": ok,
            "failed": failed,
            "last_ingest": last.isoformat(timespec="seconds") + "Z" if last else None,
            "models": [{"model_id": m, "weights_hash": h, "images": n} for m, h, n in models],
        }

    def next_seq(self) -> int:
        """The seq the next write will give: it changes whenever the catalogue does."""
        with self.engine.begin() as conn:
            return int(conn.execute(sa.select(meta_table.c.value)
                                    .where(meta_table.c.key == "next_seq")).scalar_one())

    def ids_matching(self, **filters) -> set[int]:
        """The ids of the 'ok' rows that pass `filters` (see `_where`)."""
        query = sa.select(_T.c.id).where(*_where(**filters))
        with self.engine.begin() as conn:
            return set(conn.execute(query).scalars())

    def count_matching(self, **filters) -> int:
        query = sa.select(sa.func.count()).select_from(_T).where(*_where(**filters))
        with self.engine.begin() as conn:
            return conn.execute(query).scalar_one()

    def newest(self, limit: int, offset: int = 0, **filters) -> list[int]:
        """Ids of the 'ok' rows that pass `filters`, newest taken first (rows without a
        capture time last, newest catalogued first)."""
        query = (sa.select(_T.c.id).where(*_where(**filters))
                 .order_by(_T.c.taken_at.desc(), _T.c.id.desc()).limit(limit).offset(offset))
        with self.engine.begin() as conn:
            return list(conn.execute(query).scalars())

    def facets(self, limit: int = 100) -> dict:
        """What the filters can choose from, over the 'ok' rows: cameras, detected objects
        and tags, each [(name, images)] most frequent first, and the range of capture
        dates (or None)."""
        camera = sa.func.trim(sa.case(
            (sa.func.instr(sa.func.lower(sa.func.coalesce(_T.c.camera_model, "")),
                           sa.func.lower(sa.func.coalesce(_T.c.camera_make, ""))) == 1,
             sa.func.coalesce(_T.c.camera_model, "")),
            else_=sa.func.coalesce(_T.c.camera_make, "") + " "
            + sa.func.coalesce(_T.c.camera_model, "")))
        ok = _T.c.status == "ok"
        with self.engine.begin() as conn:
            cameras = conn.execute(
                sa.select(camera.label("name"), sa.func.count().label("n"))
                .where(ok, sa.or_(_T.c.camera_make.is_not(None), _T.c.camera_model.is_not(None)))
                .group_by("name").order_by(sa.desc("n"), "name").limit(limit)).all()
            labels = {}
            for column in ("objects", "tags"):
                labels[column] = conn.exec_driver_sql(
                    "SELECT lower(json_extract(j.value, '$.label')) AS name, "
                    "count(DISTINCT images.id) AS n "
                    f"FROM images, json_each(images.{column}) AS j "
                    "WHERE images.status = 'ok' AND name IS NOT NULL "
                    "GROUP BY name ORDER BY n DESC, name LIMIT ?", (limit,)).all()
            first, last = conn.execute(sa.select(sa.func.min(_T.c.taken_at),
                                                 sa.func.max(_T.c.taken_at)).where(ok)).one()
        return {"cameras": [(name, n) for name, n in cameras if name],
                "objects": [tuple(r) for r in labels["objects"]],
                "tags": [tuple(r) for r in labels["tags"]],
                "taken": (first.date().isoformat(), last.date().isoformat()) if first else None}

    def failures(self, limit: int = 10) -> list[tuple[str, str]]:
        query = (sa.select(_T.c.path, _T.c.error).where(_T.c.status == "error")
                 .order_by(_T.c.path).limit(limit))
        with self.engine.begin() as conn:
            return [tuple(r) for r in conn.execute(query)]

    # -- writes ------------------------------------------------------------

    def write(self, changes: Changes) -> Written:
        """Apply `changes` in one transaction; every written row gets a fresh seq.

        Upserts go in as one compiled statement executed for the whole batch
        (building and compiling an upsert per row cost more than the writes);
        the written rows are read back by their seqs, which are this
        transaction's alone.
        """
        deleted: list[int] = []
        with self.engine.begin() as conn:
            first = seq = int(conn.execute(sa.select(meta_table.c.value)
                                           .where(meta_table.c.key == "next_seq")).scalar_one())
            params = []
            for row in changes.upserts:
                params.append({**row, "seq": seq})
                seq += 1
            # Consecutive rows with the same columns share a statement; order is kept,
            # so a path upserted twice in one batch ends with its last version.
            for columns, group in groupby(params, key=lambda p: tuple(p)):
                conn.execute(_upsert_statement(columns), list(group))
            for row_id, fields in changes.relocations:
                occupant = conn.execute(sa.select(_T.c.id).where(
                    _T.c.path == fields["path"], _T.c.id != row_id)).scalar()
                if occupant is not None:
                    conn.execute(sa.delete(_T).where(_T.c.id == occupant))
                    deleted.append(occupant)
                conn.execute(sa.update(_T).where(_T.c.id == row_id).values(**fields, seq=seq))
                seq += 1
            for row_id, fields in changes.updates:
                conn.execute(sa.update(_T).where(_T.c.id == row_id).values(**fields, seq=seq))
                seq += 1
            for chunk in _chunks(list(changes.deletes)):
                conn.execute(sa.delete(_T).where(_T.c.id.in_(chunk)))
            deleted.extend(changes.deletes)
            conn.execute(sa.update(meta_table).where(meta_table.c.key == "next_seq")
                         .values(value=str(seq)))
            rows = []
            if seq > first:  # every row written now, as stored (deleted ones are gone)
                query = (sa.select(_T).where(_T.c.seq >= first, _T.c.seq < seq)
                         .order_by(_T.c.id))
                rows = [dict(row) for row in conn.execute(query).mappings()]
        return Written(rows, deleted)


def _where(after: date | None = None, before: date | None = None, camera: str | None = None,
           object: str | None = None, tag: str | None = None) -> list:
    """The conditions of the 'ok' rows taken on or after `after` and on or before `before`,
    whose "camera_make camera_model" holds `camera`, with a detected `object` (the label,
    exactly) and a tag label holding `tag` (text matched without regard to case)."""
    conditions = [_T.c.status == "ok"]
    if after is not None:
        conditions.append(_T.c.taken_at >= datetime.combine(after, dt_time.min))
    if before is not None:
        conditions.append(_T.c.taken_at < datetime.combine(before + timedelta(days=1), dt_time.min))
    if camera:
        text = sa.func.coalesce(_T.c.camera_make, "") + " " + sa.func.coalesce(_T.c.camera_model, "")
        conditions.append(sa.func.instr(sa.func.lower(text), camera.lower()) > 0)
    if object:
        conditions.append(sa.text(
            "EXISTS (SELECT 1 FROM json_each(images.objects) "
            "WHERE lower(json_extract(value, '$.label')) = :object_label)")
            .bindparams(object_label=object.lower()))
    if tag:
        conditions.append(sa.text(
            "EXISTS (SELECT 1 FROM json_each(images.tags) "
            "WHERE instr(lower(json_extract(value, '$.label')), :tag_text) > 0)")
            .bindparams(tag_text=tag.lower()))
    return conditions


def create_catalog(path: Path) -> None:
    """A new, empty catalogue at `path`, built under a temporary name and renamed when
    complete (so no catalog.sqlite ever lacks its tables). Under the ingest lock."""
    path = Path(path)
    tmp = path.with_name(path.name + ".new")
    for leftover in (tmp, tmp.with_name(tmp.name + "-wal"), tmp.with_name(tmp.name + "-shm")):
        leftover.unlink(missing_ok=True)
    engine = sa.create_engine(f"sqlite:///{tmp}")
    sa.event.listen(engine, "connect", _on_connect)
    sa.event.listen(engine, "begin", _on_begin)
    try:
        images_table.metadata.create_all(engine)
        with engine.begin() as conn:
            for key, value in (("next_seq", "1"), ("schema_version", str(SCHEMA_VERSION))):
                conn.execute(sqlite_insert(meta_table).values(key=key, value=value))
    finally:
        engine.dispose()  # the last connection closes: the WAL is merged and removed
    tmp.replace(path)


# `Catalog.plan_rows`' query: ?1 detector id, ?2 embedding id, ?3 weights hash.
_PLAN_ROWS = ("SELECT path, size, mtime_ns, status = 'ok' AND (?1 IS NULL OR detector_id IS ?1) "
              "AND (?2 IS NULL OR embedding_model IS ?2), weights_hash IS ?3 "
              "FROM images WHERE {} ORDER BY path")


def _outermost(roots: Sequence[str]) -> list[str]:
    """`roots` without those inside another (so no row is read twice)."""
    kept: set[str] = set()
    for root in sorted(set(roots), key=len):
        parts = root.rstrip(os.sep).split(os.sep)
        if not any((os.sep.join(parts[:n]) or os.sep) in kept for n in range(1, len(parts) + 1)):
            kept.add(root.rstrip(os.sep) or os.sep)
    return sorted(kept)


def _under(root: str):
    """The rows whose path is `root` or inside it, as a range of the path index: paths
    inside sort from root + "/" up to root with "0" (the character after "/") appended."""
    prefix = root.rstrip(os.sep) + os.sep
    inside = sa.and_(_T.c.path >= prefix, _T.c.path < _after(prefix))
    return sa.or_(_T.c.path == root, inside)


def _after(prefix: str) -> str:
    """The first string after every one starting with `prefix` (which ends with "/")."""
    return prefix[:-1] + chr(ord(os.sep) + 1)


@lru_cache(maxsize=8)
def _upsert_statement(columns: tuple[str, ...]):
    """INSERT of `columns`, or for a path already catalogued an UPDATE that keeps its id."""
    stmt = sqlite_insert(_T)
    return stmt.on_conflict_do_update(
        index_elements=[_T.c.path],
        set_={name: stmt.excluded[name] for name in columns if name != "path"},
    )


def _on_connect(dbapi_conn, _record) -> None:
    # Let SQLAlchemy's "begin" event emit BEGIN (the pysqlite recipe), so that
    # reads get a consistent snapshot too; WAL lets search read while ingest writes.
    dbapi_conn.isolation_level = None
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")  # a kill -9 loses no committed transaction
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def _on_begin(conn) -> None:
    conn.exec_driver_sql("BEGIN")


def utcnow() -> datetime:
    """Naive UTC now, the form `ingested_at` is stored in."""
    from datetime import timezone

    return datetime.now(timezone.utc).replace(tzinfo=None)


def read_user_captions(path: Path) -> dict[str, str]:
    """sha256 -> the user's caption, from a catalogue file set aside by `ingest --rebuild`
    (read-only; sqlite3.Error or OSError when it cannot be read). A catalogue from before
    user captions has none."""
    from contextlib import closing

    with closing(_connect_read_only(path)) as conn:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(images)")}
        if "user_caption" not in columns:
            return {}
        query = ("SELECT sha256, user_caption FROM images WHERE user_caption IS NOT NULL "
                 "AND sha256 IS NOT NULL ORDER BY seq")
        return dict(conn.execute(query).fetchall())
