"""Checkpoints: state_dict + config + vocabulary + provenance, never pickled modules.

A checkpoint is checked before a model is built from it: the file (a regular file of a
sane size, `capindex.model.open_checkpoint`), its archive (what torch would inflate),
then every part against the others (config values, vocabulary, each weight's name and
shape, the decoder's shapes worked out on the meta device, where nothing is allocated),
so a damaged or hostile file is one ModelError line, never a traceback or a huge allocation.
"""

from __future__ import annotations

import zipfile
from dataclasses import fields
from pathlib import Path

import torch

from capindex.errors import ModelError, byte_size
from capindex.model import FEATURE_DIM, MAX_CHECKPOINT_BYTES, open_checkpoint
from capindex.model.config import ModelConfig
from capindex.model.decoder import CaptionDecoder
from capindex.model.vocab import SPECIALS, Vocabulary

FORMAT = "capindex-caption-v1"
# The largest value any size in a config may take: far above the shipped model's (2,720
# words, hidden_dim 512) or any vocabulary trained here, and small enough that a hostile
# config cannot make building even the meta-device shapes costly.
MAX_DIMENSION = 2**17


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
    """Rebuild the decoder (fp32, eval mode) from a checkpoint file; ModelError (one line)
    for a file that is missing, unreadable, too large or not a sound capindex checkpoint."""
    path = Path(path)
    with open_checkpoint(path) as f:
        try:
            inflated = sum(m.file_size for m in zipfile.ZipFile(f).infolist())
        except Exception as exc:  # zipfile raises several types for a bad file
            raise ModelError(f"{path}: not a readable checkpoint ({exc.__class__.__name__})") from exc
        if inflated > MAX_CHECKPOINT_BYTES:  # torch would inflate compressed members
            raise ModelError(f"{path}: damaged checkpoint (its archive holds "
                             f"{byte_size(inflated)}; the limit is {byte_size(MAX_CHECKPOINT_BYTES)})")
        f.seek(0)
        try:
            payload = torch.load(f, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises many types for a bad file
            raise ModelError(f"{path}: not a readable checkpoint ({exc.__class__.__name__})") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ModelError(f"{path}: not a capindex caption checkpoint")
    try:
        config, vocab, state, provenance = _checked(payload)
        decoder = CaptionDecoder(config)
        decoder.load_state_dict(state)
    except (ValueError, TypeError, RuntimeError) as exc:
        raise ModelError(f"{path}: damaged checkpoint ({_one_line(exc)})") from exc
    return decoder.eval(), vocab, provenance


def _checked(payload: dict) -> tuple[ModelConfig, Vocabulary, dict, dict]:
    """The payload's parts, each checked against the others; ValueError says what is wrong."""
    config = _config(payload.get("config"))
    words = payload.get("vocab")
    if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
        raise ValueError("the vocabulary is not a list of words")
    if tuple(words[: len(SPECIALS)]) != SPECIALS:
        raise ValueError(f"the vocabulary does not start with {' '.join(SPECIALS)}")
    if len(words) != config.vocab_size:
        raise ValueError(f"the vocabulary has {len(words):,} words, the config says "
                         f"{config.vocab_size:,}")
    state = payload.get("state_dict")
    if not isinstance(state, dict):
        raise ValueError("no weights (state_dict)")
    with torch.device("meta"):  # the shapes this config needs, without allocating them
        expected = CaptionDecoder(config).state_dict()
    missing = [name for name in expected if name not in state]
    extra = [str(name) for name in state if name not in expected]
    if missing or extra:
        raise ValueError(f"weights do not match the config: {_names('missing', missing)}"
                         f"{'; ' if missing and extra else ''}{_names('unexpected', extra)}")
    for name, want in expected.items():
        have = state[name]
        if not isinstance(have, torch.Tensor):
            raise ValueError(f"weight {name} is not a tensor")
        if have.shape != want.shape or have.is_floating_point() != want.is_floating_point():
            raise ValueError(f"weight {name} is {_shape(have)}, the config needs {_shape(want)}")
    provenance = payload.get("provenance", {})
    if not isinstance(provenance, dict) or not isinstance(provenance.get("model_id", ""), str):
        raise ValueError("the provenance is not a dictionary with a text model_id")
    floats = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    return config, Vocabulary(words), floats, provenance


def _config(data) -> ModelConfig:
    if not isinstance(data, dict):
        raise ValueError("the config is not a dictionary")
    config = ModelConfig.from_dict(data)  # TypeError for a missing field, ValueError for a cell
    for field in fields(ModelConfig):
        value = getattr(config, field.name)
        if field.name == "cell":
            continue
        if field.name == "dropout":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
                raise ValueError(f"config dropout is {value!r}, not a number from 0 to 1")
        elif isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_DIMENSION:
            raise ValueError(f"config {field.name} is {_short(value)}, not a whole number from 1 "
                             f"to {MAX_DIMENSION:,}")
    if config.feature_dim != FEATURE_DIM:
        raise ValueError(f"made for an encoder of {config.feature_dim} channels; capindex's "
                         f"has {FEATURE_DIM}")
    return config


def _names(label: str, names: list[str]) -> str:
    if not names:
        return ""
    shown = ", ".join(_short(n) for n in names[:3])
    return f"{label} {shown}" + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def _shape(tensor: torch.Tensor) -> str:
    kind = "" if tensor.is_floating_point() else f" {tensor.dtype}"
    return "x".join(str(n) for n in tensor.shape) + kind if tensor.dim() else f"a scalar{kind}"


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 200 else text[:197] + "..."
