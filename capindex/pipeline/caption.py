"""Stage 3: model-ready tensors -> captions, one `caption_batch` call per batch.

The captioner is passed in (the CLI builds the real one; tests pass a fake):
anything with `model_id`, `weights_hash`, `decoding` and
`caption_batch(images (B, 3, 224, 224)) -> list of (text, score, tags)` will do.
This module imports no torch, so that a run with nothing to caption needs none.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from capindex.errors import ModelError

if TYPE_CHECKING:
    import torch


class CaptionLike(Protocol):
    text: str
    score: float
    tags: list[tuple[str, float]]


class CaptionerLike(Protocol):
    model_id: str
    weights_hash: str
    decoding: dict

    def caption_batch(self, images: torch.Tensor) -> list[CaptionLike]: ...


def caption_images(captioner: CaptionerLike, images: torch.Tensor | None,
                   objects: list[list[dict]] | None = None) -> list[dict]:
    """images (B, 3, 224, 224) -> B dicts of the row's caption columns. `objects`: each
    image's detections, for a captioner guided by them (`model/guide.py`); None: none."""
    if images is None:
        return []
    captions = (captioner.caption_batch(images) if objects is None
                else captioner.caption_batch(images, objects=objects))
    if len(captions) != len(images):
        raise RuntimeError(f"the captioner returned {len(captions)} captions for {len(images)} images")
    embedding_id = getattr(captioner, "embedding_id", None)
    return [
        {"caption": c.text, "caption_score": float(c.score),
         "alt_captions": list(getattr(c, "alternatives", ())),
         "tags": [{"label": label, "prob": float(prob)} for label, prob in c.tags],
         **embedding_columns(getattr(c, "embedding", None), embedding_id,
                             getattr(c, "concepts", None))}
        for c in captions
    ]


def embedding_columns(vector, embedding_id: str | None, concepts: list[str] | None = None) -> dict:
    """The row's embedding columns: the vector as float16 bytes, its model's id and the
    words that model tags the image with."""
    if vector is None or embedding_id is None:
        return {"embedding": None, "embedding_model": None, "concepts": None}
    import numpy as np

    return {"embedding": np.asarray(vector, "<f2").tobytes(), "embedding_model": embedding_id,
            "concepts": concepts}


def provenance(captioner: CaptionerLike) -> dict:
    """The row's provenance columns for captions made by `captioner`."""
    return {"model_id": captioner.model_id, "weights_hash": captioner.weights_hash,
            "decoding": json.dumps(captioner.decoding, sort_keys=True)}


def placement(captioner: CaptionerLike) -> tuple[str, float | None]:
    """Where the model runs ("cpu", "cuda:0"...) and that GPU's memory in GiB (None: a CPU,
    or not known); a `DeferredCaptioner` that knows it without loading the model says so."""
    if isinstance(captioner, DeferredCaptioner):
        return captioner.placement()
    return str(getattr(captioner, "device", "cpu")), getattr(captioner, "device_memory_gib", None)


class DeferredCaptioner:
    """A captioner loaded when first used. Planning a run needs only `weights_hash` (which
    model made a caption), known from the checkpoint file, so a run that finds nothing to
    caption never imports torch or loads the model; any other attribute loads it.

    `place`, when given, says where `load` will put the model (as `placement`) without
    loading it: ingest sets up its decode stage with it, so a run whose files turn out to be
    moved ones (hashed, not captioned) loads no model.
    """

    def __init__(self, weights_hash: str, load: Callable[[], CaptionerLike],
                 source: str = "the checkpoint",
                 place: Callable[[], tuple[str, float | None]] | None = None,
                 embedding_id: str | None = None) -> None:
        self.weights_hash = weights_hash
        self.embedding_id = embedding_id  # known from the embedding's file, as weights_hash
        self._load = load
        self._source = source
        self._place = place
        self._captioner: CaptionerLike | None = None

    def placement(self) -> tuple[str, float | None]:
        if self._captioner is None and self._place is not None:
            return self._place()
        return placement(self._loaded())

    def _loaded(self) -> CaptionerLike:
        if self._captioner is None:
            captioner = self._load()
            if captioner.weights_hash != self.weights_hash:
                raise ModelError(f"{self._source}: the file changed while capindex ran")
            self._captioner = captioner
        return self._captioner

    def __getattr__(self, name: str):  # model_id, decoding, device, caption_batch, ...
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._loaded(), name)


def load_captioner(model_path: str | Path | None = None, device: str = "auto",
                   precision: str = "auto", embedding: bool = True,
                   guide=None) -> DeferredCaptioner:
    """The real captioner for `model_path` (None: the shipped model), loaded when first used,
    so that an ingest with nothing to caption imports no torch. A file that cannot be a
    checkpoint fails here, at once (ModelError). `embedding`: each caption also carries the
    image's vector from the shipped text-image embedding (for search by meaning).
    `guide`: a `GuideConfig` for the decoding (None: the shipped guide, `shipped_guide`)."""
    from capindex.model import DEFAULT_CHECKPOINT, DEFAULT_EMBEDDING, file_sha256, open_checkpoint
    from capindex.model import embedding_id as id_of_embedding

    path = Path(model_path or DEFAULT_CHECKPOINT)
    try:
        with open_checkpoint(path) as f:  # a regular file of a sane size, or ModelError
            weights_hash = file_sha256(f)
            archive = zipfile.is_zipfile(f)  # what torch.save writes: a bad file fails at once
    except OSError as exc:
        raise ModelError(f"{path}: cannot read the model checkpoint ({exc.strerror})") from exc
    if not archive:
        raise ModelError(f"{path}: not a readable checkpoint (not a zip archive)")

    embedding_path = DEFAULT_EMBEDDING if embedding and DEFAULT_EMBEDDING.is_file() else None
    embedding_id = id_of_embedding(embedding_path) if embedding_path else None

    def load():
        from capindex.model.captioner import Captioner

        return Captioner.load(path, device=device, precision=precision,
                              embedding=embedding_path, guide=guide)

    def place():
        from capindex.model.captioner import load_placement

        return load_placement(device)

    return DeferredCaptioner(weights_hash, load, source=str(path), place=place,
                             embedding_id=embedding_id)
