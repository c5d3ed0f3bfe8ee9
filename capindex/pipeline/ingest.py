"""`capindex ingest`: discover -> decode -> caption -> write, incrementally.

    plan = plan_ingest(catalogue, discover(paths))        # stat only, no file opened
    for batch in decode_batches(DecodeDataset(paths)):    # workers: read, hash, decode
        captions = caption_images(captioner, batch.images) # main process: the model
        sinks.write(changes)                               # SQLite commit, Parquet, Whoosh

What a re-run does with each file under the given paths:

- same path, size and mtime as catalogued: unchanged, not opened (a failed file
  is retried only with --retry-failed; a caption by another model is redone
  only with --recaption);
- otherwise it is read and hashed; when the content is already captioned (a
  moved or renamed file, or a touched one) the existing row is moved to the
  new path and keeps its caption, without decoding; else it is captioned;
- a catalogued file no longer found is deleted from the catalogue and the index
  (not after an interrupted run, and not under a directory that could not be listed).
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Sequence

from capindex.indexer import SearchIndex
from capindex.library import Changes, FileState, Library, utcnow
from capindex.pipeline.caption import CaptionerLike, caption_images, placement, provenance
from capindex.pipeline.discover import Found, catalog_path, discover, is_under
from capindex.pipeline.shared_memory import fit_shared_memory, shared_memory_free
from capindex.pipeline.write import ParquetMirror, Sinks
from capindex.schemas import COLUMN_NAMES

if TYPE_CHECKING:  # the decode stage imports torch: only a run with files to read loads it
    from capindex.pipeline.decode import Decoded, DecodeDataset, DecodedBatch

# Columns a row copies from another row with the same content (a duplicate file).
_CONTENT_COLUMNS = ("width", "height", "format", "taken_at", "camera_make", "camera_model",
                    "gps_lat", "gps_lon", "caption", "caption_score", "tags", "model_id",
                    "weights_hash", "decoding")


@dataclass
class IngestOptions:
    # None: picked for the model's device by tuned_options, once a run has files to read.
    batch_size: int | None = None  # images per model call
    workers: int | None = None  # decode processes (0: decode in the main process)
    pin_memory: bool = False  # page-locked batches for the copy to a GPU (slower, measured)
    exclude: Sequence[str] = ()
    recaption: bool = False
    retry_failed: bool = False
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


def decode_loader(dataset: DecodeDataset, options: IngestOptions) -> Iterator[DecodedBatch]:
    """The decode stage's batches with `options`' data-path settings (ingest and the
    benchmark's decode measure build it here, so both run the same stage)."""
    from capindex.pipeline.supervise import decode_batches

    return decode_batches(dataset, options.batch_size, options.workers, options.pin_memory,
                          options.prefetch_batches, options.worker_priority)


@dataclass
class Summary:
    new: int = 0
    changed: int = 0
    moved: int = 0
    unchanged: int = 0
    recaptioned: int = 0
    retried: int = 0  # previously failed files that now worked
    deleted: int = 0
    failed: int = 0  # files (or folders) that could not be read in this run
    previously_failed: int = 0  # failed before, unchanged, not retried
    other_model: int = 0  # unchanged, captioned by another model, not recaptioned
    captioned: int = 0  # images that went through the model
    interrupted: bool = False
    seconds: float = 0.0  # the run, but for loading the model
    loading_seconds: float = 0.0  # loading the model (torch and the checkpoint), when needed


class Events:
    """What ingest tells its caller as it goes; the CLI draws a progress bar. Defaults: silence."""

    def start(self, total: int) -> None:
        """`total` files will be read (the rest are unchanged)."""

    def advance(self, count: int) -> None:
        """`count` more files are done."""

    def skipped(self, path: str, reason: str) -> None:
        """A file (or a directory) could not be used."""

    def notice(self, text: str) -> None:
        """Something the user should know about how the run goes (one line)."""

    def finish(self) -> None:
        """No more progress."""


@dataclass
class Task:
    found: Found
    reason: str  # new | changed | recaption | retry
    old: FileState | None = None


@dataclass
class Plan:
    tasks: list[Task] = field(default_factory=list)
    failures: list[Found] = field(default_factory=list)  # discovery errors to record
    orphans: dict[str, FileState] = field(default_factory=dict)  # catalogued, not found now
    reuse_hashes: frozenset[str] = frozenset()
    summary: Summary = field(default_factory=Summary)


def plan_ingest(states: dict[str, FileState], found: Iterable[Found], roots: Sequence[str],
                weights_hash: str, options: IngestOptions, events: Events) -> Plan:
    """Sort what discovery found into tasks, using only the catalogue and stat().

    `weights_hash` is the captioner's: a caption recording another one is another model's
    (the model id comes from the same checkpoint file, so the hash alone tells).
    """
    plan = Plan()
    summary = plan.summary
    seen: set[str] = set()
    unlisted: list[str] = []  # directories that could not be read
    for entry in found:
        if entry.is_dir:
            events.skipped(entry.key, entry.error)
            unlisted.append(entry.key)
            summary.failed += 1
            continue
        seen.add(entry.key)
        old = states.get(entry.key)
        if entry.error:
            if old and old.status == "error" and old.error == entry.error and not options.retry_failed:
                summary.previously_failed += 1
            else:
                plan.failures.append(entry)
            continue
        if old is None or (old.size, old.mtime_ns) != (entry.size, entry.mtime_ns):
            plan.tasks.append(Task(entry, "changed" if old else "new", old))
        elif old.status != "ok":
            if options.retry_failed:
                plan.tasks.append(Task(entry, "retry", old))
            else:
                summary.previously_failed += 1
        elif old.weights_hash != weights_hash:
            if options.recaption:
                plan.tasks.append(Task(entry, "recaption", old))
            else:
                summary.other_model += 1
                summary.unchanged += 1
        else:
            summary.unchanged += 1
    root_keys = [catalog_path(os.path.abspath(r)) for r in roots]
    plan.orphans = {
        key: state for key, state in states.items()
        if key not in seen and any(is_under(key, r) for r in root_keys)
        and not any(is_under(key, d) for d in unlisted)
    }

    def reusable(state: FileState | None) -> bool:
        return bool(state and state.status == "ok" and state.sha256
                    and (not options.recaption or state.weights_hash == weights_hash))

    plan.reuse_hashes = frozenset(
        [s.sha256 for s in plan.orphans.values() if reusable(s)]
        + [t.old.sha256 for t in plan.tasks if t.reason == "changed" and reusable(t.old)]
    )
    return plan


def ingest(library: Library, roots: Sequence[str], captioner: CaptionerLike,
           options: IngestOptions | None = None, events: Events | None = None,
           should_stop: Callable[[], bool] = lambda: False) -> Summary:
    """Bring the library up to date with the image files under `roots`.

    `should_stop` is polled after each batch is written; when it returns True
    the run ends early (summary.interrupted) with everything so far saved.
    Raises LibraryBusyError when another ingest holds the library. Planning uses only
    `captioner.weights_hash`: the decode stage is set up only when there are files to read,
    with `options` tuned for the model's device, and the model (a `DeferredCaptioner`)
    loaded only when there are images to caption: a run whose files all turn out to be
    moved ones (hashed, found in the catalogue) loads none.
    """
    options = options or IngestOptions()
    events = events or Events()
    started = time.monotonic()
    with library.ingest_lock():
        catalog = library.open_catalog(create=True)
        try:
            mirror = ParquetMirror(library.parquet_dir)
            index = SearchIndex(library.index_dir)
            # Repair whatever a killed run left behind, before anything new.
            mirror.reconcile(catalog)
            index.reconcile(catalog)
            plan = plan_ingest(catalog.states(), discover(roots, options.exclude), roots,
                               captioner.weights_hash, options, events)
            sinks = Sinks(catalog, mirror, index)
            try:
                _run(plan, captioner, catalog, sinks, options, events, should_stop)
            except BaseException:
                sinks.abandon()
                raise
            sinks.close()
            mirror.reconcile(catalog)  # drop rows this run superseded or deleted
        finally:
            events.finish()
            catalog.close()
    plan.summary.seconds = time.monotonic() - started - plan.summary.loading_seconds
    return plan.summary


def _run(plan: Plan, captioner: CaptionerLike, catalog, sinks: Sinks, options: IngestOptions,
         events: Events, should_stop: Callable[[], bool]) -> None:
    summary = plan.summary
    failures = Changes()
    for entry in plan.failures:
        events.skipped(entry.key, entry.error)
        failures.upserts.append(_error_row(entry, entry.error))
        summary.failed += 1
    sinks.write(failures)

    orphans_by_hash: dict[str, list[FileState]] = defaultdict(list)
    for state in plan.orphans.values():
        if state.sha256 in plan.reuse_hashes:
            orphans_by_hash[state.sha256].append(state)
    claimed: set[int] = set()
    # What reused content looked like before this run changed any row.
    contents = catalog.contents_by_hash(plan.reuse_hashes, _CONTENT_COLUMNS)

    made_by: dict | None = None  # the captions' provenance columns, once the model is loaded
    if plan.tasks:  # only now is torch needed, and the model (a DeferredCaptioner loads it)
        loading = time.monotonic()
        options = tuned_options(options, *placement(captioner))  # imports torch
        summary.loading_seconds += time.monotonic() - loading
        if not plan.reuse_hashes:  # no file can turn out to be a moved one: all need the model
            made_by = _load_model(captioner, summary)
    events.start(len(plan.tasks))
    if plan.tasks:
        options, cut = fit_shared_memory(options, shared_memory_free())
        if cut:
            events.notice(cut)
        from capindex.pipeline.decode import DecodeDataset

        dataset = DecodeDataset([t.found.path for t in plan.tasks], plan.reuse_hashes)
        for batch in decode_loader(dataset, options):
            if made_by is None and batch.images is not None:  # the first images to caption
                made_by = _load_model(captioner, summary)
            captions = iter(caption_images(captioner, batch.images))
            summary.captioned += 0 if batch.images is None else len(batch.images)
            changes = Changes()
            for item in batch.items:
                task = plan.tasks[item.index]
                key = task.found.key
                if item.error:
                    events.skipped(key, item.error)
                    changes.upserts.append(_error_row(task.found, item.error, item))
                    summary.failed += 1
                elif item.reused:
                    file_fields = {"path": key, "size": item.size, "mtime_ns": item.mtime_ns}
                    candidates = orphans_by_hash.get(item.sha256)
                    if task.old and task.old.sha256 == item.sha256:  # touched, same content
                        changes.relocations.append((task.old.id, file_fields))
                        summary.unchanged += 1
                    elif candidates:  # moved or renamed: the row follows the file
                        source = candidates.pop()
                        claimed.add(source.id)
                        changes.relocations.append((source.id, file_fields))
                        summary.moved += 1
                    else:  # content captioned before under another path (files swapped...)
                        row = _blank_row(task.found, item)
                        row.update(contents[item.sha256], status="ok")
                        changes.upserts.append(row)
                        _count(summary, task.reason)
                else:
                    row = _blank_row(task.found, item)
                    row.update(item.meta, **next(captions), **made_by, status="ok")
                    changes.upserts.append(row)
                    _count(summary, task.reason)
            sinks.write(changes)
            events.advance(len(batch.items))
            if should_stop():
                summary.interrupted = True
                return
    gone = [s.id for s in plan.orphans.values() if s.id not in claimed]
    sinks.write(Changes(deletes=gone))
    summary.deleted = len(gone)


def _load_model(captioner: CaptionerLike, summary: Summary) -> dict:
    """The captions' provenance columns; reading them makes a DeferredCaptioner load the
    model, so the time goes to `summary.loading_seconds` (not to the run's)."""
    started = time.monotonic()
    made_by = provenance(captioner)
    summary.loading_seconds += time.monotonic() - started
    return made_by


def _count(summary: Summary, reason: str) -> None:
    attribute = {"new": "new", "changed": "changed", "recaption": "recaptioned",
                 "retry": "retried"}[reason]
    setattr(summary, attribute, getattr(summary, attribute) + 1)


def _blank_row(found: Found, item: Decoded | None = None) -> dict:
    """A row with the file's columns filled in (from the read when there was one)."""
    row = dict.fromkeys(name for name in COLUMN_NAMES if name not in ("id", "seq"))
    row.update(path=found.key, size=found.size, mtime_ns=found.mtime_ns, ingested_at=utcnow())
    if item is not None and item.size is not None:
        row.update(size=item.size, mtime_ns=item.mtime_ns, sha256=item.sha256)
    return row


def _error_row(found: Found, reason: str, item: Decoded | None = None) -> dict:
    row = _blank_row(found, item)
    row.update(status="error", error=reason)
    return row
