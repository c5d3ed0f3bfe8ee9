"""CIDEr-D for self-critical training: the reference side computed once, hypotheses fast.

The same formula as coco-caption's `CiderScorer` (pycocoevalcap): n-grams 1..4, tf-idf
vectors with idf = log(images) - log(document frequency), clipped hypothesis counts
(the "-D"), a Gaussian length penalty (sigma 6), the mean over references, times 10.
coco-caption takes document frequencies from the references being scored; for a reward
they come from the training captions (`CiderD(references)`), so a score does not depend
on which images share its batch. With the document frequencies of the set being scored
the scores equal coco-caption's (a test checks).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

N = 4
SIGMA = 6.0


def ngrams(words: Sequence[str], n: int = N) -> Counter:
    """Counts of every 1..n-gram of `words` (tuples)."""
    return Counter(tuple(words[i:i + k]) for k in range(1, n + 1)
                   for i in range(len(words) - k + 1))


class CiderD:
    """CIDEr-D scorer with document frequencies fixed by a corpus of references.

    `references`: image key -> its tokenised reference captions (lists of words).
    """

    def __init__(self, references: dict[str, list[list[str]]]) -> None:
        df: Counter = Counter()
        counts = {}
        for key, refs in references.items():
            counts[key] = [ngrams(r) for r in refs]
            df.update(set().union(*counts[key]))
        self.log_images = math.log(float(len(references)))
        self._idf = {g: self.log_images - math.log(max(1.0, d)) for g, d in df.items()}
        self._refs = {key: [self._vector(c, len(r)) for c, r in zip(cs, references[key])]
                      for key, cs in counts.items()}

    def _vector(self, counts: Counter, length: int):
        """(tf-idf by n-gram, norm per order, length) of one caption's n-gram counts."""
        vec, norm = {}, [0.0] * N
        for gram, tf in counts.items():
            weight = tf * self._idf.get(gram, self.log_images)  # unseen: df = 1
            vec[gram] = weight
            norm[len(gram) - 1] += weight * weight
        return vec, [math.sqrt(x) for x in norm], length

    def score(self, key: str, words: Sequence[str], references: list[list[str]] | None = None) -> float:
        """CIDEr-D of one tokenised hypothesis against image `key`'s references (or against
        `references` given here, with this scorer's document frequencies)."""
        refs = (self._refs[key] if references is None
                else [self._vector(ngrams(r), len(r)) for r in references])
        vec, norm, length = self._vector(ngrams(words), len(words))
        total = 0.0
        for ref_vec, ref_norm, ref_len in refs:
            sims = [0.0] * N
            for gram, weight in vec.items():
                ref_weight = ref_vec.get(gram)
                if ref_weight is not None:
                    sims[len(gram) - 1] += min(weight, ref_weight) * ref_weight
            penalty = math.exp(-((length - ref_len) ** 2) / (2 * SIGMA ** 2))
            total += sum(s / (norm[n] * ref_norm[n]) * penalty if norm[n] and ref_norm[n] else 0.0
                         for n, s in enumerate(sims)) / N
        return 10.0 * total / len(refs) if refs else 0.0

    def scores(self, keys: Sequence[str], hypotheses: Sequence[Sequence[str]]) -> list[float]:
        """CIDEr-D of each tokenised hypothesis against its image's references."""
        return [self.score(k, h) for k, h in zip(keys, hypotheses)]
