"""Corrections to Whoosh's top-N matching (whoosh3 3.54), applied by `apply()`.

The keyword index calls `apply()` before it searches; it replaces methods of Whoosh's
matcher classes (Whoosh builds the matchers itself, so there is no other way in) and
refuses a Whoosh release it was not written for (setup.cfg pins whoosh3 <3.55).

Top-N search skips postings that cannot beat the N-th score: a leaf matcher skips
its blocks whose best score (`block_quality`) is too low, and Whoosh's compound
matchers pass the skip down. Two flaws there made search return another top ten
than exhaustive scoring (8 of 1,000 benchmark queries over 100,000 captions, and 14
of 1,500 varied ones; tests/test_search_ranking.py):

- A compound matcher skipped one side's blocks by the other side's *current* block
  (`minquality - other.block_quality()`), but the documents a skip passes over lie
  further on, where the other side's blocks may score higher. Sound is the other
  side's best score anywhere, `max_quality()`, as used here for `UnionMatcher`,
  `IntersectionMatcher` and `AndMaybeMatcher`. (Pruning by `replace`, which
  compares `max_quality()`, was already sound.)
- `AndMaybeMatcher(a, b)` (a required, b optional, scores added) could leave b
  behind a's document after `skip_to` or `skip_to_quality`, so b's share of the
  score was dropped. Here b follows a, as in the matcher's own `next`.

And `AndNotMatcher` (`dog NOT cat`, `dog ANDNOT cat`) had two flaws of its own: it
asked its positive side for its document after a skip had used that side up (an
IndexError ended the search: "boy NOT street dog" over 100,000 captions, with
Whoosh's own methods too), and when `replace` rebuilt it with the negative side
behind the positive one, it did not move the negative side up, so the current
document was returned even when the negative side held it further on ("girl NOT
grass grass" returned a caption with grass).

The blocks skipped are fewer; the benchmark's search speed is unchanged
(docs/performance.md, Search).
"""

from __future__ import annotations

import whoosh
from whoosh.matching import binary, mcore

from capindex.errors import CapindexError

# The releases these corrections were written and tested for (tests/test_search_ranking.py).
WRITTEN_FOR = ((3, 54),)


def _union_skip_to_quality(self, minquality):
    """Skip each side's blocks that cannot beat `minquality` with the other side's best."""
    self._id = None
    a, b = self.a, self.b
    if not (a.is_active() or b.is_active()):
        raise mcore.ReadTooFar
    if not a.is_active():
        return b.skip_to_quality(minquality)
    if not b.is_active():
        return a.skip_to_quality(minquality)
    skipped = a.skip_to_quality(minquality - b.max_quality())
    if not a.is_active():
        return skipped + b.skip_to_quality(minquality)
    return skipped + b.skip_to_quality(minquality - a.max_quality())


def _intersection_skip_to_quality(self, minquality):
    """As the union, until both sides rest on one document that might beat `minquality`."""
    a, b = self.a, self.b
    skipped = 0
    while a.is_active() and b.is_active():
        moved = a.skip_to_quality(minquality - b.max_quality())
        if a.is_active():
            moved += b.skip_to_quality(minquality - a.max_quality())
        if a.is_active() and b.is_active() and a.id() != b.id():
            self._find_next()
        skipped += moved
        if not moved:
            break
    return skipped


def _and_maybe_skip_to_quality(self, minquality):
    """Skip the required side's blocks that cannot beat `minquality` even with the
    optional side's best; the optional side is never skipped past a's document."""
    a, b = self.a, self.b
    if not a.is_active():
        raise mcore.ReadTooFar
    if not b.is_active():
        return a.skip_to_quality(minquality)
    skipped = a.skip_to_quality(minquality - b.max_quality())
    if a.is_active() and b.id() < a.id():
        b.skip_to(a.id())
    return skipped


def _and_maybe_skip_to(self, id):
    if not self.a.is_active():
        raise mcore.ReadTooFar
    moved_a = self.a.skip_to(id)
    moved_b = False
    if self.a.is_active() and self.b.is_active():
        moved_b = self.b.skip_to(self.a.id())
    return moved_a or moved_b


def _and_not_find_next(self):
    """Move the positive side past the documents the negative side holds (none left: done)."""
    pos, neg = self.a, self.b
    if not (pos.is_active() and neg.is_active()):
        return False
    pos_id = pos.id()
    moved = False
    if neg.id() < pos_id:
        neg.skip_to(pos_id)
    while pos.is_active() and neg.is_active() and pos_id == neg.id():
        moved = pos.next() or moved
        if not pos.is_active():
            break
        pos_id = pos.id()
        neg.skip_to(pos_id)
    return moved


def check_version() -> None:
    """CapindexError unless the installed Whoosh is a release these corrections (and those
    of whoosh_pickles.py) were written for."""
    if tuple(whoosh.__version__[:2]) not in WRITTEN_FOR:
        raise CapindexError(
            f"capindex's corrections to Whoosh were written for whoosh3 3.54, but "
            f"{whoosh.versionstring()} is installed; install it with: pip install 'whoosh3>=3.54,<3.55'")


def apply() -> None:
    """Install the corrections (idempotent); CapindexError for an unknown Whoosh release."""
    check_version()
    binary.UnionMatcher.skip_to_quality = _union_skip_to_quality
    binary.IntersectionMatcher.skip_to_quality = _intersection_skip_to_quality
    binary.AndMaybeMatcher.skip_to_quality = _and_maybe_skip_to_quality
    binary.AndMaybeMatcher.skip_to = _and_maybe_skip_to
    binary.AndNotMatcher._find_next = _and_not_find_next
    binary.AndNotMatcher._find_first = _and_not_find_next  # also when the negative side is behind
