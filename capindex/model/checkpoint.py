"""Checkpoints: state_dict + config + vocabulary + provenance, never pickled modules."""

from __future__ import annotations

from pathlib import Path

import torch

from capindex.errors import ModelError
from capindex.model.config import ModelConfig
from capindex.model.decoder import CaptionDecoder
from capindex.model.vocab import Vocabulary

FORMAT = "capindex-caption-v1"


def save_checkpoint(path: str | Path, decoder: CaptionDecoder, vocab: Vocabulary,
                    provenance: dict, half: bool = True) -> None:
    state = {k: (v.half() if half and v.is_floating_point() else v).cpu()
             for k, v in decoder.state_dict().items()}
    payload = {"format": FORMAT, "config": decoder.config.to_dict(), "vocab": vocab.words,
               "state_dict": state, "provenance": provenance}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def load_checkpoint(path: str | Path) -> tuple[CaptionDecoder, Vocabulary, dict]:
    """Rebuild the decoder (fp32, eval mode) from a checkpoint file."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such model checkpoint")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file
        raise ModelError(f"{path}: not a readable checkpoint ({exc.__class__.__name__})") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ModelError(f"{path}: not a capindex caption checkpoint")
    decoder = CaptionDecoder(ModelConfig.from_dict(payload["config"]))
    decoder.load_state_dict({k: v.float() if v.is_floating_point() else v
                             for k, v in payload["state_dict"].items()})
    return decoder.eval(), Vocabulary(payload["vocab"]), payload.get("provenance", {})
