"""The decoder's hyper-parameters: one dataclass, stored inside every checkpoint."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from capindex.model import FEATURE_DIM

CELL_TYPES = ("gru", "lstm", "rnn")


@dataclass
class ModelConfig:
    vocab_size: int
    cell: str = "gru"  # one of CELL_TYPES
    feature_dim: int = FEATURE_DIM  # encoder channels
    project_dim: int = 512  # encoder features are projected to this size
    embed_dim: int = 256
    hidden_dim: int = 512
    attention_dim: int = 256
    dropout: float = 0.5

    def __post_init__(self) -> None:
        if self.cell not in CELL_TYPES:
            raise ValueError(f"cell must be one of {', '.join(CELL_TYPES)}, not {self.cell!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
