"""The captioning model. What is here imports no torch: ingest plans a run with it and
loads the model only when there is something to caption."""

from __future__ import annotations

import hashlib
from pathlib import Path

DEFAULT_CHECKPOINT = Path(__file__).resolve().parent.parent / "weights" / "default.pt"


def checkpoint_sha256(path: str | Path) -> str:
    """The `weights_hash` a caption records: the SHA-256 of its checkpoint file."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
