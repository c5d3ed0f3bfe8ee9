"""Embed many captions once with the frozen text encoder and cache the vectors."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from capindex.model.text_encoder import TEXT_MODEL_ID, weights_sha256


def cached_text_embeddings(texts: list[str], cache_dir: Path, encoder_factory,
                           label: str = "captions") -> torch.Tensor:
    """(N, 384) float32 unit vectors for `texts`, in order, computed once and kept in `cache_dir`.

    `encoder_factory()` returns a TextEncoder; it is called only when the cache misses.
    """
    key = hashlib.sha256("\n".join([TEXT_MODEL_ID, weights_sha256(), *texts]).encode())
    cache = Path(cache_dir) / f"{label}-{TEXT_MODEL_ID}-{key.hexdigest()[:12]}.pt"
    if cache.is_file():
        return torch.load(cache, weights_only=True)
    vectors = encoder_factory().encode(texts)  # (N, 384)
    cache.parent.mkdir(parents=True, exist_ok=True)
    torch.save(vectors, cache.with_suffix(".tmp"))
    cache.with_suffix(".tmp").replace(cache)
    return vectors
