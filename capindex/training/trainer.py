"""Train a caption decoder on cached encoder features, with early stopping on CIDEr-D.

Reproducible and resumable: batch order and dropout are seeded from (seed, epoch),
and after every epoch the full training state is written to `work_dir/state.pt`.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from capindex.model.checkpoint import save_checkpoint
from capindex.model.config import ModelConfig
from capindex.model.decoder import CaptionDecoder
from capindex.model.decoding import greedy_search
from capindex.model.encoder import ENCODER_ID, Encoder, weights_sha256
from capindex.model.vocab import Vocabulary
from capindex.training.datasets import CaptionDataset
from capindex.training.features import cached_features
from capindex.training.scoring import score_captions


@dataclass
class TrainConfig:
    cell: str = "gru"
    epochs: int = 12
    batch_size: int = 64
    lr: float = 4e-4
    lr_decay: float = 0.5  # applied when validation CIDEr-D does not improve
    patience: int = 3  # epochs without improvement before stopping
    max_len: int = 20  # words per training caption (longer ones are cut)
    min_count: int = 5  # words seen fewer times become <unk>
    attention_reg: float = 1.0  # SAT's doubly stochastic attention penalty
    grad_clip: float = 5.0
    seed: int = 0
    model: dict = field(default_factory=dict)  # overrides of ModelConfig fields


@dataclass
class _Examples:
    """Training captions as token tensors, each pointing at its image's features."""

    image_index: torch.Tensor  # (N,)
    tokens: torch.Tensor  # (N, max_len + 2), padded
    lengths: torch.Tensor  # (N,)


def _encode_captions(pairs, vocab: Vocabulary, max_len: int) -> _Examples:
    encoded = [vocab.encode(c, max_len) for _, c in pairs]
    tokens = torch.full((len(encoded), max_len + 2), vocab.pad, dtype=torch.long)
    for i, ids in enumerate(encoded):
        tokens[i, : len(ids)] = torch.tensor(ids)
    return _Examples(torch.tensor([i for i, _ in pairs]), tokens,
                     torch.tensor([len(ids) for ids in encoded]))


def _batches(lengths: torch.Tensor, batch_size: int, generator: torch.Generator):
    """Shuffled batches of similar caption length (less padding, same randomness)."""
    order = torch.randperm(len(lengths), generator=generator)
    chunk = batch_size * 50
    batches = []
    for start in range(0, len(order), chunk):
        part = order[start : start + chunk]
        part = part[lengths[part].argsort(stable=True)]
        batches += list(part.split(batch_size))
    perm = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in perm]


def _loss(decoder, features, tokens, lengths, vocab, attention_reg):
    steps = int(lengths.max())
    tokens = tokens[:, :steps]
    logits, alphas = decoder(features, tokens)  # (B, T-1, V), (B, T-1, P)
    targets = tokens[:, 1:]
    mask = (targets != vocab.pad).float()  # (B, T-1)
    ce = nn.functional.cross_entropy(logits.transpose(1, 2), targets, ignore_index=vocab.pad)
    coverage = (alphas * mask.unsqueeze(2)).sum(dim=1)  # (B, P): attention each pixel got
    return ce + attention_reg * ((1.0 - coverage) ** 2).mean(), ce


def _recipe(config: TrainConfig) -> dict:
    """What must not change across a resume (the epoch budget may)."""
    return {k: v for k, v in asdict(config).items() if k != "epochs"}


def validate(decoder, features: torch.Tensor, names: list[str], references, vocab,
             batch_size: int = 250) -> dict[str, float]:
    """Greedy captions for `features` scored against `references`."""
    decoder.eval()
    hyps = {}
    for start in range(0, len(names), batch_size):
        batch = features[start : start + batch_size].float()
        seqs, _ = greedy_search(decoder, batch, vocab)
        hyps.update({n: vocab.decode(s) for n, s in zip(names[start:], seqs)})
    return score_captions(hyps, {n: references[n] for n in names})


def train(datasets: list[CaptionDataset], out: Path, config: TrainConfig, cache_dir: Path,
          work_dir: Path, resume: bool = False, log: Callable[[str], None] = print) -> dict:
    """Train on every dataset's train split; stop early on the first dataset's val split."""
    encoder: list[Encoder] = []  # built only if some features are not cached yet

    def encoder_factory() -> Encoder:
        if not encoder:
            encoder.append(Encoder().to(memory_format=torch.channels_last))
        return encoder[0]

    grids, offsets, keys = [], {}, []
    for ds in datasets:
        names = sorted(ds.captions)
        feats = cached_features(ds.image_dir, names, cache_dir, encoder_factory)
        for n in names:
            offsets[(ds.name, n)] = len(keys)
            keys.append((ds.name, n))
            grids.append(feats[n])
    all_features = torch.stack(grids)  # (images, 49, 1280) fp16
    del grids, encoder[:]

    pairs = [(offsets[(ds.name, n)], c) for ds in datasets for n in ds.train for c in ds.captions[n]]
    vocab = Vocabulary.build((c for _, c in pairs), config.min_count)
    examples = _encode_captions(pairs, vocab, config.max_len)
    model_config = ModelConfig(vocab_size=len(vocab), cell=config.cell, **config.model)
    torch.manual_seed(config.seed)  # initial weights do not depend on what was cached before
    decoder = CaptionDecoder(model_config)
    optimizer = torch.optim.Adam(decoder.parameters(), lr=config.lr)
    log(f"{len(pairs)} training captions, {len(vocab)} words, "
        f"{sum(p.numel() for p in decoder.parameters()) / 1e6:.1f}M parameters ({config.cell})")

    val_sets = [(ds, torch.stack([all_features[offsets[(ds.name, n)]] for n in ds.val]))
                for ds in datasets if ds.val]
    state_file = Path(work_dir) / "state.pt"
    epoch, best, stale, history = 0, -math.inf, 0, []
    if resume and state_file.is_file():
        state = torch.load(state_file, weights_only=True)
        if state["vocab"] != vocab.words or state["recipe"] != _recipe(config):
            raise ValueError(f"{state_file}: saved for another recipe or data; remove it or drop --resume")
        decoder.load_state_dict(state["decoder"])
        optimizer.load_state_dict(state["optimizer"])
        epoch, best, stale, history = state["epoch"], state["best"], state["stale"], state["history"]
        log(f"resuming after epoch {epoch} (best CIDEr-D {best:.3f})")

    while epoch < config.epochs and stale < config.patience:
        epoch += 1
        decoder.train()
        generator = torch.Generator().manual_seed(config.seed * 1000 + epoch)
        torch.manual_seed(config.seed * 1000 + epoch)  # dropout
        batches = _batches(examples.lengths, config.batch_size, generator)
        total, progress = 0.0, tqdm(batches, desc=f"epoch {epoch}", unit="batch", leave=False)
        for i, idx in enumerate(progress, 1):
            features = all_features[examples.image_index[idx]].float()
            loss, ce = _loss(decoder, features, examples.tokens[idx], examples.lengths[idx], vocab,
                             config.attention_reg)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(decoder.parameters(), config.grad_clip)
            optimizer.step()
            total += ce.item()
            progress.set_postfix(loss=f"{total / i:.3f}")
        scores = {ds.name: validate(decoder, f, ds.val, ds.captions, vocab) for ds, f in val_sets}
        primary = scores[datasets[0].name]["CIDEr-D"]
        history.append({"epoch": epoch, "train_loss": total / len(batches), "val": scores})
        line = "  ".join(f"{name} CIDEr-D {s['CIDEr-D']:.3f} BLEU-4 {s['BLEU-4']:.3f}"
                         for name, s in scores.items())
        log(f"epoch {epoch}: loss {total / len(batches):.3f}  {line}")
        if primary > best:
            best, stale = primary, 0
            provenance = {
                "model_id": f"capindex-{config.cell}-{dt.date.today():%Y%m%d}",
                "encoder": ENCODER_ID, "encoder_sha256": weights_sha256(),
                "data": [{"name": ds.name, "train_images": len(ds.train), "val_images": len(ds.val)}
                         for ds in datasets],
                "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                "train_config": asdict(config), "epoch": epoch, "val_greedy": scores,
                "torch": str(torch.__version__),
            }
            save_checkpoint(out, decoder, vocab, provenance)
        else:
            stale += 1
            for group in optimizer.param_groups:
                group["lr"] *= config.lr_decay
        state_file.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"decoder": decoder.state_dict(), "optimizer": optimizer.state_dict(),
                    "epoch": epoch, "best": best, "stale": stale, "history": history,
                    "vocab": vocab.words, "recipe": _recipe(config)}, state_file)
    return {"best_cider": best, "epochs": epoch, "history": history}
