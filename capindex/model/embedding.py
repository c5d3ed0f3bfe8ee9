"""Image side of search by meaning: the captioner's encoder outputs -> MiniLM's text space.

The image embedding takes only what the captioner already computes at ingest
(the feature grid and the ImageNet logits), so no second CNN pass. A query is
embedded by the frozen MiniLM text encoder (text_encoder.py), then by this
model's optional text adapter (`embed_query`); the two sides meet by cosine.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from capindex.errors import ModelError

FORMAT = "capindex-embedding-v1"
DEFAULT_EMBEDDING = Path(__file__).resolve().parent.parent / "weights" / "embedding.pt"


@dataclass
class EmbeddingConfig:
    grid_dim: int = 1280  # channels of the encoder's feature grid
    classes: int = 1000  # ImageNet logits
    dim: int = 384  # the text space (MiniLM)
    hidden: int = 1024  # the MLP's hidden width
    pooling: str = "mean"  # "mean" | "attention" (learned multi-head pooling over the 49 cells)
    heads: int = 8  # attention pooling heads (each pools grid_dim / heads channels)
    use_probs: bool = True  # feed the ImageNet probabilities beside the pooled grid
    dropout: float = 0.0  # on the MLP's input and hidden layer
    norm_input: bool = False  # LayerNorm on the pooled grid before the MLP
    text_adapter: bool = False  # residual linear on the (frozen) text embeddings
    init_temperature: float = 0.07
    members: int = 1  # MLPs trained apart and averaged (`combine_members`); 1: a single MLP

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> EmbeddingConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


class AttentionPool(nn.Module):
    """Multi-head pooling over grid cells with learned queries.

    Zero-initialised scores: it starts as mean pooling and learns where to look.
    """

    def __init__(self, channels: int, heads: int) -> None:
        super().__init__()
        if channels % heads:
            raise ValueError(f"{channels} channels do not split into {heads} heads")
        self.heads = heads
        self.norm = nn.LayerNorm(channels)
        self.score = nn.Linear(channels, heads)
        nn.init.zeros_(self.score.weight)
        nn.init.zeros_(self.score.bias)

    def forward(self, grid: torch.Tensor) -> torch.Tensor:
        b, cells, c = grid.shape
        alpha = self.score(self.norm(grid)).softmax(dim=1)  # (B, cells, heads)
        values = grid.view(b, cells, self.heads, c // self.heads)  # (B, cells, heads, c/heads)
        pooled = (alpha.unsqueeze(-1) * values).sum(dim=1)  # (B, heads, c/heads)
        return pooled.reshape(b, c)  # (B, c)


class EmbeddingNet(nn.Module):
    """grid (B, 49, 1280) + logits (B, 1000) -> unit vectors (B, 384); text adapter (N, 384)."""

    def __init__(self, config: EmbeddingConfig) -> None:
        super().__init__()
        self.config = config
        self.pool = AttentionPool(config.grid_dim, config.heads) if config.pooling == "attention" else None
        if config.pooling not in ("mean", "attention"):
            raise ValueError(f"unknown pooling {config.pooling!r}")
        self.norm = nn.LayerNorm(config.grid_dim) if config.norm_input else None
        width = config.grid_dim + (config.classes if config.use_probs else 0)

        def mlp() -> nn.Sequential:
            return nn.Sequential(
                nn.Dropout(config.dropout), nn.Linear(width, config.hidden), nn.GELU(),
                nn.Dropout(config.dropout), nn.Linear(config.hidden, config.dim))

        # an ensemble: each member's unit vector, summed (the members' keys: mlp.K.*)
        self.mlp = mlp() if config.members == 1 else nn.ModuleList(
            mlp() for _ in range(config.members))
        self.adapter = nn.Linear(config.dim, config.dim) if config.text_adapter else None
        if self.adapter is not None:
            nn.init.zeros_(self.adapter.weight)  # starts as the identity
            nn.init.zeros_(self.adapter.bias)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / config.init_temperature)))

    def pooled(self, grid: torch.Tensor) -> torch.Tensor:
        """(B, 49, 1280) -> (B, 1280)."""
        grid = grid.float()
        return self.pool(grid) if self.pool is not None else grid.mean(dim=1)

    def image_from_pooled(self, pooled: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        parts = [self.norm(pooled) if self.norm is not None else pooled]
        if self.config.use_probs:
            parts.append(logits.float().softmax(dim=-1))  # (B, 1000)
        inputs = torch.cat(parts, dim=-1)
        if self.config.members == 1:
            return F.normalize(self.mlp(inputs), dim=-1)  # (B, 384)
        return F.normalize(sum(F.normalize(m(inputs), dim=-1) for m in self.mlp), dim=-1)

    def forward(self, grid: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        return self.image_from_pooled(self.pooled(grid), logits)

    def text(self, vectors: torch.Tensor) -> torch.Tensor:
        """MiniLM vectors (N, 384) -> the search space (N, 384); identity without an adapter."""
        vectors = vectors.float()
        if self.adapter is None:
            return vectors
        return F.normalize(vectors + self.adapter(vectors), dim=-1)

    def scale(self) -> torch.Tensor:
        return self.logit_scale.clamp(max=math.log(100.0)).exp()


def combine_members(nets: list[EmbeddingNet]) -> EmbeddingNet:
    """One network from single-MLP networks of one config trained apart (other seeds): an
    image's vector is the normalised sum of the members' unit vectors, and the text adapter
    the mean of theirs (on Flickr8k val it ranks as the sum of each member's adapted query to
    the fourth digit), so a query stays one vector through one linear adapter. The members'
    weights are rounded to fp16 first, as checkpoints store them, so that members read
    back from their files combine to the same network."""
    if len(nets) == 1:
        return nets[0]
    configs = {tuple(sorted(n.config.to_dict().items())) for n in nets}
    if len(configs) != 1 or nets[0].config.members != 1:
        raise ValueError("members must be single-MLP networks of one config")
    config = EmbeddingConfig.from_dict({**nets[0].config.to_dict(), "members": len(nets)})
    combined = EmbeddingNet(config)
    states = [{k: v.detach().cpu().half().float() for k, v in n.state_dict().items()}
              for n in nets]
    merged = {}
    for key in combined.state_dict():
        if key.startswith("mlp."):
            member, rest = key[len("mlp."):].split(".", 1)
            merged[key] = states[int(member)][f"mlp.{rest}"]
        else:  # adapter, attention pooling, norm, temperature: the mean
            merged[key] = sum(s[key] for s in states) / len(states)
    combined.load_state_dict(merged)
    return combined.eval()


@dataclass
class ConceptTable:
    """Words to tag images with (`ImageEmbedder.concepts`): each word's point in the search
    space and the cosine above which an image gets it (its mean over the training images plus
    a few of their standard deviations, `scales`)."""

    words: list[str]
    vectors: torch.Tensor  # (V, dim) unit vectors: the words as queries
    thresholds: torch.Tensor  # (V,)
    scales: torch.Tensor  # (V,) the spread of each word's cosines over the training images
    limit: int  # most words per image

    def to_dict(self) -> dict:
        return {"words": list(self.words), "vectors": self.vectors.half(),
                "thresholds": self.thresholds.float(), "scales": self.scales.float(),
                "limit": self.limit}

    @classmethod
    def from_dict(cls, data: dict) -> ConceptTable:
        return cls(list(data["words"]), data["vectors"].float(), data["thresholds"].float(),
                   data["scales"].float(), int(data["limit"]))

    def tag(self, vectors: torch.Tensor) -> list[list[str]]:
        """Unit image vectors (B, dim) -> each image's words above their thresholds, surest
        (most standard deviations above) first, at most `limit`."""
        margin = (vectors.float() @ self.vectors.T - self.thresholds) / self.scales  # (B, V)
        best = margin.topk(min(self.limit, len(self.words)), dim=1)
        return [[self.words[j] for m, j in zip(values.tolist(), order.tolist()) if m >= 0]
                for values, order in zip(best.values, best.indices)]


def save_embedding(path: str | Path, net: EmbeddingNet, provenance: dict, half: bool = True,
                   concepts: ConceptTable | None = None) -> None:
    state = {k: (v.half() if half and v.is_floating_point() else v).cpu().clone()
             for k, v in net.state_dict().items()}
    payload = {"format": FORMAT, "config": net.config.to_dict(), "state_dict": state,
               "provenance": provenance}
    if concepts is not None:
        payload["concepts"] = concepts.to_dict()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    _write_query_side(path, state, provenance, payload.get("concepts"))


def _write_query_side(path: Path, state: dict, provenance: dict,
                      concepts: dict | None) -> Path:
    """The torch-free query side beside the checkpoint (model/query_encoder.py)."""
    from capindex.model.query_encoder import write_query_side

    adapter = {name: state[f"adapter.{name}"].numpy() for name in ("weight", "bias")
               if f"adapter.{name}" in state}
    bank = concepts["vectors"].float().numpy() if concepts else None
    return write_query_side(path, adapter or None,
                            provenance.get("text_model", "all-MiniLM-L6-v2"), bank)


def rewrite_query_side(path: str | Path) -> Path:
    """Write again the query side of the checkpoint at `path` (after a checkpoint was
    replaced by other means); returns where it went."""
    path = Path(path)
    load_embedding(path)  # ModelError for a file that is no embedding checkpoint
    payload = torch.load(path, map_location="cpu", weights_only=True)
    return _write_query_side(path, payload["state_dict"], payload.get("provenance", {}),
                             payload.get("concepts"))


def load_embedding(path: str | Path) -> tuple[EmbeddingNet, dict]:
    """Rebuild the network (fp32, eval mode) and its provenance from a checkpoint file."""
    net, provenance, _ = load_embedding_file(path)
    return net, provenance


def load_embedding_file(path: str | Path) -> tuple[EmbeddingNet, dict, ConceptTable | None]:
    """`load_embedding`, with the checkpoint's concept table (None when it has none)."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such embedding checkpoint")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file
        raise ModelError(f"{path}: not a readable checkpoint ({exc.__class__.__name__})") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ModelError(f"{path}: not a capindex embedding checkpoint")
    net = EmbeddingNet(EmbeddingConfig.from_dict(payload["config"]))
    net.load_state_dict({k: v.float() if v.is_floating_point() else v
                         for k, v in payload["state_dict"].items()})
    concepts = payload.get("concepts")
    return (net.eval(), payload.get("provenance", {}),
            ConceptTable.from_dict(concepts) if concepts else None)


class ImageEmbedder:
    """The trained embedding on one device: what ingest and search call."""

    def __init__(self, net: EmbeddingNet, provenance: dict, weights_hash: str,
                 device: torch.device, concept_table: ConceptTable | None = None) -> None:
        self.net = net
        self.concept_table = concept_table
        self.provenance = provenance
        self.weights_hash = weights_hash
        self.device = device
        self.model_id = provenance.get("model_id", "capindex-embedding")
        self.text_model_id = provenance.get("text_model", "all-MiniLM-L6-v2")
        self.dim = net.config.dim

    @classmethod
    def load(cls, path: str | Path | None = None, device: str = "cpu") -> ImageEmbedder:
        """Load a checkpoint (the shipped embedding.pt when None) onto `device`."""
        from capindex.model import checkpoint_sha256

        path = Path(path) if path else DEFAULT_EMBEDDING
        net, provenance, concepts = load_embedding_file(path)
        dev = torch.device(device)
        return cls(net.to(dev), provenance, checkpoint_sha256(path), dev, concepts)

    @torch.inference_mode()
    def embed(self, grid: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """grid (B, 49, 1280) + logits (B, 1000) -> unit vectors (B, 384) float32 on the CPU."""
        out = self.net(grid.to(self.device), logits.to(self.device))
        return out.float().cpu()

    def concepts(self, vectors) -> list[list[str] | None]:
        """Image vectors (B, dim) -> the words of the checkpoint's concept table each image
        gets (`ConceptTable.tag`); None for each when the checkpoint has no table."""
        vectors = torch.as_tensor(vectors)
        if self.concept_table is None:
            return [None] * len(vectors)
        return self.concept_table.tag(vectors)

    @torch.inference_mode()
    def embed_query(self, text_vectors: torch.Tensor) -> torch.Tensor:
        """TextEncoder vectors (N, 384) -> unit query vectors (N, 384) float32 on the CPU."""
        return self.net.text(text_vectors.to(self.device)).float().cpu()
