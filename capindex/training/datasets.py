"""Caption datasets on disk: an image folder, `captions.csv` (image,caption) and
optional `train.txt` / `val.txt` split files (one image name a line)."""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path

from capindex.errors import DatasetError


@dataclass
class CaptionDataset:
    name: str
    image_dir: Path
    captions: dict[str, list[str]]  # image name -> its human captions
    train: list[str]
    val: list[str]


def _read_split(path: Path, known: dict) -> list[str]:
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    missing = [n for n in names if n not in known]
    if missing:
        raise DatasetError(f"{path}: {len(missing)} images have no caption (first: {missing[0]})")
    return names


def _holdout_key(name: str, seed: int) -> str:
    return hashlib.sha256(f"{seed}:{name}".encode()).hexdigest()


def read_dataset(root: str | Path, holdout: int = 200, seed: int = 0) -> CaptionDataset:
    """Read a dataset folder. Without split files, `holdout` images chosen by a seeded
    hash of their names become the validation split, the rest train."""
    root = Path(root)
    csv_path = root / "captions.csv"
    if not csv_path.is_file():
        raise DatasetError(f"{root}: no captions.csv (expected columns image,caption)")
    captions: dict[str, list[str]] = {}
    with csv_path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"image", "caption"} <= set(reader.fieldnames):
            raise DatasetError(f"{csv_path}: needs the columns image,caption")
        for row in reader:
            captions.setdefault(row["image"], []).append(row["caption"])
    image_dir = root / "images"
    if not image_dir.is_dir():
        raise DatasetError(f"{root}: no images/ folder")
    if (root / "train.txt").is_file() and (root / "val.txt").is_file():
        train = _read_split(root / "train.txt", captions)
        val = _read_split(root / "val.txt", captions)
    else:
        ordered = sorted(captions, key=lambda n: _holdout_key(n, seed))
        val, train = sorted(ordered[:holdout]), sorted(ordered[holdout:])
    return CaptionDataset(root.name, image_dir, captions, train, val)
