"""The search index's top-N shortcut returns what exhaustive BM25F scoring ranks first."""

from __future__ import annotations

import math
import random

import pytest
from whoosh import index as whoosh_index
from whoosh.fields import TEXT, Schema
from whoosh.filedb.filestore import RamStorage
from whoosh.matching import (
    AndMaybeMatcher,
    AndNotMatcher,
    IntersectionMatcher,
    Matcher,
    UnionMatcher,
)
from whoosh.qparser import MultifieldParser, OrGroup
from whoosh.scoring import BM25F

from benchmarks.capbench.captions import make_caption, make_query
from capindex.errors import CapindexError
from capindex.model.encoder import imagenet_labels
from capindex.store import whoosh_fixes
from capindex.store.keyword import FIELD_BOOSTS, FIELDS, KeywordIndex, TieSkippingCollector

whoosh_fixes.apply()  # the matcher tests below build Whoosh's matchers directly

SUBJECTS = ["man", "woman", "dog", "black dog", "child", "people", "cyclist", "horse"]
PLACES = ["on the grass", "on a beach", "in the water", "on the street", "in the snow",
          "on a rock", "under a tree"]
TAGS = ["hot dog", "seashore", "rock crab", "lakeside", "street sign", "Egyptian cat",
        "beach wagon", "dogsled", "grasshopper", "water ouzel"]
FILLER = ["smiling", "looking", "camera", "while", "wearing", "jacket", "today", "sunny",
          "bright", "blurry", "close", "wide", "evening", "morning", "colourful", "quiet"]
QUERIES = ["dog", "dog beach", "man grass", "black dog on the grass", "people rock",
           "woman in the water", "horse snow", "child street tree", "cyclist"]


@pytest.fixture(scope="module", params=[1, 3], ids=["one-segment", "three-segments"])
def index_dir(request, tmp_path_factory):
    """3,000 short, alike captions of a few lengths: common words in every postings block;
    in one segment, and in three (the top N then carries from one segment to the next)."""
    rng = random.Random(3)
    directory = tmp_path_factory.mktemp("index")
    index = KeywordIndex(directory)
    rows = [{"id": i, "seq": i, "status": "ok", "path": f"/p/IMG_{i:05d}.jpg",
             "caption": " ".join([f"a {rng.choice(SUBJECTS)} {rng.choice(PLACES)}",
                                  *rng.sample(FILLER, rng.randrange(12))]),
             "tags": [{"label": rng.choice(TAGS), "prob": 0.1} for _ in range(rng.randrange(4))]}
            for i in range(1, 3001)]
    segments = request.param
    for part in range(segments):
        index.update(rows[part * len(rows) // segments:(part + 1) * len(rows) // segments])
        index.flush(final=segments == 1)
    assert len(whoosh_index.open_dir(str(directory)).reader().leaf_readers()) == segments
    return directory


def exhaustive(directory, text, limit):
    """Every matching document scored (no skipping), best first, ties by index order."""
    ix = whoosh_index.open_dir(str(directory))
    query = MultifieldParser(list(FIELDS), ix.schema, fieldboosts=FIELD_BOOSTS,
                             group=OrGroup).parse(text)
    with ix.searcher(weighting=BM25F()) as searcher:
        results = searcher.search(query, limit=None)
        return [hit.score for hit in results[:limit]], len(results)


@pytest.mark.parametrize("text", QUERIES)
def test_top_scores_equal_exhaustive_scoring(index_dir, text):
    found = KeywordIndex(index_dir).search(text, limit=10)
    want, _ = exhaustive(index_dir, text, 10)
    assert [score for _, score in found] == pytest.approx(want, rel=1e-12)


def test_documents_that_can_only_tie_are_not_scored(tmp_path):
    # The first ten captions already have the best possible score for "man grass";
    # none after them can do better, so only captions with both words need scoring.
    index = KeywordIndex(tmp_path)
    captions = ["a man on the grass"] * 10 + ["a man on a beach", "a dog on the grass"] * 1000
    index.update({"id": i, "seq": i, "status": "ok", "path": f"/p/{i}.jpg", "caption": caption,
                  "tags": []} for i, caption in enumerate(captions, start=1))
    index.flush(final=True)
    ix = whoosh_index.open_dir(str(tmp_path))
    query = MultifieldParser(list(FIELDS), ix.schema, fieldboosts=FIELD_BOOSTS,
                             group=OrGroup).parse("man grass")
    with ix.searcher(weighting=BM25F()) as searcher:
        collector = TieSkippingCollector(limit=10)
        searcher.search_with_collector(query, collector)
    assert collector.total < 100  # documents scored, of the 2,010 that match
    # The bar: one floating-point step above the tenth score, no more.
    tenth = min(score for score, _ in collector.items)
    assert collector.minscore == math.nextafter(tenth, math.inf)
    assert [row_id for row_id, _ in KeywordIndex(tmp_path).search("man grass")] == list(range(1, 11))


@pytest.fixture(scope="module")
def benchmark_like_index(tmp_path_factory):
    """10,000 captions as the benchmark makes them (Zipf-distributed subjects and places,
    five tags from 40 labels): big enough for Whoosh to turn part of a query into an
    AndMaybeMatcher while searching, which dropped scores before whoosh_fixes."""
    rng = random.Random(1)
    labels = imagenet_labels()[:40]
    directory = tmp_path_factory.mktemp("benchmark-like")
    index = KeywordIndex(directory)
    index.update({"id": i, "seq": i, "status": "ok", "path": f"/p/IMG_{i:06d}.jpg",
                  "caption": make_caption(rng),
                  "tags": [{"label": rng.choice(labels), "prob": 0.1} for _ in range(5)]}
                 for i in range(1, 10_001))
    index.flush(final=True)
    return directory, [make_query(random.Random(i)) for i in range(150)]


def test_top_ten_is_that_of_exhaustive_scoring_on_benchmark_like_captions(benchmark_like_index):
    directory, queries = benchmark_like_index
    ix = whoosh_index.open_dir(str(directory))
    parser = MultifieldParser(list(FIELDS), ix.schema, fieldboosts=FIELD_BOOSTS, group=OrGroup)
    differing = []
    with ix.searcher(weighting=BM25F()) as searcher:
        for text in queries:
            query = parser.parse(text)
            want = searcher.search(query, limit=None)[:10]  # every match scored
            collector = TieSkippingCollector(limit=10)
            searcher.search_with_collector(query, collector)
            got = collector.results()
            if ([hit.docnum for hit in got] != [hit.docnum for hit in want]
                    or [hit.score for hit in got] != pytest.approx([hit.score for hit in want],
                                                                 rel=1e-12)):
                differing.append(text)
    assert differing == []


def test_and_maybe_matcher_adds_the_optional_score_after_a_skip():
    # "apple" is required, "banana" optional. Skipping to document 1 lands "apple" on 3;
    # "banana" has a posting at 2 and one at 3, and must be at 3 to add its score there.
    storage = RamStorage()
    ix = storage.create_index(Schema(text=TEXT))
    with ix.writer() as writer:
        for text in ("apple banana", "cherry", "banana", "apple banana"):
            writer.add_document(text=text)
    with ix.searcher(weighting=BM25F()) as searcher:
        def postings(word):
            return searcher.postings("text", word, weighting=searcher.weighting)

        matcher = AndMaybeMatcher(postings("apple"), postings("banana"))
        matcher.skip_to(1)
        apple, banana = postings("apple"), postings("banana")
        apple.skip_to(3)
        banana.skip_to(3)
        assert matcher.id() == 3
        assert matcher.score() == pytest.approx(apple.score() + banana.score())


class BlockPostings(Matcher):
    """A term's postings in blocks, each with its best score (`block_quality`), as Whoosh
    stores them; `skip_to_quality(q)` skips whole blocks whose best is not above q."""

    def __init__(self, blocks):
        self.postings = [(id, score, b) for b, block in enumerate(blocks) for id, score in block]
        self.best = [max(score for _, score in block) for block in blocks]
        self.i = 0

    def is_active(self):
        return self.i < len(self.postings)

    def id(self):
        return self.postings[self.i][0]

    def score(self):
        return self.postings[self.i][1]

    def _block(self):
        return self.postings[self.i][2] if self.is_active() else None

    def next(self):
        block = self._block()
        self.i += 1
        return self._block() != block

    def skip_to(self, id):
        block = self._block()
        while self.is_active() and self.id() < id:
            self.i += 1
        return self._block() != block

    def supports_block_quality(self):
        return True

    def max_quality(self):
        return max(self.best)

    def block_quality(self):
        return self.best[self._block()] if self.is_active() else 0.0

    def skip_to_quality(self, minquality):
        skipped = 0
        while self.is_active() and self.block_quality() <= minquality:
            block = self._block()
            while self.is_active() and self._block() == block:
                self.i += 1
            skipped += 1
        return skipped

    def replace(self, minquality=0):
        return self


def remaining(matcher):
    found = []
    while matcher.is_active():
        found.append((matcher.id(), matcher.score()))
        matcher.next()
    return found


@pytest.mark.parametrize("combine", [UnionMatcher, IntersectionMatcher, AndMaybeMatcher])
def test_skipping_by_quality_keeps_a_document_that_can_beat_the_bar(combine):
    # Document 12 scores 1.0 + 3.5 = 4.5 and beats a bar of 4.0. Both matchers start in
    # weak blocks (1.0 and 1.5): skipping a's blocks by b's *current* block (2.5 to
    # beat) would pass over 12, whose b-block scores 3.5; only b's best, 3.5, is safe.
    a = BlockPostings([[(0, 1.0), (1, 1.0), (2, 1.0), (3, 1.0)],
                       [(10, 1.0), (11, 1.0), (12, 1.0), (13, 1.0)]])
    b = BlockPostings([[(0, 1.5), (1, 1.5), (2, 1.5), (3, 1.5)],
                       [(12, 3.5), (20, 3.5), (21, 3.5), (22, 3.5)]])
    matcher = combine(a, b)
    matcher.skip_to_quality(4.0)
    assert (12, 4.5) in remaining(matcher)


def test_excluding_matcher_ends_quietly_when_a_skip_uses_up_its_positive_side():
    # "boy dog NOT street": nothing left in boy OR dog can beat the bar, so the skip uses
    # both up; the matcher must then be done, not ask the used-up side for a document.
    boy = BlockPostings([[(0, 1.0), (1, 1.0)], [(5, 1.0), (6, 1.0)]])
    dog = BlockPostings([[(2, 1.0), (3, 1.0)], [(7, 1.0), (8, 1.0)]])
    street = BlockPostings([[(4, 1.0), (9, 1.0)]])
    matcher = AndNotMatcher(UnionMatcher(boy, dog), street)
    matcher.skip_to_quality(5.0)
    assert not matcher.is_active()


def test_excluding_matcher_built_with_its_negative_side_behind_skips_what_it_holds():
    # Whoosh rebuilds matchers mid-search (`replace`), so an excluding matcher can start
    # with its negative side behind: "cat" at 1, holding 5 further on, "dog" at 5.
    dog = BlockPostings([[(5, 1.0), (6, 1.0)]])
    cat = BlockPostings([[(1, 1.0), (5, 1.0)]])
    assert remaining(AndNotMatcher(dog, cat)) == [(6, 1.0)]


def test_the_corrections_refuse_a_whoosh_release_they_were_not_written_for(monkeypatch):
    import whoosh

    monkeypatch.setattr(whoosh, "__version__", (3, 60, 0))
    with pytest.raises(CapindexError, match=r"written for whoosh3 3\.54"):
        whoosh_fixes.apply()


def test_score_fusion_counts_a_rare_words_only_match_when_the_keyword_list_is_complete():
    from capindex.search.ranking import fuse_scores

    keyword = [(7, 3.2)]  # the only image whose words match
    semantic = [(1, 0.40), (7, 0.38), (2, 0.35)]
    assert fuse_scores(keyword, semantic, 0.8, keyword_complete=True)[0][0] == 7
    # a cut list: the images it left out may match too, so they get its lowest score
    assert fuse_scores(keyword, semantic, 0.8)[0][0] == 1
