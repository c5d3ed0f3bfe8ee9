"""Recurrent caption decoder with soft attention (Show, Attend and Tell).

One definition for every cell type: `ModelConfig.cell` picks GRU, LSTM or a plain
tanh RNN. The recurrent state is one tensor (batch, state_dim) for all three (the
LSTM's h and c are concatenated), so search code can reorder it with index_select.
"""

from __future__ import annotations

import torch
from torch import nn

from capindex.model.config import ModelConfig

_CELLS = {"gru": nn.GRUCell, "lstm": nn.LSTMCell, "rnn": nn.RNNCell}


class Attention(nn.Module):
    """Additive attention over the encoder's spatial grid."""

    def __init__(self, feature_dim: int, hidden_dim: int, attention_dim: int) -> None:
        super().__init__()
        self.feature_att = nn.Linear(feature_dim, attention_dim)
        self.hidden_att = nn.Linear(hidden_dim, attention_dim)
        self.score = nn.Linear(attention_dim, 1)

    def precompute(self, features: torch.Tensor) -> torch.Tensor:
        return self.feature_att(features)  # (B, P, attention_dim), once per image

    def forward(self, features, features_att, hidden):
        # features (B, P, D), features_att (B, P, A), hidden (B, H)
        e = self.score(torch.tanh(features_att + self.hidden_att(hidden).unsqueeze(1)))  # (B, P, 1)
        alpha = e.squeeze(2).softmax(dim=1)  # (B, P)
        context = (features * alpha.unsqueeze(2)).sum(dim=1)  # (B, D)
        return context, alpha


class CaptionDecoder(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        c = self.config = config
        self.project = nn.Sequential(nn.Linear(c.feature_dim, c.project_dim), nn.ReLU(),
                                     nn.Dropout(c.dropout))
        self.attention = Attention(c.project_dim, c.hidden_dim, c.attention_dim)
        self.embed = nn.Embedding(c.vocab_size, c.embed_dim)
        self.gate = nn.Linear(c.hidden_dim, c.project_dim)  # SAT's gating scalar beta, per channel
        self.cell = _CELLS[c.cell](c.embed_dim + c.project_dim, c.hidden_dim)
        self.state_parts = 2 if c.cell == "lstm" else 1
        self.init_state = nn.Linear(c.project_dim, c.hidden_dim * self.state_parts)
        self.dropout = nn.Dropout(c.dropout)
        # SAT's deep output: word logits from (h, context, previous word) through an
        # embed-sized bottleneck, far cheaper than a direct (h + context + word) x V layer.
        self.bottleneck = nn.Linear(c.hidden_dim + c.project_dim + c.embed_dim, c.embed_dim)
        self.out = nn.Linear(c.embed_dim, c.vocab_size)

    def start(self, features: torch.Tensor):
        """Encoder grid (B, P, feature_dim) -> (projected, attention keys, initial state)."""
        projected = self.project(features)  # (B, P, project_dim)
        state = torch.tanh(self.init_state(projected.mean(dim=1)))  # (B, H * parts)
        return projected, self.attention.precompute(projected), state

    def hidden(self, state: torch.Tensor) -> torch.Tensor:
        return state[:, : self.config.hidden_dim]

    def advance(self, tokens, state, projected, keys):
        """Feed one word: tokens (B,) -> new state, read-out input (B, R), attention (B, P)."""
        h = self.hidden(state)
        context, alpha = self.attention(projected, keys, h)  # (B, project_dim), (B, P)
        context = context * torch.sigmoid(self.gate(h))
        emb = self.embed(tokens)  # (B, embed_dim)
        x = torch.cat([emb, context], dim=1)
        if self.state_parts == 2:
            h, c = self.cell(x, state.chunk(2, dim=1))
            state = torch.cat([h, c], dim=1)
        else:
            h = state = self.cell(x, h)
        return state, torch.cat([h, context, emb], dim=1), alpha

    def readout(self, x: torch.Tensor) -> torch.Tensor:
        """Deep output layer: (..., R) -> word logits (..., V)."""
        return self.out(self.dropout(torch.tanh(self.bottleneck(x))))

    def step(self, tokens, state, projected, keys):
        """One word: tokens (B,) -> logits (B, V), new state, attention weights (B, P)."""
        state, x, alpha = self.advance(tokens, state, projected, keys)
        return self.readout(x), state, alpha

    def forward(self, features: torch.Tensor, captions: torch.Tensor):
        """Teacher forcing. captions (B, T) start with <start>; returns logits for
        positions 1..T-1, (B, T-1, V), and attention weights (B, T-1, P)."""
        projected, keys, state = self.start(features)
        readouts, alphas = [], []
        for t in range(captions.size(1) - 1):
            state, x, alpha = self.advance(captions[:, t], state, projected, keys)
            readouts.append(x)
            alphas.append(alpha)
        # One large matrix product for every step's word logits is much faster than T small ones.
        return self.readout(torch.stack(readouts, dim=1)), torch.stack(alphas, dim=1)
