"""CPU-time accounting: CPU-ms per image, and the most ingest/model can reach on a CPU."""

from __future__ import annotations

import resource


def cpu_seconds() -> tuple[float, float]:
    """User + system CPU seconds of this process, and of its children waited for."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


def cpu_ms_per_image(before: tuple[float, float], images: int) -> float:
    """CPU-ms per image since `before` (cpu_seconds()), this process and its children."""
    spent = sum(now - then for now, then in zip(cpu_seconds(), before))
    return round(spent * 1000 / images, 2)


def cpu_bound(model: dict, decode: dict, cpus: int) -> float | None:
    """The most ingest/model can reach when the model alone keeps every core busy (on a
    CPU): then each CPU-ms spent decoding is one the model loses. None when the model left
    cores idle (a GPU, or more cores than it uses). Writing, about 0.5 CPU-ms an image, is
    left out, so the real bound is a little lower."""
    if model["cores_busy"] < 0.9 * cpus:
        return None
    return round(model["cpu_ms_per_image"]
                 / (model["cpu_ms_per_image"] + decode["cpu_ms_per_image"]), 3)
