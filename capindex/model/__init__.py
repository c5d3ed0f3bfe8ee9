"""The captioning model. What is here imports no torch: ingest plans a run with it and
loads the model only when there is something to caption."""

from __future__ import annotations

import hashlib
from pathlib import Path

DEFAULT_CHECKPOINT = Path(__file__).resolve().parent.parent / "weights" / "default.pt"
# The text-image embedding (model/embedding.py) whose vectors ingest stores and search reads,
# and their size (all-MiniLM-L6-v2's space).
DEFAULT_EMBEDDING = DEFAULT_CHECKPOINT.with_name("embedding.pt")
EMBEDDING_DIM = 384
# The object detector (model/detector.py): YOLOX-nano, 80 COCO classes, ONNX.
DEFAULT_DETECTOR = DEFAULT_CHECKPOINT.with_name("yolox_nano.onnx")

# The encoder's geometry (EfficientNet-Lite0): a square INPUT_SIZE image gives a GRID x GRID
# grid of FEATURE_DIM channels, the cells the decoder attends over.
INPUT_SIZE = 224
FEATURE_DIM = 1280
GRID = 7  # INPUT_SIZE / 32

# The encoder's arithmetic (`captioner.autocast_dtype` says what each means).
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def checkpoint_sha256(path: str | Path) -> str:
    """The `weights_hash` a caption records: the SHA-256 of its checkpoint file."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def embedding_id(path: str | Path | None = None) -> str | None:
    """The id a row records for the vectors of the embedding at `path` (None: the shipped
    one): its file's name and hash, so another file never passes for it. None: no file."""
    path = Path(path or DEFAULT_EMBEDDING)
    if not path.is_file():
        return None
    return f"{path.stem}@{checkpoint_sha256(path)[:12]}"
