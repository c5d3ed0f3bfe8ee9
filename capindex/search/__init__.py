"""Finding images: a query in, ranked hits out (rows joined from the catalogue).

`ranking.py` ranks by the keyword index (BM25F); the stores it reads live in
`capindex.store`.
"""

from capindex.search.ranking import Hit, search

__all__ = ["Hit", "search"]
