"""Word queries: levers on the semantic side of a short query, replayed over stored hits.

Each lever changes how a word's vector hits are made (the query vector, or the ranking of
the photos' vectors); the keyword hits stay those `scripts/fusion_replay.py --hits` stored,
and both are fused by `ranking.fuse_scores` at each short-query share (1: semantic alone).
Words P@10 over search_eval.WORDS, as `capindex evaluate-search` scores them:

  python scripts/word_levers.py --library LIBRARY --hits hits.pkl [--lever NAME ...]

LIBRARY: a library of the Flickr8k val photos with the shipped embedding; hits.pkl: written
by `fusion_replay.py --library LIBRARY --data ../shared/datasets/flickr8k --hubness 0 --hits
hits.pkl` (the plain vector hits; only the keyword ones are used here). Levers: plain,
templates, prf, wordnet, hubness (every one unless named).
"""

from __future__ import annotations

import argparse
import pickle
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's capindex

from capindex import words as wordnet
from capindex.api import Library
from capindex.model.query_encoder import QueryEncoder
from capindex.search import ranking, semantic

SHARES = (1.0, 0.95, 0.9, 0.85, 0.8, 0.7)
TEMPLATES = ("a {}", "a photo of a {}", "a photo of {}", "a picture of a {}", "an image of {}",
             "there is a {} in the picture")
TEMPLATE_SETS = (("{}", "a {}"), ("{}", "a photo of a {}"), ("{}", "a {}", "a photo of a {}"),
                 ("{}", "a {}", "a photo of a {}", "a picture of {}", "an image of {}"))


class Replay:
    def __init__(self, library: str, hits: str) -> None:
        with open(hits, "rb") as f:
            self.words, _, self.name_of = pickle.load(f)
        opened = Library(library).dir.vector_index()._open()
        self.ids, self.vectors = np.array(opened.ids), np.array(opened.vectors)
        self.encoder = QueryEncoder.load()
        self.bank = semantic.word_bank()
        self._minilm: dict[str, np.ndarray] = {}

    def minilm(self, texts: list[str]) -> np.ndarray:
        missing = [t for t in texts if t not in self._minilm]
        if missing:
            self._minilm.update(zip(missing, self.encoder.text_vectors(missing)))
        return np.stack([self._minilm[t] for t in texts])

    def adapt(self, vectors: np.ndarray) -> np.ndarray:
        out = vectors + vectors @ self.encoder.weight.T + self.encoder.bias
        return out / np.linalg.norm(out, axis=-1, keepdims=True)

    def plain(self, word: str) -> np.ndarray:
        return self.adapt(self.minilm([word]))[0]

    def top(self, query: np.ndarray, depth: int = ranking.FUSION_DEPTH) -> list[tuple[int, float]]:
        scores = self.vectors @ query
        order = np.argsort(-scores, kind="stable")[:depth]
        return [(int(self.ids[i]), float(scores[i])) for i in order]

    def score(self, label: str, vector_hits: Callable[[str], list[tuple[int, float]]]) -> None:
        hits = {w: vector_hits(w) for w in self.words}
        row = []
        for share in SHARES:
            precision = []
            for word, (relevant, (keyword, _, _)) in self.words.items():
                fused = hits[word] if share == 1.0 else ranking.fuse_scores(
                    keyword, hits[word], share, keyword_complete=len(keyword) < ranking.FUSION_DEPTH)
                top = {self.name_of.get(i) for i, _ in fused[:10]}
                precision.append(len(relevant & top) / min(10, len(relevant)))
            row.append(f"{statistics.mean(precision):.3f}")
        print(f"| {label} | " + " | ".join(row) + " |", flush=True)


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--library", required=True)
    parser.add_argument("--hits", required=True)
    parser.add_argument("--lever", action="append",
                        choices=["plain", "templates", "prf", "wordnet", "hubness"])
    args = parser.parse_args()
    levers = args.lever or ["plain", "templates", "prf", "wordnet", "hubness"]
    r = Replay(args.library, args.hits)
    print("| lever | " + " | ".join(f"share {s:g}" for s in SHARES) + " |")
    print("| --- |" + " --- |" * len(SHARES))
    if "plain" in levers:
        r.score("the word alone", lambda w: r.top(r.plain(w)))
    if "templates" in levers:
        for t in TEMPLATES:
            r.score(f"template '{t}'", lambda w, t=t: r.top(r.adapt(r.minilm([t.format(w)]))[0]))
        for ts in TEMPLATE_SETS:
            r.score(f"mean of {' / '.join(ts)}", lambda w, ts=ts: r.top(
                unit(r.adapt(r.minilm([t.format(w) for t in ts])).mean(0))))
    if "prf" in levers:
        for k in (3, 5, 10, 20):
            for beta in (0.25, 0.5, 1.0, 2.0):
                def prf(w, k=k, beta=beta):
                    q = r.plain(w)
                    best = np.argsort(-(r.vectors @ q))[:k]
                    return r.top(unit(q + beta * unit(r.vectors[best].mean(0))))
                r.score(f"Rocchio: top {k}, mix {beta:g}", prf)
    if "wordnet" in levers:
        narrower: dict[str, list[str]] = {}
        for word, broader in wordnet._table()["words"].items():
            for b in broader:
                narrower.setdefault(b, []).append(word)
        for alpha in (0.25, 0.5, 1.0):
            for mode in ("broader", "narrower", "both"):
                def expanded(w, alpha=alpha, mode=mode):
                    extra = list(wordnet.related_words(w, "words")) if mode != "narrower" else []
                    extra += narrower.get(w, []) if mode != "broader" else []
                    q = r.plain(w)
                    if extra:
                        q = unit(q + alpha * unit(r.adapt(r.minilm(extra)).mean(0)))
                    return r.top(q)
                r.score(f"WordNet {mode}, weight {alpha:g}", expanded)
    if "hubness" in levers:
        for k, weight in ((10, 0.5), (20, 0.5), (20, 0.75), (50, 0.75), (50, 1.0), (100, 1.0),
                          (len(r.bank), 1.0)):
            def corrected(w, k=k, weight=weight):
                hits = r.top(r.plain(w))
                rows = np.searchsorted(r.ids, [i for i, _ in hits])
                return semantic.hub_corrected(hits, r.vectors[rows], r.bank, k, weight)
            r.score(f"hubness: {k} words, weight {weight:g}", corrected)


if __name__ == "__main__":
    main()
