"""Search the library: the keyword index finds row ids, the catalogue supplies what is shown."""

from __future__ import annotations

from dataclasses import dataclass

from capindex.errors import EmptyLibraryError
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


def search(library: LibraryDir, text: str, limit: int = 10,
           boosts: dict[str, float] | None = None) -> list[Hit]:
    """The best `limit` matches for `text`, best first (`boosts`: the keyword index's
    field weights, for evaluation).

    Raises QuerySyntaxError for a malformed query and EmptyLibraryError when
    nothing has been captioned yet.
    """
    check_query(text)
    index = KeywordIndex(library.index_dir)
    if not library.exists() or index.doc_count() == 0:
        raise EmptyLibraryError(str(library.root))
    found = index.search(text, limit, boosts)
    with library.open_catalog() as catalog:
        rows = {row["id"]: row for row in catalog.rows([row_id for row_id, _ in found])}
    hits = []
    for row_id, score in found:
        row = rows.get(row_id)
        if row is None or row["status"] != "ok":
            continue  # changed after the index was last committed
        hits.append(Hit(len(hits) + 1, score, row_id, row["path"], row["caption"],
                        row["tags"] or []))
    return hits
