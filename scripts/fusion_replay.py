"""Choose the hybrid fusion shares: each query's keyword and vector hits are fetched once (the
top FUSION_DEPTH of each side, as `capindex search` fetches them), then fused again by
`ranking.fuse_scores` for every pair of shares (short queries / sentences), and scored as
`capindex evaluate-search` scores them (word P@10 over search_eval.WORDS, caption R@1/5/10 and
median rank over the split's caption queries; the semantic-only pair is 1.0 / 1.0).

  python scripts/fusion_replay.py --library LIBRARY --data ../shared/datasets/flickr8k \
      [--max-caption-queries N] [--hits hits.pkl] [--hubness W]

LIBRARY: a library of the split's photos (the one `capindex evaluate-search --library` keeps).
--hits keeps the fetched hits, so another run with other shares skips the searches (hits
fetched with another --hubness give that setting's numbers). --hubness: the weight of a
short query's hubness correction (`ranking.HUBNESS_WEIGHT` unless given; 0: none).
"""

from __future__ import annotations

import argparse
import os
import pickle
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's capindex

from capindex.api import Library
from capindex.search import ranking
from capindex.training import search_eval
from capindex.training.datasets import read_dataset

SHARES = [(0.6, 0.8), (0.7, 0.85), (0.8, 0.9), (0.8, 0.93), (0.85, 0.93), (0.85, 0.95),
          (0.9, 0.93), (0.9, 0.95), (0.9, 0.97), (0.95, 0.97), (1.0, 1.0)]


def fetch(library: Library, text: str, fusion: dict) -> tuple[list, list, str]:
    """(keyword hits, vector hits, which list a search ranks by) of one hybrid search."""
    plan = ranking._Ranking(library.dir, text, "hybrid", None, None, None, fusion,
                            ranking.FUSION_DEPTH, None)
    plan.ranked(10)
    return plan.keyword_hits, plan.vector_hits, plan.kind


def fused(hits: tuple[list, list, str], share: float | None) -> list[tuple[int, float]]:
    """The hybrid ranking at `share`; None: the keyword list alone (keyword mode)."""
    keyword, vector, kind = hits
    if share is None:
        return keyword
    if kind != "hybrid" or not vector:
        return keyword if kind != "vector" else vector
    return ranking.fuse_scores(keyword, vector, share,
                               keyword_complete=len(keyword) < ranking.FUSION_DEPTH)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--library", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--max-caption-queries", type=int)
    parser.add_argument("--hits", help="read the hits from this file when it exists, else write them")
    parser.add_argument("--hubness", type=float, default=ranking.HUBNESS_WEIGHT)
    args = parser.parse_args()
    fusion = {"hubness": args.hubness}
    library = Library(args.library)
    dataset = read_dataset(args.data, holdout=200, seed=0)
    names = dataset.val
    if args.hits and os.path.exists(args.hits):
        with open(args.hits, "rb") as f:
            words, captions, name_of = pickle.load(f)
    else:
        with library.dir.read_catalog() as catalog:
            name_of = {row["id"]: Path(row["path"]).name for row in catalog.rows(None)}
        words = {}
        for word in search_eval.WORDS:
            relevant = search_eval.relevant_images(dataset, names, word)
            if relevant:
                words[word] = (relevant, fetch(library, word, fusion))
        most = max(len(dataset.captions[n]) for n in names)
        queries = [(search_eval.caption_query(dataset.captions[n][i]), n) for i in range(most)
                   for n in names if i < len(dataset.captions[n])]
        queries = [(q, n) for q, n in queries if q][:args.max_caption_queries]
        captions = [(n, q, fetch(library, q, fusion)) for q, n in queries]
        if args.hits:
            with open(args.hits, "wb") as f:
                pickle.dump((words, captions, name_of), f)
    print("| shares (short / sentence) | words P@10 | R@1 | R@5 | R@10 | median rank |")
    print("| --- | --- | --- | --- | --- | --- |")
    for short, sentence in [(None, None), *SHARES]:
        precision = []
        for relevant, hits in words.values():
            top = {name_of.get(i) for i, _ in fused(hits, short)[:10]}
            precision.append(len(relevant & top) / min(10, len(relevant)))
        ranks = []
        for name, text, hits in captions:
            is_short = ranking.semantic_share(text) == ranking.SHORT_QUERY_SHARE
            order = [name_of.get(i) for i, _ in
                     fused(hits, short if is_short else sentence)[:search_eval.RANK_LIMIT]]
            ranks.append(order.index(name) + 1 if name in order else len(names))
        recall = {k: sum(r <= k for r in ranks) / len(ranks) for k in (1, 5, 10)}
        label = "keyword alone" if short is None else f"{short:g} / {sentence:g}"
        print(f"| {label} | {statistics.mean(precision):.3f} | {recall[1]:.3f} | "
              f"{recall[5]:.3f} | {recall[10]:.3f} | {statistics.median(ranks):g} |")


if __name__ == "__main__":
    main()
