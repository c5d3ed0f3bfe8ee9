"""The keyword index's own postings, so that a query of plain words is ranked in numpy.

FTS5 scores every row a query matches before it sorts them (about 1.2 us a row: a common
word at 100,000 photos matches a third of them). Beside its full-text tables,
`keyword.sqlite` holds, written in the same transactions:

    postings      per word (as FTS5's porter tokenizer makes it) and segment: the ids of
                  the rows holding it (uint32) and each row's "shape" code (uint32)
    shapes        code -> how many times the word is in each field ([caption, alt, ...])
    segments      per segment (one per commit): the ids it (re)writes with their length in
                  words in each field (int32, a row of FIELDS per id), and the ids it deletes

A row's current version is in the newest segment that names it; older postings of it are
skipped. `rank` computes exactly what FTS5's bm25() does (sqlite/ext/fts5/fts5_aux.c:
k1 1.2, b 0.75, IDF log((N - n + 0.5) / (n + 0.5)) floored at 1e-6, a word's frequency the
sum of its fields' weights over its instances, a row's length its words in every field),
in the same order of floating-point operations, so both give the same scores and order
(tests/test_keyword_postings.py checks that against FTS5). A weight of 0 leaves a field
out as if the index did not hold it (its words count neither in a row's length nor in a
word's rows; what NOT excludes is still looked for in every field): what an index of the
other fields would rank, which `capindex evaluate-search --signals` measures. Segments are merged (`merge`)
when there are more than MAX_SEGMENTS and at the end of a run, as FTS5 merges its b-trees.
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

# FTS5's bm25() constants.
K1 = 1.2
B = 0.75
# More segments than this after a commit: the ones after the largest are merged into one.
MAX_SEGMENTS = 32
MERGE_TERMS = 20_000  # words whose postings a merge holds in memory at once
SCHEMA = (
    "CREATE TABLE segments (id INTEGER PRIMARY KEY, docs BLOB NOT NULL, lengths BLOB NOT NULL,"
    " deleted BLOB NOT NULL)",
    "CREATE TABLE postings (term TEXT NOT NULL, segment INTEGER NOT NULL, docs BLOB NOT NULL,"
    " shapes BLOB NOT NULL, PRIMARY KEY (term, segment)) WITHOUT ROWID",
    "CREATE TABLE shapes (code INTEGER PRIMARY KEY, counts TEXT NOT NULL UNIQUE)",
)
MAX_ID = 2**32 - 1  # ids are stored as uint32


class Tokenizer:
    """Words -> their tokens as FTS5's `porter unicode61` tokenizer makes them (cached):
    what the index holds for a word of `keyword_query.terms`."""

    def __init__(self, cache_limit: int = 200_000) -> None:
        self._cache: dict[str, tuple[str, ...]] = {}
        self._limit = cache_limit
        self._lock = threading.Lock()
        self._connection: sqlite3.Connection | None = None

    def tokens(self, words: Sequence[str]) -> dict[str, tuple[str, ...]]:
        cache = self._cache
        unknown = [w for w in dict.fromkeys(words) if w not in cache]
        found = self._tokenize(unknown) if unknown else {}
        result = {w: found[w] if w in found else cache[w] for w in words}
        if len(cache) + len(found) > self._limit:
            cache.clear()
        cache.update(found)
        return result

    def _tokenize(self, words: list[str]) -> dict[str, tuple[str, ...]]:
        with self._lock:
            if self._connection is None:
                self._connection = sqlite3.connect(":memory:", check_same_thread=False)
            db = self._connection
            db.execute("DROP TABLE IF EXISTS temp_words")
            db.execute("CREATE VIRTUAL TABLE temp_words USING fts5(w, tokenize = 'porter unicode61')")
            db.execute("CREATE VIRTUAL TABLE IF NOT EXISTS temp_tokens "
                       "USING fts5vocab(temp_words, instance)")
            db.executemany("INSERT INTO temp_words (rowid, w) VALUES (?, ?)", enumerate(words))
            found: list[list[str]] = [[] for _ in words]
            for term, doc in db.execute("SELECT term, doc FROM temp_tokens ORDER BY doc, offset"):
                found[doc].append(term)
        return {w: tuple(tokens) for w, tokens in zip(words, found)}


@dataclass(frozen=True)
class Live:
    """Which version of each row is current: `current[id]` its segment (0: none),
    `length[id]` its words; with the row count and the mean length bm25() uses, each row's
    length term of bm25() (`norm`: k1 (1 - b + b D / avgdl)), and the segments holding
    only current rows (`clean`: their postings need no check)."""
    generation: int
    current: np.ndarray
    length: np.ndarray  # (ids, fields): each row's words in each field
    rows: int
    avgdl: float
    norm: np.ndarray
    clean: frozenset[int]
    shapes: dict[int, tuple[int, ...]]
    last_shape: int
    _frequencies: dict = field(default_factory=dict, compare=False, repr=False)
    _subsets: dict = field(default_factory=dict, compare=False, repr=False)

    def lengths_of(self, fields: tuple[bool, ...]) -> tuple[float, np.ndarray]:
        """(avgdl, norm) of an index holding only `fields` (all of them: the stored ones)."""
        if all(fields):
            return self.avgdl, self.norm
        if fields not in self._subsets:
            length = self.length[:, np.asarray(fields)].sum(axis=1)
            alive = self.current > 0
            total = int(length[alive].sum())
            avgdl = float(total) / float(self.rows) if self.rows else 0.0
            self._subsets[fields] = (avgdl, _norm(length, avgdl))
        return self._subsets[fields]

    def present(self, fields: tuple[bool, ...]) -> np.ndarray:
        """Per shape code, whether the word is in any of `fields` at all."""
        key = ("present", fields)
        if key not in self._subsets:
            found = np.zeros(self.last_shape + 1, dtype=bool)
            for code, counts in self.shapes.items():
                found[code] = any(n and kept for n, kept in zip(counts, fields))
            self._subsets[key] = found
        return self._subsets[key]

    def frequency(self, weights: tuple[float, ...]) -> np.ndarray:
        """Per shape code, the frequency bm25() sums: each instance adds its field's weight,
        field by field in order (as FTS5 walks them)."""
        if weights in self._frequencies:
            return self._frequencies[weights]
        values = np.zeros(max(self.shapes, default=0) + 1, dtype=np.float64)
        for code, counts in self.shapes.items():
            f = 0.0
            for weight, count in zip(weights, counts):
                for _ in range(count):
                    f += weight
            values[code] = f
        self._frequencies[weights] = values
        return values


class SearchCache:
    """What searches of one index keep: the last `Live` read, while the index's postings
    are unchanged (a process that searches again, a web server's, reads them once per
    commit), and the tokenizer's words."""

    def __init__(self) -> None:
        self._live: Live | None = None
        self.tokenizer = Tokenizer()

    def get(self, connection: sqlite3.Connection) -> Live:
        """The current `Live` (call inside a read transaction)."""
        live = self._live
        if live is None or live.generation != generation(connection):
            live = self._live = load_live(connection)
        return live


def write_segment(connection: sqlite3.Connection, docs: dict[int, list[str] | None],
                  tokenizer: Tokenizer) -> None:
    """Add one segment (inside the caller's transaction): `docs` maps a row id to its
    fields' text as FTS5 indexes it (`keyword_query.index_text`), or None to delete it."""
    written = sorted(row_id for row_id, fields in docs.items() if fields is not None)
    deleted = sorted(row_id for row_id, fields in docs.items() if fields is None)
    if max(written[-1:] + deleted[-1:], default=0) > MAX_ID:
        raise ValueError(f"a row id above {MAX_ID} cannot be kept in the keyword postings")
    words = {w for row_id in written for text in docs[row_id] for w in text.split()}
    tokens = tokenizer.tokens(sorted(words))
    shapes = {tuple(json.loads(counts)): code
              for counts, code in connection.execute("SELECT counts, code FROM shapes")}
    by_term: dict[str, tuple[list[int], list[int]]] = {}
    lengths = []
    for row_id in written:
        counts: dict[str, list[int]] = {}
        fields = docs[row_id]
        width = len(fields)
        per_field_length = [0] * width
        for column, text in enumerate(fields):
            for word in text.split():
                for token in tokens[word]:
                    per_field = counts.get(token)
                    if per_field is None:
                        per_field = counts[token] = [0] * width
                    per_field[column] += 1
                    per_field_length[column] += 1
        lengths.append(per_field_length)
        for token, per_field in counts.items():
            key = tuple(per_field)
            code = shapes.get(key)
            if code is None:
                code = shapes[key] = len(shapes) + 1
                connection.execute("INSERT INTO shapes VALUES (?, ?)",
                                   (code, json.dumps(per_field, separators=(",", ":"))))
            ids, codes = by_term.setdefault(token, ([], []))
            ids.append(row_id)
            codes.append(code)
    (segment,) = connection.execute("SELECT coalesce(max(id), 0) + 1 FROM segments").fetchone()
    connection.execute("INSERT INTO segments VALUES (?, ?, ?, ?)", (
        segment, _blob(written, np.uint32), _blob(lengths, np.int32), _blob(deleted, np.uint32)))
    connection.executemany("INSERT INTO postings VALUES (?, ?, ?, ?)", (
        (term, segment, _blob(ids, np.uint32), _blob(codes, np.uint32))
        for term, (ids, codes) in by_term.items()))
    _bump(connection)


def merge(connection: sqlite3.Connection, everything: bool = False) -> int:
    """Merge segments into one (inside the caller's transaction): those after the largest,
    or `everything`. Returns how many segments were merged (0: nothing to do)."""
    sizes = connection.execute("SELECT id, length(docs) FROM segments ORDER BY id").fetchall()
    if everything:
        merged = [seg for seg, _ in sizes]
    else:
        largest = max(sizes, key=lambda item: (item[1], -item[0]), default=(0, 0))[0]
        merged = [seg for seg, _ in sizes if seg > largest]
    if len(merged) < 2 and not (everything and len(merged) == 1 and _has_deletions(connection)):
        return 0
    live = load_live(connection)
    first = min(merged)
    segment = max(seg for seg, _ in sizes) + 1
    written = np.flatnonzero(np.isin(live.current, merged))  # rows merged, by id
    deleted = np.empty(0, dtype=np.uint32)
    if not everything:  # deletions of rows that older segments still name
        named = np.concatenate([_array(blob, np.uint32) for (blob,) in connection.execute(
            "SELECT deleted FROM segments WHERE id >= ?", (first,))] + [deleted])
        deleted = np.unique(named[live.current[named] == 0]).astype(np.uint32)
    marks = ",".join("?" * len(merged))
    terms = [term for (term,) in connection.execute(
        f"SELECT DISTINCT term FROM postings WHERE segment IN ({marks}) ORDER BY term", merged)]
    for start in range(0, len(terms), MERGE_TERMS):  # a bounded part of the postings at a time
        low, high = terms[start], terms[min(start + MERGE_TERMS, len(terms)) - 1]
        rows, current_term, ids, codes = [], None, [], []
        for term, seg, docs, shapes in connection.execute(
                f"SELECT term, segment, docs, shapes FROM postings WHERE term BETWEEN ? AND ? "
                f"AND segment IN ({marks}) ORDER BY term, segment", (low, high, *merged)):
            if term != current_term:
                if current_term is not None:
                    rows.append(_merged_row(current_term, segment, ids, codes))
                current_term, ids, codes = term, [], []
            docs, shapes = _current(live, seg, docs, shapes)
            ids.append(docs)
            codes.append(shapes)
        rows.append(_merged_row(current_term, segment, ids, codes))
        connection.execute(f"DELETE FROM postings WHERE term BETWEEN ? AND ? "
                           f"AND segment IN ({marks})", (low, high, *merged))
        connection.executemany("INSERT INTO postings VALUES (?, ?, ?, ?)",
                               (row for row in rows if row is not None))
    connection.execute(f"DELETE FROM segments WHERE id IN ({marks})", merged)
    connection.execute("INSERT INTO segments VALUES (?, ?, ?, ?)", (
        segment, written.astype(np.uint32).tobytes(),
        live.length[written].astype(np.int32).tobytes(), deleted.tobytes()))
    _bump(connection)
    return len(merged)


def _merged_row(term: str, segment: int, ids: list, codes: list):
    docs = np.concatenate(ids)
    if not len(docs):
        return None
    order = np.argsort(docs, kind="stable")
    return term, segment, docs[order].tobytes(), np.concatenate(codes)[order].tobytes()


def _has_deletions(connection: sqlite3.Connection) -> bool:
    return connection.execute(
        "SELECT 1 FROM segments WHERE length(deleted) > 0 LIMIT 1").fetchone() is not None


def segment_count(connection: sqlite3.Connection) -> int:
    return connection.execute("SELECT count(*) FROM segments").fetchone()[0]


def generation(connection: sqlite3.Connection) -> int:
    found = connection.execute(
        "SELECT value FROM meta WHERE key = 'postings_generation'").fetchone()
    return int(found[0]) if found else 0


def _bump(connection: sqlite3.Connection) -> None:
    connection.execute("INSERT INTO meta VALUES ('postings_generation', ?) ON CONFLICT (key) "
                       "DO UPDATE SET value = value + 1", ("1",))


def load_live(connection: sqlite3.Connection) -> Live:
    """The current version of every row, from the segments, oldest first."""
    segments = [(seg, _array(docs, np.uint32), _array(lengths, np.int32),
                 _array(deleted, np.uint32)) for seg, docs, lengths, deleted in connection.execute(
        "SELECT id, docs, lengths, deleted FROM segments ORDER BY id")]
    size = 1 + max((int(a.max()) for _, docs, _, deleted in segments for a in (docs, deleted)
                    if len(a)), default=0)
    fields = next((len(lengths) // len(docs) for _, docs, lengths, _ in segments if len(docs)), 1)
    current = np.zeros(size, dtype=np.int64)
    length = np.zeros((size, fields), dtype=np.int64)
    for seg, docs, lengths, deleted in segments:
        if len(lengths) != len(docs) * fields:
            raise sqlite3.DatabaseError(f"malformed postings ({len(docs)} ids, "
                                        f"{len(lengths)} lengths)")
        current[docs] = seg
        length[docs] = lengths.reshape(len(docs), fields)
        current[deleted] = 0
    alive = current > 0
    rows = int(alive.sum())
    total = int(length[alive].sum())
    avgdl = float(total) / float(rows) if rows else 0.0
    clean = frozenset(seg for seg, docs, _, _ in segments if (current[docs] == seg).all())
    shapes = {code: tuple(json.loads(counts))
              for code, counts in connection.execute("SELECT code, counts FROM shapes")}
    if shapes and any(len(counts) != fields for counts in shapes.values()):
        raise sqlite3.DatabaseError(f"malformed postings (lengths of {fields} fields a row, "
                                    "counts of another number)")
    return Live(generation(connection), current, length, rows, avgdl,
                _norm(length.sum(axis=1), avgdl), clean, shapes, max(shapes, default=0))


def _norm(length: np.ndarray, avgdl: float) -> np.ndarray:
    """Each row's length term of bm25(), k1 (1 - b + b D / avgdl), as bm25() computes it
    (the same order of operations)."""
    if not avgdl:
        return np.zeros(len(length), dtype=np.float64)
    return K1 * (1 - B + B * length.astype(np.float64) / avgdl)


def rank(connection: sqlite3.Connection, live: Live, phrases: Sequence[str],
         weights: tuple[float, ...], limit: int, allowed: set[int] | None = None,
         excluded: np.ndarray | None = None) -> tuple[list[tuple[int, float]], int]:
    """The best `limit` rows for an OR of single-token `phrases` (repeats count twice, as in
    FTS5) by bm25() with field `weights`: ([(row id, score)], best first, ties by id; how
    many rows match), of the `allowed` ids only and none of the `excluded`."""
    if live.rows and live.length.shape[1] != len(weights):
        raise sqlite3.DatabaseError(f"malformed postings ({live.length.shape[1]} field lengths "
                                    f"a row, {len(weights)} fields)")
    frequency = live.frequency(weights)
    fields = tuple(weight > 0 for weight in weights)
    _, norm = live.lengths_of(fields)
    present = None if all(fields) else live.present(fields)
    scores = np.zeros(len(live.current), dtype=np.float64)
    for phrase in phrases:
        docs, codes = _postings(connection, live, phrase)
        if present is not None:  # rows holding the word only in fields left out
            kept = present[codes]
            docs, codes = docs[kept], codes[kept]
        hits = len(docs)
        idf = math.log((live.rows - hits + 0.5) / (hits + 0.5))
        if idf <= 0.0:
            idf = 1e-6
        if not hits:
            continue
        f = frequency[codes]
        scores[docs] += idf * ((f * (K1 + 1.0)) / (f + norm[docs]))
    matched = scores > 0  # every term adds more than 0: idf >= 1e-6, f > 0
    if allowed is not None:
        keep = np.zeros(len(matched), dtype=bool)
        ids = np.fromiter((i for i in allowed if 0 <= i < len(matched)), dtype=np.int64)
        keep[ids] = True
        matched &= keep
    if excluded is not None and len(excluded):
        matched[excluded[excluded < len(matched)]] = False
    candidates = np.flatnonzero(matched)
    total = len(candidates)
    if limit < total:
        # everything scoring at least the limit-th best score (ties included), then sorted
        cut = np.partition(-scores[candidates], limit - 1)[limit - 1]
        candidates = candidates[-scores[candidates] <= cut]
    order = np.lexsort((candidates, -scores[candidates]))[:limit]
    best = candidates[order]
    return [(int(i), float(s)) for i, s in zip(best, scores[best])], total


def matching(connection: sqlite3.Connection, live: Live, terms: Sequence[str]) -> np.ndarray:
    """The current rows holding any of `terms` (ids, sorted): what NOT of them excludes."""
    holding = np.zeros(len(live.current), dtype=bool)
    for term in terms:
        holding[_postings(connection, live, term)[0]] = True
    return np.flatnonzero(holding)


def _postings(connection: sqlite3.Connection, live: Live, term: str):
    """The current rows holding `term` and their shape codes."""
    docs, codes = [], []
    for seg, ids, shapes in connection.execute(
            "SELECT segment, docs, shapes FROM postings WHERE term = ?", (term,)):
        ids, shapes = _current(live, seg, ids, shapes)
        docs.append(ids)
        codes.append(shapes)
    if not docs:
        return np.empty(0, dtype=np.intp), np.empty(0, dtype=np.intp)
    # as numpy's index type once (each fancy index would convert uint32 again)
    return (np.concatenate(docs, dtype=np.intp, casting="safe"),
            np.concatenate(codes, dtype=np.intp, casting="safe"))


def _current(live: Live, segment: int, docs: bytes, shapes: bytes):
    """A postings row's ids and shape codes, of the rows whose current version it holds."""
    docs, shapes = _array(docs, np.uint32), _array(shapes, np.uint32)
    _pair(docs, shapes)
    if len(docs) and (docs.max() >= len(live.current) or shapes.max() > live.last_shape):
        raise sqlite3.DatabaseError("malformed postings (a row or shape no table names)")
    if segment in live.clean:
        return docs, shapes
    alive = live.current[docs] == segment
    return docs[alive], shapes[alive]


def _array(blob: bytes, dtype) -> np.ndarray:
    """A stored array; sqlite3.DatabaseError when the blob cannot be one (damage)."""
    try:
        return np.frombuffer(blob, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise sqlite3.DatabaseError(f"malformed postings ({exc})") from exc


def _pair(first: np.ndarray, second: np.ndarray) -> None:
    """Two stored arrays that go together must be as long (else: damage)."""
    if len(first) != len(second):
        raise sqlite3.DatabaseError(f"malformed postings ({len(first)} ids, {len(second)} values)")


def _blob(values: Sequence[int], dtype) -> bytes:
    return np.asarray(values, dtype=dtype).tobytes()
