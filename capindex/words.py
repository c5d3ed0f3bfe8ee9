"""Broader words for photo labels and caption words ("tabby" -> cat, animal, pet).

A search for "animal" should find the photo whose caption says "a dog" and whose tags say
"golden retriever". The words come from capindex/data/word_table.json, a small table made
at development time from WordNet 3.0 by scripts/build_word_table.py (licence:
capindex/data/WORDNET-LICENSE); nothing here reads WordNet. The table has three sections:
"imagenet" (the classifier's labels, exactly as in model/imagenet_labels.txt), "coco" (the
detector's classes) and "words" (caption nouns, singular), plus "plurals" for the irregular
plurals of those words ("men" -> "man").
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

from capindex.model.vocab import tokenize

TABLE = Path(__file__).resolve().parent / "data" / "word_table.json"
SOURCES = ("imagenet", "coco", "words")


@cache
def _table() -> dict[str, dict[str, tuple[str, ...]]]:
    """The table's sections as {key: words}; ImageNet labels also under their lower case
    (the exact label wins: "Cardigan" is a corgi, "cardigan" a sweater)."""
    data = json.loads(TABLE.read_text(encoding="utf-8"))
    sections = {name: {k: tuple(v) for k, v in data[name].items()} for name in SOURCES}
    folded = {}
    for label, words in sections["imagenet"].items():
        folded.setdefault(label.lower(), words)
    sections["imagenet"] = {**folded, **sections["imagenet"]}
    sections["plurals"] = dict(data["plurals"])
    return sections


def simple_singulars(word: str) -> tuple[str, ...]:
    """Candidate singulars by the regular English rules: puppies, boxes, dogs."""
    forms = []
    if len(word) > 4 and word.endswith("ies"):
        forms.append(word[:-3] + "y")
    if len(word) > 3 and word.endswith("es"):
        forms.append(word[:-2])
    if len(word) > 2 and word.endswith("s") and not word.endswith("ss"):
        forms.append(word[:-1])
    return tuple(forms)


def _caption_word(word: str) -> tuple[str, ...]:
    """A caption word's expansion: the word itself, else its singular, else ()."""
    words = _table()["words"]
    found = words.get(word)
    if found is not None:
        return found
    plural_of = _table()["plurals"].get(word)
    if plural_of is not None:
        return words.get(plural_of, ())
    for form in simple_singulars(word):
        found = words.get(form)
        if found is not None:
            return found
    return ()


def related_words(term: str, source: str | None = None) -> tuple[str, ...]:
    """Broader words for a label or word, excluding the term's own words; () if unknown.

    `source` is "imagenet", "coco" or "words" (caption words); None tries them in that
    order and answers from the first that knows the term ("kite" is a bird to ImageNet
    and a toy to COCO).
    """
    if source is not None and source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES} or None, not {source!r}")
    key = term.strip()
    table = _table()
    for name in (source,) if source else SOURCES:
        if name == "words":
            found = _caption_word(key.lower())
            if found:
                return found
            continue
        found = table[name].get(key)
        if found is None:
            found = table[name].get(key.lower())
        if found is not None:
            return found
    return ()


def expand_text(text: str) -> list[str]:
    """The broader words of a caption's words, in order, each once: for an index field
    weighted below the caption ("a boy plays with two dogs" -> child, kid, ..., animal, pet)."""
    out: list[str] = []
    seen: set[str] = set()
    for token in tokenize(text):
        for word in _caption_word(token):
            if word not in seen:
                seen.add(word)
                out.append(word)
    return out
