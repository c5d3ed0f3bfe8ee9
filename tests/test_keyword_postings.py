"""The keyword index's postings (store/keyword_postings.py): a query of plain words ranked in
numpy gives FTS5's bm25() ranking exactly, through updates, deletions and merges; other
queries and older indexes go through FTS5."""

from __future__ import annotations

import random
import sqlite3

import pytest

from capindex.store import keyword_postings as postings
from capindex.store.keyword import (
    FIELD_BOOSTS,
    FIELDS,
    FORMAT,
    READABLE_FORMATS,
    KeywordIndex,
    _allowed_clause,
)
from capindex.store.keyword_query import parse_query

WORDS = ("dog dogs running run runs beach man woman girl boy child children water grass red "
         "blue ball cat cats snow jumping jumps street café naïve bicycle player").split()
WEIGHTS = tuple(float(FIELD_BOOSTS[f]) for f in FIELDS)


def _row(rng: random.Random, row_id: int) -> dict:
    def words(low, high):
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(low, high)))
    return {"id": row_id, "seq": row_id, "status": "ok",
            "path": f"/photos/IMG_{row_id}_{rng.choice(WORDS)}.jpg", "caption": words(2, 9),
            "alt_captions": [words(3, 5), words(0, 4)],
            "tags": [{"label": rng.choice(WORDS), "prob": rng.random()}],
            "objects": [{"label": "dog"}] * rng.randint(0, 3), "concepts": [rng.choice(WORDS)]}


def _build(path, rng: random.Random, flush_every: int = 40) -> KeywordIndex:
    """An index written in many commits: rows added, rewritten and deleted."""
    index = KeywordIndex(path, flush_every=flush_every)
    index.update([_row(rng, i) for i in range(1, 300)])
    index.flush()
    index.update([_row(rng, i) for i in range(50, 120)], deleted_ids=range(120, 140))
    index.flush()
    index.update([dict(_row(rng, i), status="error") for i in range(10, 15)])
    index.update([_row(rng, i) for i in range(300, 330)])
    index.flush()
    return index


def _both(index: KeywordIndex, text: str, limit: int, allowed=None):
    query = parse_query(text)
    fast = index._rank_words(query, WEIGHTS, limit, allowed)
    slow = index._rank_fts(query, dict(FIELD_BOOSTS), FIELDS, limit, allowed)
    if fast is not None:
        fast, matches = fast
        where, params = _allowed_clause(allowed, "rowid")
        assert matches == index._rows(f"SELECT count(*) FROM docs WHERE docs MATCH ?{where}",
                                      (query.match(), *params))[0][0]
    return fast, slow


def _queries(rng: random.Random, n: int) -> list[str]:
    found = []
    for _ in range(n):
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 4)))
        if rng.random() < 0.2:
            text += " -" + rng.choice(WORDS)
        if rng.random() < 0.2:
            text = text.replace(" ", " OR ", 1)
        found.append(text)
    return found


@pytest.mark.parametrize("final", [False, True])
def test_plain_word_queries_rank_as_fts5_exactly(tmp_path, final):
    rng = random.Random(7)
    index = _build(tmp_path / "keyword.sqlite", rng)
    index.flush(final=final)  # final: the segments are merged
    reader = KeywordIndex(tmp_path / "keyword.sqlite")
    allowed = set(range(1, 400, 3))
    for text in _queries(rng, 150):
        for limit, only in ((10, None), (200, None), (10, allowed)):
            fast, slow = _both(reader, text, limit, only)
            assert fast is not None, text
            assert fast == slow, (text, limit)  # same ids, same order, same float scores
    assert reader.search("dogs", 5) == _both(reader, "dog", 5)[1]  # stemmed alike


def test_many_commits_are_merged_and_still_rank_alike(tmp_path, monkeypatch):
    monkeypatch.setattr(postings, "MAX_SEGMENTS", 3)
    monkeypatch.setattr(postings, "MERGE_TERMS", 4)  # a merge goes a few words at a time
    rng = random.Random(3)
    path = tmp_path / "keyword.sqlite"
    index = KeywordIndex(path)
    for start in range(1, 200, 20):
        index.update([_row(rng, i) for i in range(start, start + 20)],
                     deleted_ids=[start - 7] if start > 20 else [])
        index.flush()
        segments = postings.segment_count(sqlite3.connect(path))
        assert segments <= 4
    index.update([_row(rng, 5)])
    index.flush(final=True)  # a small last commit: merged into the segment after the largest
    assert postings.segment_count(sqlite3.connect(path)) <= 2
    reader = KeywordIndex(path)
    for text in _queries(rng, 60):
        fast, slow = _both(reader, text, 20)
        assert fast == slow, text
    connection = sqlite3.connect(path)
    assert postings.load_live(connection).rows == connection.execute(
        "SELECT count(*) FROM seqs").fetchone()[0]


def test_other_queries_go_through_fts5(tmp_path):
    index = _build(tmp_path / "keyword.sqlite", random.Random(1))
    index.flush(final=True)
    for text in ('"red ball"', "caption:dog", "dog*", "dog AND cat", "dog ANDMAYBE cat",
                 "beach-ball"):
        assert index._rank_words(parse_query(text), WEIGHTS, 10, None) is None, text
        assert index.search(text, 10) == index._rank_fts(
            parse_query(text), dict(FIELD_BOOSTS), FIELDS, 10, None)
    # plain words ranked from the postings, less what a phrase or a field excludes (FTS5)
    for text in ('dog beach NOT "red ball"', "dog -caption:cat", "boy -cat -snow"):
        fast, slow = _both(index, text, 30)
        assert fast is not None and fast == slow, text
    # a field left out by a boost of 0, in a query FTS5 ranks: left out of the match
    assert index.search('"red ball"', 10, boosts={"name": 0}) == index._rank_fts(
        parse_query('"red ball"'), {**FIELD_BOOSTS, "name": 0},
        tuple(f for f in FIELDS if f != "name"), 10, None)


@pytest.mark.parametrize("left_out", [("name",), ("alt", "objects", "words", "concepts")])
def test_weights_of_0_rank_as_an_index_without_those_fields(tmp_path, left_out):
    """What `evaluate-search --signals` measures: the fields before a signal, as an index
    that never held the signal's field would rank them (FTS5 of such an index, here)."""
    rng = random.Random(11)
    rows = [_row(rng, i) for i in range(1, 250)]
    full = KeywordIndex(tmp_path / "full.sqlite")
    full.update(rows)
    full.flush(final=True)
    without = KeywordIndex(tmp_path / "without.sqlite")
    import capindex.store.keyword as keyword

    document = keyword.document

    def fewer_fields(row):
        doc = document(row)
        return {**doc, **{field: "" for field in left_out}}
    keyword.document = fewer_fields
    try:
        without.update(rows)
        without.flush(final=True)
    finally:
        keyword.document = document
    boosts = {field: 0 for field in left_out}
    for text in _queries(rng, 80):
        text = text.split(" -")[0]  # NOT still looks in every field
        got = full.search(text, 15, boosts=boosts)
        assert got == without._rank_fts(parse_query(text), dict(FIELD_BOOSTS), FIELDS, 15,
                                        None), text


def test_tokens_are_fts5s():
    tokens = postings.Tokenizer().tokens(["dogs", "running", "café", "naïve", "x2"])
    assert tokens == {"dogs": ("dog",), "running": ("run",), "café": ("cafe",),
                      "naïve": ("naiv",), "x2": ("x2",)}


def test_an_index_of_the_previous_format_is_searched_by_fts5_then_rebuilt(tmp_path):
    path = tmp_path / "keyword.sqlite"
    index = _build(path, random.Random(5))
    index.flush(final=True)
    expected = KeywordIndex(path).search("dog beach", 10)
    connection = sqlite3.connect(path)
    for table in ("segments", "postings", "shapes"):
        connection.execute(f"DROP TABLE {table}")
    connection.execute("UPDATE meta SET value = ? WHERE key = 'format'", (READABLE_FORMATS[1],))
    connection.commit()
    connection.close()
    old = KeywordIndex(path)
    assert old._rank_words(parse_query("dog beach"), WEIGHTS, 10, None) is None
    assert old.search("dog beach", 10) == expected
    assert old.problem() is None  # readable as it is; the next ingest's writer rebuilds it
    writer = KeywordIndex(path)
    writer.update([_row(random.Random(0), 1)])
    writer.flush(final=True)
    assert sqlite3.connect(path).execute(
        "SELECT value FROM meta WHERE key = 'format'").fetchone()[0] == FORMAT


def test_postings_out_of_step_with_the_documents_are_damage(tmp_path):
    path = tmp_path / "keyword.sqlite"
    index = _build(path, random.Random(2))
    index.flush(final=True)
    assert KeywordIndex(path).problem(thorough=True) is None
    connection = sqlite3.connect(path)
    connection.execute("UPDATE segments SET docs = substr(docs, 5)")  # one row forgotten
    connection.commit()
    connection.close()
    problem = KeywordIndex(path).problem(thorough=True)
    assert problem is not None and "postings" in problem


def test_ingest_rebuilds_an_index_of_the_previous_format_saying_so(tmp_path):
    path = tmp_path / "keyword.sqlite"
    index = _build(path, random.Random(6))
    index.flush(final=True)
    connection = sqlite3.connect(path)
    connection.execute("UPDATE meta SET value = ? WHERE key = 'format'", (READABLE_FORMATS[1],))
    connection.commit()
    connection.close()
    assert KeywordIndex(path).problem() is None
    assert "older capindex" in KeywordIndex(path).problem(thorough=True)


def test_what_a_search_keeps_is_not_used_after_another_commit(tmp_path):
    path = tmp_path / "keyword.sqlite"
    writer = _build(path, random.Random(8))
    writer.flush(final=True)
    reader = KeywordIndex(path)
    reader.search("grass -dog", 5)
    count, excluded = reader.count("grass -dog"), set(reader.excluded_ids("grass -dog"))

    def row(row_id, caption):
        return {"id": row_id, "seq": row_id, "status": "ok", "path": f"/p/x{row_id}.jpg",
                "caption": caption, "alt_captions": [], "tags": [], "objects": [],
                "concepts": []}
    writer = KeywordIndex(path)
    writer.update([row(900, "grass dog"), row(901, "grass grass")])
    writer.flush(final=True)
    assert reader.excluded_ids("grass -dog") == excluded | {900}
    assert reader.count("grass -dog") == count + 1
