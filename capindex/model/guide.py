"""Decoding guided by what is detected: confident labels -> caption words the search favours.

A label (a YOLOX object, an ImageNet class) maps through the WordNet table
(`capindex.words`) to a group of the decoder's words:

- its *name*: the label if it is one vocabulary word, else its head noun (the last word of
  "Egyptian cat"), else the nearest broader word of the table that is in the vocabulary
  ("espresso" -> coffee);
- the name's narrower words in the vocabulary (WordNet hyponyms: person -> man, woman,
  boy, ...; cat -> kitten);
- the plurals of all of these that are in the vocabulary (cat -> cats, man -> men).

A label whose group would be empty guides nothing. `Guide.groups` picks an image's
confident labels (detector score, classifier probability above the config's thresholds)
and returns the groups of the surest `max_groups`. The search (`decoding.py`) adds
`bonus` to the log-probability of a group's words until the caption holds one of them
("boost"), or answers with the best caption holding a word of some group whenever one
such caption finishes ("constrain"), or does the latter only for the images whose plain
beam-search caption holds no word of their groups ("fallback": the others keep it).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from capindex.model.vocab import tokenize
from capindex.words import related_words, simple_singulars

MODES = ("off", "boost", "constrain", "fallback")


@dataclass(frozen=True)
class GuideConfig:
    mode: str = "off"  # one of MODES
    object_threshold: float = 0.5  # YOLOX objectness x class score
    tag_threshold: float = 0.5  # ImageNet softmax probability
    bonus: float = 2.0  # log-probability added to a group's words (mode "boost")
    max_groups: int = 3  # the surest labels' groups used, at most

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"guide mode must be one of {', '.join(MODES)}, not {self.mode!r}")


def shipped_guide() -> GuideConfig:
    """The guide `Captioner.load` uses unless told otherwise: the setting chosen by one
    sweep on Flickr8k val (docs/model-card.md, "Guided decoding")."""
    return GuideConfig(mode="fallback", object_threshold=0.7, tag_threshold=0.7, max_groups=1)


class Guide:
    """Label -> word-id groups for one vocabulary, and the confident groups of an image."""

    def __init__(self, vocab, config: GuideConfig) -> None:
        self.vocab = vocab
        self.config = config
        self._cache: dict[tuple[str, str], tuple[int, ...]] = {}

    @cached_property
    def _narrower(self) -> dict[str, set[str]]:
        """Vocabulary word -> the vocabulary's words whose table entry lists it as broader."""
        out: dict[str, set[str]] = {}
        for word in self.vocab.words:
            for broader in related_words(word, "words"):
                out.setdefault(broader, set()).add(word)
        return out

    @cached_property
    def _plurals(self) -> dict[str, set[str]]:
        """Singular -> vocabulary words that are its plural (irregular ones included)."""
        from capindex.words import _table

        irregular = _table()["plurals"]
        out: dict[str, set[str]] = {}
        for word in self.vocab.words:
            for singular in (irregular.get(word), *simple_singulars(word)):
                if singular and singular in self.vocab.index:
                    out.setdefault(singular, set()).add(word)
        return out

    def name(self, label: str, source: str) -> str | None:
        """The vocabulary word naming `label` ("coco" or "imagenet"), or None."""
        words = tokenize(label)
        if len(words) == 1 and words[0] in self.vocab.index:
            return words[0]
        if len(words) > 1 and words[-1] in self.vocab.index:
            return words[-1]
        return next((w for w in related_words(label, source) if w in self.vocab.index), None)

    def group(self, label: str, source: str) -> tuple[int, ...]:
        """Word ids of `label`'s group (see the module docstring); () if it has no name."""
        key = (label, source)
        if key not in self._cache:
            name = self.name(label, source)
            words = {name, *self._narrower.get(name, ())} if name else set()
            words |= {p for w in words for p in self._plurals.get(w, ())}
            self._cache[key] = tuple(sorted(self.vocab.index[w] for w in words))
        return self._cache[key]

    def groups(self, tags=(), objects=()) -> list[tuple[int, ...]]:
        """An image's confident labels -> their distinct word groups, surest label first.

        tags: (ImageNet label, probability) pairs; objects: YOLOX detections as dicts with
        "label" and "score" (`Detection.to_dict`, `summarize`).
        """
        found = [(float(o["score"]), o["label"], "coco") for o in objects
                 if float(o["score"]) >= self.config.object_threshold]
        found += [(float(p), label, "imagenet") for label, p in tags
                  if float(p) >= self.config.tag_threshold]
        out: list[tuple[int, ...]] = []
        for _, label, source in sorted(found, key=lambda f: -f[0]):
            ids = self.group(label, source)
            if ids and ids not in out:
                out.append(ids)
        return out[: self.config.max_groups]
