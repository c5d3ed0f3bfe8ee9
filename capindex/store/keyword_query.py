"""The keyword index's query language: what a typed query means, and what it may not say.

Words are OR-ed over the index's fields with their boosts; "quoted phrases", AND / OR,
field:word and NOT (or a leading "-", as in `dog -cat`) work. Whoosh's parser never
fails: it silently drops an unclosed parenthesis, a dangling AND or an unknown field,
so `check_query` rejects those with a message that names the problem.
"""

from __future__ import annotations

import re

from whoosh.analysis import STOP_WORDS
from whoosh.fields import Schema
from whoosh.qparser import MultifieldParser, OrGroup
from whoosh.query import AndNot, Not, Or, Query

from capindex.errors import QuerySyntaxError

FIELDS = ("caption", "alt", "objects", "tags", "words", "concepts", "name")
FIELD_BOOSTS = {"caption": 1.0, "alt": 0.4, "objects": 0.8, "tags": 0.6, "words": 0.3,
                "concepts": 0.6, "name": 0.8}


# "-word" at the start of a word (not "beach-sunset"): Google's way of saying NOT word.
_MINUS = re.compile(r"(?:(?<=\s)|^)-(?=[^\s-])")


def parse_query(text: str, schema: Schema, boosts: dict[str, float] | None = None) -> Query:
    """The Whoosh query for `text`: words OR-ed over the fields with their boosts (a field
    boosted 0 is left out; an index made by an older capindex lacks some fields), and
    NOT (or a leading "-") excluding what follows it."""
    parts = text.split('"')  # outside quotes are the even parts; phrases stay as typed
    text = '"'.join(_MINUS.sub("NOT ", part) if i % 2 == 0 else part
                    for i, part in enumerate(parts))
    boosts = {**FIELD_BOOSTS, **(boosts or {})}
    fields = [f for f in FIELDS if boosts[f] > 0 and f in schema.names()]
    parser = MultifieldParser(fields, schema, fieldboosts=boosts, group=OrGroup)
    return _not_excludes(parser.parse(text))


def _not_excludes(query: Query) -> Query:
    """In an OR group Whoosh reads `dog NOT cat` as "dog, or anything without cat" (every
    image without a cat matches); make NOT exclude: Or(dog, Not(cat)) -> AndNot(dog, cat),
    and an OR of NOTs alone -> Not(Or(...)), anything with none of them."""
    query = query.apply(_not_excludes)
    if not isinstance(query, Or):
        return query
    excluded = [sub.query for sub in query.subqueries if isinstance(sub, Not)]
    if not excluded:
        return query
    kept = [sub for sub in query.subqueries if not isinstance(sub, Not)]
    negative = excluded[0] if len(excluded) == 1 else Or(excluded)
    if not kept:
        return Not(negative)
    return AndNot(kept[0] if len(kept) == 1 else Or(kept, boost=query.boost), negative)


_OPERATORS = ("AND", "OR", "NOT", "ANDNOT", "ANDMAYBE")
_FIELD = re.compile(r"^\(*([A-Za-z_]\w*):(.*)$")
_BINARY = ("AND", "OR", "ANDNOT", "ANDMAYBE")


def check_query(text: str) -> None:
    """Raise QuerySyntaxError for what Whoosh would silently drop or misread.

    Whoosh's parser never fails: an unclosed parenthesis, a dangling AND or an
    unknown field just vanish from the query. We say so instead.
    """
    if not text.strip():
        raise QuerySyntaxError(text, "the query is empty")
    words = [w for w in re.findall(r"[A-Za-z0-9]+", text) if w not in _OPERATORS]
    if words and all(w.lower() in STOP_WORDS for w in words):
        raise QuerySyntaxError(text, "it has only common words (the, a, of, ...), which are "
                                     "not indexed; add a word that describes the photo")
    if text.count('"') % 2:
        raise QuerySyntaxError(text, "a quote (\") is not closed")
    outside = re.sub(r'"[^"]*"', ' "" ', text)  # phrases are left to Whoosh
    depth = 0
    for char in outside:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth < 0:
            break
    if depth:
        raise QuerySyntaxError(text, "the parentheses do not match")
    if outside.count("[") != outside.count("]") or outside.count("{") != outside.count("}"):
        raise QuerySyntaxError(text, "a range's brackets do not match")
    words = re.sub(r"[()]", " ", outside).split()
    for i, word in enumerate(words):
        before = words[i - 1] if i else None
        after = words[i + 1] if i + 1 < len(words) else None
        if word in _BINARY and (before is None or after is None or after in _BINARY
                                or before in _BINARY or before == "NOT"):
            raise QuerySyntaxError(text, f"{word} needs a word on each side")
        if word == "NOT" and (after is None or after in _BINARY):
            raise QuerySyntaxError(text, "NOT needs a word after it")
        field = _FIELD.match(word)
        if field:
            name, rest = field.groups()
            if name not in FIELDS:
                raise QuerySyntaxError(text, f"there is no field {name!r}")
            if not rest:
                raise QuerySyntaxError(text, f"{name}: needs a word right after the colon")
