"""Hybrid search: reciprocal rank fusion, the meaning of a keyword query, and the fallback
to keywords for a library without vectors."""

from __future__ import annotations

import pytest

import capindex
from capindex.search.ranking import SENTENCE_SHARE, SHORT_QUERY_SHARE, fuse, fuse_scores, semantic_share
from capindex.search.semantic import meaning_text


def test_fusion_ranks_by_summed_reciprocal_ranks():
    keyword = [(1, 9.0), (2, 5.0), (3, 1.0)]
    semantic = [(3, 0.9), (4, 0.8), (1, 0.1)]
    fused = fuse(keyword, semantic, k=60)
    assert [i for i, _ in fused] == [1, 3, 2, 4]  # 1: 1/61 + 1/63; 3: 1/63 + 1/61 (tie: id)
    assert fused[0][1] == pytest.approx(1 / 61 + 1 / 63)
    weighted = fuse(keyword, semantic, keyword_weight=0.0, semantic_weight=1.0)
    assert [i for i, _ in weighted][:3] == [3, 4, 1]


def test_score_fusion_mixes_cosine_and_scaled_bm25():
    keyword = [(1, 10.0), (2, 5.0)]
    semantic = [(2, 0.6), (3, 0.5)]
    fused = dict(fuse_scores(keyword, semantic, 0.5))
    assert fused[1] == pytest.approx(0.5 * 0.5 + 0.5 * 1.0)  # missing cosine: the lowest, 0.5
    assert fused[2] == pytest.approx(0.5 * 0.6 + 0.5 * 0.5)
    assert fused[3] == pytest.approx(0.5 * 0.5 + 0.5 * 0.5)  # missing BM25: the lowest, 0.5
    assert [i for i, _ in fuse_scores(keyword, semantic, 1.0)] == [2, 1, 3]


def test_short_queries_lean_on_words_and_sentences_on_meaning():
    assert semantic_share("dog") == semantic_share("black dog -cat") == SHORT_QUERY_SHARE
    assert semantic_share("a dog runs on the beach") == SENTENCE_SHARE
    assert SHORT_QUERY_SHARE < SENTENCE_SHARE


def test_meaning_text_drops_exclusions_and_syntax():
    assert meaning_text('dog -cat NOT "black cat" caption:beach (sand OR sea)') == \
        "dog beach sand sea"
    assert meaning_text("a toddler splashes in a fountain") == "a toddler splashes in a fountain"
    assert meaning_text("-cat") == ""


def test_a_library_without_vectors_is_searched_by_keywords(tmp_path, photos, fake):
    lib = capindex.Library(tmp_path / "lib")
    lib.ingest([photos], captioner=fake, objects=False, workers=0)
    notes: list[str] = []
    hybrid = lib.search("red", 5, notes=notes)
    assert [h.path for h in hybrid] == [h.path for h in lib.search("red", 5, mode="keyword")]
    assert hybrid[0].vector_score is None and notes == []  # nothing expected, nothing said
    with pytest.raises(capindex.errors.CapindexError, match="no image vectors yet"):
        lib.search("", 5, like=str(photos / "red.jpg"))
    with pytest.raises(ValueError, match="mode must be one of"):
        lib.search("red", 5, mode="fuzzy")
