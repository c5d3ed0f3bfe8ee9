"""Search the library: keyword hits (BM25F) and vector hits, fused; rows from the catalogue.

    keyword   the FTS5 index: words, stems, broader words, objects, tags, file name
    semantic  the vector index: the query's meaning against each photo's embedding
    hybrid    both, fused by score (`fuse_scores`): the default when the library has vectors

NOT / -word exclude in every mode (the excluded ids come from the keyword index). Paths and
captions shown come from the catalogue, never from an index, so a hit is never stale.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from capindex.errors import CapindexError, EmptyLibraryError, IndexDamaged
from capindex.search.filters import Filters
from capindex.search.modes import SEARCH_MODES
from capindex.store.keyword import KeywordIndex, shown_caption
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
SHORT_QUERY_SHARE = 0.85  # words P@10: see docs/search.md (fusion)
SENTENCE_SHARE = 0.95  # caption R@10: see docs/search.md (fusion)
# A short query's vector hits are re-ranked by cosine less HUBNESS_WEIGHT x each photo's mean
# of its HUBNESS_NEIGHBOURS best cosines to the embedding's concept words
# (`semantic.hub_corrected`): Flickr8k val words P@10 0.583 -> 0.603 (docs/search.md).
# Sentences keep their cosines (the correction cost them R@10).
HUBNESS_NEIGHBOURS = 50
HUBNESS_WEIGHT = 1.0
TYPICAL_KEPT = 200_000  # photos whose typical cosine a process keeps (about 20 MB)
# Reciprocal rank fusion (`fuse`, Cormack et al. 2009), measured and not chosen: at its
# k = 60 it lost to score fusion on sentences (R@10 0.517-0.641 for weights 1:1 to 1:2).
RRF_K = 60
KEYWORD_WEIGHT = 1.0
SEMANTIC_WEIGHT = 1.0


# The catalogue columns a Hit shows (the rest, the vector above all, is not read).
HIT_COLUMNS = ("path", "caption", "user_caption", "tags", "objects", "status")


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
    generated_caption: str | None = None  # the model's caption
    user_caption: str | None = None  # the user's (`caption` shows it when set)

    def to_dict(self) -> dict:
        out = {"rank": self.rank, "score": round(self.score, 4), "id": self.id,
               "path": self.path, "caption": self.caption,
               "generated_caption": self.generated_caption, "user_caption": self.user_caption,
               "tags": self.tags}
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


def is_short_query(text: str) -> bool:
    """Whether `text` names a thing (up to SHORT_QUERY_WORDS content words) rather than
    describing a scene."""
    from capindex.search.semantic import meaning_text
    from capindex.store.keyword_query import STOP_WORDS

    words = [w for w in meaning_text(text).lower().split() if w not in STOP_WORDS]
    return len(words) <= SHORT_QUERY_WORDS


def semantic_share(text: str) -> float:
    """How much the meaning counts in a hybrid search for `text` (SHORT_QUERY_SHARE or
    SENTENCE_SHARE, by its number of content words)."""
    return SHORT_QUERY_SHARE if is_short_query(text) else SENTENCE_SHARE


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
           notes: list[str] | None = None, fusion: dict | None = None, offset: int = 0,
           filters: Filters | None = None) -> list[Hit]:
    """The best `limit` images for `text` after the first `offset` (or, with `like`, for
    their likeness to that photo), best first; only those passing `filters`.

    `mode`: hybrid, keyword or semantic; hybrid and semantic fall back to keyword search when
    the library has no vectors (a line in `notes` says why, when that is not expected).
    `text` "" (no `like`): every image passing `filters`, newest taken first. The pages
    (`offset`) of one search go through the list `count` counts: keyword, every match;
    semantic and `like`, every image with a vector; hybrid, the best `FUSION_DEPTH` (or
    `limit`, when larger) of each side, fused. `boosts`: the keyword index's field weights
    and `fusion`: {semantic_share, depth, hubness (the weight of a short query's hubness
    correction; 0: none), or method "rrf" with keyword_weight, semantic_weight, k}, for
    evaluation. Raises QuerySyntaxError for a malformed query,
    EmptyLibraryError when nothing has been captioned yet, IndexDamaged when the keyword
    index is missing or cannot be read (the next ingest rebuilds it), and the catalogue's
    errors (CatalogDamaged, ...).
    """
    return search_page(library, text, limit, mode, boosts, like, notes, fusion, offset,
                       filters, counted=False)[0]


def count(library: LibraryDir, text: str = "", mode: str = "hybrid", like: str | None = None,
          filters: Filters | None = None, notes: list[str] | None = None,
          fusion: dict | None = None, limit: int = 10,
          boosts: dict[str, float] | None = None) -> int:
    """How many images the pages of that `search` go through (see `search`): keyword
    matches; images with a vector for semantic and `like`; for hybrid, the keyword matches
    and vector candidates its fusion takes; every image for "" (all passing `filters`)."""
    found = _Ranking(library, text, mode, like, notes, filters, fusion, limit, boosts)
    if found.browsing:
        with library.read_catalog() as catalog:
            return catalog.count_matching(**found.filter_kwargs)
    return found.count()


def search_page(library: LibraryDir, text: str = "", limit: int = 10, mode: str = "hybrid",
                boosts: dict[str, float] | None = None, like: str | None = None,
                notes: list[str] | None = None, fusion: dict | None = None, offset: int = 0,
                filters: Filters | None = None, counted: bool = True) -> tuple[list[Hit], int]:
    """`search` and `count` of one query from one ranking (a page shows both): (hits, how
    many images the pages go through; 0 when not `counted`). The count's keyword or
    catalogue query is skipped when the page already holds the last match."""
    if offset < 0 or limit < 0:
        raise ValueError("offset and limit must not be negative")
    found = _Ranking(library, text, mode, like, notes, filters, fusion, limit, boosts)
    if found.browsing:
        with library.read_catalog() as catalog:
            ids = catalog.newest(limit, offset, **found.filter_kwargs)
            total = 0 if not counted else offset + len(ids) if 0 < len(ids) < limit \
                else catalog.count_matching(**found.filter_kwargs)
        return _hits(library, [(row_id, 0.0) for row_id in ids], {}, {}, False, offset), total
    ranked = found.ranked(offset + limit)
    hits = _hits(library, ranked[offset:offset + limit], dict(found.keyword_hits),
                 dict(found.vector_hits), found.fused, offset)
    if not counted:
        total = 0
    elif found.kind == "keyword" and len(ranked) < offset + limit:
        total = len(ranked)  # every match is in hand
    else:
        total = found.count()
    return hits, total


class _Ranking:
    """One search's plan: which sides rank (keyword, vectors, both fused), its filter as
    the set of allowed ids, and the ranked (id, score) lists once asked for."""

    def __init__(self, library: LibraryDir, text: str, mode: str, like: str | None,
                 notes: list[str] | None, filters: Filters | None, fusion: dict | None,
                 limit: int, boosts: dict[str, float] | None) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        self.library, self.text, self.mode, self.like = library, text, mode, like
        self.notes = notes if notes is not None else []
        self.fusion = fusion or {}
        self.boosts = boosts
        self.depth = max(limit, self.fusion.get("depth", FUSION_DEPTH))
        self.filter_kwargs = filters.as_kwargs() if filters is not None else {}
        self.browsing = not like and not text.strip()
        self.keyword_hits: list[tuple[int, float]] = []
        self.vector_hits: list[tuple[int, float]] = []
        self.fused = False
        self._fused_list: list[tuple[int, float]] | None = None  # hybrid's, once ranked
        if not like and not self.browsing:
            check_query(text)
        self.index = KeywordIndex(library.keyword_path, cache=library.keyword_cache())
        with library.read_catalog() as catalog:
            if self.browsing:
                if not catalog.has_ok_rows():
                    raise EmptyLibraryError(str(library.root))
                return
            if catalog.has_ok_rows():
                if not self.index.exists():
                    raise IndexDamaged(str(library.root), self.index.absence())
            elif not self.index.exists() or self.index.doc_count() == 0:
                raise EmptyLibraryError(str(library.root))
            self.allowed = catalog.ids_matching(**self.filter_kwargs) if self.filter_kwargs \
                else None
        self.vectors = None
        if like or mode != "keyword":
            self.vectors = _vector_side(library, self.notes, required=bool(like))
        self.query_vector = None
        self.excluded: set[int] = set()
        if self.vectors is not None:
            from capindex.search import semantic

            self.excluded = self.index.excluded_ids(text) if _may_exclude(text) else set()
            if like:
                self.query_vector = _like_vector(library, like, self.vectors)
            else:
                meaning = semantic.meaning_text(text)
                self.query_vector = semantic.query_vector(meaning) if meaning else None
        # a short text query's vector hits get the hubness correction (HUBNESS_WEIGHT)
        self.hubness = 0.0
        if self.query_vector is not None and not like and is_short_query(text):
            self.hubness = self.fusion.get("hubness", HUBNESS_WEIGHT)
        # which list the pages go through
        if self.vectors is None or (self.query_vector is None and not like):
            self.kind = "keyword"
        elif like or mode == "semantic":
            self.kind = "vector"
        else:
            self.kind = "hybrid"

    def ranked(self, need: int) -> list[tuple[int, float]]:
        """The ranked list, at least its first `need` entries (all of them for hybrid)."""
        if need <= 0 and self.kind != "hybrid":
            return []
        if self.kind == "keyword":
            self.keyword_hits = self.index.search(self.text, need, self.boosts, self.allowed)
            return self.keyword_hits
        if self.kind == "vector":
            self.vector_hits = self._vector_search(max(self.depth, need))
            return self.vector_hits
        if self._fused_list is None:
            self._fused_list = self._fuse()
        return self._fused_list

    def _fuse(self) -> list[tuple[int, float]]:
        """Both sides' best `depth`, fused (the keyword side alone when no vector ranks)."""
        self.keyword_hits = self.index.search(self.text, self.depth, self.boosts, self.allowed)
        self.vector_hits = self._vector_search(self.depth)
        if not self.vector_hits:
            return self.keyword_hits
        self.fused = True
        fusion = self.fusion
        if fusion.get("method") == "rrf":
            return fuse(self.keyword_hits, self.vector_hits,
                        fusion.get("keyword_weight", KEYWORD_WEIGHT),
                        fusion.get("semantic_weight", SEMANTIC_WEIGHT), fusion.get("k", RRF_K))
        share = fusion.get("semantic_share", semantic_share(self.text))
        return fuse_scores(self.keyword_hits, self.vector_hits, share,
                           keyword_complete=len(self.keyword_hits) < self.depth)

    def _vector_search(self, limit: int) -> list[tuple[int, float]]:
        hits = self.vectors.search(self.query_vector, limit, self.excluded, self.allowed)
        return self._hub_corrected(hits) if self.hubness and hits else hits

    def _hub_corrected(self, hits: list[tuple[int, float]]) -> list[tuple[int, float]]:
        """`hits` re-ranked by `semantic.reranked` with each photo's typical cosine, kept
        while the vector file is the same (a server meets the same photos in many
        searches); `hits` as they are without the embedding's word bank."""
        from capindex.search import semantic

        bank = semantic.word_bank()
        if bank is None or bank.shape[1] != len(self.query_vector):
            return hits
        kept = self.vectors.derived(f"typical {HUBNESS_NEIGHBOURS} {id(bank)}")
        typical = {row_id: kept.get(row_id) for row_id, _ in hits}
        missing = [row_id for row_id, value in typical.items() if value is None]
        if missing:
            made = dict(zip(missing, semantic.typical_cosines(
                self.vectors.vectors_of(missing), bank, HUBNESS_NEIGHBOURS).tolist()))
            typical.update(made)
            if len(kept) > TYPICAL_KEPT:
                kept.clear()
            kept.update(made)
        return semantic.reranked(hits, [typical[row_id] for row_id, _ in hits], self.hubness)

    def count(self) -> int:
        if self.kind == "keyword":
            return self.index.count(self.text, self.allowed)
        if self.kind == "vector":
            return self.vectors.count(self.allowed, self.excluded)
        if self._fused_list is None:
            self.ranked(0)
        return len(self._fused_list)


def _may_exclude(text: str) -> bool:
    """Whether `text` can exclude anything (NOT, ANDNOT, -word): else the keyword index
    is not asked for the ids it excludes."""
    return "-" in text or "NOT" in text


def similar(library: LibraryDir, image_id: int, limit: int = 12,
            filters: Filters | None = None) -> list[Hit]:
    """The `limit` photos nearest to photo `image_id` by vector (passing `filters`), best
    first, itself left out; [] when it has no vector or the library none to search."""
    vectors = _vector_side(library, [], required=False)
    vector = vectors.vector(image_id) if vectors is not None else None
    if vector is None:
        return []
    allowed = None
    if filters is not None and not filters.is_empty():
        with library.read_catalog() as catalog:
            allowed = catalog.ids_matching(**filters.as_kwargs())
    ranked = vectors.search(vector, limit, {image_id}, allowed)
    return _hits(library, ranked, {}, dict(ranked), False)


def _vector_side(library: LibraryDir, notes: list[str], required: bool):
    """The library's vector index when it can be searched with the shipped embedding, else
    None (with a line in `notes` when vectors were expected)."""
    from capindex.model import embedding_id
    from capindex.store.vectors import VectorIndexDamaged

    vectors = library.vector_index()
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
    with library.read_catalog() as catalog:
        row_id = catalog.id_of(key)
    stored = vectors.vector(row_id) if row_id is not None else None
    return stored if stored is not None else semantic.photo_vector(photo)


def _hits(library: LibraryDir, ranked: list[tuple[int, float]], keyword: dict, vector: dict,
          fused: bool, offset: int = 0) -> list[Hit]:
    with library.read_catalog() as catalog:
        rows = {row["id"]: row for row in catalog.rows([row_id for row_id, _ in ranked],
                                                       HIT_COLUMNS)}
    hits = []
    for row_id, score in ranked:
        row = rows.get(row_id)
        if row is None or row["status"] != "ok":
            continue  # changed after the index was last committed
        hits.append(Hit(offset + len(hits) + 1, score, row_id, row["path"],
                        shown_caption(row) or "", row["tags"] or [],
                        keyword.get(row_id) if fused or vector else None,
                        vector.get(row_id), row.get("objects") or [], row["caption"],
                        row.get("user_caption")))
    return hits
