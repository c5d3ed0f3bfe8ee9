"""The keyword index ranks by BM25 with field weights, its filters and counts agree with its
ranking, and no typed text can break its FTS5 MATCH expression."""

from __future__ import annotations

import random

import pytest

from benchmarks.capbench.captions import make_caption, make_query
from capindex.errors import QuerySyntaxError
from capindex.store.keyword import KeywordIndex
from capindex.store.keyword_query import parse_query


def _row(row_id: int, caption: str, tags=(), alt=(), path: str | None = None) -> dict:
    return {"id": row_id, "seq": row_id, "status": "ok", "path": path or f"/p/{row_id}.jpg",
            "caption": caption, "alt_captions": list(alt),
            "tags": [{"label": t, "prob": 0.05} for t in tags]}


@pytest.fixture(scope="module")
def captions(tmp_path_factory):
    """3,000 captions as the benchmark makes them, written in three commits."""
    rng = random.Random(1)
    index = KeywordIndex(tmp_path_factory.mktemp("ix") / "keyword.sqlite")
    rows = [_row(i, make_caption(rng), tags=[rng.choice(["seashore", "dogsled", "lakeside"])])
            for i in range(1, 3001)]
    for part in range(3):
        index.update(rows[part * 1000:(part + 1) * 1000])
        index.flush(final=part == 2)
    return index, [make_query(random.Random(i)) for i in range(40)]


def test_a_caption_match_outranks_the_same_word_in_a_lighter_field(tmp_path):
    index = KeywordIndex(tmp_path / "keyword.sqlite")
    index.update([_row(1, "a horse in a field", alt=["a dog in a field"]),
                  _row(2, "a dog in a field", alt=["a horse in a field"]),
                  _row(3, "a cat on a sofa", tags=["sofa"])])
    index.flush(final=True)
    assert [row_id for row_id, _ in index.search("dog")] == [2, 1]
    assert [row_id for row_id, _ in index.search("dog", boosts={"alt": 0})] == [2]  # left out
    assert [row_id for row_id, _ in index.search("dog", boosts={"caption": 0.1})] == [1, 2]
    found = index.search("dog horse")
    assert {row_id for row_id, _ in found} == {1, 2} and all(s > 0 for _, s in found)


def test_stems_stop_words_phrases_and_file_names(tmp_path):
    index = KeywordIndex(tmp_path / "keyword.sqlite")
    index.update([_row(1, "a dog is running on the grass", path="/p/IMG_2041_beach-sunset.jpg"),
                  _row(2, "two dogs run through the water"),
                  _row(3, "the grass and a dog")])
    index.flush(final=True)
    assert sorted(r for r, _ in index.search("DOGS!")) == [1, 2, 3]
    assert sorted(r for r, _ in index.search("runs")) == [1, 2]
    assert [r for r, _ in index.search('"running on grass"')] == [1]  # stop words skipped
    assert [r for r, _ in index.search('"grass dog"')] == [3]
    assert [r for r, _ in index.search("sunsets")] == [1]
    assert [r for r, _ in index.search("name:img")] == [1]
    assert [r for r, _ in index.search("beach-sunset")] == [1]
    assert [r for r, _ in index.search("wat*")] == [2]
    assert [r for r, _ in index.search("dog AND water")] == [2]
    assert [r for r, _ in index.search("(water OR grass) -running")] == [3]  # run(s) too
    assert [r for r, _ in index.search("grass AND NOT running")] == [3]
    assert index.search("-dog") == [] and index.count("-dog") == 0
    assert index.search("NOT water") == [(1, 0.0), (3, 0.0)]
    assert index.excluded_ids("dog -water NOT running") == {1, 2}


def test_every_match_is_ranked_and_filters_keep_the_order(captions):
    index, queries = captions
    for text in queries:
        everything = index.search(text, limit=10_000)
        assert index.count(text) == len(everything)
        scores = [score for _, score in everything]
        assert scores == sorted(scores, reverse=True)
        assert index.search(text, limit=10) == everything[:10]
        allowed = set(range(1, 3001, 7))
        filtered = [hit for hit in everything if hit[0] in allowed]
        assert index.search(text, limit=10, allowed=allowed) == filtered[:10]
        assert index.count(text, allowed) == len(filtered)
    assert index.search("dog", allowed=set()) == [] and index.count("dog", set()) == 0


NASTY = ['"', '""', '" "', "dog\"cat", "(", ")", "()", "(((dog", "dog)))", "*", "dog*", "*dog",
         "**", "a:b", ":", "caption:", "caption:dog:cat", "{caption}: dog", "{caption tags}",
         "^", "dog^", "^2", "dog^2", "dog~2", "NEAR", "NEAR(dog cat)", "NEAR(dog cat, 2)",
         "dog NEAR cat", "AND", "OR", "NOT", "dog AND", "AND dog", "dog OR OR cat",
         "NOT NOT dog", "dog NOT", "- dog", "--dog", "-", "-(dog)", "-\"dog cat\"",
         "dog AND NOT (cat OR NOT water)", "+dog", "dog + cat", "'dog'", "[a TO b]",
         "{a TO b}", "dog?", "?", "é", "Ünïcödé dögs", "狗 猫", "🐶 dog", "dog\x00cat",
         "\u200b", "dog\u3000cat", "ANDNOT", "dog ANDMAYBE cat", "dog ANDNOT cat",
         "caption:\"dog\"", "tags:(dog OR cat)", "rowid:1", "docs:dog", "docs MATCH dog",
         "dog' OR 1=1 --", "\\", "dog\\\"", "the", "the of a", "", "   ", "dog,cat;water",
         "ÀÉÎÕÜ", "x" * 500, "dog " * 300]


@pytest.mark.parametrize("text", NASTY)
def test_no_typed_text_breaks_the_match_expression(captions, text):
    index, _ = captions
    try:
        hits = index.search(text, limit=5)
        total = index.count(text)
        index.excluded_ids(text)
    except QuerySyntaxError as exc:  # a message for the user, naming the query
        assert str(exc).startswith("cannot parse query ")
        return
    assert len(hits) <= 5 and total >= len(hits)


def test_random_text_never_fails(captions):
    index, _ = captions
    rng = random.Random(0)
    alphabet = [*'abcdog "()*:^-+~?{}[],.\\\'', "AND ", "OR ", "NOT ", "NEAR", "é", "狗"]
    for _ in range(300):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 20)))
        try:
            index.search(text, limit=3)
            query = parse_query(text)
            assert query is None or query.match() is None or '"' in query.match()
        except QuerySyntaxError:
            pass


def test_score_fusion_counts_a_rare_words_only_match_when_the_keyword_list_is_complete():
    from capindex.search.ranking import fuse_scores

    keyword = [(7, 3.2)]  # the only image whose words match
    semantic = [(1, 0.40), (7, 0.38), (2, 0.35)]
    assert fuse_scores(keyword, semantic, 0.8, keyword_complete=True)[0][0] == 7
    # a cut list: the images it left out may match too, so they get its lowest score
    assert fuse_scores(keyword, semantic, 0.8)[0][0] == 1
