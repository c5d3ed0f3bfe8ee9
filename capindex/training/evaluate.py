"""Score a checkpoint on a dataset split: captions from cached features, coco-caption metrics."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from capindex.model.captioner import Captioner
from capindex.model.encoder import Encoder
from capindex.training.datasets import CaptionDataset
from capindex.training.features import cached_features
from capindex.training.scoring import score_captions


def evaluate(captioner: Captioner, dataset: CaptionDataset, split: str, cache_dir: Path,
             batch_size: int = 100) -> dict:
    """Metrics plus decoding speed (images/s, decoder only) and a few sample captions."""
    names = dataset.val if split == "val" else dataset.train
    feats = cached_features(dataset.image_dir, sorted(dataset.captions), cache_dir,
                            lambda: Encoder().to(memory_format=torch.channels_last))
    grid = torch.stack([feats[n] for n in names])
    hyps, started = {}, time.perf_counter()
    for start in range(0, len(names), batch_size):
        captions = captioner.caption_features(grid[start : start + batch_size])
        hyps.update({n: c.text for n, c in zip(names[start:], captions)})
    elapsed = time.perf_counter() - started
    scores = score_captions(hyps, {n: dataset.captions[n] for n in names})
    return {"dataset": dataset.name, "split": split, "images": len(names),
            "model": captioner.model_id, "decoding": captioner.decoding, "scores": scores,
            "decode_images_per_s": round(len(names) / elapsed, 1),
            "samples": [{"image": n, "caption": hyps[n]} for n in names[:5]]}
