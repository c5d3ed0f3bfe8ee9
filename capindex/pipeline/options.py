"""The ingest's settings: what the user may choose (`IngestOptions`) and the data-path
defaults picked for the model's device (`tuned_options`), each constant with its reason
(measurements: docs/performance.md)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace

# Bytes: a larger file fails without being read (`--max-file-size`). An 8-bit RGBA image at
# the pixel limit (120 MP, preprocess.MAX_PIXELS) stored uncompressed is 480 MB, so for
# 8-bit images the pixel limit decides; a larger file (a 16-bit scan, or junk named .jpg:
# a 3 GB file was once read whole before it was found not to be an image) costs each decode
# worker that much memory first.
DEFAULT_MAX_FILE_SIZE = 500 * 10**6


@dataclass
class IngestOptions:
    # None: picked for the model's device by tuned_options, once a run has files to read.
    batch_size: int | None = None  # images per model call
    workers: int | None = None  # decode processes (0: decode in the main process)
    pin_memory: bool = False  # page-locked batches for the copy to a GPU (slower, measured)
    exclude: Sequence[str] = ()
    recaption: bool = False
    retry_failed: bool = False
    rebuild: bool = False  # start over: set the catalogue and its mirror aside (LibraryDir.set_aside)
    max_file_size: int = DEFAULT_MAX_FILE_SIZE  # bytes; a larger file fails without being read
    prefetch_batches: int = 2  # batches each worker keeps decoded ahead of the model
    worker_priority: int = 0  # nice increment of the decode workers (set by tuned_options)


# Nice increment of the decode workers when the model runs on the CPU (see tuned_options):
# the lowest priority. At +10 they still took about 10% of a core the model's threads
# wanted, and a thread that loses its core makes the others wait at the next barrier.
CPU_WORKER_PRIORITY = 19


def default_workers(cpus: int | None = None, model_on_gpu: bool = False) -> int:
    """Decode worker processes (0: decode in the main process).

    With the model on the CPU: one per CPU, at most 8, at low priority (see tuned_options).
    With the model on a GPU: one per CPU but the one that drives the GPU, at most 16:
    there decoding is what limits the rate (with 15 workers rather than 8, 12 MP photos
    ingested 16-27% faster on a 16-vCPU H100 machine, docs/performance.md).
    """
    cpus = cpus or os.cpu_count() or 1
    return max(0, min(16, cpus - 1) if model_on_gpu else min(8, cpus))


# Images per model call when none is asked for. On a CPU, 32 and 64 were slower than 16
# (docs/performance.md). On a GPU, a batch's caption search costs about the same at any
# batch size (launches and host round trips, not arithmetic): on an H100, 256 images a
# batch sustained 1.24-1.79 times the rate of 64 (docs/performance.md, "GPU"), for a peak
# allocation of 3.1 GB against 0.8 GB; a GPU with less than GPU_LARGE_BATCH_GIB of memory
# gets SMALL_GPU_BATCH_SIZE.
CPU_BATCH_SIZE = 16
GPU_BATCH_SIZE = 256
SMALL_GPU_BATCH_SIZE = 64
GPU_LARGE_BATCH_GIB = 8


def tuned_options(options: IngestOptions, model_device: str = "cpu",
                  device_memory_gib: float | None = None) -> IngestOptions:
    """`options` with the data-path settings for a model on `model_device` ("cpu", "cuda:0"...),
    whose memory is `device_memory_gib` (a GPU's; None: unknown).

    - batch_size: as given, else CPU_BATCH_SIZE, or on a GPU GPU_BATCH_SIZE
      (SMALL_GPU_BATCH_SIZE with less than GPU_LARGE_BATCH_GIB of memory);
    - workers: as given, else `default_workers()`;
    - pin_memory only on a GPU, and only when asked for: on an H100 page-locked batches
      made ingest slower (the pinning thread competes with the main one for the GIL, and
      uint8 batches are small to copy);
    - on a CPU, one decode worker per core, at a lower priority than the model
      (CPU_WORKER_PRIORITY): while the model computes, it gets the cores it
      can use and the workers decode in what it leaves idle (its single-threaded
      beam search); when the model waits for a batch, every core decodes. Fixed
      splits do worse: sharing the cores at equal priority slows the model's
      threads, and one core for decoding leaves 12 MP photos starved
      (docs/performance.md). On a GPU the workers are what limits the rate, so
      they keep the normal priority.
    """
    on_gpu = str(model_device).startswith("cuda")
    batch_size, workers = options.batch_size, options.workers
    if batch_size is None:
        batch_size = CPU_BATCH_SIZE
        if on_gpu:
            small = device_memory_gib is not None and device_memory_gib < GPU_LARGE_BATCH_GIB
            batch_size = SMALL_GPU_BATCH_SIZE if small else GPU_BATCH_SIZE
    return replace(
        options,
        batch_size=batch_size,
        workers=default_workers(model_on_gpu=on_gpu) if workers is None else workers,
        pin_memory=on_gpu and options.pin_memory,
        worker_priority=0 if on_gpu else CPU_WORKER_PRIORITY,
    )
