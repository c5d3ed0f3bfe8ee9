"""Self-critical sequence training (Rennie et al. 2017) of a trained decoder, on cached features.

Each step samples `samples` captions per image from the decoder and rewards each with its
CIDEr-D against the image's references (document frequencies from all training captions,
`cider.CiderD`). The baseline of a sample is the mean reward of the image's other samples
(Luo 2020's variant of the greedy baseline: no extra greedy decode per step). The loss is
-(reward - baseline) x log p(sample), averaged over the sampled tokens. The encoder stays
frozen (its features are cached), dropout is off (the policy trained is the one that is
deployed), and the checkpoint with the best greedy CIDEr-D on the first dataset's
validation split is kept; the starting model's score is the bar to beat.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from capindex.model.checkpoint import load_checkpoint, save_checkpoint
from capindex.model.encoder import Encoder
from capindex.model.vocab import tokenize
from capindex.training.cider import CiderD
from capindex.training.datasets import CaptionDataset
from capindex.training.features import cached_features
from capindex.training.trainer import validate


@dataclass
class ScstConfig:
    epochs: int = 3
    images_per_batch: int = 32
    samples: int = 5  # sampled captions per image; each one's baseline is the others' mean
    lr: float = 2e-5
    max_len: int = 20
    grad_clip: float = 5.0
    seed: int = 0
    val_every: int = 0  # validate (and keep the best) every this many steps too; 0: per epoch
    max_steps: int = 0  # stop after this many steps in all (validating there); 0: no limit


def sample_captions(decoder, features: torch.Tensor, vocab, samples: int, max_len: int,
                    generator: torch.Generator):
    """features (B, P, D) -> sampled tokens (B*samples, T), their log-probs (B*samples, T)
    and a mask of the real tokens (<end> included), rows image-major."""
    projected, keys, state = decoder.start(features)
    rows = torch.arange(features.size(0)).repeat_interleave(samples)
    projected, keys, state = projected[rows], keys[rows], state[rows]
    n = len(rows)
    tokens = torch.full((n,), vocab.start, dtype=torch.long)
    alive = torch.ones(n, dtype=torch.bool)
    banned = [vocab.pad, vocab.start, vocab.unk]
    out_tokens, out_logp, out_mask = [], [], []
    for step in range(max_len + 1):
        logits, state, _ = decoder.step(tokens, state, projected, keys)
        logits = logits.float()
        logits[:, banned] = float("-inf")
        if step == max_len:  # out of room: end here
            forced = torch.full_like(logits, float("-inf"))
            forced[:, vocab.end] = 0.0
            logits = logits + forced
        logp = logits.log_softmax(dim=-1)  # (n, V)
        tokens = torch.multinomial(logp.detach().exp(), 1, generator=generator).squeeze(1)
        out_tokens.append(tokens)
        out_logp.append(logp.gather(1, tokens.unsqueeze(1)).squeeze(1))
        out_mask.append(alive.clone())
        alive = alive & (tokens != vocab.end)
        if not bool(alive.any()):
            break
    return torch.stack(out_tokens, 1), torch.stack(out_logp, 1), torch.stack(out_mask, 1).float()


def _words(tokens: torch.Tensor, mask: torch.Tensor, vocab) -> list[list[str]]:
    """Sampled rows -> their words, <end> dropped."""
    out = []
    for row, keep in zip(tokens.tolist(), mask.bool().tolist()):
        out.append([vocab.words[t] for t, k in zip(row, keep) if k and t != vocab.end])
    return out


def train_scst(init: Path, datasets: list[CaptionDataset], out: Path, config: ScstConfig,
               cache_dir: Path, log: Callable[[str], None] = print) -> dict:
    """Fine-tune the decoder of checkpoint `init` on CIDEr-D; write the best to `out`."""
    decoder, vocab, init_meta = load_checkpoint(init)
    names, grids, references, val_sets = [], [], {}, []
    for ds in datasets:
        feats = cached_features(ds.image_dir, sorted(ds.captions), cache_dir,
                                lambda: Encoder().to(memory_format=torch.channels_last))
        for n in ds.train:
            names.append(f"{ds.name}/{n}")
            grids.append(feats[n])
            references[f"{ds.name}/{n}"] = [tokenize(c) for c in ds.captions[n]]
        if ds.val:
            val_sets.append((ds, torch.stack([feats[n] for n in ds.val])))
    features = torch.stack(grids)  # (images, 49, 1280) fp16
    del grids
    cider = CiderD(references)
    optimizer = torch.optim.Adam(decoder.parameters(), lr=config.lr)

    def score_val() -> dict:
        return {ds.name: validate(decoder, f, ds.val, ds.captions, vocab) for ds, f in val_sets}

    scores = score_val()
    best = scores[datasets[0].name]["CIDEr-D"]
    history = [{"epoch": 0, "val": scores}]
    log(f"start: {len(names)} training images; greedy val " + _line(scores))
    k = config.samples
    done = 0  # steps taken, all epochs
    for epoch in range(1, config.epochs + 1):
        decoder.eval()  # no dropout: the sampled policy is the deployed one
        generator = torch.Generator().manual_seed(config.seed * 1000 + epoch)
        order = torch.randperm(len(names), generator=generator)
        started, total_reward = time.perf_counter(), 0.0
        steps = -(-len(names) // config.images_per_batch)
        for step, idx in enumerate(order.split(config.images_per_batch), 1):
            batch = features[idx].float()
            tokens, logp, mask = sample_captions(decoder, batch, vocab, k, config.max_len,
                                                 generator)
            keys = [names[i] for i in idx.tolist() for _ in range(k)]
            reward = torch.tensor(cider.scores(keys, _words(tokens, mask, vocab))).view(-1, k)
            baseline = (reward.sum(1, keepdim=True) - reward) / (k - 1)  # the others' mean
            advantage = (reward - baseline).view(-1, 1)  # (B*k, 1)
            loss = -(advantage * logp * mask).sum() / mask.sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(decoder.parameters(), config.grad_clip)
            optimizer.step()
            total_reward += float(reward.mean())
            done += 1
            stop = done == config.max_steps
            if step == steps or stop or (config.val_every and step % config.val_every == 0):
                scores = score_val()
                point = {"epoch": epoch, "step": step, "mean_reward": total_reward / step,
                         "seconds": round(time.perf_counter() - started, 1), "val": scores}
                history.append(point)
                log(f"epoch {epoch} step {step}: mean sample CIDEr-D {point['mean_reward']:.3f} "
                    f"({point['seconds']:.0f} s)  greedy val " + _line(scores))
                primary = scores[datasets[0].name]["CIDEr-D"]
                if primary > best:
                    best = primary
                    save_checkpoint(out, decoder, vocab, _provenance(init, init_meta, config,
                                                                     datasets, point, history))
                decoder.eval()
            if stop:
                break
        if done == config.max_steps:
            break
    return {"best_cider": best, "history": history,
            "improved": best > history[0]["val"][datasets[0].name]["CIDEr-D"]}


def _provenance(init: Path, init_meta: dict, config: ScstConfig, datasets, point: dict,
                history: list) -> dict:
    """The starting checkpoint's provenance plus what self-critical training did."""
    from capindex.model import checkpoint_sha256

    return {**init_meta,
            "model_id": f"{init_meta.get('model_id', init.stem)}-scst",
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "val_greedy": point["val"], "torch": str(torch.__version__),
            "scst": {"init_model_id": init_meta.get("model_id"),
                     "init_sha256": checkpoint_sha256(init), "config": asdict(config),
                     "data": [{"name": ds.name, "train_images": len(ds.train)} for ds in datasets],
                     "epoch": point["epoch"], "step": point["step"], "history": history}}


def _line(scores: dict) -> str:
    return "  ".join(f"{name} CIDEr-D {s['CIDEr-D']:.3f} BLEU-4 {s['BLEU-4']:.3f}"
                     for name, s in scores.items())
