"""The keyword index's query language: what a typed query means, and what it may not say.

Words are OR-ed over the index's fields with their boosts; "quoted phrases", AND / OR,
field:word, a trailing * (prefix) and NOT (or a leading "-", as in `dog -cat`) work;
AND binds tighter than OR. `check_query` rejects what cannot mean anything (an unclosed
parenthesis, a dangling AND, an unknown field) with a message that names the problem;
`parse_query` turns the rest into a tree whose `match` is an SQLite FTS5 MATCH expression
in which every word is a quoted string, so no typed text can be FTS5 syntax.

Words are analysed as the index analyses its text (`terms`): lower case, split on what is
not a letter or digit, stop words and one-character words dropped; FTS5's `porter`
tokenizer then stems both sides ("dogs", "running" -> dog, run).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from capindex.errors import QuerySyntaxError

FIELDS = ("caption", "alt", "objects", "tags", "words", "concepts", "name")
FIELD_BOOSTS = {"caption": 1.0, "alt": 0.4, "objects": 0.8, "tags": 0.6, "words": 0.3,
                "concepts": 0.9, "name": 0.8}
# Words not indexed (Whoosh's list, which the boosts were chosen with).
STOP_WORDS = frozenset((
    "a", "an", "and", "are", "as", "at", "be", "by", "can", "for", "from", "have", "if", "in",
    "is", "it", "may", "not", "of", "on", "or", "tbd", "that", "the", "this", "to", "us", "we",
    "when", "will", "with", "yet", "you", "your"))
MIN_WORD = 2  # shorter words are not indexed ("a", "t" of "t-shirt")

_WORD = re.compile(r"[^\W_]+")  # letters and digits: "IMG_2041_beach-sunset" -> 4 words


def terms(text: str) -> list[str]:
    """The indexed words of `text`, in order: lower case, no stop words, none shorter than
    MIN_WORD characters (stemming is FTS5's, on both sides)."""
    return [w for w in _WORD.findall(text.lower()) if len(w) >= MIN_WORD and w not in STOP_WORDS]


def index_text(text: str) -> str:
    """`text` as the index stores it: its `terms`, space-separated."""
    return " ".join(terms(text))


# -- the query tree ------------------------------------------------------------------------

@dataclass(frozen=True)
class Term:
    """A word, or a phrase of several (adjacent words), in `field` or in every field."""
    words: tuple[str, ...]
    field: str | None = None
    prefix: bool = False


@dataclass(frozen=True)
class Node:
    """op "and", "or" (children) or "not" (one child), "andnot" (positive, negative),
    "andmaybe" (required, optional)."""
    op: str
    children: tuple


@dataclass(frozen=True)
class Query:
    """A parsed query: `positive` ranks (None: the query only excludes), `negative` is what
    it excludes (None: nothing)."""
    positive: Term | Node | None
    negative: Term | Node | None

    def match(self, columns: tuple[str, ...] = FIELDS) -> str | None:
        """The FTS5 MATCH expression of the positive part, its words searched in `columns`
        (a field named in the query is searched alone)."""
        if self.positive is None:
            return None
        expression = _fts(self.positive, columns)
        if self.negative is not None:
            expression = f"{expression} NOT {_fts(self.negative, FIELDS)}"
        return expression

    def excluded(self) -> str | None:
        """The FTS5 MATCH expression of what the query excludes, or None."""
        return None if self.negative is None else _fts(self.negative, FIELDS)


def _fts(node: Term | Node, columns: tuple[str, ...]) -> str:
    if isinstance(node, Term):
        quoted = '"' + " ".join(node.words).replace('"', '""') + '"'  # words have no quotes
        if node.prefix:
            quoted += " *"
        wanted = (node.field,) if node.field else columns
        if wanted == FIELDS:
            return quoted
        return "{" + " ".join(wanted) + "} : " + quoted
    if node.op == "andmaybe":  # the required side, scored with the optional one where it is
        required, optional = (_fts(child, columns) for child in node.children)
        return f"({required} OR ({required} AND {optional}))"
    if node.op == "andnot":
        positive, negative = node.children
        return f"({_fts(positive, columns)} NOT {_fts(negative, FIELDS)})"
    joiner = {"and": " AND ", "or": " OR "}[node.op]
    return "(" + joiner.join(_fts(child, columns) for child in node.children) + ")"


# -- parsing -----------------------------------------------------------------------------

# "-word" at the start of a word (not "beach-sunset"): Google's way of saying NOT word.
_MINUS = re.compile(r"(?:(?<=\s)|^)-(?=[^\s-])")
_OPERATORS = ("AND", "OR", "NOT", "ANDNOT", "ANDMAYBE")
_BINARY = ("AND", "OR", "ANDNOT", "ANDMAYBE")
_FIELD = re.compile(r"^\(*([A-Za-z_]\w*):(.*)$")
_TOKEN = re.compile(r'\s*(?:(")([^"]*)"?|([()])|([^\s()"]+))')
_BOOST = re.compile(r"[\^~][\d.]*$")  # Lucene's word^2 (boost) and word~2 (fuzzy): ignored


def parse_query(text: str) -> Query | None:
    """The query tree of `text` (check it first with `check_query`); None when it has no
    indexed word. Never raises for any text."""
    parts = text.split('"')  # outside quotes are the even parts; phrases stay as typed
    text = '"'.join(_MINUS.sub("NOT ", part) if i % 2 == 0 else part
                    for i, part in enumerate(parts))
    tokens = []
    for match in _TOKEN.finditer(text):
        quote, phrase, paren, word = match.groups()
        if quote:
            tokens.append(("term", Term(tuple(terms(phrase))) if terms(phrase) else None))
        elif paren:
            tokens.append((paren, None))
        elif word:
            tokens.append((word, None) if word in _OPERATORS else ("term", _word_term(word)))
    parser = _Parser(tokens)
    tree = parser.expression()
    while parser.position < len(tokens):  # a stray ")": read on
        parser.position += 1
        rest = parser.expression()
        tree = _simplify("or", (tree, rest))
    return _split_negative(_excluding(tree)) if tree is not None else None


def _word_term(word: str) -> Term | None:
    """A typed word: field:word, word* (prefix); several indexed words (beach-sunset) are
    a phrase."""
    field = None
    found = _FIELD.match(word)
    if found and found.group(1) in FIELDS:
        field, word = found.group(1), found.group(2)
    word = _BOOST.sub("", word)
    prefix = word.endswith("*")
    words = terms(word)
    if not words:
        return None
    return Term(tuple(words), field, prefix and len(words) == 1)


class _Parser:
    """or := and (["OR"] and)*;  and := unary (("AND"|"ANDNOT"|"ANDMAYBE") unary)*;
    unary := "NOT" unary | "(" or ")" | term. Missing pieces are skipped, never an error."""

    def __init__(self, tokens: list[tuple[str, Term | None]]) -> None:
        self.tokens = tokens
        self.position = 0

    def _peek(self) -> str | None:
        return self.tokens[self.position][0] if self.position < len(self.tokens) else None

    def expression(self):
        children = []
        while self._peek() not in (None, ")"):
            if self._peek() in _BINARY:  # OR (or a dangling operator): no meaning here
                self.position += 1
                continue
            children.append(self._and())
        return _simplify("or", children)

    def _and(self):
        node = self._unary()
        while self._peek() in ("AND", "ANDNOT", "ANDMAYBE"):
            op = self.tokens[self.position][0].lower()
            self.position += 1
            if self._peek() in (None, ")"):
                break
            right = self._unary()
            node = _simplify(op, (node, right))
        return node

    def _unary(self):
        kind = self._peek()
        self.position += 1
        if kind == "NOT":
            if self._peek() in (None, ")") or self._peek() in _BINARY:
                return None
            inner = self._unary()
            return Node("not", (inner,)) if inner is not None else None
        if kind == "(":
            inner = self.expression()
            if self._peek() == ")":
                self.position += 1
            return inner
        if kind == "term":
            return self.tokens[self.position - 1][1]
        return None  # an operator where a word should be


def _simplify(op: str, children) -> Term | Node | None:
    """A node with its empty (stop-word-only) children left out."""
    if op == "andnot":
        positive, negative = children
        if negative is None:
            return positive
        if positive is None:
            return Node("not", (negative,))
        return Node("and", (positive, Node("not", (negative,))))
    if op == "andmaybe":
        required, optional = children
        if required is None or optional is None:
            return required if required is not None else optional
        return Node("andmaybe", (required, optional))
    kept = []
    for child in children:
        if child is None:
            continue
        if isinstance(child, Node) and child.op == op:
            kept.extend(child.children)
        else:
            kept.append(child)
    if not kept:
        return None
    return kept[0] if len(kept) == 1 else Node(op, tuple(kept))


def _excluding(node):
    """Make NOT exclude, from the leaves up: in an OR or an AND, NOT children leave the
    node and exclude from what the others match (`dog NOT cat`: dog, without cat, not
    "dog, or anything without cat"); a node of NOTs alone is one NOT of them all."""
    if not isinstance(node, Node):
        return node
    children = tuple(_excluding(child) for child in node.children)
    if node.op == "not":
        inner = children[0]
        if isinstance(inner, Node) and inner.op == "not":  # NOT NOT x: x
            return inner.children[0]
        return Node("not", (_positive_only(inner),))
    if node.op == "andmaybe":
        required, optional = children
        if isinstance(required, Node) and required.op == "not":
            return required
        if isinstance(optional, Node) and optional.op == "not":
            return _simplify("and", (required, optional))
        return Node("andmaybe", (required, optional))
    excluded = [c.children[0] for c in children if isinstance(c, Node) and c.op == "not"]
    kept = [c for c in children if not (isinstance(c, Node) and c.op == "not")]
    if not excluded:
        return _simplify(node.op, kept)
    negative = _simplify("or", excluded)
    if not kept:
        return Node("not", (negative,))
    return Node("andnot", (_simplify(node.op, kept), negative))


def _positive_only(node):
    """What a NOT applies to, without NOTs of its own (`NOT (a -b)` excludes a)."""
    if isinstance(node, Node) and node.op == "andnot":
        return node.children[0]
    return node


def _split_negative(node) -> Query:
    if isinstance(node, Node) and node.op == "not":
        return Query(None, node.children[0])
    if isinstance(node, Node) and node.op == "andnot":
        return Query(node.children[0], node.children[1])
    return Query(node, None)


# -- checking ------------------------------------------------------------------------------

def check_query(text: str) -> None:
    """Raise QuerySyntaxError for a query that cannot mean what was typed: empty, only
    stop words, an unclosed quote, parenthesis or bracket, a dangling operator, an
    unknown field or a field without its word."""
    if not text.strip():
        raise QuerySyntaxError(text, "the query is empty")
    words = [w for w in re.findall(r"[A-Za-z0-9]+", text) if w not in _OPERATORS]
    if words and all(w.lower() in STOP_WORDS for w in words):
        raise QuerySyntaxError(text, "it has only common words (the, a, of, ...), which are "
                                     "not indexed; add a word that describes the photo")
    if text.count('"') % 2:
        raise QuerySyntaxError(text, "a quote (\") is not closed")
    outside = re.sub(r'"[^"]*"', ' "" ', text)  # phrases are taken as typed
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
