"""Finding images: a query in, ranked hits out (rows joined from the catalogue).

    ranking.py    keyword, semantic and hybrid search, fused by rank; `Hit`
    semantic.py   queries and photos as points in the text-image embedding space
    modes.py      the kinds of search

The stores it reads live in `capindex.store`. Imports are lazy, so the CLI's options
load nothing heavy.
"""

__all__ = ["Hit", "search"]


def __getattr__(name: str):
    if name in __all__:
        from capindex.search import ranking

        return getattr(ranking, name)
    raise AttributeError(f"module 'capindex.search' has no attribute {name!r}")
