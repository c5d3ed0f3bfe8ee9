"""Run the frozen encoder once over a dataset and cache the feature grids (fp16)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from capindex.model import FEATURE_DIM, GRID
from capindex.model.encoder import ENCODER_ID, Encoder
from capindex.model.preprocess import PREPROCESS_ID, image_tensor


class ImageFiles(Dataset):
    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        return image_tensor(self.paths[i])


@torch.inference_mode()
def encode_images(paths: list[Path], encoder: Encoder, batch_size: int = 64, workers: int = 2,
                  desc: str = "encoding") -> torch.Tensor:
    """Feature grids (N, 49, 1280) in fp16 for `paths`, in order."""
    device = next(encoder.parameters()).device
    loader = DataLoader(ImageFiles(paths), batch_size=batch_size, num_workers=workers)
    out = []
    for images in tqdm(loader, desc=desc, unit="batch", leave=False):
        images = images.to(device)
        if device.type == "cpu":
            images = images.contiguous(memory_format=torch.channels_last)
        features, _ = encoder(images)  # (B, 49, 1280)
        out.append(features.half().cpu())
    return torch.cat(out) if out else torch.empty(0, GRID * GRID, FEATURE_DIM, dtype=torch.half)


def cached_features(image_dir: Path, names: list[str], cache_dir: Path, encoder_factory,
                    batch_size: int = 64, workers: int = 2) -> dict[str, torch.Tensor]:
    """name -> (49, 1280) fp16 features, computed once and kept in `cache_dir`."""
    key = hashlib.sha256("\n".join([ENCODER_ID, PREPROCESS_ID, str(image_dir.resolve()),
                                    *names]).encode())
    cache = Path(cache_dir) / f"{image_dir.parent.name}-{ENCODER_ID}-{key.hexdigest()[:12]}.pt"
    if cache.is_file():
        features = torch.load(cache, weights_only=True)
    else:
        features = encode_images([image_dir / n for n in names], encoder_factory(), batch_size,
                                 workers, desc=f"encoding {image_dir.parent.name}")
        cache.parent.mkdir(parents=True, exist_ok=True)
        torch.save(features, cache.with_suffix(".tmp"))
        cache.with_suffix(".tmp").replace(cache)
    return dict(zip(names, features))
