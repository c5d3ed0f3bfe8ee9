"""Search the library: keyword hits (BM25F) and vector hits, fused; rows from the catalogue.

    keyword   the Whoosh index: words, stems, broader words, objects, tags, file name
    semantic  the vector index: the query's meaning against each photo's embedding
    hybrid    both, fused by score (`fuse_scores`): the default when the library has vectors

NOT / -word exclude in every mode (the excluded ids come from the keyword index). Paths and
captions shown come from the catalogue, never from an index, so a hit is never stale.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from capindex.errors import CapindexError, EmptyLibraryError, IndexDamaged
from capindex.search.modes import SEARCH_MODES
from capindex.store.keyword import KeywordIndex
from capindex.store.keyword_query import check_query
from capindex.store.library_dir import LibraryDir

MODES = SEARCH_MODES
# Hits taken from each side before fusing: enough that an image ranked well by one side
# and poorly by the other still meets itself.
FUSION_DEPTH = 100
# Hybrid ranks by score fusion (`fuse_scores`): share x cosine + (1 - share) x BM25F scaled to
# the best hit. A query of one or two words names a thing, and the words find it best; a
# sentence describes a scene, and its meaning does. Chosen on Flickr8k val (docs/search.md):
SHORT_QUERY_WORDS = 2  # content words (stop words left out) of a short query
SHORT_QUERY_SHARE = 0.8  # words P@10: see docs/search.md (fusion)
SENTENCE_SHARE = 0.9  # caption R@10: see docs/search.md (fusion)
# Reciprocal rank fusion (`fuse`, Cormack et al. 2009), measured and not chosen: at its
# k = 60 it lost to score fusion on sentences (R@10 0.517-0.641 for weights 1:1 to 1:2).
RRF_K = 60
KEYWORD_WEIGHT = 1.0
SEMANTIC_WEIGHT = 1.0


@dataclass
class Hit:
    rank: int
    score: float
    id: int
    path: str
    caption: str
    tags: list[dict]
    keyword_score: float | None = None
    vector_score: float | None = None
    objects: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        out = {"rank": self.rank, "score": round(self.score, 4), "id": self.id,
               "path": self.path, "caption": self.caption, "tags": self.tags}
        if self.objects:
            out["objects"] = self.objects
        if self.keyword_score is not None or self.vector_score is not None:
            out["keyword_score"] = _round(self.keyword_score)
            out["vector_score"] = _round(self.vector_score)
        return out


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def fuse(keyword: list[tuple[int, float]], semantic: list[tuple[int, float]],
         keyword_weight: float = KEYWORD_WEIGHT, semantic_weight: float = SEMANTIC_WEIGHT,
         k: int = RRF_K) -> list[tuple[int, float]]:
    """Reciprocal rank fusion of two ranked (id, score) lists -> (id, fused score), best first."""
    fused: dict[int, float] = {}
    for weight, hits in ((keyword_weight, keyword), (semantic_weight, semantic)):
        for rank, (row_id, _) in enumerate(hits, 1):
            fused[row_id] = fused.get(row_id, 0.0) + weight / (k + rank)
    return sorted(fused.items(), key=lambda item: (-item[1], item[0]))


def semantic_share(text: str) -> float:
    """How much the meaning counts in a hybrid search for `text` (SHORT_QUERY_SHARE or
    SENTENCE_SHARE, by its number of content words)."""
    from whoosh.analysis import STOP_WORDS

    from capindex.search.semantic import meaning_text

    words = [w for w in meaning_text(text).lower().split() if w not in STOP_WORDS]
    return SHORT_QUERY_SHARE if len(words) <= SHORT_QUERY_WORDS else SENTENCE_SHARE


def fuse_scores(keyword: list[tuple[int, float]], semantic: list[tuple[int, float]],
                semantic_share: float, keyword_complete: bool = False) -> list[tuple[int, float]]:
    """Score fusion: semantic_share x cosine + (1 - semantic_share) x BM25F / the best BM25F,
    over both lists; a hit missing from one list gets that list's lowest score (0 for the
    keyword list when it is `keyword_complete`: it holds every image that matches)."""
    top = max((score for _, score in keyword), default=0.0) or 1.0
    words = {row_id: score / top for row_id, score in keyword}
    meaning = dict(semantic)
    floor_words = 0.0 if keyword_complete else min(words.values(), default=0.0)
    floor_meaning = min(meaning.values(), default=0.0)
    fused = {row_id: semantic_share * meaning.get(row_id, floor_meaning)
             + (1 - semantic_share) * words.get(row_id, floor_words)
             for row_id in {*words, *meaning}}
    return sorted(fused.items(), key=lambda item: (-item[1], item[0]))


def search(library: LibraryDir, text: str = "", limit: int = 10, mode: str = "hybrid",
           boosts: dict[str, float] | None = None, like: str | None = None,
           notes: list[str] | None = None, fusion: dict | None = None) -> list[Hit]:
    """The best `limit` images for `text` (or, with `like`, for their likeness to that
    photo), best first.

    `mode`: hybrid, keyword or semantic; hybrid and semantic fall back to keyword search when
    the library has no vectors (a line in `notes` says why, when that is not expected).
    `boosts`: the keyword index's field weights and `fusion`: {semantic_share, depth, or
    method "rrf" with keyword_weight, semantic_weight, k}, for evaluation. Raises
    QuerySyntaxError for a malformed query, EmptyLibraryError when nothing has been
    captioned yet, IndexDamaged when the keyword index is missing or cannot be read (the
    next ingest rebuilds it), and the catalogue's errors (CatalogDamaged, ...).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    notes = notes if notes is not None else []
    if not like:
        check_query(text)
    index = KeywordIndex(library.index_dir)
    with library.open_catalog(read_only=True) as catalog:
        if not index.exists() or index.doc_count() == 0:
            if not catalog.has_ok_rows():
                raise EmptyLibraryError(str(library.root))
            if not index.exists():
                raise IndexDamaged(str(library.index_dir), "missing")
    fusion = fusion or {}
    depth = max(limit, fusion.get("depth", FUSION_DEPTH))
    vectors = None
    if like or mode != "keyword":
        vectors = _vector_side(library, notes, required=bool(like))
    keyword_hits: list[tuple[int, float]] = []
    if not like and (mode == "keyword" or vectors is None or mode == "hybrid"):
        keyword_hits = index.search(text, depth if vectors is not None else limit, boosts)
    vector_hits: list[tuple[int, float]] = []
    if vectors is not None:
        from capindex.search import semantic

        excluded = index.excluded_ids(text) if text else set()
        if like:
            query = _like_vector(library, like, vectors)
        else:
            meaning = semantic.meaning_text(text)
            query = semantic.query_vector(meaning) if meaning else None
        if query is not None:
            vector_hits = vectors.search(query, depth, excluded)
    if vectors is None or (not vector_hits and not like):
        ranked = keyword_hits
    elif like or mode == "semantic":
        ranked = vector_hits
    else:
        if fusion.get("method") == "rrf":
            ranked = fuse(keyword_hits, vector_hits, fusion.get("keyword_weight", KEYWORD_WEIGHT),
                          fusion.get("semantic_weight", SEMANTIC_WEIGHT), fusion.get("k", RRF_K))
        else:
            share = fusion.get("semantic_share", semantic_share(text))
            ranked = fuse_scores(keyword_hits, vector_hits, share,
                                 keyword_complete=len(keyword_hits) < depth)
    return _hits(library, ranked[:limit], dict(keyword_hits), dict(vector_hits),
                 fused=ranked is not keyword_hits and ranked is not vector_hits)


def _vector_side(library: LibraryDir, notes: list[str], required: bool):
    """The library's vector index when it can be searched with the shipped embedding, else
    None (with a line in `notes` when vectors were expected)."""
    from capindex.model import embedding_id
    from capindex.store.vectors import VectorIndex, VectorIndexDamaged

    vectors = VectorIndex(library.vectors_dir)
    try:
        model = vectors.model_id()
    except VectorIndexDamaged:
        model = None
        notes.append("the vector index is damaged; searching by keywords only until the next "
                     "capindex ingest rebuilds it")
    if model is None or model != embedding_id() or not vectors.count():
        if required:
            raise CapindexError("this library has no image vectors yet; run capindex ingest "
                                "(with the shipped embedding) before searching with --like")
        return None
    return vectors


def _like_vector(library: LibraryDir, photo: str, vectors):
    """The vector of `photo`: its stored one when it is catalogued, else computed."""
    import os

    from capindex.pipeline.discover import catalog_path
    from capindex.search import semantic

    key = catalog_path(os.path.abspath(photo))
    with library.open_catalog(read_only=True) as catalog:
        row_id = catalog.id_of(key)
    stored = vectors.vector(row_id) if row_id is not None else None
    return stored if stored is not None else semantic.photo_vector(photo)


def _hits(library: LibraryDir, ranked: list[tuple[int, float]], keyword: dict, vector: dict,
          fused: bool) -> list[Hit]:
    with library.open_catalog(read_only=True) as catalog:
        rows = {row["id"]: row for row in catalog.rows([row_id for row_id, _ in ranked])}
    hits = []
    for row_id, score in ranked:
        row = rows.get(row_id)
        if row is None or row["status"] != "ok":
            continue  # changed after the index was last committed
        hits.append(Hit(len(hits) + 1, score, row_id, row["path"], row["caption"],
                        row["tags"] or [], keyword.get(row_id) if fused or vector else None,
                        vector.get(row_id), row.get("objects") or []))
    return hits
