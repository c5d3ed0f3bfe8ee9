"""Search the library: the keyword index finds row ids, the catalogue supplies what is shown."""

from __future__ import annotations

from dataclasses import dataclass

from capindex.errors import EmptyLibraryError, IndexDamaged
from capindex.store.keyword import KeywordIndex
from capindex.store.keyword_query import check_query
from capindex.store.library_dir import LibraryDir


@dataclass
class Hit:
    rank: int
    score: float
    id: int
    path: str
    caption: str
    tags: list[dict]

    def to_dict(self) -> dict:
        return {"rank": self.rank, "score": round(self.score, 4), "id": self.id,
                "path": self.path, "caption": self.caption, "tags": self.tags}


def search(library: LibraryDir, text: str, limit: int = 10) -> list[Hit]:
    """The best `limit` matches for `text`, best first.

    Raises QuerySyntaxError for a malformed query, EmptyLibraryError when nothing has
    been captioned yet, IndexDamaged when the search index is missing or cannot be read
    (the next ingest rebuilds it), and the catalogue's errors (CatalogDamaged, ...).
    """
    check_query(text)
    index = KeywordIndex(library.index_dir)
    with library.open_catalog(read_only=True) as catalog:
        if not index.exists() or index.doc_count() == 0:
            if not catalog.has_ok_rows():
                raise EmptyLibraryError(str(library.root))
            if not index.exists():
                raise IndexDamaged(str(library.index_dir), "missing")
        found = index.search(text, limit)
        rows = {row["id"]: row for row in catalog.rows([row_id for row_id, _ in found])}
    hits = []
    for row_id, score in found:
        row = rows.get(row_id)
        if row is None or row["status"] != "ok":
            continue  # changed after the index was last committed
        hits.append(Hit(len(hits) + 1, score, row_id, row["path"], row["caption"],
                        row["tags"] or []))
    return hits
