"""The pipeline's parts measured one at a time, in this process: decode, model, and the
data path (ingest with a captioner that answers at once)."""

from __future__ import annotations

import random
import shutil
import time
from pathlib import Path
from typing import ClassVar

from .cpu import cpu_ms_per_image, cpu_seconds


def measure_decode(paths: list[Path], options, keep: int = 0):
    """Files -> model-ready tensors through the pipeline's decode stage, with ingest's
    loader settings (`options`, an IngestOptions); returns (result, kept tensors)."""
    import torch

    from .capindex_api import DecodeDataset, decode_loader

    dataset = DecodeDataset([str(p) for p in paths])
    kept: list[torch.Tensor] = []
    failed = 0
    cpu_before = cpu_seconds()
    started = time.perf_counter()
    for batch in decode_loader(dataset, options):  # the workers are reaped at its end
        failed += sum(1 for item in batch.items if item.error)
        if batch.images is not None and len(kept) < keep:
            kept.extend(batch.images[: keep - len(kept)].clone())
    seconds = time.perf_counter() - started
    return {"images_per_s": round(len(paths) / seconds, 2), "seconds": round(seconds, 3),
            "cpu_ms_per_image": cpu_ms_per_image(cpu_before, len(paths)),
            "workers": options.workers, "failed": failed}, kept


def decoded(paths: list[Path], device: str = "cpu") -> list:
    """Every file's model input (uint8 (3, 224, 224) tensors), decoded by ingest's decode
    stage with its defaults for a model on `device`."""
    from .capindex_api import IngestOptions, tuned_options

    return measure_decode(paths, tuned_options(IngestOptions(), device), keep=len(paths))[1]


def measure_model(captioner, tensors: list, batch_size: int, objects: list | None = None) -> dict:
    """Captioner.caption_batch on in-memory tensors: the steady state, so one batch of each
    size is captioned untimed first (a new size costs set-up: cuDNN's, oneDNN's).
    `objects`: each tensor's detections, handed to a guided captioner as ingest does."""
    import torch

    starts = range(0, len(tensors), batch_size)
    batches = [torch.stack(tensors[i:i + batch_size]) for i in starts]
    kwargs = [{} if objects is None else {"objects": objects[i:i + batch_size]} for i in starts]
    for size in sorted({len(batch) for batch in batches}, reverse=True):
        k = next(k for k, batch in enumerate(batches) if len(batch) == size)
        captioner.caption_batch(batches[k], **kwargs[k])
    cpu_before = cpu_seconds()
    started = time.perf_counter()
    for batch, extra in zip(batches, kwargs):
        captioner.caption_batch(batch, **extra)
    seconds = time.perf_counter() - started
    cpu_ms = cpu_ms_per_image(cpu_before, len(tensors))
    return {"images_per_s": round(len(tensors) / seconds, 2), "seconds": round(seconds, 3),
            "cpu_ms_per_image": cpu_ms,
            "cores_busy": round(cpu_ms * len(tensors) / 1000 / seconds, 2),
            "images": len(tensors)}


class InstantCaptioner:
    """The captioner interface without a model: a generated caption and five tags per image,
    at once, for a model on `device` (so ingest picks the same settings as for the real one)."""

    model_id = "instant"
    weights_hash = "instant"
    decoding: ClassVar[dict] = {"method": "none"}

    def __init__(self, device: str, device_memory_gib: float | None) -> None:
        self.device = device
        self.device_memory_gib = device_memory_gib
        self.rng = random.Random(0)

    def caption_batch(self, images) -> list:
        from .capindex_api import Caption
        from .captions import make_caption

        tags = [("golden retriever", 0.5), ("tennis ball", 0.2), ("lawn", 0.1), ("dog", 0.05),
                ("park", 0.01)]
        return [Caption(make_caption(self.rng), -1.0, tags) for _ in images]


def measure_data_path(folder: Path, library_dir: Path, captioner, options) -> dict:
    """`ingest` of `folder` into a fresh library in this process, with an InstantCaptioner
    for `captioner`'s device: everything but the model (discover, read, hash, decode, write)."""
    from .capindex_api import LibraryDir, ingest

    if library_dir.exists():
        shutil.rmtree(library_dir)
    instant = InstantCaptioner(str(captioner.device), captioner.device_memory_gib)
    own_before, children_before = cpu_seconds()
    started = time.perf_counter()
    summary = ingest(LibraryDir(library_dir), [str(folder)], instant, options)
    seconds = time.perf_counter() - started
    own, children = cpu_seconds()
    shutil.rmtree(library_dir)
    images = summary.captioned
    return {"images_per_s": round(images / seconds, 2), "seconds": round(seconds, 3),
            "main_cpu_ms_per_image": round((own - own_before) * 1000 / images, 3),
            "workers_cpu_ms_per_image": round((children - children_before) * 1000 / images, 2)}


def images_ahead(options) -> int:
    """Images the decode workers keep decoded ahead of the model (IngestOptions)."""
    return options.workers * options.prefetch_batches * options.batch_size


def detect_tensors(paths: list[Path], tensors: list) -> list:
    """The shipped detector's objects for decoded tensors (uint8 (3, 224, 224)) of `paths`,
    found as ingest finds them (from the 224x224 pixels, stretched back to each photo's
    shape); untimed: ingest runs the detector whether captions are guided or not."""
    from PIL import Image

    from capindex.pipeline.detect import detect_objects, load_detector

    detector = load_detector()
    found = []
    for path, tensor in zip(paths, tensors):
        with Image.open(path) as img:
            size = img.size
        ((objects, _),) = detect_objects(detector, tensor.unsqueeze(0), [size])
        found.append(objects or [])
    return found
