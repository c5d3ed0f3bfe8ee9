"""The vector index: every image's embedding in one memory-mapped file, searched with numpy.

`vectors/index.bin` holds, for one embedding model, the rows of the catalogue that model
embedded: a small header, then ids (int64), seqs (int64), the vectors (float32, row major)
and, for a large index, the centres of its clusters (float32). Like the keyword index it
is derived data: `reconcile` compares its (id, seq) pairs with the catalogue's and, when
they differ, writes the whole file again from the catalogue (to a temporary file, then
renamed: a crash leaves the old file or the new one, and the next reconcile repairs
either). A file in another format (an older capindex's float16 one) is written again too.

Search (docs/performance.md, "Search by meaning"): up to `exact_limit` vectors (50,000),
one matrix-vector product over all of them (exact; numpy's BLAS, about 35 CPU-ms per
100,000 on this machine's one core, memory-bound). Above it, an inverted file (IVF): the
rows are stored grouped by their nearest of about sqrt(N) centres (k-means on a sample),
and a query scores the rows of the clusters whose centres are nearest to it, a twentieth
of the clusters and at least 20,000 vectors' worth; the scores of the hits returned are
exact cosines. The centres are kept across
rewrites until the index has doubled since they were trained. No torch here, so a search
from the shell does not import it.
"""

from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

MAGIC = b"CAPIVEC2"
FILE = "index.bin"
_CHUNK = 20_000  # rows converted, assigned or copied at a time while writing


@dataclass(frozen=True)
class VectorConfig:
    exact_limit: int = 50_000  # up to this many vectors, every one is scored
    probe_share: float = 0.05  # above it, the share of clusters scored for a query,
    probe_rows: int = 20_000  # and at least this many vectors' worth of clusters
    train_sample: int = 50_000  # vectors k-means learns the centres from
    train_iterations: int = 10
    seed: int = 0

    def clusters(self, count: int) -> int:
        """How many clusters an index of `count` vectors has (0: exact search)."""
        return 0 if count <= self.exact_limit else int(math.sqrt(count))


@dataclass
class _Opened:
    header: dict
    ids: np.ndarray  # (N,) int64
    seqs: np.ndarray  # (N,) int64
    vectors: np.ndarray  # (N, dim) float32, memory-mapped; grouped by cluster when clustered
    centres: np.ndarray | None  # (clusters, dim) float32; None: exact search
    offsets: np.ndarray | None  # (clusters + 1,): cluster k is rows offsets[k]:offsets[k + 1]
    sorter: np.ndarray | None = None  # argsort of ids, made on the first `vectors_of`
    derived: dict = field(default_factory=dict)  # `VectorIndex.derived`'s caches


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
    def __init__(self, directory: Path, config: VectorConfig | None = None) -> None:
        self.directory = Path(directory)
        self.path = self.directory / FILE
        self.config = config or VectorConfig()
        # The file as last opened, by (inode, size, mtime): a rewrite is a new file renamed
        # into place, so the same identity is the same contents. A warm process keeps its
        # pages mapped instead of faulting them in again at every search.
        self._opened: tuple[tuple, _Opened | None] | None = None

    # -- reading ---------------------------------------------------------------

    def _open(self) -> _Opened | None:
        """The file's parts, memory-mapped; None: no index."""
        try:
            info = self.path.stat()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise VectorIndexDamaged(f"{self.path}: unreadable ({exc})") from exc
        identity = (info.st_ino, info.st_size, info.st_mtime_ns)
        if self._opened is None or self._opened[0] != identity:
            self._opened = (identity, self._read())
        return self._opened[1]

    def _read(self) -> _Opened | None:
        try:
            with open(self.path, "rb") as f:
                if f.read(len(MAGIC)) != MAGIC:
                    raise VectorIndexDamaged(f"{self.path}: not a capindex vector index "
                                             "(or one from an older capindex)")
                (length,) = struct.unpack("<I", f.read(4))
                header = json.loads(f.read(length))
            count, dim = header["count"], header["dim"]
            offsets = header.get("offsets")
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError, struct.error) as exc:
            raise VectorIndexDamaged(f"{self.path}: unreadable ({exc})") from exc
        clusters = len(offsets) - 1 if offsets else 0
        start = len(MAGIC) + 4 + length
        expected = start + count * 16 + (count + clusters) * dim * 4
        if self.path.stat().st_size != expected:
            raise VectorIndexDamaged(f"{self.path}: truncated")
        if not count:
            empty = np.zeros(0, np.int64)
            return _Opened(header, empty, empty, np.zeros((0, dim), np.float32), None, None)
        data = np.memmap(self.path, dtype=np.uint8, mode="r")
        ids = data[start:start + count * 8].view("<i8")
        seqs = data[start + count * 8:start + count * 16].view("<i8")
        end = start + count * 16 + count * dim * 4
        vectors = data[start + count * 16:end].view("<f4").reshape(count, dim)
        centres = data[end:].view("<f4").reshape(clusters, dim) if clusters else None
        return _Opened(header, ids, seqs, vectors, centres,
                       np.asarray(offsets, np.int64) if clusters else None)

    def model_id(self) -> str | None:
        opened = self._open()
        return opened.header["model"] if opened else None

    def count(self, allowed: set[int] | None = None, exclude: set[int] = frozenset()) -> int:
        """Vectors in the index (of the `allowed` ids only, when given; not those in
        `exclude`)."""
        opened = self._open()
        if opened is None:
            return 0
        return int(np.count_nonzero(_kept(opened.ids, allowed, exclude)))

    def search(self, query: np.ndarray, limit: int = 10, exclude: set[int] = frozenset(),
               allowed: set[int] | None = None) -> list[tuple[int, float]]:
        """(row id, cosine similarity) of the `limit` nearest vectors to `query` (dim,),
        best first, leaving out the ids in `exclude` and, when `allowed` is given, those
        not in it. Exact up to `exact_limit` vectors; above, the nearest among the clusters
        probed."""
        opened = self._open()
        if opened is None or not len(opened.ids):
            return []
        query = np.asarray(query, np.float32).ravel()
        if allowed is not None and opened.centres is not None:
            # filtered: score exactly the rows allowed, which clusters near the query may miss
            rows = np.flatnonzero(_kept(opened.ids, allowed, exclude))
            scores = opened.vectors[rows] @ query
        else:
            rows, scores = self._score(opened, query)
            if exclude or allowed is not None:
                scores[~_kept(opened.ids[rows], allowed, exclude)] = -np.inf
        take = min(limit, len(scores))
        if take <= 0:
            return []
        top = np.argpartition(-scores, take - 1)[:take]
        top = top[np.argsort(-scores[top], kind="stable")]
        return [(int(opened.ids[rows[i]]), float(scores[i])) for i in top
                if np.isfinite(scores[i])]

    def _score(self, opened: _Opened, query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row numbers, their cosines) of the rows a query scores."""
        if opened.centres is None:
            return np.arange(len(opened.ids)), opened.vectors @ query
        clusters = len(opened.centres)
        per_cluster = len(opened.ids) / clusters
        probe = min(clusters, max(1, math.ceil(clusters * self.config.probe_share),
                                  math.ceil(self.config.probe_rows / per_cluster)))
        nearest = np.argpartition(-(opened.centres @ query), probe - 1)[:probe]
        spans = [(opened.offsets[k], opened.offsets[k + 1]) for k in np.sort(nearest)]
        rows = np.concatenate([np.arange(a, b) for a, b in spans])
        scores = np.concatenate([opened.vectors[a:b] @ query for a, b in spans])
        return rows, scores

    def vector(self, row_id: int) -> np.ndarray | None:
        """The stored vector of one row (float32), None when it has none."""
        opened = self._open()
        if opened is None:
            return None
        where = np.flatnonzero(opened.ids == row_id)
        return np.array(opened.vectors[where[0]]) if len(where) else None

    def derived(self, name: str) -> dict:
        """A cache of values computed from the rows' vectors ({row id: value}, one per
        `name`), kept while the file is the same: a rewrite starts them empty."""
        opened = self._open()
        return {} if opened is None else opened.derived.setdefault(name, {})

    def vectors_of(self, row_ids: list[int]) -> np.ndarray:
        """The stored vectors of `row_ids` (n, dim) float32, in that order; KeyError for an id
        without one."""
        opened = self._open()
        wanted = np.asarray(row_ids, np.int64)
        if opened is None or not len(opened.ids):
            if len(wanted):
                raise KeyError(int(wanted[0]))
            return np.zeros((0, 0), np.float32)
        if opened.sorter is None:  # an exact index is written in id order: no sort to make
            ids = opened.ids
            opened.sorter = np.arange(len(ids)) if bool(np.all(ids[1:] > ids[:-1])) \
                else np.argsort(ids, kind="stable")
        at = opened.sorter[np.minimum(np.searchsorted(opened.ids, wanted, sorter=opened.sorter),
                                      len(opened.ids) - 1)]
        missing = opened.ids[at] != wanted
        if missing.any():
            raise KeyError(int(wanted[missing][0]))
        return np.array(opened.vectors[at])

    # -- writing (under the library's ingest lock) ------------------------------

    def update_seqs(self, seqs: dict[int, int]) -> None:
        """Record the new seqs of rows whose vectors did not change (a caption edit), in
        place: readers use ids and vectors only, and the next reconcile finds the file
        current instead of writing it again."""
        opened = self._open() if self.path.exists() else None
        if opened is None or not seqs:
            return
        ids = opened.ids
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
        if (opened is not None and opened.header["model"] == model_id
                and (opened.centres is not None) == bool(self.config.clusters(len(want)))
                and len(opened.ids) == len(want)
                and all(want.get(i) == s for i, s in zip(opened.ids.tolist(),
                                                        opened.seqs.tolist()))):
            return False
        self._opened = None  # the file is about to be replaced
        centres = None
        if (opened is not None and opened.centres is not None
                and opened.header["model"] == model_id and opened.header["dim"] == dim
                and len(want) <= 2 * opened.header.get("trained_on", 0)
                and self.config.clusters(len(want))):
            centres = np.array(opened.centres)  # still fit: k-means is not run again
            trained_on = opened.header["trained_on"]
        del opened  # the memory map of the file about to be replaced
        self.directory.mkdir(parents=True, exist_ok=True)
        flat = self.path.with_name(FILE + ".rows.tmp")
        try:
            ids, seqs = self._write_rows(flat, catalog.embeddings(model_id), len(want), dim,
                                         model_id)
            vectors = np.memmap(flat, dtype="<f4", mode="r").reshape(len(ids), dim) \
                if len(ids) else np.zeros((0, dim), np.float32)
            header = {"model": model_id, "dim": dim, "count": len(ids)}
            order = offsets = None
            if self.config.clusters(len(ids)):
                if centres is None:
                    centres, trained_on = self._train(vectors), len(ids)
                labels = _nearest(vectors, centres)
                order = np.argsort(labels, kind="stable")
                offsets = np.concatenate([[0], np.cumsum(np.bincount(labels,
                                                                     minlength=len(centres)))])
                header.update(offsets=offsets.tolist(), trained_on=trained_on)
            self._write_file(header, ids, seqs, vectors, order, centres)
        finally:
            flat.unlink(missing_ok=True)
        return True

    def _write_rows(self, path: Path, rows, count: int, dim: int,
                    model_id: str) -> tuple[np.ndarray, np.ndarray]:
        """The catalogue's vectors as float32 rows in `path`; their (ids, seqs)."""
        ids = np.zeros(count, np.int64)
        seqs = np.zeros(count, np.int64)
        n = 0
        with open(path, "wb") as f:
            blobs: list[bytes] = []
            for row_id, seq, blob in rows:
                if n == count or len(blob) != dim * 2:
                    raise VectorIndexDamaged("the catalogue's embeddings do not match "
                                             f"{model_id} ({dim} values each)")
                ids[n], seqs[n] = row_id, seq
                blobs.append(blob)
                n += 1
                if len(blobs) == _CHUNK:
                    f.write(np.frombuffer(b"".join(blobs), "<f2").astype("<f4").tobytes())
                    blobs.clear()
            f.write(np.frombuffer(b"".join(blobs), "<f2").astype("<f4").tobytes())
        return ids[:n], seqs[:n]

    def _train(self, vectors: np.ndarray) -> np.ndarray:
        """k-means centres (clusters, dim) of a sample of `vectors` (spherical: each centre
        is the normalised mean of its members, as the scores are cosines)."""
        rng = np.random.default_rng(self.config.seed)
        count = len(vectors)
        sample = np.sort(rng.choice(count, min(count, self.config.train_sample), replace=False))
        points = np.asarray(vectors[sample], np.float32)
        clusters = self.config.clusters(count)
        centres = points[rng.choice(len(points), clusters, replace=False)].copy()
        for _ in range(self.config.train_iterations):
            labels = _nearest(points, centres)
            order = np.argsort(labels, kind="stable")
            counts = np.bincount(labels, minlength=clusters)
            held = counts > 0
            sums = np.zeros_like(centres)
            sums[held] = np.add.reduceat(points[order], (np.cumsum(counts) - counts)[held])
            empty = ~sums.any(axis=1)
            sums[empty] = points[rng.choice(len(points), int(empty.sum()))]  # restart empty ones
            centres = sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)
        return centres.astype(np.float32)

    def _write_file(self, header: dict, ids: np.ndarray, seqs: np.ndarray, vectors: np.ndarray,
                    order: np.ndarray | None, centres: np.ndarray | None) -> None:
        encoded = json.dumps(header).encode()
        # Spaces after the JSON align the arrays to 64 bytes (BLAS reads them in place).
        encoded += b" " * (-(len(MAGIC) + 4 + len(encoded)) % 64)
        tmp = self.path.with_name(FILE + ".tmp")
        try:
            with open(tmp, "wb") as f:
                f.write(MAGIC + struct.pack("<I", len(encoded)) + encoded)
                f.write((ids if order is None else ids[order]).astype("<i8").tobytes())
                f.write((seqs if order is None else seqs[order]).astype("<i8").tobytes())
                for start in range(0, len(ids), _CHUNK):
                    part = slice(start, start + _CHUNK)
                    rows = vectors[part] if order is None else vectors[order[part]]
                    f.write(np.ascontiguousarray(rows, "<f4").tobytes())
                if centres is not None:
                    f.write(np.ascontiguousarray(centres, "<f4").tobytes())
                f.flush()
                os.fsync(f.fileno())
            tmp.replace(self.path)
        finally:
            tmp.unlink(missing_ok=True)


def _nearest(vectors: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """The index of each vector's nearest centre (largest dot product), in chunks."""
    labels = np.empty(len(vectors), np.int64)
    for start in range(0, len(vectors), _CHUNK):
        part = np.asarray(vectors[start:start + _CHUNK], np.float32)
        labels[start:start + len(part)] = np.argmax(part @ centres.T, axis=1)
    return labels
