"""The interface the ingest pipeline uses: tensors in, captions and tags out."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from capindex.model import DEFAULT_CHECKPOINT, PRECISIONS, checkpoint_sha256, name_embedding
from capindex.model.allocator import keep_freed_memory
from capindex.model.checkpoint import load_checkpoint
from capindex.model.decoding import beam_search, beam_search_batched, constrained_beam_search, greedy_search
from capindex.model.encoder import Encoder, top_tags
from capindex.model.guide import Guide, GuideConfig, shipped_guide
from capindex.model.preprocess import normalize


@dataclass(frozen=True)
class Caption:
    text: str
    score: float  # mean token log-probability of the caption (higher is surer)
    tags: list[tuple[str, float]]  # top ImageNet labels with probabilities
    alternatives: tuple[str, ...] = ()  # the beam's next best distinct captions, best first
    embedding: np.ndarray | None = None  # the image's unit vector (dim,), with an embedder
    concepts: list[str] | None = None  # the embedding's words for the image (`ImageEmbedder.concepts`)


_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def device_memory_gib(device: torch.device) -> float | None:
    """The memory of a GPU `device`, in GiB; None on a CPU."""
    if device.type != "cuda":
        return None
    return torch.cuda.get_device_properties(device).total_memory / 2**30


def load_placement(device: str = "auto") -> tuple[str, float | None]:
    """Where `Captioner.load(device=device)` puts the model, and that GPU's memory in GiB
    (None on a CPU), found without loading it."""
    dev = resolve_device(device)
    return str(dev), device_memory_gib(dev)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The encoder's autocast dtype for `precision` on `device`; None runs it in fp32.

    "auto" is fp32 everywhere: on an H100, bf16 and fp16 changed 42 and 8 of 256
    captions of real photos and did not make a batch faster (docs/performance.md, GPU).
    "fp16" on a CPU runs fp32: CPU float16 kernels are slow or missing.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if precision in ("auto", "fp32") or (precision == "fp16" and device.type == "cpu"):
        return None
    return _AUTOCAST_DTYPES[precision]


def use_channels_last(channels_last: bool | None, device: torch.device) -> bool:
    """Channels-last images and weights: on CPU (oneDNN's fast layout); None picks that way.

    Not on a GPU: there it saved at most about 2 ms of a 30-50 ms batch of 64 and cost 2-4 s
    of cuDNN set-up at every new batch size under half precision (docs/performance.md, GPU).
    """
    if channels_last is not None:
        return channels_last
    return device.type == "cpu"


class Captioner:
    """Encoder + trained decoder + decoding settings, on one device."""

    def __init__(self, encoder: Encoder, decoder, vocab, model_id: str, weights_hash: str,
                 beam_size: int = 3, max_len: int = 20, num_tags: int = 5,
                 precision: str = "auto", channels_last: bool | None = None,
                 embedder=None, embedding_id: str | None = None,
                 guide: GuideConfig | None = None) -> None:
        self.encoder = encoder
        self.embedder = embedder  # the text-image embedding's image side (model/embedding.py)
        self.embedding_id = embedding_id if embedder is not None else None
        self.decoder = decoder
        self.vocab = vocab
        self.model_id = model_id
        self.weights_hash = weights_hash
        self.beam_size = beam_size
        self.max_len = max_len
        self.num_tags = num_tags
        self.guide_config = guide or GuideConfig()
        self.guide = Guide(vocab, self.guide_config) if self.guide_config.mode != "off" else None
        self.precision = precision
        self.autocast = autocast_dtype(precision, self.device)  # None: fp32
        self.channels_last = use_channels_last(channels_last, self.device)
        if self.channels_last:
            self.encoder.to(memory_format=torch.channels_last)

    @property
    def device(self) -> torch.device:
        return next(self.decoder.parameters()).device

    @property
    def decoding(self) -> dict:
        method = "greedy" if self.beam_size == 1 else "beam"
        out = {"method": method, "beam_size": self.beam_size, "max_len": self.max_len}
        if self.guide is not None:
            out["guide"] = asdict(self.guide_config)
        return out

    @property
    def device_memory_gib(self) -> float | None:
        """The memory of the model's GPU, in GiB; None on a CPU."""
        return device_memory_gib(self.device)

    @classmethod
    def load(cls, checkpoint: str | Path | None = None, device: str = "auto",
             beam_size: int = 3, precision: str = "auto",
             channels_last: bool | None = None,
             embedding: str | Path | None = None,
             guide: GuideConfig | None = None) -> Captioner:
        """Load a checkpoint (the shipped default when None) onto `device`.

        `precision` ("auto", "fp32", "bf16", "fp16") is the encoder's autocast
        (see `autocast_dtype`); `channels_last` None picks the layout by device.
        `embedding`: a text-image embedding checkpoint whose image vectors each caption
        carries (the encoder's outputs feed it: no second pass); None: none.
        `guide`: decoding guided by detected labels (`model/guide.py`); None: the shipped
        setting (`shipped_guide`); `GuideConfig()` decodes without a guide.
        """
        path = Path(checkpoint) if checkpoint else DEFAULT_CHECKPOINT
        decoder, vocab, meta = load_checkpoint(path)
        dev = resolve_device(device)
        keep_freed_memory()  # batches reuse freed activation memory (allocator.py)
        encoder = Encoder().to(dev)
        decoder = decoder.to(dev).eval()
        weights_hash = checkpoint_sha256(path)
        embedder = embedding_id = None
        if embedding is not None:
            from capindex.model.embedding import ImageEmbedder

            embedder = ImageEmbedder.load(embedding, device=str(dev))
            embedding_id = name_embedding(embedding, embedder.weights_hash)
        return cls(encoder, decoder, vocab, meta.get("model_id", path.stem), weights_hash,
                   beam_size=beam_size, precision=precision, channels_last=channels_last,
                   embedder=embedder, embedding_id=embedding_id,
                   guide=shipped_guide() if guide is None else guide)

    @torch.inference_mode()
    def caption_batch(self, images: torch.Tensor, objects=None) -> list[Caption]:
        """images: (B, 3, 224, 224), uint8 pixels (`preprocess.to_pixels`, as the decode
        stage sends them) or already normalised floats (`preprocess.image_tensor`).
        `objects`: each image's detections (dicts with label and score), for a guide that
        uses them; None: the guide uses the ImageNet tags alone."""
        features, logits = self.encode(images)
        captions = self.caption_features(features, top_tags(logits, self.num_tags), objects)
        if self.embedder is None:
            return captions
        vectors = self.embedder.embed(features.float(), logits.float()).numpy()  # (B, dim)
        return [replace(c, embedding=v, concepts=words)
                for c, v, words in zip(captions, vectors, self.embedder.concepts(vectors))]

    @torch.inference_mode()
    def embed_batch(self, images: torch.Tensor) -> np.ndarray:
        """images as `caption_batch` -> their unit vectors (B, dim), without captioning."""
        features, logits = self.encode(images)
        return self.embedder.embed(features.float(), logits.float()).numpy()

    def concept_words(self, vectors: np.ndarray) -> list[list[str] | None]:
        """The embedding's words for image vectors (B, dim) (`ImageEmbedder.concepts`)."""
        return self.embedder.concepts(vectors)

    @torch.inference_mode()
    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The encoder's half of `caption_batch`: images -> grid features (B, 49, 1280) and
        ImageNet logits (B, 1000), on the model's device."""
        # Asynchronous from pinned memory (ingest --pin-memory); else the host waits for it.
        images = images.to(self.device, non_blocking=True)
        if images.dtype == torch.uint8:
            images = normalize(images)  # on the model's device, after the 4x smaller copy
        # Batches from the decode stage are channels-last already: then this is a no-op.
        images = images.contiguous(memory_format=torch.channels_last if self.channels_last
                                   else torch.contiguous_format)
        half = (torch.autocast(self.device.type, dtype=self.autocast) if self.autocast
                else nullcontext())
        with half:
            return self.encoder(images)

    @torch.inference_mode()
    def caption_features(self, features: torch.Tensor, tags=None, objects=None) -> list[Caption]:
        """Grid features (B, 49, 1280) -> captions; `tags` (each image's (label, p) list)
        and `objects` (each image's detections) feed the guide, when there is one."""
        features = features.to(self.device).float()
        guides = None
        if self.guide is not None:
            guides = [self.guide.groups(t, o) for t, o in zip(tags or [[]] * len(features),
                                                               objects or [[]] * len(features))]
        bonus = self.guide_config.bonus if self.guide_config.mode == "boost" else 0.0
        if self.guide_config.mode == "constrain":
            tokens, scores, others = constrained_beam_search(
                self.decoder, features, self.vocab, guides, self.beam_size, self.max_len,
                n_best=self.beam_size)
        elif self.guide_config.mode == "fallback":
            tokens, scores, others = beam_search(self.decoder, features, self.vocab,
                                                 self.beam_size, self.max_len,
                                                 n_best=self.beam_size)
            missing = [b for b, (words, groups) in enumerate(zip(tokens, guides))
                       if groups and not set(words) & {w for g in groups for w in g}]
            if missing:
                again = constrained_beam_search(
                    self.decoder, features[missing], self.vocab, [guides[b] for b in missing],
                    self.beam_size, self.max_len, n_best=self.beam_size)
                for j, b in enumerate(missing):
                    tokens[b], scores[b], others[b] = again[0][j], again[1][j], again[2][j]
        elif self.beam_size == 1:
            tokens, scores = greedy_search(self.decoder, features, self.vocab, self.max_len,
                                           guides, bonus)
            others = [[] for _ in tokens]
        elif guides is None and features.device.type == "cuda":
            # on a GPU, the search that keeps its bookkeeping there (the same captions)
            tokens, scores, others = beam_search_batched(
                self.decoder, features, self.vocab, self.beam_size, self.max_len,
                n_best=self.beam_size)
        else:
            tokens, scores, others = beam_search(self.decoder, features, self.vocab,
                                                 self.beam_size, self.max_len,
                                                 n_best=self.beam_size, guides=guides,
                                                 bonus=bonus)
        tags = tags or [[] for _ in tokens]
        captions = []
        for words, score, tag, alternatives in zip(tokens, scores, tags, others):
            text = self.vocab.decode(words)
            distinct = dict.fromkeys(self.vocab.decode(a) for a in alternatives)
            distinct.pop(text, None)
            captions.append(Caption(text, float(score), tag, tuple(distinct)))
        return captions
