"""One measured step of the scale benchmark in a process of its own, so that its peak memory
is its own: `plan` (discover + plan_ingest over the library's photos), `upgrade` (the
planning index dropped, then added back as opening a catalogue from before it for writing
does; only the latter timed) or `ingest` (a whole `capindex ingest` run that finds nothing
new: the reconciles, then planning).

Started by `scale.py` as a script (not -m) with PYTHONPATH set to the capindex source tree
under test, so that the same step runs against another checkout (the "before" column).
Prints one JSON object: seconds, peak RSS, and the plan's counts.
"""

from __future__ import annotations

import json
import resource
import sys
import time


def peak_mb() -> float:
    """This process's peak RSS (VmHWM: ru_maxrss would count the parent's peak, which a
    child started by vfork inherits)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def plan(library_root: str, photos: str, weights_hash: str, detector_id: str,
         embedding: str) -> dict:
    from capindex.pipeline.discover import discover
    from capindex.pipeline.options import IngestOptions
    from capindex.pipeline.plan import plan_ingest
    from capindex.pipeline.report import Events
    from capindex.store.library_dir import LibraryDir

    before, cpu = peak_mb(), cpu_seconds()
    started = time.perf_counter()
    with LibraryDir(library_root).open_catalog() as catalog:
        # An older capindex planned from a dict of every row (`Catalog.states`).
        states = catalog.states() if hasattr(catalog, "states") else catalog
        made = plan_ingest(states, discover([photos]), [photos], weights_hash, IngestOptions(),
                           Events(), detector_id, embedding)
    return {"seconds": round(time.perf_counter() - started, 1),
            "cpu_seconds": round(cpu_seconds() - cpu, 1),
            "peak_mb": round(peak_mb()), "imports_mb": round(before),
            "tasks": len(made.tasks), "orphans": len(made.orphans),
            "unchanged": made.summary.unchanged}


def ingest(library_root: str, photos: str, weights_hash: str, detector_id: str,
           embedding: str) -> dict:
    from capindex.pipeline.caption import DeferredCaptioner
    from capindex.pipeline.ingest import ingest as run
    from capindex.store.library_dir import LibraryDir

    def must_not_load():
        raise AssertionError("a run that finds nothing new loaded the model")

    before, cpu = peak_mb(), cpu_seconds()
    started = time.perf_counter()
    summary = run(LibraryDir(library_root), [photos],
                  DeferredCaptioner(weights_hash, must_not_load, embedding_id=embedding))
    return {"seconds": round(time.perf_counter() - started, 1),
            "cpu_seconds": round(cpu_seconds() - cpu, 1),
            "peak_mb": round(peak_mb()), "imports_mb": round(before),
            "new": summary.new, "unchanged": summary.unchanged, "deleted": summary.deleted}


def upgrade(library_root: str) -> dict:
    import sqlite3

    from capindex.store.catalog import Catalog
    from capindex.store.library_dir import LibraryDir

    path = LibraryDir(library_root).catalog_path
    with sqlite3.connect(path) as connection:
        connection.execute("DROP INDEX IF EXISTS ix_images_plan")
    before, cpu = peak_mb(), cpu_seconds()
    started = time.perf_counter()
    Catalog(path).close()
    return {"seconds": round(time.perf_counter() - started, 1),
            "cpu_seconds": round(cpu_seconds() - cpu, 1),
            "peak_mb": round(peak_mb()), "imports_mb": round(before)}


if __name__ == "__main__":
    step, *args = sys.argv[1:]
    print(json.dumps({"plan": plan, "upgrade": upgrade, "ingest": ingest}[step](*args)))
