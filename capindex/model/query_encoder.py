"""Text queries -> search vectors without torch: MiniLM in numpy, then the embedding's adapter.

A query's vector is MiniLM's (minilm.py) passed through the trained embedding's text
adapter, `normalize(v + adapter(v))` (model/embedding.py, `EmbeddingNet.text`). The
adapter lives in the torch checkpoint (embedding.pt), which only torch can read, so
`save_embedding` also writes the query side beside it, torch-free:

    embedding.query.safetensors   adapter.weight, adapter.bias (as the checkpoint holds them;
                                  none for an embedding without an adapter), concepts.vectors
                                  (the concept table's words as queries, fp16 (V, dim): the
                                  word bank of the hubness correction, search/semantic.py;
                                  none for a checkpoint without a concept table), and
                                  metadata: format, embedding_sha256 (the checkpoint's file
                                  hash), text_model

`QueryEncoder.load` returns None when that file is missing or was written for another
checkpoint (its hash differs); search then takes the torch path. For an existing
checkpoint, `python scripts/write_query_side.py [CHECKPOINT]` writes it again.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from capindex.errors import ModelError
from capindex.model import DEFAULT_EMBEDDING, checkpoint_sha256
from capindex.model.minilm import TEXT_MODEL_ID, MiniLMNumpy, load_tokenizer, map_safetensors, model_dir

FORMAT = "capindex-query-side-v1"
SUFFIX = ".query.safetensors"


def query_side_path(checkpoint: str | Path) -> Path:
    """Where the query side of the checkpoint at `checkpoint` lies (embedding.pt ->
    embedding.query.safetensors)."""
    return Path(checkpoint).with_suffix(SUFFIX)


def write_query_side(checkpoint: str | Path, adapter: dict[str, np.ndarray] | None,
                     text_model: str = TEXT_MODEL_ID, bank: np.ndarray | None = None) -> Path:
    """Write the query side of the checkpoint file at `checkpoint` (already written):
    `adapter` {"weight", "bias"} as numpy arrays, None for no adapter; `bank` (V, dim) the
    concept words' query vectors, None for none. Atomic."""
    from safetensors.numpy import save

    checkpoint = Path(checkpoint)
    path = query_side_path(checkpoint)
    tensors = {f"adapter.{k}": np.ascontiguousarray(v) for k, v in (adapter or {}).items()}
    if bank is not None:
        tensors["concepts.vectors"] = np.ascontiguousarray(bank, np.float16)
    metadata = {"format": FORMAT, "embedding_sha256": checkpoint_sha256(checkpoint),
                "text_model": text_model}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(save(tensors, metadata=metadata))  # (save_file would make it owner-only)
    tmp.replace(path)
    return path


class QueryEncoder:
    """Tokenizer + numpy MiniLM + the adapter: texts -> unit query vectors (N, dim) float32."""

    def __init__(self, tokenizer, model: MiniLMNumpy, weight: np.ndarray | None,
                 bias: np.ndarray | None, bank: np.ndarray | None = None) -> None:
        from threadpoolctl import ThreadpoolController

        self.tokenizer = tokenizer
        self.model = model
        self.weight = weight  # (dim, dim) float32, or None: no adapter
        self.bias = bias
        self.bank = bank  # (V, dim) float32 concept words as queries, or None
        # A query's products are a few rows by 384 or 1536: one BLAS thread does each in
        # under a millisecond, where OpenBLAS's threads waited on each other for 40 ms and
        # more on a busy 2-core machine (docs/performance.md, "Search").
        self._threads = ThreadpoolController()

    @classmethod
    def load(cls, checkpoint: str | Path | None = None) -> QueryEncoder | None:
        """The query side of `checkpoint` (default: the shipped embedding.pt); None when no
        query-side file matches that checkpoint. ModelError for a damaged one."""
        checkpoint = Path(checkpoint or DEFAULT_EMBEDDING)
        path = query_side_path(checkpoint)
        if not path.is_file() or not checkpoint.is_file():
            return None
        tensors, metadata = map_safetensors(path)
        if metadata.get("format") != FORMAT:
            raise ModelError(f"{path}: not a capindex query-side file")
        if (metadata.get("embedding_sha256") != checkpoint_sha256(checkpoint)
                or metadata.get("text_model") != TEXT_MODEL_ID):
            return None
        weight, bias = tensors.get("adapter.weight"), tensors.get("adapter.bias")
        if (weight is None) != (bias is None):
            raise ModelError(f"{path}: the adapter lacks its weight or its bias")
        bank = tensors.get("concepts.vectors")
        folder = model_dir()
        return cls(load_tokenizer(folder), MiniLMNumpy.load(folder),
                   None if weight is None else weight.astype(np.float32),
                   None if bias is None else bias.astype(np.float32),
                   None if bank is None else bank.astype(np.float32))

    def text_vectors(self, texts: list[str]) -> np.ndarray:
        """MiniLM's unit vectors (N, 384), one text at a time (no padding to compute)."""
        out = np.zeros((len(texts), self.model.config.hidden_size), np.float32)
        with self._threads.limit(limits=1, user_api="blas"):
            for i, encoding in enumerate(self.tokenizer.encode_batch(list(texts))):
                length = sum(encoding.attention_mask)  # the batch's padding left out
                ids = np.asarray([encoding.ids[:length]], np.int64)  # (1, T)
                out[i] = self.model(ids, np.ones_like(ids))[0]
        return out

    def encode(self, texts: list[str]) -> np.ndarray:
        """Unit query vectors (N, dim) float32, as `ImageEmbedder.embed_query` gives them."""
        vectors = self.text_vectors(texts)
        if self.weight is None:
            return vectors
        adapted = vectors + vectors @ self.weight.T + self.bias  # (N, dim)
        return adapted / np.maximum(np.linalg.norm(adapted, axis=-1, keepdims=True), 1e-12)
