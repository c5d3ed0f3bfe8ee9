"""Keep large freed blocks in the process, so each batch reuses the last batch's memory.

Every CPU batch allocates the encoder's activations (up to about 80 MB each at
batch 16) and frees them again. glibc serves a block of 32 MB or more with a fresh
mmap and returns it on free, so the kernel maps and zeroes those pages anew for
every batch: on the development machine that was 6-8 ms of system time per image,
a fifth of the model's CPU time. Raising glibc's mmap and trim thresholds to
256 MB keeps such blocks in the heap for reuse: the model runs about 1.3x faster
for about 30 MB more peak RSS (docs/performance.md). Decode workers, forked from
the model's process, go back to glibc's usual thresholds (`default_thresholds`):
they gain nothing from keeping freed memory and would each hold on to more of it.
"""

from __future__ import annotations

import ctypes
import sys

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
KEEP_BYTES = 256 * 2**20
DEFAULT_BYTES = 128 * 2**10  # glibc's starting value of both thresholds


def keep_freed_memory() -> bool:
    """Raise glibc's thresholds for this process (and the processes it forks).

    Returns False, changing nothing, where the C library is not glibc.
    """
    return _set_thresholds(KEEP_BYTES)


def default_thresholds() -> bool:
    """Put glibc's thresholds back to their starting values (in a forked worker)."""
    return _set_thresholds(DEFAULT_BYTES)


def _set_thresholds(size: int) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)  # the C library already loaded into this process
        if not hasattr(libc, "gnu_get_libc_version"):
            return False  # not glibc (musl's mallopt does nothing)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, size)) and bool(mallopt(M_TRIM_THRESHOLD, size))
