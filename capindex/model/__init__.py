"""The captioning model. What is here imports no torch: ingest plans a run with it and
loads the model only when there is something to caption."""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO

from capindex.errors import ModelError, too_large

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


# A checkpoint file larger than this is refused before it is read. The shipped one is 10 MB;
# a decoder 20 times its size is still far below. Its archive members, which torch may
# inflate, are held to the same total (`checkpoint.load_checkpoint`).
MAX_CHECKPOINT_BYTES = 10**9


def open_checkpoint(path: str | Path) -> BinaryIO:
    """`path` open for reading, once it is known to be a regular file of at most
    MAX_CHECKPOINT_BYTES; else ModelError, without reading it (a FIFO would block,
    /dev/zero never end). Checked on the open file, opened non-blocking."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            raise ModelError(f"{path}: no such model checkpoint") from exc
        raise ModelError(f"{path}: cannot read the model checkpoint "
                         f"({(exc.strerror or str(exc)).lower()})") from exc
    f = os.fdopen(fd, "rb")
    info = os.fstat(fd)
    problem = None
    if not stat.S_ISREG(info.st_mode):
        problem = "not a regular file"
    elif info.st_size > MAX_CHECKPOINT_BYTES:
        problem = too_large(info.st_size, MAX_CHECKPOINT_BYTES, "model checkpoint")
    if problem:
        f.close()
        raise ModelError(f"{path}: {problem}")
    os.set_blocking(fd, True)
    return f


def file_sha256(f: BinaryIO) -> str:
    """The SHA-256 of what is left to read in `f`, read in blocks."""
    digest = hashlib.sha256()
    while block := f.read(1 << 20):
        digest.update(block)
    return digest.hexdigest()


def checkpoint_sha256(path: str | Path) -> str:
    """The `weights_hash` a caption records: the SHA-256 of its checkpoint file
    (ModelError for a file `open_checkpoint` refuses)."""
    with open_checkpoint(path) as f:
        return file_sha256(f)


def embedding_id(path: str | Path | None = None) -> str | None:
    """The id a row records for the vectors of the embedding at `path` (None: the shipped
    one): its file's name and hash, so another file never passes for it. None: no file."""
    path = Path(path or DEFAULT_EMBEDDING)
    try:
        info = path.stat()
    except OSError:
        return None
    if not stat.S_ISREG(info.st_mode):
        return None
    return _embedding_id(str(path), info.st_size, info.st_mtime_ns)


@lru_cache(maxsize=8)
def _embedding_id(path: str, size: int, mtime_ns: int) -> str:
    """`embedding_id` of a file as it is now: its hash cost every search about 8 ms."""
    return name_embedding(path, checkpoint_sha256(path))


def name_embedding(path: str | Path, sha256: str) -> str:
    """`embedding_id` of the file at `path` whose hash is already known."""
    return f"{Path(path).stem}@{sha256[:12]}"
