"""A correction to Whoosh (whoosh3 3.54) that search results depend on; applied on import.

`AndMaybeMatcher(a, b)` matches a's documents and adds b's score where b has the
same document. Its `skip_to(id)` moved b to `id` rather than to where a landed,
and its `skip_to_quality` moved a without moving b, so b could be left behind
a's document and its share of the score dropped. Whoosh builds such matchers
while searching top N (`UnionMatcher.replace` once one word alone cannot reach
the N-th score), so a caption holding every query word could score as if it held
fewer and be ranked below captions that did worse: 8 of 1,000 benchmark queries
over 100,000 captions returned another top ten than exhaustive scoring
(tests/test_search_ranking.py). Here b follows a, as in the matcher's own `next`.
"""

from __future__ import annotations

from whoosh.matching import binary, mcore


def _skip_to(self, id):
    if not self.a.is_active():
        raise mcore.ReadTooFar
    moved_a = self.a.skip_to(id)
    moved_b = False
    if self.a.is_active() and self.b.is_active():
        moved_b = self.b.skip_to(self.a.id())
    return moved_a or moved_b


def _skip_to_quality(self, minquality):
    """Whoosh's loop (skip whichever side has the lower block quality while both
    together cannot reach `minquality`), then b brought to a's document."""
    a, b = self.a, self.b
    if not a.is_active():
        raise mcore.ReadTooFar
    if not b.is_active():
        return a.skip_to_quality(minquality)
    skipped = 0
    aq, bq = a.block_quality(), b.block_quality()
    while a.is_active() and b.is_active() and aq + bq < minquality:
        if aq < bq:
            skipped += a.skip_to_quality(minquality - bq)
            aq = a.block_quality()
        else:
            skipped += b.skip_to_quality(minquality - aq)
            bq = b.block_quality()
    if a.is_active() and b.is_active() and b.id() < a.id():
        b.skip_to(a.id())
    return skipped


binary.AndMaybeMatcher.skip_to = _skip_to
binary.AndMaybeMatcher.skip_to_quality = _skip_to_quality
