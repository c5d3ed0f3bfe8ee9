"""Score a checkpoint on a dataset split: captions from cached features, coco-caption metrics."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from capindex.model.captioner import Captioner
from capindex.model.encoder import Encoder, top_tags
from capindex.model.vocab import tokenize
from capindex.training.datasets import CaptionDataset
from capindex.training.features import cached_features
from capindex.training.scoring import score_captions


def evaluate(captioner: Captioner, dataset: CaptionDataset, split: str, cache_dir: Path,
             batch_size: int = 100) -> dict:
    """Metrics, vocabulary (distinct words and captions), decoding speed (images/s, decoder
    only) and a few sample captions.

    A guided captioner (`model/guide.py`) gets each image's ImageNet tags (the encoder's
    classifier on the cached features) and the detector's objects (`detections.py`,
    computed once and cached).
    """
    names = dataset.val if split == "val" else dataset.train
    feats = cached_features(dataset.image_dir, sorted(dataset.captions), cache_dir,
                            lambda: Encoder().to(memory_format=torch.channels_last))
    grid = torch.stack([feats[n] for n in names])
    tags = objects = None
    if captioner.guide is not None:
        from capindex.training.detections import cached_detections

        classifier = captioner.encoder.net._fc
        with torch.inference_mode():
            logits = torch.cat([classifier(grid[i:i + 500].float().mean(dim=1))
                                for i in range(0, len(names), 500)])
        tags = top_tags(logits, captioner.num_tags)
        found = cached_detections(dataset.image_dir, names, cache_dir)
        objects = [found[n] for n in names]
    hyps, started = {}, time.perf_counter()
    for start in range(0, len(names), batch_size):
        end = start + batch_size
        captions = captioner.caption_features(grid[start:end], tags and tags[start:end],
                                              objects and objects[start:end])
        hyps.update({n: c.text for n, c in zip(names[start:], captions)})
    elapsed = time.perf_counter() - started
    scores = score_captions(hyps, {n: dataset.captions[n] for n in names})
    words = {w for h in hyps.values() for w in tokenize(h)}
    return {"dataset": dataset.name, "split": split, "images": len(names),
            "model": captioner.model_id, "decoding": captioner.decoding, "scores": scores,
            "vocabulary": {"distinct_words": len(words),
                           "distinct_captions": len(set(hyps.values()))},
            "decode_images_per_s": round(len(names) / elapsed, 1),
            "samples": [{"image": n, "caption": hyps[n]} for n in names[:5]]}
