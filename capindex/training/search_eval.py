"""How well search finds photos: word queries and caption queries on a dataset's val split.

The split's images are ingested into a library (a temporary one, or `library_dir` to keep
it between runs: a re-run is then incremental) and searched through `capindex.Library`,
the code path of `capindex search`.

- Word queries: each word of WORDS (fixed once, never tuned per word) is a query. An image
  is relevant when at least two of its human captions use the word (the one caption, for a
  dataset with one caption per image), as the word or its plural (+s, +es). Precision@10 =
  relevant images in the top 10 / min(10, relevant images); recall@50 = relevant images in
  the top 50 / relevant images. Words with no relevant image in the split are skipped.
- Caption queries (text-to-image retrieval): each human caption is a query, its image the
  target; R@1, R@5, R@10 and the median rank (an image not returned ranks last).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from capindex.model.vocab import tokenize
from capindex.training.datasets import CaptionDataset

# Chosen once: people, animals, places, actions, colours, objects of everyday photos
# (Flickr8k's and COCO's). Changing the list changes every number: don't tune it.
WORDS = (
    "man", "woman", "child", "boy", "girl", "people", "baby",
    "dog", "cat", "horse", "bird", "sheep", "cow", "elephant",
    "beach", "water", "snow", "grass", "street", "field", "mountain", "kitchen", "room",
    "running", "jumping", "playing", "swimming", "sitting", "riding", "walking", "climbing",
    "black", "white", "red", "blue", "green", "yellow",
    "ball", "bike", "car", "bus", "train", "boat", "table", "food", "pizza", "plate", "bed",
    "shirt", "hat",
)
RANK_LIMIT = 100  # caption queries: hits fetched per query (a target beyond ranks last)


def relevant_images(dataset: CaptionDataset, names: list[str], word: str) -> set[str]:
    """The images of `names` whose human captions use `word` (two of them; one for a dataset
    with a single caption per image)."""
    forms = {word, word + "s", word + "es"}
    found = set()
    for name in names:
        captions = dataset.captions[name]
        needed = min(2, len(captions))
        if sum(bool(forms & set(tokenize(c))) for c in captions) >= needed:
            found.add(name)
    return found


def caption_query(text: str) -> str:
    """A human caption as a plain query: lower-case words only (no operators, no syntax)."""
    return " ".join(tokenize(text))


# The signals measured one by one (`capindex evaluate-search --signals`): keyword search
# with the fields of each step, then search by meaning alone and fused with keywords.
SIGNAL_STEPS = {
    "keyword: caption, tags, name": {"mode": "keyword", "boosts": {"alt": 0, "objects": 0,
                                                                   "words": 0, "concepts": 0}},
    "+ objects": {"mode": "keyword", "boosts": {"alt": 0, "words": 0, "concepts": 0}},
    "+ WordNet words": {"mode": "keyword", "boosts": {"alt": 0, "concepts": 0}},
    "+ n-best captions": {"mode": "keyword", "boosts": {"concepts": 0}},
    "+ concept words (keyword, all fields)": {"mode": "keyword"},
    "semantic": {"mode": "semantic"},
    "hybrid (default)": {"mode": "hybrid"},
}


def evaluate_search(dataset: CaptionDataset, split: str = "val", library_dir: Path | None = None,
                    ingest: Callable | None = None, configs: dict[str, dict] | None = None,
                    max_caption_queries: int | None = None,
                    log: Callable[[str], None] = lambda _: None) -> dict:
    """Ingest `dataset`'s `split` (with `ingest(library, paths)`, default Library.ingest) and
    score word and caption queries with each of `configs` (name -> Library.search options;
    default: the default search)."""
    from capindex.api import Library

    names = dataset.val if split == "val" else dataset.train
    configs = configs or {"default": {}}
    with tempfile.TemporaryDirectory(prefix="capindex-eval-") as tmp:
        library = Library(library_dir or Path(tmp) / "library")
        started = time.monotonic()
        paths = [str(dataset.image_dir / n) for n in names]
        summary = (ingest or (lambda lib, p: lib.ingest(p)))(library, paths)
        ingest_seconds = round(time.monotonic() - started, 1)
        log(f"ingested {len(names)} images in {ingest_seconds} s "
            f"({getattr(summary, 'captioned', '?')} captioned)")
        results = {}
        for name, options in configs.items():
            results[name] = _score(library, dataset, names, options, max_caption_queries)
            log(f"{name}: words P@10 {results[name]['words']['precision_at_10']:.3f}, "
                f"captions R@10 {results[name]['captions']['R@10']:.3f}")
    return {"dataset": dataset.name, "split": split, "images": len(names),
            "ingest_seconds": ingest_seconds, "results": results}


def _score(library, dataset: CaptionDataset, names: list[str], options: dict,
           max_caption_queries: int | None) -> dict:
    by_path = {str(dataset.image_dir / n): n for n in names}

    def ranked(query: str, limit: int) -> list[str]:
        return [by_path.get(hit.path, "") for hit in library.search(query, limit, **options)]

    words = {}
    for word in WORDS:
        relevant = relevant_images(dataset, names, word)
        if not relevant:
            continue
        top = ranked(word, 50)
        words[word] = {
            "relevant": len(relevant),
            "precision_at_10": len(relevant & set(top[:10])) / min(10, len(relevant)),
            "recall_at_50": len(relevant & set(top)) / len(relevant),
        }
    # Every image's captions in turn (the first of each image first), so a cut keeps images
    # spread over the split.
    most = max(len(dataset.captions[n]) for n in names)
    queries = [(caption_query(dataset.captions[n][i]), n) for i in range(most) for n in names
               if i < len(dataset.captions[n])]
    queries = [(q, n) for q, n in queries if q][:max_caption_queries]
    ranks = []
    started = time.monotonic()
    for query, target in queries:
        order = ranked(query, RANK_LIMIT)
        ranks.append(order.index(target) + 1 if target in order else len(names))
    query_ms = 1000 * (time.monotonic() - started) / max(1, len(queries))
    return {
        "options": options,
        "words": {
            "count": len(words),
            "precision_at_10": round(statistics.mean(w["precision_at_10"] for w in words.values()), 4),
            "recall_at_50": round(statistics.mean(w["recall_at_50"] for w in words.values()), 4),
            "per_word": {w: {k: round(v, 3) for k, v in s.items()} for w, s in words.items()},
        },
        "captions": {
            "queries": len(ranks),
            "R@1": round(sum(r <= 1 for r in ranks) / len(ranks), 4),
            "R@5": round(sum(r <= 5 for r in ranks) / len(ranks), 4),
            "R@10": round(sum(r <= 10 for r in ranks) / len(ranks), 4),
            "median_rank": statistics.median(ranks),
            "ms_per_query": round(query_ms, 1),
        },
    }


def format_report(result: dict) -> str:
    """One table row per configuration, as docs/search.md shows them."""
    lines = [f"{result['dataset']} {result['split']} ({result['images']} images)",
             "| search | words P@10 | words R@50 | R@1 | R@5 | R@10 | median rank |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in result["results"].items():
        w, c = r["words"], r["captions"]
        lines.append(f"| {name} | {w['precision_at_10']:.3f} | {w['recall_at_50']:.3f} | "
                     f"{c['R@1']:.3f} | {c['R@5']:.3f} | {c['R@10']:.3f} | {c['median_rank']:g} |")
    return "\n".join(lines)
