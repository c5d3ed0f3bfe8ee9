"""Keyword search over captions, tags and file names (Whoosh, via the `whoosh3` distribution).

Why `whoosh3`: it is the maintained continuation of Whoosh, imports as `whoosh`,
and runs without warnings on Python 3.11+; the last original release (2.7.4,
2016) emits SyntaxWarning/DeprecationWarning on Python 3.12.
"""

from capindex.indexer.search import Hit, search
from capindex.indexer.whoosh_index import FIELDS, SearchIndex, check_query

__all__ = ["FIELDS", "Hit", "SearchIndex", "check_query", "search"]
