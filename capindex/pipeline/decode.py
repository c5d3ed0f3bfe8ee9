"""Stage 2: files -> model-ready tensors, in DataLoader worker processes.

Each file is read once. Its bytes are hashed (SHA-256), the header gives size,
format and EXIF, and `capindex.model.preprocess.prepare` decodes the same
bytes from memory (reduced-size JPEG decoding, EXIF orientation, any mode to
RGB), so hashing and decoding overlap with the model running in the main
process. A file whose content is already captioned (a moved file) is hashed but
not decoded. A file that cannot be read becomes an item with `error` set; it
never stops the batch, and neither does a file that kills its worker (a crash in a
native decoder): `decode_batches` reports that file and goes on with fresh workers.
"""

from __future__ import annotations

import hashlib
import io
import os
import signal
import threading
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Callable, Iterator, Sequence

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from capindex.errors import describe_failure
from capindex.model.allocator import default_thresholds
from capindex.model.preprocess import prepare

# EXIF tags (Pillow's ExifTags.Base / IFD numbers)
_ORIENTATION, _MAKE, _MODEL = 0x0112, 0x010F, 0x0110
_EXIF_IFD, _GPS_IFD = 0x8769, 0x8825
_DATETIME_ORIGINAL, _DATETIME_DIGITIZED = 0x9003, 0x9004


@dataclass
class Decoded:
    """What a worker learned about one file (the model input travels separately)."""

    index: int  # position in the dataset's path list
    size: int | None = None
    mtime_ns: int | None = None
    sha256: str | None = None
    reused: bool = False  # content already captioned: not decoded
    meta: dict = field(default_factory=dict)  # width, height, format, EXIF fields
    error: str | None = None
    has_image: bool = False


@dataclass
class DecodedBatch:
    items: list[Decoded]
    # uint8 pixels (n, 3, 224, 224) of the items with has_image, in order; the model
    # scales them (`preprocess.normalize`), so a quarter of the bytes travel to it.
    images: torch.Tensor | None

    def pin_memory(self) -> "DecodedBatch":  # called by DataLoader(pin_memory=True)
        if self.images is not None:
            self.images = self.images.pin_memory()
        return self


def read_file(path: str) -> tuple[bytes, os.stat_result]:
    """The file's bytes and its stat, taken from the same open file."""
    with open(path, "rb") as f:
        return f.read(), os.fstat(f.fileno())


class DecodeDataset(Dataset):
    """paths[i] -> (Decoded, uint8 pixels (3, 224, 224) or None)."""

    def __init__(self, paths: Sequence[str], reuse_hashes: frozenset[str] = frozenset(),
                 read: Callable[[str], tuple[bytes, os.stat_result]] | None = None) -> None:
        self.paths = list(paths)
        self.reuse_hashes = reuse_hashes
        self.read = read or read_file  # looked up now, so tests can patch the module's read_file

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[Decoded, torch.Tensor | None]:
        item = Decoded(index)
        try:
            data, info = self.read(self.paths[index])
        except OSError as exc:
            item.error = describe_failure(exc)
            return item, None
        item.size, item.mtime_ns = info.st_size, info.st_mtime_ns
        item.sha256 = hashlib.sha256(data).hexdigest()
        if not data:
            item.error = "empty file"
            return item, None
        if item.sha256 in self.reuse_hashes:
            item.reused = True
            return item, None
        try:
            item.meta, tensor = decode_image(data)
        except Exception as exc:  # Pillow raises many types for damaged files
            item.error = describe_failure(exc)
            return item, None
        item.has_image = True
        return item, tensor


def decode_image(data: bytes) -> tuple[dict, torch.Tensor]:
    """Image bytes -> (header metadata, the model input's uint8 pixels (3, 224, 224)).

    The image is opened once: the header gives the metadata, then
    `capindex.model.preprocess.prepare` decodes the same open image (reduced-size
    for JPEGs), exactly as `load_pixels` would. Pillow's DecompressionBombWarning
    (more than MAX_IMAGE_PIXELS) is an error here.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(io.BytesIO(data)) as img:  # header only; pixels are decoded by prepare
            meta = image_metadata(img)
            tensor = prepare(img)
    return meta, tensor


def image_metadata(img: Image.Image) -> dict:
    """Size as displayed, format, and EXIF capture time, camera and GPS when present."""
    width, height = img.size
    meta = {"width": width, "height": height, "format": img.format, "taken_at": None,
            "camera_make": None, "camera_model": None, "gps_lat": None, "gps_lon": None}
    try:
        exif = img.getexif()
        if exif.get(_ORIENTATION) in (5, 6, 7, 8):  # rotated by 90 degrees
            meta["width"], meta["height"] = height, width
        meta["camera_make"] = _text(exif.get(_MAKE))
        meta["camera_model"] = _text(exif.get(_MODEL))
        sub = exif.get_ifd(_EXIF_IFD)
        meta["taken_at"] = _exif_time(sub.get(_DATETIME_ORIGINAL) or sub.get(_DATETIME_DIGITIZED))
        gps = exif.get_ifd(_GPS_IFD)
        meta["gps_lat"] = _degrees(gps.get(2), gps.get(1), 90)
        meta["gps_lon"] = _degrees(gps.get(4), gps.get(3), 180)
    except Exception:  # damaged EXIF costs the metadata, never the image
        pass
    return meta


def _text(value) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        return None
    return value.strip("\x00 ").strip() or None


def _exif_time(value) -> datetime | None:
    text = _text(value)
    try:
        return datetime.strptime(text[:19], "%Y:%m:%d %H:%M:%S") if text else None
    except ValueError:  # "0000:00:00 00:00:00" and other junk
        return None


def _degrees(dms, ref, limit: float) -> float | None:
    try:
        d, m, s = (float(x) for x in dms)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    value = d + m / 60 + s / 3600
    if not 0 <= value <= limit:  # also rejects NaN from 0/0 rationals
        return None
    return -value if _text(ref) in ("S", "W") else value


def collate(samples: list[tuple[Decoded, torch.Tensor | None]]) -> DecodedBatch:
    """Decoded items -> one batch; the pixels as one (n, 3, 224, 224) channels-last tensor.

    In a worker process the batch is stacked straight into shared memory (as
    torch's default_collate does), which is how it reaches the main process, so
    it is not copied again on the way; and channels-last is the layout both the
    decoded pixels and the CPU encoder use, so no copy is made to convert either.
    """
    items = [item for item, _ in samples]
    tensors = [t.permute(1, 2, 0) for _, t in samples if t is not None]  # (H, W, 3) views
    if not tensors:
        return DecodedBatch(items, None)
    out = None
    if torch.utils.data.get_worker_info() is not None:
        numel = sum(t.numel() for t in tensors)
        storage = tensors[0].untyped_storage()._new_shared(numel * tensors[0].element_size())
        out = tensors[0].new(storage).view(len(tensors), *tensors[0].shape)
    images = torch.stack(tensors, out=out)  # (n, H, W, 3)
    return DecodedBatch(items, images.permute(0, 3, 1, 2))  # (n, 3, H, W), channels-last


def _worker_init(_worker_id: int, priority: int = 0) -> None:
    # Ctrl-C reaches the whole process group; the main process decides when to
    # stop (after the batch it is writing), so workers ignore it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A crash kills the worker quietly (torch's handler would print its own line);
    # decode_batches reports the file as `skipping PATH: REASON` like any other.
    for crash in (signal.SIGSEGV, signal.SIGBUS, signal.SIGFPE):
        signal.signal(crash, signal.SIG_DFL)
    torch.set_num_threads(1)  # decoding is single-threaded; the model owns the cores
    default_thresholds()  # the model's allocator setting is not for workers (allocator.py)
    if priority:
        # Below the model's priority: decoding fills the time the model leaves idle
        # and yields the CPU to it otherwise (it stays ahead through prefetching).
        os.nice(priority)


def make_loader(dataset: DecodeDataset, batch_size: int, workers: int,
                pin_memory: bool = False, prefetch_batches: int = 2,
                worker_priority: int = 0) -> DataLoader:
    """Batches of `DecodedBatch`, in order, decoded by `workers` processes (0: in-process).

    Each worker keeps `prefetch_batches` batches ready ahead of the model;
    `worker_priority` > 0 lowers the workers' CPU priority by that nice value.
    """
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=collate,
        pin_memory=pin_memory,
        worker_init_fn=partial(_worker_init, priority=worker_priority) if workers else None,
        prefetch_factor=prefetch_batches if workers else None,
        persistent_workers=False,
    )


def decode_batches(dataset: DecodeDataset, batch_size: int, workers: int,
                   pin_memory: bool = False, prefetch_batches: int = 2,
                   worker_priority: int = 0) -> Iterator[DecodedBatch]:
    """`make_loader`'s batches, going on when a worker dies while decoding a file.

    A damaged file can crash a native decoder (a segmentation fault kills the
    worker, not an exception), and the kernel's OOM killer can kill a worker
    decoding a huge image. Each worker records in shared memory which file it
    is reading, so the file a dead worker was reading comes out as an item with
    `error` set, in a batch of its own, and fresh workers decode the files not
    yet delivered. A worker that dies between files (or where the death cannot
    be traced, see `_Tracked.dead`) still raises torch's RuntimeError.
    """
    if not workers:  # a crash in the main process ends it; nothing to go on with
        yield from make_loader(dataset, batch_size, 0)
        return
    pending = list(range(len(dataset)))
    while pending:
        tracked = _Tracked(dataset, pending, workers)
        watch = _WorkerWatch(tracked)
        batches, delivered = None, 0
        try:
            batches = iter(make_loader(tracked, batch_size, workers, pin_memory,
                                       prefetch_batches, worker_priority))
            with watch:  # after iter(), which installs torch's SIGCHLD handler
                for batch in batches:
                    watch.hold()
                    yield batch
                    delivered += len(batch.items)
                    watch.release()  # raises now for a worker that died meanwhile
            return
        except (RuntimeError, OSError):  # OSError: a batch whose dead sender cannot pass it on
            # Looked at before `batches` is shut down and reaps the workers.
            dead = {**tracked.dead(wait=1.0), **watch.deaths}
            if not dead:
                raise
        del batches
        yield DecodedBatch([Decoded(index, error="the image decoder crashed on it"
                                    + (f" ({how})" if how else ""))
                            for index, how in dead.items()], None)
        pending = [i for i in pending[delivered:] if i not in dead]


class _Tracked(Dataset):
    """dataset[indices[k]] for k, recording which index each worker is reading."""

    def __init__(self, dataset: DecodeDataset, indices: list[int], workers: int) -> None:
        self.dataset, self.indices = dataset, indices
        # (worker pid, dataset index or -1) per worker, shared with the forked workers
        self.reading = torch.full((workers, 2), -1, dtype=torch.int64).share_memory_()

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int):
        slot = self.reading.numpy()[torch.utils.data.get_worker_info().id]  # a view, same memory
        slot[0], slot[1] = os.getpid(), self.indices[k]
        try:
            return self.dataset[self.indices[k]]
        finally:
            slot[1] = -1

    def dead(self, wait: float = 0.0) -> dict[int, str]:
        """{index: what ended the worker} for each worker that died reading a file.

        `wait`: seconds to wait for one, for a worker whose exit was seen before it
        ended (its connections closed; the kernel had not yet reported the exit).
        """
        deadline = time.monotonic() + wait
        while True:
            found = {}
            for pid, index in self.reading.tolist():
                if index >= 0:
                    ended = _how_it_ended(pid)
                    if ended is not None:
                        found[index] = ended
            if found or time.monotonic() >= deadline:
                return found
            time.sleep(0.01)


def _how_it_ended(pid: int) -> str | None:
    """None while child process `pid` runs; else the signal that killed it, as far as known."""
    if hasattr(os, "waitid"):
        try:  # WNOWAIT: look at the exit and leave reaping the worker to the DataLoader
            status = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:  # the DataLoader has reaped it already
            return ""
        if status is None:
            return None
        if status.si_code in (os.CLD_KILLED, os.CLD_DUMPED):
            return signal.strsignal(status.si_status) or f"signal {status.si_status}"
        return f"exit code {status.si_status}"
    try:  # macOS has no waitid; a worker not yet reaped looks alive here
        os.kill(pid, 0)
    except ProcessLookupError:
        return ""
    return None


class _WorkerWatch:
    """Watches the decode workers' deaths through SIGCHLD, in the main thread.

    torch's DataLoader raises a worker's death from its own SIGCHLD handler, wherever
    the main thread is. This handler runs first: it notes how a worker that died
    reading a file ended (`deaths`), before the DataLoader reaps it, then passes
    the signal on to torch's, except while the consumer handles a batch (captioning
    it, committing it): that must not be cut in half, so `release` passes it on
    after. Outside the main thread torch finds a death by polling instead.
    """

    def __init__(self, tracked: _Tracked) -> None:
        self.tracked = tracked
        self.deaths: dict[int, str] = {}
        self.holding = self.arrived = False
        self.active = (threading.current_thread() is threading.main_thread()
                       and hasattr(signal, "SIGCHLD"))

    def __enter__(self) -> "_WorkerWatch":
        if self.active:
            self.previous = signal.getsignal(signal.SIGCHLD)  # None: set outside Python
            signal.signal(signal.SIGCHLD, self._on_sigchld)
        return self

    def __exit__(self, *exc_info) -> None:
        if self.active:
            signal.signal(signal.SIGCHLD,
                          signal.SIG_DFL if self.previous is None else self.previous)

    def hold(self) -> None:
        self.holding = True

    def release(self) -> None:
        self.holding = False
        if self.arrived:
            self.arrived = False
            self._pass_on()

    def _on_sigchld(self, signum, frame) -> None:
        # Only what is known: a worker the DataLoader has reaped since looks like "".
        self.deaths.update((index, how) for index, how in self.tracked.dead().items() if how)
        if self.holding:
            self.arrived = True
        else:
            self._pass_on()

    def _pass_on(self) -> None:
        if callable(self.previous):
            self.previous(signal.SIGCHLD, None)  # torch's: raises if a worker was killed
