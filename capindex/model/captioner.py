"""The interface the ingest pipeline uses: tensors in, captions and tags out."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch

from capindex.model.checkpoint import DEFAULT_CHECKPOINT, load_checkpoint
from capindex.model.encoder import Encoder, top_tags
from capindex.model.search import beam_search, greedy_search


@dataclass(frozen=True)
class Caption:
    text: str
    score: float  # mean token log-probability of the caption (higher is surer)
    tags: list[tuple[str, float]]  # top ImageNet labels with probabilities


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class Captioner:
    """Encoder + trained decoder + decoding settings, on one device."""

    def __init__(self, encoder: Encoder, decoder, vocab, model_id: str, weights_hash: str,
                 beam_size: int = 3, max_len: int = 20, num_tags: int = 5) -> None:
        self.encoder = encoder
        self.decoder = decoder
        self.vocab = vocab
        self.model_id = model_id
        self.weights_hash = weights_hash
        self.beam_size = beam_size
        self.max_len = max_len
        self.num_tags = num_tags

    @property
    def device(self) -> torch.device:
        return next(self.decoder.parameters()).device

    @property
    def decoding(self) -> dict:
        method = "greedy" if self.beam_size == 1 else "beam"
        return {"method": method, "beam_size": self.beam_size, "max_len": self.max_len}

    @classmethod
    def load(cls, checkpoint: str | Path | None = None, device: str = "auto",
             beam_size: int = 3) -> "Captioner":
        """Load a checkpoint (the shipped default when None) onto `device`."""
        path = Path(checkpoint) if checkpoint else DEFAULT_CHECKPOINT
        decoder, vocab, meta = load_checkpoint(path)
        dev = resolve_device(device)
        encoder = Encoder().to(dev)
        if dev.type == "cpu":
            encoder = encoder.to(memory_format=torch.channels_last)
        decoder = decoder.to(dev).eval()
        weights_hash = hashlib.sha256(path.read_bytes()).hexdigest()
        return cls(encoder, decoder, vocab, meta.get("model_id", path.stem), weights_hash,
                   beam_size=beam_size)

    @torch.inference_mode()
    def caption_batch(self, images: torch.Tensor) -> list[Caption]:
        """images: (B, 3, 224, 224) from `preprocess.image_tensor`."""
        images = images.to(self.device, non_blocking=True)
        if self.device.type == "cpu":
            images = images.contiguous(memory_format=torch.channels_last)
        features, logits = self.encoder(images)  # (B, 49, 1280), (B, 1000)
        return self.caption_features(features, top_tags(logits, self.num_tags))

    @torch.inference_mode()
    def caption_features(self, features: torch.Tensor, tags=None) -> list[Caption]:
        features = features.to(self.device).float()
        if self.beam_size == 1:
            tokens, scores = greedy_search(self.decoder, features, self.vocab, self.max_len)
        else:
            tokens, scores = beam_search(self.decoder, features, self.vocab, self.beam_size,
                                         self.max_len)
        tags = tags or [[] for _ in tokens]
        return [Caption(self.vocab.decode(t), float(s), tg) for t, s, tg in zip(tokens, scores, tags)]
