"""Shared memory for the decode stage: torch's worker processes hand each decoded batch
over in a file in /dev/shm, and a container's is often only 64 MB.

`fit_shared_memory` keeps the batches in flight within what is free before a run starts;
`supervise` turns a batch that still does not fit into `SharedMemoryFull`, one line.
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import TYPE_CHECKING

from capindex.errors import SharedMemoryFull
from capindex.model import INPUT_SIZE

if TYPE_CHECKING:
    from capindex.pipeline.options import IngestOptions

# A decoded image as the workers send it: uint8 pixels, 3 x 224 x 224 (preprocess.to_pixels).
IMAGE_BYTES = 3 * INPUT_SIZE * INPUT_SIZE
SHARED_MEMORY = "/dev/shm"  # where torch's worker processes put the batches they send (Linux)


def shared_memory_free(path: str = SHARED_MEMORY) -> int | None:
    """Bytes free in `path`'s file system; None where there is none (macOS)."""
    try:
        stats = os.statvfs(path)
    except OSError:
        return None
    return stats.f_bavail * stats.f_frsize


def fit_shared_memory(options: IngestOptions, free: int | None) -> tuple[IngestOptions, str]:
    """`options` with no more decoded batches in flight than half of `free` bytes of shared
    memory holds, and a line saying what was cut ("" when nothing was).

    Each worker keeps `prefetch_batches` batches in shared memory; a container's /dev/shm
    is often 64 MB, against 1.2 GB for 16 workers x 2 batches of 256. Fewer batches ahead
    first, then fewer workers; the batch size is the user's or the device's choice and is
    kept. Raises SharedMemoryFull when not even one batch fits in `free`.
    """
    if free is None or not options.workers:
        return options, ""
    batch_bytes = options.batch_size * IMAGE_BYTES
    if batch_bytes > free:
        raise SharedMemoryFull(free / 2**20)
    fits = max(1, free // 2 // batch_bytes)  # batches in flight that fit in half of it
    if options.workers * options.prefetch_batches <= fits:
        return options, ""
    workers = min(options.workers, fits)
    fitted = replace(options, workers=workers, prefetch_batches=max(1, fits // workers))
    return fitted, (f"{SHARED_MEMORY} has {free / 2**20:.0f} MB free, so decoding runs with "
                    f"{_count(fitted.workers, 'worker')} keeping "
                    f"{_count(fitted.prefetch_batches, 'batch', 'batches')} of "
                    f"{options.batch_size} ahead each (more room there would be faster)")


def _count(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else many or one + 's'}"
