"""The keyword index (Whoosh): caption, tags and file-name words, stemmed; BM25F ranking.

The index holds only what search needs to match (the words) plus each row's
`id` and `seq`; paths and captions shown in results come from the catalogue, so
a result never shows stale data. Which rows the index should hold is decided
by the catalogue alone: `reconcile` makes the index hold exactly the catalogue's
'ok' rows at their current `seq`, whatever state a killed run left it in.

Whoosh readers see the last committed state and never wait for the writer, so
`capindex search` works while an ingest is running.

Speed (see docs/performance.md): queued rows are committed 2 s after a run
starts (search soon sees its first images), then every 10 s (a commit costs an
ingest about 50 ms) or 20,000 documents (bulk writes make few segments to merge).
The last commit of a run merges the small segments into one
(`merge_small_segments`): every segment costs each query time to open and
search. Segments are written as plain files, not compound ones, which Whoosh
copies into memory at every search. Words are OR-ed without Whoosh's
coordination bonus (`OrGroup.factory`), which only added a small bonus per
matched word and field but doubled the time of queries with common words:
BM25F's sum over words and fields already ranks images that match more words
higher. Top-N collection skips postings blocks that can at best tie the N-th
score (`TieSkippingCollector`), as Lucene does; `whoosh_fixes` (applied when a
KeywordIndex is made) corrects Whoosh's skipping in compound matchers, which could
pass over or under-score a caption that belongs in the top N. NOT (or a leading "-") excludes (`parse_query`).

Damage: the index is derived data, so a damaged one is rebuilt, never trusted. After each
commit the writer records every index file's size and SHA-256 in `capindex-files.json`.
`problem()` says why the index cannot be used (its table of contents cannot be read, a
file is gone or has another size; with `thorough`, other contents), `search` raises
IndexDamaged for it, and `repair` (at the start of every ingest) deletes a damaged index
so that `reconcile` rebuilds it from the catalogue. An index without a current record
(made by an older capindex, or a run killed between a commit and its record) is read
through once, every posting and stored field, before it is trusted. Whoosh's pickles
are read with an allowlist (`whoosh_pickles`), so a crafted index file runs no code.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import time
from collections.abc import Iterable
from pathlib import Path

from whoosh import index as whoosh_index
from whoosh.analysis import StemmingAnalyzer
from whoosh.collectors import TopCollector
from whoosh.fields import ID, STORED, TEXT, Schema
from whoosh.query import NullQuery
from whoosh.reading import SegmentReader
from whoosh.scoring import BM25F

from capindex.errors import IndexDamaged
from capindex.store import whoosh_fixes, whoosh_pickles
from capindex.store.keyword_query import FIELD_BOOSTS, FIELDS, check_query, parse_query

__all__ = ["FIELDS", "FIELD_BOOSTS", "AllowedIdsCollector", "KeywordIndex", "TieSkippingCollector",
           "document", "shown_caption"]
# A segment holding less than this share of the documents is merged at the end of a run.
MERGE_SHARE = 0.25
# The writer's record of the index files: {"toc": name, "files": {name: [size, sha256]}}.
MANIFEST = "capindex-files.json"
_INDEX_FILE = re.compile(r"^(_MAIN_(\d+)\.toc|MAIN_[0-9a-z]+\..+)$")  # TOCs and segment files


# Tags at least this probable also give their broader words (`capindex.words`) to the
# `words` field; the top-5 tags' tail is mostly noise (0.1% "plastic bag" on a cat).
TAG_WORDS_MIN_PROB = 0.1
_COUNTS = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight",
           9: "nine", 10: "ten"}


def make_schema() -> Schema:
    text = StemmingAnalyzer()  # lower case, stop words, Porter stems: "dogs", "running" match
    return Schema(
        id=ID(unique=True, stored=True),
        seq=STORED,
        caption=TEXT(analyzer=text),
        alt=TEXT(analyzer=text),  # the beam's next best captions
        objects=TEXT(analyzer=text),  # detected objects, with counts: "two dog", "person"
        tags=TEXT(analyzer=text),
        words=TEXT(analyzer=text),  # broader words of tags, objects and caption nouns (WordNet)
        # "IMG_2041_beach-sunset.jpg" -> img, 2041, beach, sunset
        name=TEXT(analyzer=StemmingAnalyzer(expression=r"[^\W_]+")),
    )


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
    when set); the model's caption it replaces moves to `alt`, with the beam's next best."""
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
        "name": name,
    }


class KeywordIndex:
    """A Whoosh index in `directory`; writes are buffered and committed by `flush`."""

    def __init__(self, directory: Path, flush_every: int = 20000, flush_seconds: float = 10.0,
                 first_flush_seconds: float = 2.0) -> None:
        whoosh_fixes.apply()  # correct top-N matching before any search (whoosh_fixes.py)
        whoosh_pickles.apply()  # read Whoosh's pickles with an allowlist (whoosh_pickles.py)
        self.directory = Path(directory)
        self.flush_every = flush_every
        self.flush_seconds = flush_seconds
        # The first commit comes sooner, so that search shows a run's first images quickly.
        self._interval = first_flush_seconds
        self._pending: dict[int, dict | None] = {}  # id -> document to index, or None to delete
        self._last_flush = time.monotonic()

    def exists(self) -> bool:
        """Whether there is an index here (a table of contents), readable or not."""
        return self._latest_toc() is not None

    def _latest_toc(self) -> str | None:
        tocs = [(int(m.group(2)), m.group(1)) for m in map(_INDEX_FILE.match, _names(self.directory))
                if m and m.group(2)]
        return max(tocs)[1] if tocs else None

    def _open_existing(self):
        """The Whoosh index; IndexDamaged when its table of contents cannot be read."""
        for attempt in range(3):
            try:
                return whoosh_index.open_dir(str(self.directory))
            except FileNotFoundError:
                # A commit replaced the table of contents between our listing and reading it.
                if attempt == 2:
                    raise
                time.sleep(0.05)
            except Exception as exc:  # whatever a damaged file makes Whoosh raise
                raise IndexDamaged(str(self.directory), f"damaged: {self._latest_toc()} "
                                   f"cannot be read ({_describe(exc)})") from exc
        return None  # not reached

    def _open(self):
        """The index for writing; one made by an older capindex (other fields) starts over
        empty, and `reconcile` refills it from the catalogue."""
        if self.exists():
            ix = self._open_existing()
            if set(ix.schema.names()) == set(make_schema().names()):
                return ix
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        ix = whoosh_index.create_in(str(self.directory), make_schema())
        self._record_files()
        return ix

    # -- writing (only `capindex ingest`, under the library's ingest lock) --

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
        """Commit the queued changes (one Whoosh commit).

        `final` (the end of a run): also merge the small segments into one, so
        that searches open and scan few segments.
        """
        self._last_flush = time.monotonic()
        self._interval = self.flush_seconds
        if not self._pending and not final:
            return
        ix = self._open()
        if not self._pending and len(small_segments(ix._segments())) < 2:
            return  # nothing to write, nothing to merge
        # compound=False: a segment's files stay separate. Whoosh reads a compound
        # segment through in-memory copies of its parts, made again by every
        # search: 8 ms a query at 100,000 captions, against 0.5 ms for plain files.
        writer = ix.writer(limitmb=64, compound=False)
        try:
            for row_id, doc in self._pending.items():
                if doc is None:
                    writer.delete_by_term("id", str(row_id))
                else:
                    writer.update_document(**doc)
        except BaseException:
            writer.cancel()
            raise
        writer.commit(mergetype=merge_small_segments if final else None)
        self._pending.clear()
        self._record_files()

    def discard(self) -> None:
        """Forget queued changes (the next reconcile restores them from the catalogue)."""
        self._pending.clear()

    def reconcile(self, catalog) -> int:
        """Make the index hold exactly the catalogue's 'ok' rows; returns the changes made."""
        ix = self._open()
        with ix.searcher() as searcher:
            have = {int(f["id"]): f["seq"] for f in searcher.reader().all_stored_fields()}
        want = {row_id: seq for seq, row_id in catalog.live_seqs(ok_only=True).items()}
        stale = [row_id for row_id in have if row_id not in want]
        todo = [row_id for row_id, seq in want.items() if have.get(row_id) != seq]
        if stale or todo:
            self.update(catalog.rows(todo), stale)
            self.flush(final=True)
        return len(stale) + len(todo)

    # -- damage --------------------------------------------------------------

    def problem(self, thorough: bool = False) -> str | None:
        """Why the index cannot be used ("damaged: ..."), or None. Without `thorough`:
        its table of contents is read and the recorded files are there with their sizes
        (cheap, for info); `thorough` also compares their contents (SHA-256). An index that
        is not there at all is no problem here: whether it should be, the catalogue says."""
        for _ in range(3):
            toc = self._latest_toc()
            if toc is None:
                return None
            try:
                self._open_existing()
                problem = self._check_files(thorough)
            except IndexDamaged as exc:
                problem = exc.problem
            if problem is None or self._latest_toc() == toc:
                return None if problem is _UNRECORDED else problem
            # an ingest committed meanwhile (and removed files of the old commit): look again
        return None if problem is _UNRECORDED else problem

    def _check_files(self, thorough: bool) -> str | None:
        """Compare the files with the writer's record; _UNRECORDED when it has none for the
        current table of contents."""
        record = self._read_record()
        if record is None or record.get("toc") != self._latest_toc():
            return _UNRECORDED
        for name, (size, digest) in sorted(record["files"].items()):
            path = self.directory / name
            try:
                actual = path.stat().st_size
            except FileNotFoundError:
                return f"damaged: {name} is gone"
            if actual != size:
                return f"damaged: {name} changed since capindex wrote it ({actual} bytes, not {size})"
            if thorough and _sha256(path) != digest:
                return f"damaged: {name} changed since capindex wrote it (other contents)"
        return None

    def repair(self, catalog) -> str | None:
        """At the start of an ingest (under its lock): delete an index that cannot be used,
        so that `reconcile` rebuilds it from the catalogue. Returns why ("missing" when
        the catalogue has rows to index but there is no index), or None."""
        if not self.exists():
            if self.directory.exists():
                shutil.rmtree(self.directory)  # what is left of an index without its TOC
            return "missing" if catalog.has_ok_rows() else None
        problem = self.problem(thorough=True)
        if problem is None and self._check_files(thorough=False) is _UNRECORDED:
            problem = self._read_through()
            if problem is None:
                self._record_files()
        if problem is not None:
            shutil.rmtree(self.directory)
        return problem

    def _read_through(self) -> str | None:
        """Read every posting and stored field once (an index capindex has no record of)."""
        try:
            with self._open_existing().searcher() as searcher:
                reader = searcher.reader()
                for fieldname, text in reader.all_terms():
                    for _ in reader.postings(fieldname, text).all_ids():
                        pass
                for _ in reader.all_stored_fields():
                    pass
        except IndexDamaged as exc:
            return exc.problem
        except Exception as exc:  # whatever a damaged file makes Whoosh raise
            return f"damaged: it could not be read ({_describe(exc)})"
        return None

    def _record_files(self) -> None:
        """Record each index file's size and SHA-256 (writer only, after a commit). Whoosh
        never rewrites a file (segments and tables of contents get new names), so the hash
        of a file recorded before with the same size is kept, not computed again."""
        before = (self._read_record() or {}).get("files", {})
        files = {}
        for name in sorted(_names(self.directory)):
            if _INDEX_FILE.match(name):
                size = (self.directory / name).stat().st_size
                known = before.get(name)
                files[name] = [size, known[1] if known and known[0] == size
                               else _sha256(self.directory / name)]
        tmp = self.directory / (MANIFEST + ".partial")
        tmp.write_text(json.dumps({"toc": self._latest_toc(), "files": files}, indent=1))
        tmp.replace(self.directory / MANIFEST)

    def _read_record(self) -> dict | None:
        try:
            record = json.loads((self.directory / MANIFEST).read_text())
            return record if isinstance(record, dict) and isinstance(record.get("files"), dict) \
                else None
        except (OSError, ValueError):
            return None

    # -- reading -----------------------------------------------------------

    def doc_count(self) -> int:
        """Documents in the index (0 when there is none); IndexDamaged when it cannot be read."""
        if not self.exists():
            return 0
        return self._open_existing().doc_count()

    def search(self, text: str, limit: int = 10, boosts: dict[str, float] | None = None,
               allowed: set[int] | None = None) -> list[tuple[int, float]]:
        """(row id, BM25F score) of the best matches, best first; `boosts` overrides
        FIELD_BOOSTS (0 leaves a field out); `allowed`: only these row ids (a filter,
        applied while collecting the top `limit`).

        Raises QuerySyntaxError for a malformed query, IndexDamaged when the index cannot
        be read; an empty list when the query has no searchable words or nothing matches.
        """
        if allowed is not None and not allowed:
            check_query(text)
            return []
        return self._read(text, boosts, lambda searcher, query: self._top(
            searcher, query, limit, allowed)) or []

    def count(self, text: str, allowed: set[int] | None = None) -> int:
        """How many documents match `text` (of the `allowed` row ids only, when given)."""
        if allowed is not None and not allowed:
            check_query(text)
            return 0
        return self._read(text, None, lambda searcher, query: _count(searcher, query, allowed)) or 0

    @staticmethod
    def _top(searcher, query, limit: int, allowed: set[int] | None) -> list[tuple[int, float]]:
        collector = (TieSkippingCollector(limit=limit) if allowed is None
                     else AllowedIdsCollector(allowed, limit=limit))
        searcher.search_with_collector(query, collector)
        return [(int(hit["id"]), hit.score) for hit in collector.results()]

    def _read(self, text: str, boosts: dict[str, float] | None, run):
        """run(searcher, query) on the index, retried when an ingest merged segments
        meanwhile; None when the query has no searchable words."""
        check_query(text)
        for attempt in range(3):
            try:
                ix = self._open_existing()
                query = parse_query(text, ix.schema, boosts)
                if query is NullQuery:
                    return None
                with ix.searcher(weighting=BM25F()) as searcher:
                    return run(searcher, query)
            except FileNotFoundError as exc:
                # An ingest merged segments between our reading the table of
                # contents and opening them; the next try sees the new ones.
                if attempt == 2:
                    self._raise_if_damaged(exc)
                time.sleep(0.05)
            except IndexDamaged:
                raise
            except Exception as exc:
                self._raise_if_damaged(exc)
        return None  # not reached

    def _raise_if_damaged(self, exc: Exception) -> None:
        """Whoosh failed: IndexDamaged when the files show damage (or, with no record to
        compare with, in any case); else the failure is a bug and goes on as it is."""
        problem = self.problem(thorough=True)
        if problem is None and self._check_files(thorough=False) is _UNRECORDED:
            problem = f"damaged: it could not be read ({_describe(exc)})"
        if problem is None:
            raise exc
        raise IndexDamaged(str(self.directory), problem) from exc

    def excluded_ids(self, text: str) -> set[int]:
        """The ids of the documents `text` excludes (NOT word, -word): other kinds of search
        leave them out too."""
        from whoosh.query import AndNot, Not

        ix = whoosh_index.open_dir(str(self.directory))
        query = parse_query(text, ix.schema)
        negative = (query.b if isinstance(query, AndNot)
                    else query.query if isinstance(query, Not) else None)
        if negative is None:
            return set()
        with ix.searcher() as searcher:
            return {int(searcher.stored_fields(n)["id"]) for n in searcher.docs_for_query(negative)}


_UNRECORDED = "unrecorded"  # the writer's record is missing or not for this commit

def _names(directory: Path) -> list[str]:
    try:
        return os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return []


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


class TieSkippingCollector(TopCollector):
    """Whoosh's top-N collector, with the bar for the N-th place set as Lucene sets it.

    Once N documents are held, another only gets in with a higher score than the
    N-th (earlier documents win ties). Whoosh's collector raises the bar its
    matchers skip and prune by only when a document displaces another, and its OR
    matcher skips a postings block only when the block's best possible score is
    strictly below the bar. Captions are short and alike: the first N matches
    often already have the best score, nothing displaces them, and every matching
    document was scored (6,528 of 100,000 captions for "man grass"; 73 now). Here
    the bar is set as soon as N documents are held, one floating-point step above
    the N-th score. Results are those of exhaustive scoring, up to the order of
    documents whose scores differ by rounding only (tests check both).
    """

    def _collect(self, global_docnum, score):
        sort_key = super()._collect(global_docnum, score)
        if len(self.items) == self.limit:
            self.minscore = math.nextafter(self.items[0][0], math.inf)
        return sort_key


class AllowedIdsCollector(TieSkippingCollector):
    """The top-N collector that takes only documents of the `allowed` row ids (a search
    filter): the N best allowed documents, with the same skipping once N are held. Each
    match considered costs one stored-field read (about 15 us)."""

    def __init__(self, allowed: set[int], limit: int = 10) -> None:
        super().__init__(limit=limit)
        self.allowed = allowed

    def collect(self, sub_docnum):
        if int(self.subsearcher.stored_fields(sub_docnum)["id"]) not in self.allowed:
            return None
        return super().collect(sub_docnum)


def _count(searcher, query, allowed: set[int] | None) -> int:
    docnums = searcher.docs_for_query(query)
    if allowed is None:
        return sum(1 for _ in docnums)
    return sum(1 for n in docnums if int(searcher.stored_fields(n)["id"]) in allowed)


def small_segments(segments: list) -> list:
    """The segments holding less than MERGE_SHARE of all documents."""
    total = sum(seg.doc_count_all() for seg in segments)
    return [seg for seg in segments if seg.doc_count_all() < MERGE_SHARE * total]


def merge_small_segments(writer, segments):
    """Whoosh merge policy: merge every segment holding less than MERGE_SHARE of the
    documents into one new segment; keep the big ones as they are.

    After a first big ingest this leaves one segment or a few; a later small run
    adds one small segment, merged with the other small ones at its end, so the
    big segments are rewritten only when the small ones have grown comparable.
    """
    small = small_segments(segments)
    if len(small) < 2:
        return segments
    for seg in small:
        reader = SegmentReader(writer.storage, writer.schema, seg)
        writer.add_reader(reader)
        reader.close()
    return [seg for seg in segments if seg not in small]
