"""Tokenisation and the word <-> id table."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

PAD, START, END, UNK = "<pad>", "<start>", "<end>", "<unk>"
SPECIALS = (PAD, START, END, UNK)
_WORD = re.compile(r"[a-z0-9]+")


def tokenize(text: str) -> list[str]:
    """Lower-case words and numbers; punctuation dropped (as coco-caption's PTB tokenizer)."""
    return _WORD.findall(text.lower())


class Vocabulary:
    def __init__(self, words: Iterable[str]) -> None:
        self.words: list[str] = list(words)
        if tuple(self.words[: len(SPECIALS)]) != SPECIALS:
            raise ValueError("vocabulary must start with the special tokens")
        self.index = {w: i for i, w in enumerate(self.words)}
        self.pad, self.start, self.end, self.unk = (self.index[s] for s in SPECIALS)

    @classmethod
    def build(cls, captions: Iterable[str], min_count: int = 5) -> Vocabulary:
        counts = Counter(w for c in captions for w in tokenize(c))
        kept = sorted(w for w, n in counts.items() if n >= min_count)
        return cls([*SPECIALS, *kept])

    def __len__(self) -> int:
        return len(self.words)

    def encode(self, text: str, max_len: int) -> list[int]:
        """<start> w1 .. wn <end>, with at most `max_len` words."""
        ids = [self.index.get(w, self.unk) for w in tokenize(text)[:max_len]]
        return [self.start, *ids, self.end]

    def decode(self, ids: Iterable[int]) -> str:
        words = []
        for i in ids:
            if i == self.end:
                break
            if i not in (self.start, self.pad):
                words.append(self.words[i])
        return " ".join(words)
