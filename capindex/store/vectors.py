"""The vector index: every image's embedding in one memory-mapped file, searched by brute force.

`vectors/index.bin` holds, for one embedding model, the rows of the catalogue that model
embedded: a small header, then ids (int64), seqs (int64) and the vectors (float16, row
major). Like the keyword index it is derived data: `reconcile` compares its (id, seq) pairs
with the catalogue's and, when they differ, writes the whole file again from the catalogue
(to a temporary file, then renamed: a crash leaves the old file or the new one, and the
next reconcile repairs either). Brute force over a memory-mapped matrix is exact and fast
enough to about a million images (docs/performance.md, "Search").
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np

MAGIC = b"CAPIVEC1"
FILE = "index.bin"


def _similarities(vectors: np.ndarray, query: np.ndarray) -> np.ndarray:
    """vectors (N, dim) float16 @ query (dim,) -> (N,) float32. torch multiplies the float16
    matrix as it lies in the file: 100,000 vectors in about 20 ms on one core, where numpy
    first converts it to float32 (250 ms; docs/performance.md, "Search")."""
    import warnings

    import torch

    with warnings.catch_warnings():  # the memory map is read-only, and only read here
        warnings.simplefilter("ignore", UserWarning)
        matrix = torch.from_numpy(vectors)  # (N, dim), no copy
    return (matrix @ torch.from_numpy(query).to(matrix.dtype)).float().numpy()


def _kept(ids: np.ndarray, allowed: set[int] | None, exclude: set[int]) -> np.ndarray:
    """(N,) bool: the ids in `allowed` (every one when None) and not in `exclude`."""
    keep = np.ones(len(ids), bool)
    if allowed is not None:
        keep &= np.isin(ids, np.fromiter(allowed, np.int64, len(allowed)))
    if exclude:
        keep &= ~np.isin(ids, np.fromiter(exclude, np.int64, len(exclude)))
    return keep


class VectorIndexDamaged(Exception):
    """The file cannot be read as a vector index (the next ingest rebuilds it)."""


class VectorIndex:
    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.path = self.directory / FILE

    # -- reading ---------------------------------------------------------------

    def _open(self) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray] | None:
        """(header, ids, seqs, vectors (N, dim) float16, memory-mapped); None: no index."""
        try:
            with open(self.path, "rb") as f:
                if f.read(len(MAGIC)) != MAGIC:
                    raise VectorIndexDamaged(f"{self.path}: not a capindex vector index")
                (length,) = struct.unpack("<I", f.read(4))
                header = json.loads(f.read(length))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, struct.error) as exc:
            raise VectorIndexDamaged(f"{self.path}: unreadable ({exc})") from exc
        count, dim = header["count"], header["dim"]
        start = len(MAGIC) + 4 + length
        expected = start + count * 16 + count * dim * 2
        if self.path.stat().st_size != expected or not count:
            if not count and self.path.stat().st_size == start:
                empty = np.zeros(0, np.int64)
                return header, empty, empty, np.zeros((0, dim), np.float16)
            raise VectorIndexDamaged(f"{self.path}: truncated")
        data = np.memmap(self.path, dtype=np.uint8, mode="r")
        ids = data[start:start + count * 8].view(np.int64)
        seqs = data[start + count * 8:start + count * 16].view(np.int64)
        vectors = data[start + count * 16:].view(np.float16).reshape(count, dim)
        return header, ids, seqs, vectors

    def model_id(self) -> str | None:
        opened = self._open()
        return opened[0]["model"] if opened else None

    def count(self, allowed: set[int] | None = None, exclude: set[int] = frozenset()) -> int:
        """Vectors in the index (of the `allowed` ids only, when given; not those in
        `exclude`)."""
        opened = self._open()
        if opened is None:
            return 0
        return int(np.count_nonzero(_kept(opened[1], allowed, exclude)))

    def search(self, query: np.ndarray, limit: int = 10, exclude: set[int] = frozenset(),
               allowed: set[int] | None = None) -> list[tuple[int, float]]:
        """(row id, cosine similarity) of the `limit` nearest vectors to `query` (dim,),
        best first, leaving out the ids in `exclude` and, when `allowed` is given, those
        not in it."""
        opened = self._open()
        if opened is None or not len(opened[1]):
            return []
        _, ids, _, vectors = opened
        scores = _similarities(vectors, np.asarray(query, np.float32).ravel())
        if exclude or allowed is not None:
            scores[~_kept(ids, allowed, exclude)] = -np.inf
        if limit <= 0:
            return []
        take = min(limit, len(ids))
        top = np.argpartition(-scores, take - 1)[:take]
        top = top[np.argsort(-scores[top], kind="stable")]
        return [(int(ids[i]), float(scores[i])) for i in top if np.isfinite(scores[i])]

    def vector(self, row_id: int) -> np.ndarray | None:
        """The stored vector of one row (float32), None when it has none."""
        opened = self._open()
        if opened is None:
            return None
        _, ids, _, vectors = opened
        where = np.flatnonzero(ids == row_id)
        return vectors[where[0]].astype(np.float32) if len(where) else None

    # -- writing (under the library's ingest lock) ------------------------------

    def update_seqs(self, seqs: dict[int, int]) -> None:
        """Record the new seqs of rows whose vectors did not change (a caption edit), in
        place: readers use ids and vectors only, and the next reconcile finds the file
        current instead of writing it again."""
        opened = self._open() if self.path.exists() else None
        if opened is None or not seqs:
            return
        ids = opened[1]
        with open(self.path, "r+b") as f:
            f.seek(len(MAGIC))
            (length,) = struct.unpack("<I", f.read(4))
            seqs_at = len(MAGIC) + 4 + length + len(ids) * 8
            for row_id, seq in seqs.items():
                for k in np.flatnonzero(ids == row_id):
                    f.seek(seqs_at + int(k) * 8)
                    f.write(np.int64(seq).tobytes())

    def reconcile(self, catalog, model_id: str, dim: int) -> bool:
        """Make the file hold exactly the catalogue's rows embedded by `model_id`, at their
        current seqs; True when it had to be written again."""
        want = catalog.embedding_seqs(model_id)
        try:
            opened = self._open()
        except VectorIndexDamaged:
            opened = None
        if (opened is not None and opened[0]["model"] == model_id
                and dict(zip(opened[1].tolist(), opened[2].tolist())) == want):
            return False
        self._write(catalog.embeddings(model_id), len(want), model_id, dim)
        return True

    def _write(self, rows, count: int, model_id: str, dim: int) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        header = json.dumps({"model": model_id, "dim": dim, "count": count}).encode()
        ids = np.zeros(count, np.int64)
        seqs = np.zeros(count, np.int64)
        tmp = self.path.with_name(FILE + ".tmp")
        try:
            with open(tmp, "wb") as f:
                f.write(MAGIC + struct.pack("<I", len(header)) + header)
                f.seek(f.tell() + count * 16)  # ids and seqs go here once all are known
                n = 0
                for row_id, seq, blob in rows:
                    if n == count or len(blob) != dim * 2:
                        raise VectorIndexDamaged("the catalogue's embeddings do not match "
                                                 f"{model_id} ({dim} values each)")
                    ids[n], seqs[n] = row_id, seq
                    f.write(blob)
                    n += 1
                f.seek(len(MAGIC) + 4 + len(header))
                f.write(ids[:n].tobytes())
                f.write(seqs[:n].tobytes())
                f.flush()
                os.fsync(f.fileno())
            tmp.replace(self.path)
        finally:
            tmp.unlink(missing_ok=True)
