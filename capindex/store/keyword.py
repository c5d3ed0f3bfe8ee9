"""The keyword index: caption, tags, objects, broader words and file-name words, stemmed,
ranked by BM25 with a weight per field; an SQLite FTS5 table in `keyword.sqlite`.

The index holds only what search needs to match (the words of each row, rowid = the
catalogue id) and each row's `seq`; paths and captions shown in results come from the
catalogue, so a result never shows stale data. Which rows the index should hold is
decided by the catalogue alone: `reconcile` makes the index hold exactly the catalogue's
'ok' rows at their current `seq`, whatever state a killed run left it in.

One file, in WAL mode: readers see the last committed state and never wait for the
writer, so `capindex search` works while an ingest is running; searches open it
read-only (immutable in a folder they cannot write), so a read-only library is searched.
Each commit is one SQLite transaction (atomic; the index is created as
`keyword.sqlite.new`, tables and all, then renamed), so a killed run leaves a committed
state that the next reconcile completes.

Ranking: FTS5's bm25() with the per-column weights of `keyword_query.FIELD_BOOSTS`
(chosen on Flickr8k val: docs/search.md). Text is analysed in Python as Whoosh's
StemmingAnalyzer did (`keyword_query.terms`: lower case, stop words and one-letter words
out) and stemmed by FTS5's `porter` tokenizer, on documents and queries alike.

Damage: the index is derived data, so a damaged one is rebuilt, never trusted. `problem()`
says why it cannot be used (not an SQLite file, tables missing, another format; with
`thorough`, SQLite's quick_check, then FTS5's integrity-check unless the file is as the
writer recorded it, size and SHA-256, after its last commit), `search` raises IndexDamaged
when SQLite reports damage, and `repair` (at the start of every ingest) deletes a damaged
index, or the Whoosh `index/` folder of an older capindex, so that `reconcile` rebuilds it
from the catalogue.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from capindex.errors import IndexDamaged, QuerySyntaxError
from capindex.store import keyword_postings as postings
from capindex.store.catalog_reader import connect_read_only
from capindex.store.keyword_query import (
    FIELD_BOOSTS,
    FIELDS,
    Node,
    Query,
    Term,
    check_query,
    index_text,
    parse_query,
)

__all__ = ["FIELDS", "FIELD_BOOSTS", "FORMAT", "KeywordIndex", "document", "shown_caption"]

# What an index file holds, recorded in its meta table: another value (an older capindex,
# other fields or analysis) is rebuilt by the next ingest.
FORMAT = ("capindex-fts5-2: " + ",".join(FIELDS) + "; porter unicode61; stop words, min 2; "
          "postings with field lengths")
# Formats search still reads (through FTS5 alone); the next ingest rebuilds them as FORMAT.
READABLE_FORMATS = (FORMAT, "capindex-fts5-1: " + ",".join(FIELDS)
                    + "; porter unicode61; stop words, min 2")
# A run that wrote at least this share of the documents merges the index's b-trees into
# one at its end ('optimize'); smaller runs leave that to FTS5's automatic merging.
OPTIMIZE_SHARE = 0.25
# Beside the index: its size and SHA-256 when the writer last closed it (`_record`).
RECORD = ".sha256"
_SCHEMA = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE seqs (id INTEGER PRIMARY KEY, seq INTEGER NOT NULL)",
    f"CREATE VIRTUAL TABLE docs USING fts5({', '.join(FIELDS)}, "
    "tokenize = 'porter unicode61')",
    *postings.SCHEMA,
)


# Tags at least this probable also give their broader words (`capindex.words`) to the
# `words` field; the top-5 tags' tail is mostly noise (0.1% "plastic bag" on a cat).
TAG_WORDS_MIN_PROB = 0.1
_COUNTS = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight",
           9: "nine", 10: "ten"}


def object_text(objects) -> str:
    """Detected objects as words, one phrase per label with its count: "two dog, person"."""
    counts: dict[str, int] = {}
    for found in objects or ():
        counts[found["label"]] = counts.get(found["label"], 0) + 1
    return ", ".join(f"{_COUNTS.get(n, 'many')} {label}" if n > 1 else label
                     for label, n in counts.items())


def broader_words(row: dict) -> str:
    """The `words` field: WordNet's broader words for the caption's nouns, the likely tags
    and the detected objects (tabby -> cat, animal, pet; boy -> child)."""
    from capindex.words import expand_text, related_words

    found = dict.fromkeys(expand_text(shown_caption(row) or ""))
    for tag in row.get("tags") or ():
        if tag["prob"] >= TAG_WORDS_MIN_PROB:
            found.update(dict.fromkeys(related_words(tag["label"], "imagenet")))
    for obj in row.get("objects") or ():
        found.update(dict.fromkeys(related_words(obj["label"], "coco")))
    return " ".join(found)


def shown_caption(row: dict) -> str | None:
    """The caption a row shows: the user's when there is one, else the model's."""
    return row.get("user_caption") or row.get("caption")


def document(row: dict) -> dict:
    """The index document of a catalogue row. `caption` is the caption shown (the user's,
    when set); the model's caption it replaces moves to `alt`, with the beam's next best.
    `name` is the file name without extension ("IMG_2041_beach-sunset" -> img, 2041, beach,
    sunset)."""
    name = os.path.splitext(os.path.basename(row["path"]))[0]
    alternatives = list(row.get("alt_captions") or ())
    if row.get("user_caption") and row.get("caption"):
        alternatives.insert(0, row["caption"])
    return {
        "id": str(row["id"]),
        "seq": row["seq"],
        "caption": shown_caption(row) or "",
        "alt": " / ".join(alternatives),
        "objects": object_text(row.get("objects")),
        "tags": ", ".join(tag["label"] for tag in row["tags"] or ()),
        "words": broader_words(row),
        "concepts": " ".join(row.get("concepts") or ()),
        "name": name,
    }


class KeywordIndex:
    """The FTS5 index at `path` (the library's keyword.sqlite); writes are queued and
    committed by `flush`."""

    def __init__(self, path: Path, flush_every: int = 20000, flush_seconds: float = 10.0,
                 first_flush_seconds: float = 2.0,
                 cache: postings.SearchCache | None = None) -> None:
        self.path = Path(path)
        self.legacy_dir = self.path.parent / "index"  # an older capindex's Whoosh index
        self.flush_every = flush_every
        self.flush_seconds = flush_seconds
        # The first commit comes sooner, so that search shows a run's first images quickly.
        self._interval = first_flush_seconds
        self._pending: dict[int, dict | None] = {}  # id -> document to index, or None to delete
        self._last_flush = time.monotonic()
        self._written = 0  # documents written by this writer since the last optimize
        self._writer: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        self._reader_format: str | None = None
        self._cache = cache if cache is not None else postings.SearchCache()
        self._counted: tuple | None = None  # (text, allowed, version, matches) of the last
        self._excluded: tuple | None = None  # (key, ids, as a set) of the last exclusion

    def exists(self) -> bool:
        """Whether there is an index file here, readable or not."""
        return self.path.exists()

    def absence(self) -> str:
        """Why there is no index (for a library with captioned rows): "missing", or made by
        an older capindex (its Whoosh folder is still here)."""
        return "from an older capindex (Whoosh)" if self.legacy_dir.is_dir() else "missing"

    def close(self) -> None:
        for connection in (self._writer, self._reader):
            if connection is not None:
                connection.close()
        self._writer = self._reader = None

    # -- writing (only `capindex ingest` and caption edits, under the library's lock) --

    def _write_connection(self) -> sqlite3.Connection:
        """The writer's connection; an index of another format starts over empty (and
        `reconcile` refills it from the catalogue)."""
        if self._writer is not None:
            return self._writer
        if self.exists():
            connection = None
            try:
                connection = _connect(self.path)
                if _format(connection) == FORMAT:
                    self._writer = connection
                    return connection
            except sqlite3.DatabaseError:
                pass
            if connection is not None:
                connection.close()
            _delete(self.path)
        self._create()
        self._writer = _connect(self.path)
        return self._writer

    def _create(self) -> None:
        """A new, empty index: made whole as keyword.sqlite.new, then renamed, so that
        keyword.sqlite always has its tables."""
        new = self.path.with_name(self.path.name + ".new")
        _delete(new)
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        connection = sqlite3.connect(new, isolation_level=None)
        try:
            connection.execute("PRAGMA journal_mode=WAL")  # from birth: readers never switch
            connection.execute("BEGIN")
            for statement in _SCHEMA:
                connection.execute(statement)
            connection.execute("INSERT INTO meta VALUES ('format', ?)", (FORMAT,))
            connection.execute("COMMIT")
        finally:
            connection.close()
        os.chmod(new, 0o600)
        new.replace(self.path)

    def update(self, rows: Iterable[dict], deleted_ids: Iterable[int] = ()) -> None:
        """Queue committed catalogue rows (error rows leave the index) and deletions.

        The queue is committed every `flush_every` documents (also while a long
        iterable is being read, so a rebuild never holds it all) or when
        `flush_seconds` have passed since the last commit (`first_flush_seconds`
        before the first one).
        """
        for row in rows:
            self._pending[row["id"]] = document(row) if row["status"] == "ok" else None
            if len(self._pending) >= self.flush_every:
                self.flush()
        for row_id in deleted_ids:
            self._pending[row_id] = None
            if len(self._pending) >= self.flush_every:
                self.flush()
        if time.monotonic() - self._last_flush >= self._interval:
            self.flush()

    def flush(self, final: bool = False) -> None:
        """Commit the queued changes (one transaction).

        `final` (the end of a run): when this run wrote a large share of the index, also
        merge its b-trees into one ('optimize', as a bulk build leaves many); then fold the
        write-ahead log into the file and close.
        """
        self._last_flush = time.monotonic()
        self._interval = self.flush_seconds
        if self._pending:
            connection = self._write_connection()
            ids = [(row_id,) for row_id in self._pending]
            docs = [(row_id, doc["seq"], *(index_text(doc[f]) for f in FIELDS))
                    for row_id, doc in self._pending.items() if doc is not None]
            connection.execute("BEGIN IMMEDIATE")
            try:
                connection.executemany("DELETE FROM docs WHERE rowid = ?", ids)
                connection.executemany("DELETE FROM seqs WHERE id = ?", ids)
                connection.executemany(
                    f"INSERT INTO docs (rowid, {', '.join(FIELDS)}) "
                    f"VALUES (?{', ?' * len(FIELDS)})", [(d[0], *d[2:]) for d in docs])
                connection.executemany("INSERT INTO seqs VALUES (?, ?)", [d[:2] for d in docs])
                texts = {d[0]: list(d[2:]) for d in docs}
                postings.write_segment(connection, {row_id: texts.get(row_id)
                                                    for row_id in self._pending},
                                       self._cache.tokenizer)
                if postings.segment_count(connection) > postings.MAX_SEGMENTS:
                    postings.merge(connection)
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            self._written += len(ids)
            self._pending.clear()
        if final and self._writer is not None:
            documents = self._writer.execute("SELECT count(*) FROM seqs").fetchone()[0]
            everything = bool(self._written) and self._written >= OPTIMIZE_SHARE * documents
            self._writer.execute("BEGIN IMMEDIATE")
            try:
                postings.merge(self._writer, everything)
                self._writer.execute("COMMIT")
            except BaseException:
                self._writer.execute("ROLLBACK")
                raise
            if everything:
                self._writer.execute("INSERT INTO docs (docs) VALUES ('optimize')")
                self._written = 0
            self._writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._writer.close()
            self._writer = None
            self._record()

    def discard(self) -> None:
        """Forget queued changes (the next reconcile restores them from the catalogue)."""
        self._pending.clear()

    def reconcile(self, catalog) -> int:
        """Make the index hold exactly the catalogue's 'ok' rows; returns the changes made."""
        connection = self._write_connection()
        have = dict(connection.execute("SELECT id, seq FROM seqs"))
        want = {row_id: seq for seq, row_id in catalog.live_seqs(ok_only=True).items()}
        stale = [row_id for row_id in have if row_id not in want]
        todo = [row_id for row_id, seq in want.items() if have.get(row_id) != seq]
        if stale or todo:
            self.update(catalog.rows(todo), stale)
            self.flush(final=True)
        return len(stale) + len(todo)

    # -- damage --------------------------------------------------------------

    def problem(self, thorough: bool = False) -> str | None:
        """Why the index cannot be used ("damaged: ...", "from an older capindex ..."), or
        None. Without `thorough`: it opens as an SQLite file of a format search reads
        (cheap, for info); `thorough` (ingest's check) also wants this FORMAT, runs SQLite's
        quick_check (every page) and, unless the file is as the writer recorded it
        (`_record`), FTS5's integrity-check (the full-text index against its text) and
        counts the postings' rows against the documents. An index that is not there at all
        is no problem here: whether it should be, the catalogue says."""
        if not self.exists():
            return None
        try:
            # integrity-check is run as an INSERT: it needs a connection that may write
            connection = (sqlite3.connect(self.path, isolation_level=None) if thorough
                          else connect_read_only(self.path))
        except sqlite3.Error as exc:
            return f"damaged: it cannot be opened ({_describe(exc)})"
        try:
            found = _format(connection)
            if found not in READABLE_FORMATS:
                return "from an older capindex (other fields)"
            (count_seqs,) = connection.execute("SELECT count(*) FROM seqs").fetchone()
            if thorough and found != FORMAT:  # searched as it is; an ingest rebuilds it
                return "from an older capindex (without postings)"
            if thorough:
                (check,) = connection.execute("PRAGMA quick_check(1)").fetchone()
                if check != "ok":
                    return f"damaged: {check}"
                if self._as_recorded():
                    return None
                connection.execute("INSERT INTO docs (docs) VALUES ('integrity-check')")
                count_docs = connection.execute("SELECT count(*) FROM docs").fetchone()[0]
                if count_docs != count_seqs:
                    return f"damaged: {count_docs} documents but {count_seqs} row versions"
                live = postings.load_live(connection).rows
                if live != count_seqs:
                    return f"damaged: its postings hold {live} rows, its documents {count_seqs}"
        except sqlite3.Error as exc:
            return f"damaged: it could not be read ({_describe(exc)})"
        finally:
            connection.close()
        return None

    def repair(self, catalog) -> str | None:
        """At the start of an ingest (under its lock): delete an index that cannot be used,
        and an older capindex's Whoosh folder, so that `reconcile` rebuilds the index from
        the catalogue. Returns why ("missing" when the catalogue has rows to index but
        there is no index), or None."""
        _delete(self.path.with_name(self.path.name + ".new"))  # a creation that was killed
        legacy = self.legacy_dir.is_dir()
        if legacy:
            shutil.rmtree(self.legacy_dir)
        if not self.exists():
            if not catalog.has_ok_rows():
                return None
            return "from an older capindex (Whoosh)" if legacy else "missing"
        problem = self.problem(thorough=True)
        if problem is not None:
            self.close()
            _delete(self.path)
        elif not self._as_recorded():
            self._record()  # checked through: trusted until it changes
        return problem

    def _record(self) -> None:
        """Record the file's size and SHA-256 beside it (writer only, after the last commit
        of a run, the log folded in), so that the next ingest's check can skip FTS5's
        integrity-check (1 CPU-s per 100,000 rows; hashing takes a tenth of that)."""
        record = self.path.with_name(self.path.name + RECORD)
        tmp = record.with_name(record.name + ".partial")
        tmp.write_text(json.dumps({"size": self.path.stat().st_size,
                                   "sha256": _sha256(self.path)}))
        tmp.replace(record)

    def _as_recorded(self) -> bool:
        """Whether the file is as the writer recorded it after its last commit (and no
        write-ahead log holds changes since)."""
        try:
            record = json.loads(self.path.with_name(self.path.name + RECORD).read_text())
            wal = self.path.with_name(self.path.name + "-wal")
            if wal.exists() and wal.stat().st_size:
                return False
            return (record["size"] == self.path.stat().st_size
                    and record["sha256"] == _sha256(self.path))
        except (OSError, ValueError, KeyError, TypeError):
            return False

    # -- reading -----------------------------------------------------------

    def _read_connection(self) -> sqlite3.Connection:
        """A read-only connection to an index of this format; IndexDamaged otherwise."""
        if self._reader is None:
            problem = None
            try:
                connection = connect_read_only(self.path)
            except sqlite3.Error as exc:
                raise self._damaged(exc) from exc
            try:
                found = _format(connection)
                if found not in READABLE_FORMATS:
                    problem = "from an older capindex (other fields)"
            except sqlite3.Error as exc:
                connection.close()
                raise self._damaged(exc) from exc
            if problem:
                connection.close()
                raise IndexDamaged(str(self.path.parent), problem)
            self._reader, self._reader_format = connection, found
        return self._reader

    def _damaged(self, exc: sqlite3.Error) -> Exception:
        """IndexDamaged for what SQLite says of a damaged file; a busy or locked database
        (a writer past the busy timeout) goes on as it is."""
        text = str(exc).lower()
        if isinstance(exc, sqlite3.OperationalError) and ("locked" in text or "busy" in text):
            return exc
        if "fts5: syntax error" in text:  # a bug here: no typed text should reach FTS5 raw
            return QuerySyntaxError("?", f"the search index could not read it ({exc})")
        return IndexDamaged(str(self.path.parent), f"damaged: it could not be read "
                                                    f"({_describe(exc)})")

    def _rows(self, sql: str, params: tuple) -> list[tuple]:
        try:
            return self._read_connection().execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise self._damaged(exc) from exc

    def doc_count(self) -> int:
        """Documents in the index (0 when there is none); IndexDamaged when it cannot be read."""
        if not self.exists():
            return 0
        return self._rows("SELECT count(*) FROM seqs", ())[0][0]

    def search(self, text: str, limit: int = 10, boosts: dict[str, float] | None = None,
               allowed: set[int] | None = None) -> list[tuple[int, float]]:
        """(row id, BM25 score) of the best matches, best first (ties by id); `boosts`
        overrides FIELD_BOOSTS (0 leaves a field out: for a query of plain words as if the
        index did not hold it, `keyword_postings`; for others, FTS5 leaves it out of the
        match only); `allowed`: only these row ids (a filter, applied before the limit). A
        query that only excludes (NOT cat) lists every other document, by id, with score 0.

        Raises QuerySyntaxError for a malformed query, IndexDamaged when the index cannot
        be read; an empty list when the query has no searchable words or nothing matches.
        """
        check_query(text)
        query = parse_query(text)
        if query is None or limit <= 0 or (allowed is not None and not allowed):
            return []
        if query.positive is None:
            where, params = _allowed_clause(allowed, "id")
            return [(row_id, 0.0) for (row_id,) in self._rows(
                "SELECT id FROM seqs WHERE id NOT IN (SELECT rowid FROM docs WHERE docs MATCH ?)"
                f"{where} ORDER BY id LIMIT ?", (query.excluded(), *params, limit))]
        weights = {**FIELD_BOOSTS, **(boosts or {})}
        columns = tuple(f for f in FIELDS if weights[f] > 0)
        if not columns:
            return []
        found = self._rank_words(query, tuple(max(0.0, float(weights[f])) for f in FIELDS),
                                 limit, allowed)
        if found is None:
            return self._rank_fts(query, weights, columns, limit, allowed)
        ranked, matches = found
        self._counted = (text, allowed, self._version(), matches)
        return ranked

    def _rank_fts(self, query: Query, weights: dict[str, float], columns: tuple[str, ...],
                  limit: int, allowed: set[int] | None) -> list[tuple[int, float]]:
        """Any query, ranked by FTS5's bm25() in SQL (every match is scored)."""
        where, params = _allowed_clause(allowed, "rowid")
        bm25 = ", ".join(repr(float(weights[f])) for f in FIELDS)
        found = self._rows(
            f"SELECT rowid, bm25(docs, {bm25}) AS score FROM docs WHERE docs MATCH ?{where} "
            "ORDER BY score, rowid LIMIT ?", (query.match(columns), *params, limit))
        return [(row_id, -score) for row_id, score in found]

    def _rank_words(self, query: Query, weights: tuple[float, ...], limit: int,
                    allowed: set[int] | None) -> tuple[list[tuple[int, float]], int] | None:
        """The FTS5 ranking of a query of plain words (each in every field), computed from
        the postings (`keyword_postings.rank`: the same scores and order, without scoring
        every match in SQL), and how many rows match; None for any other query or an
        index without postings."""
        phrases = self._plain_tokens(query.positive)
        if phrases is None:
            return None
        excluded = self._excluded_array(query) if query.negative is not None else None
        return self._in_snapshot(lambda connection, live: postings.rank(
            connection, live, phrases, weights, limit, allowed, excluded))

    def _plain_tokens(self, node) -> list[str] | None:
        """The words of a query part that is plain words (`_plain_words`) as the index's
        tokens, one each, when this index has postings; else None (FTS5 reads it)."""
        self._read_connection()
        words = _plain_words(node)
        if words is None or self._reader_format != FORMAT:
            return None
        tokens = self._cache.tokenizer.tokens(words)
        if any(len(tokens[word]) != 1 for word in words):
            return None  # a word FTS5 splits is a phrase: FTS5 reads it
        return [tokens[word][0] for word in words]

    def _in_snapshot(self, work):
        """work(connection, live) in one read transaction (the postings and which rows are
        current from the same commit)."""
        connection = self._read_connection()
        try:
            connection.execute("BEGIN")
            try:
                return work(connection, self._cache.get(connection))
            finally:
                connection.execute("COMMIT")
        except sqlite3.Error as exc:
            raise self._damaged(exc) from exc

    def count(self, text: str, allowed: set[int] | None = None) -> int:
        """How many documents match `text` (of the `allowed` row ids only, when given);
        nothing is scored (and nothing asked again just after a `search` that counted)."""
        if self._counted is not None and self._counted[:3] == (text, allowed, self._version()):
            return self._counted[3]
        check_query(text)
        query = parse_query(text)
        if query is None or (allowed is not None and not allowed):
            return 0
        if query.positive is None:
            where, params = _allowed_clause(allowed, "id")
            return self._rows("SELECT count(*) FROM seqs WHERE id NOT IN "
                              f"(SELECT rowid FROM docs WHERE docs MATCH ?){where}",
                              (query.excluded(), *params))[0][0]
        where, params = _allowed_clause(allowed, "rowid")
        return self._rows(f"SELECT count(*) FROM docs WHERE docs MATCH ?{where}",
                          (query.match(), *params))[0][0]

    def excluded_ids(self, text: str) -> set[int]:
        """The ids of the documents `text` excludes (NOT word, -word): other kinds of search
        leave them out too."""
        query: Query | None = parse_query(text)
        if query is None or query.negative is None:
            return set()
        self._excluded_array(query)  # kept: a hybrid search asks for both sides
        key, ids, as_set = self._excluded
        if as_set is None:
            as_set = set(ids.tolist())
            self._excluded = (key, ids, as_set)
        return as_set

    def _excluded_array(self, query: Query) -> np.ndarray:
        """The ids `query` excludes, from the postings when it excludes plain words."""
        key = (query.excluded(), self._version())
        if self._excluded is None or self._excluded[0] != key:
            terms = self._plain_tokens(query.negative)
            if terms is not None:
                ids = self._in_snapshot(lambda connection, live: postings.matching(
                    connection, live, terms))
            else:
                ids = np.array([row_id for (row_id,) in self._rows(
                    "SELECT rowid FROM docs WHERE docs MATCH ?", (key[0],))], dtype=np.int64)
            self._excluded = (key, ids, None)
        return self._excluded[1]

    def _version(self) -> int:
        """SQLite's data_version of the reader: it changes when another connection commits."""
        return self._rows("PRAGMA data_version", ())[0][0]


def _plain_words(node) -> list[str] | None:
    """The words of a query that is one word or an OR of words, each searched in every
    field (no phrase, field or prefix), in order; None for any other query."""
    children = node.children if isinstance(node, Node) and node.op == "or" else (node,)
    words = []
    for child in children:
        if not isinstance(child, Term) or child.field or child.prefix or len(child.words) != 1:
            return None
        words.append(child.words[0])
    return words


def _allowed_clause(allowed: set[int] | None, column: str) -> tuple[str, tuple]:
    """The SQL condition (and its parameter) keeping only `allowed` ids; none for None."""
    if allowed is None:
        return "", ()
    return (f" AND {column} IN (SELECT value FROM json_each(?))",
            (json.dumps(sorted(allowed)),))


def _connect(path: Path) -> sqlite3.Connection:
    """The writer's connection: WAL (readers never wait), synchronous NORMAL (a committed
    transaction survives the process dying), transactions begun explicitly."""
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA busy_timeout=10000")
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    return connection


def _format(connection: sqlite3.Connection) -> str | None:
    """The format recorded in an index file (sqlite3.Error when it is none)."""
    found = connection.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()
    return found[0] if found else None


def _delete(path: Path) -> None:
    """Delete an SQLite file with its write-ahead log and shared-memory files."""
    for suffix in ("", "-wal", "-shm", "-journal", RECORD):
        try:
            path.with_name(path.name + suffix).unlink()
        except FileNotFoundError:
            pass


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _describe(exc: BaseException) -> str:
    """An exception in one short line."""
    text = " ".join(str(exc).split())
    text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."
