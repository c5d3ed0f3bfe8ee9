"""Stage 2: files -> model-ready tensors, in DataLoader worker processes.

Each file is read once. Its bytes are hashed (SHA-256), the header gives size,
format and EXIF, and `capindex.model.preprocess.prepare` decodes the same
bytes from memory (reduced-size JPEG decoding, EXIF orientation, any mode to
RGB), so hashing and decoding overlap with the model running in the main
process. A file whose content is already captioned (a moved file) is hashed but
not decoded. A file that cannot be read becomes an item with `error` set; it
never stops the batch. (A file that kills or hangs its worker: `supervise.py`.)

Only regular files are opened (a FIFO would block, a device never end), and no more
than the size limit is read. `capindex caption` reads and decodes by the same rules
(`load_image`).
"""

from __future__ import annotations

import hashlib
import io
import os
import signal
import stat
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from capindex.errors import UnusableFile, describe_failure, too_large
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
    reused: bool = False  # content already captioned: not captioned again; decoded
    # (has_image) only when its row's objects or vector are outdated (`enrich_hashes`)
    meta: dict = field(default_factory=dict)  # width, height, format, EXIF fields
    error: str | None = None
    has_image: bool = False


@dataclass
class DecodedBatch:
    items: list[Decoded]
    # uint8 pixels (n, 3, 224, 224) of the items with has_image, in order; the model
    # scales them (`preprocess.normalize`), so a quarter of the bytes travel to it.
    images: torch.Tensor | None

    def pin_memory(self) -> DecodedBatch:  # called by DataLoader(pin_memory=True)
        if self.images is not None:
            self.images = self.images.pin_memory()
        return self


def read_file(path: str, max_size: int | None = None) -> tuple[bytes, os.stat_result]:
    """The file's bytes and its stat, taken from the same open file.

    Raises UnusableFile, without reading, for anything but a regular file (checked
    before opening, and again on the open file, opened non-blocking so that a FIFO
    put there meanwhile cannot block) and for a file over `max_size` bytes (also when
    it grows past it while being read).
    """
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise UnusableFile("not a regular file")
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    with open(fd, "rb") as f:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnusableFile("not a regular file")
        os.set_blocking(fd, True)
        if max_size is None:
            return f.read(), info
        if info.st_size > max_size:
            raise UnusableFile(too_large(info.st_size, max_size))
        data = f.read(max_size + 1)
        if len(data) > max_size:
            raise UnusableFile(too_large(max(len(data), os.fstat(fd).st_size), max_size))
        return data, info


def load_image(path: str, max_size: int | None = None) -> tuple[dict, torch.Tensor]:
    """One file -> (header metadata, uint8 pixels (3, 224, 224)), by the ingest's rules:
    `read_file`'s, no empty file, `decode_image`'s. Raises what they raise."""
    data, _ = read_file(path, max_size)
    if not data:
        raise UnusableFile("empty file")
    return decode_image(data)


class DecodeDataset(Dataset):
    """paths[i] -> (Decoded, uint8 pixels (3, 224, 224) or None).

    `read(path, max_size)` defaults to `read_file`; `max_file_size` None reads any size.
    A file whose hash is in `reuse_hashes` is `reused`, and decoded only when its hash is
    in `enrich_hashes` too (`plan.Plan`).
    """

    def __init__(self, paths: Sequence[str], reuse_hashes: frozenset[str] = frozenset(),
                 read: Callable[[str, int | None], tuple[bytes, os.stat_result]] | None = None,
                 max_file_size: int | None = None,
                 enrich_hashes: frozenset[str] = frozenset()) -> None:
        self.paths = list(paths)
        self.reuse_hashes = reuse_hashes
        self.enrich_hashes = enrich_hashes
        self.read = read or read_file  # looked up now, so tests can patch the module's read_file
        self.max_file_size = max_file_size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[Decoded, torch.Tensor | None]:
        item = Decoded(index)
        try:
            data, info = self.read(self.paths[index], self.max_file_size)
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
            if item.sha256 not in self.enrich_hashes:
                return item, None
        try:
            item.meta, tensor = decode_image(data)
        except Exception as exc:  # Pillow raises many types for damaged files
            if not item.reused:  # else its row is kept as it is; the next run enriches it
                item.error = describe_failure(exc)
            return item, None
        item.has_image = True
        return item, tensor


def decode_image(data: bytes) -> tuple[dict, torch.Tensor]:
    """Image bytes -> (header metadata, the model input's uint8 pixels (3, 224, 224)).

    The image is opened once: the header gives the metadata, then
    `capindex.model.preprocess.prepare` decodes the same open image (reduced-size
    for JPEGs), exactly as `load_pixels` would. Pillow's DecompressionBombWarning
    (more than MAX_IMAGE_PIXELS) is an error here; its other warnings (damaged EXIF
    and the like, on stderr without a file name) are silenced: metadata is best-effort.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
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
    # supervise.decode_batches reports the file as `skipping PATH: REASON`.
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
                worker_priority: int = 0, timeout: float = 0) -> DataLoader:
    """Batches of `DecodedBatch`, in order, decoded by `workers` processes (0: in-process).

    Each worker keeps `prefetch_batches` batches ready ahead of the model;
    `worker_priority` > 0 lowers the workers' CPU priority by that nice value;
    `timeout` > 0: waiting that many seconds for a batch raises RuntimeError.
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
        timeout=timeout if workers else 0,
    )
