"""`capindex ingest`: discover -> decode -> caption -> write, incrementally.

    plan = plan_ingest(catalogue, discover(paths))        # stat only, no file opened
    for items, inferred in engine(plan, captioner, ...):  # read, hash, decode; the models
        sinks.write(batch_changes(items, inferred, ...))  # the one writer: SQLite commit,
                                                          # Parquet, index
The engine reads the files and runs the models (`infer.run_models`): `local_batches`, with
decode workers on this machine and the models in this process, or `ray_engine.RayEngine`
on a Ray cluster. The plan, the rows and the commits are the same for both.

What a re-run does with each file: `plan.py`. A file whose content is already
catalogued (moved, renamed, touched) keeps its row and caption without decoding
(`Relocations`), unless that row's objects or vector were made by another model than
this run's: then it is decoded for them, as an enrich; the rest are captioned; orphans
not claimed by a move are deleted. An unchanged file whose objects or vector are missing
or outdated is read again for them only ("enrich"), so an existing library gains them
without captioning again.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from typing import TYPE_CHECKING

from capindex.model import EMBEDDING_DIM
from capindex.pipeline.caption import CaptionerLike, embedding_columns, placement, provenance
from capindex.pipeline.detect import DeferredDetector
from capindex.pipeline.discover import Found, discover
from capindex.pipeline.infer import Inferred, run_models, work_for
from capindex.pipeline.options import IngestOptions, tuned_options
from capindex.pipeline.plan import Plan, Task, plan_ingest
from capindex.pipeline.report import Events, Summary
from capindex.pipeline.shared_memory import fit_shared_memory, shared_memory_free
from capindex.store.catalog import Changes, FileState, utcnow
from capindex.store.keyword import KeywordIndex
from capindex.store.library_dir import LibraryDir
from capindex.store.parquet import ParquetMirror
from capindex.store.schema import COLUMN_NAMES
from capindex.store.sinks import Sinks
from capindex.store.vectors import VectorIndex

if TYPE_CHECKING:  # the decode stage imports torch: only a run with files to read loads it
    from capindex.pipeline.decode import Decoded, DecodeDataset, DecodedBatch

# Columns a row copies from another row with the same content (a duplicate file).
_CONTENT_COLUMNS = ("width", "height", "format", "taken_at", "camera_make", "camera_model",
                    "gps_lat", "gps_lon", "caption", "user_caption", "caption_score",
                    "alt_captions", "tags", "objects", "detector_id", "model_id",
                    "weights_hash", "decoding", "embedding", "embedding_model", "concepts")
# Columns an upsert leaves as they are: the row's identity, and the user's caption
# (`Library.edit_caption`), which a row captioned again (or by another model) keeps.
_KEPT_COLUMNS = ("id", "seq", "user_caption")


def decode_loader(dataset: DecodeDataset, options: IngestOptions) -> Iterator[DecodedBatch]:
    """The decode stage's batches with `options`' data-path settings (ingest and the
    benchmark's decode measure build it here, so both run the same stage)."""
    from capindex.pipeline.supervise import decode_batches

    return decode_batches(dataset, options.batch_size, options.workers, options.pin_memory,
                          options.prefetch_batches, options.worker_priority)


def ingest(library: LibraryDir, roots: Sequence[str], captioner: CaptionerLike,
           options: IngestOptions | None = None, events: Events | None = None,
           should_stop: Callable[[], bool] = lambda: False,
           detector: DeferredDetector | None = None, engine: Engine | None = None) -> Summary:
    """Bring the library up to date with the image files under `roots`.

    `should_stop` is polled after each batch is written; when it returns True
    the run ends early (summary.interrupted) with everything so far saved.
    Raises LibraryBusyError when another ingest holds the library. Planning uses only
    `captioner.weights_hash`: the decode stage is set up only when there are files to read,
    with `options` tuned for the model's device, and the model (a `DeferredCaptioner`)
    loaded only when there are images to caption: a run whose files all turn out to be
    moved ones (hashed, found in the catalogue) loads none. `detector` (None: none) finds
    the objects of each image read, and of unchanged rows that lack them. `engine` reads the
    files and runs the models (None: `local_batches`, on this machine; or a
    `ray_engine.RayEngine`); the rows are written here either way.
    """
    options = options or IngestOptions()
    engine = engine or local_batches
    events = events or Events()
    started = time.monotonic()
    with library.ingest_lock():
        if options.rebuild:  # start over from the files, keeping the old catalogue aside
            catalogue, mirror = library.set_aside()
            moved = [f"the catalogue aside to {catalogue}"] if catalogue else []
            if mirror:
                moved.append(f"its Parquet mirror to {mirror}" if catalogue
                             else f"the Parquet mirror aside to {mirror}")
            if moved:
                events.notice(f"moved {', and '.join(moved)} (kept, never read again); "
                              "every file is captioned again")
            user_captions = _user_captions_of(catalogue, events) if catalogue else {}
        else:
            user_captions = {}
        catalog = library.open_catalog(create=True)
        try:
            mirror = ParquetMirror(library.parquet_dir)
            index = KeywordIndex(library.keyword_path)
            vectors = VectorIndex(library.vectors_dir)
            embedding_id = getattr(captioner, "embedding_id", None)
            # Repair whatever a killed run (or damage) left behind, before anything new.
            mirror.reconcile(catalog)
            problem = index.repair(catalog)
            if problem:
                events.notice(f"the search index is {problem}; rebuilding it from the catalogue")
            index.reconcile(catalog)
            if embedding_id:
                vectors.reconcile(catalog, embedding_id, EMBEDDING_DIM)
            plan = plan_ingest(catalog, discover(roots, options.exclude), roots,
                               captioner.weights_hash, options, events,
                               detector.detector_id if detector else None, embedding_id)
            sinks = Sinks(catalog, mirror, index)
            try:
                _run(plan, captioner, detector, catalog, sinks, options, events, should_stop,
                     engine)
            except BaseException:
                sinks.abandon()
                raise
            sinks.close()
            if user_captions:  # a rebuild keeps what the user wrote, by the photo's content
                _restore_user_captions(catalog, mirror, index, user_captions)
            mirror.reconcile(catalog)  # drop rows this run superseded or deleted
            if embedding_id:  # the vectors of this run's rows (one file, written again)
                vectors.reconcile(catalog, embedding_id, EMBEDDING_DIM)
        finally:
            events.finish()
            catalog.close()
    plan.summary.seconds = time.monotonic() - started - plan.summary.loading_seconds
    return plan.summary


def _user_captions_of(old_catalogue, events: Events) -> dict[str, str]:
    """The user's captions in the catalogue set aside by `--rebuild` (sha256 -> text)."""
    import sqlite3

    from capindex.store.catalog import read_user_captions

    try:
        return read_user_captions(old_catalogue)
    except (sqlite3.Error, OSError) as exc:
        events.notice(f"the user's captions in {old_catalogue} cannot be read ({exc}); "
                      "they stay in that file")
        return {}


def _restore_user_captions(catalog, mirror: ParquetMirror, index: KeywordIndex,
                           user_captions: dict[str, str]) -> None:
    """Give each photo read again the user's caption its content had before the rebuild."""
    ids = catalog.ids_by_hash(user_captions)
    updates = [(row_id, {"user_caption": user_captions[sha256]})
               for sha256, row_ids in ids.items() for row_id in row_ids]
    if not updates:
        return
    sinks = Sinks(catalog, mirror, index)
    try:
        sinks.write(Changes(updates=updates))
    except BaseException:
        sinks.abandon()
        raise
    sinks.close()


# An engine: (plan, captioner, detector, options, events) -> for each batch read, its items
# and what the models said about them. The local one is `local_batches`; the Ray one,
# `ray_engine.RayEngine`. Either way the rows are built and written here, by the one writer.
Engine = Callable[[Plan, CaptionerLike, "DeferredDetector | None", IngestOptions, Events],
                  Iterator[tuple[list["Decoded"], Inferred]]]


def _run(plan: Plan, captioner: CaptionerLike, detector: DeferredDetector | None, catalog,
         sinks: Sinks, options: IngestOptions, events: Events,
         should_stop: Callable[[], bool], engine: Engine) -> None:
    summary = plan.summary
    sinks.write(_discovery_failures(plan, events))
    relocations = Relocations(plan, catalog)
    embedding_id = getattr(captioner, "embedding_id", None)
    if not plan.tasks:
        events.start(0)
    else:
        with closing(engine(plan, captioner, detector, options, events)) as batches:
            for items, inferred in batches:
                sinks.write(batch_changes(items, inferred, plan, detector, embedding_id,
                                          relocations, events))
                events.advance(len(items))
                if should_stop():
                    summary.interrupted = True
                    return
    gone = relocations.unclaimed()
    sinks.write(Changes(deletes=gone))
    summary.deleted = len(gone)


def local_batches(plan: Plan, captioner: CaptionerLike, detector: DeferredDetector | None,
                  options: IngestOptions, events: Events) -> Iterator[tuple[list[Decoded], Inferred]]:
    """The local engine: decode workers on this machine, the models in this process."""
    model = _Model(captioner, plan.summary)
    options = model.tune(options)  # only now is torch needed, and the model
    if not plan.reuse_hashes and any(t.reason != "enrich" for t in plan.tasks):
        # no file can turn out to be a moved one: all but enrich tasks need the model
        model.load()
    events.start(len(plan.tasks))
    options, cut = fit_shared_memory(options, shared_memory_free())
    if cut:
        events.notice(cut)
    from capindex.pipeline.decode import DecodeDataset

    dataset = DecodeDataset([t.found.path for t in plan.tasks], plan.reuse_hashes,
                            max_file_size=options.max_file_size, enrich_hashes=plan.enrich_hashes)
    detector_id = detector.detector_id if detector else None
    embedding_id = getattr(captioner, "embedding_id", None)
    for batch in decode_loader(dataset, options):
        work = [work_for(plan.tasks[item.index], detector_id, embedding_id) for item in batch.items]
        yield batch.items, run_models(batch, work, model.captioner, detector, model.load)


def _discovery_failures(plan: Plan, events: Events) -> Changes:
    """Error rows for what discovery could not use (a broken link, an unreadable file...)."""
    failures = Changes()
    for entry in plan.failures:
        events.skipped(entry.key, entry.error)
        failures.upserts.append(_error_row(entry, entry.error))
        plan.summary.failed += 1
    return failures


def batch_changes(items: list[Decoded], inferred: Inferred, plan: Plan,
                  detector: DeferredDetector | None, embedding_id: str | None,
                  relocations: Relocations, events: Events) -> Changes:
    """One batch read (its items, what the models said) -> the catalogue changes it makes:
    captioned rows, objects and vectors of unchanged rows, moves, errors."""
    summary = plan.summary
    summary.captioned += len(inferred.captions)
    for note in inferred.notes:
        events.notice(note)
    position = {item.index: k for k, item in enumerate(i for i in items if i.has_image)}
    changes = Changes()
    for item in items:
        task = plan.tasks[item.index]
        key = task.found.key
        if task.reason == "enrich":  # the row keeps its caption, whatever happens here
            if not item.has_image or item.sha256 != task.old.sha256:
                if item.error:  # the next run tries again; the row stays as it is
                    events.notice(f"{key}: not read again for objects and vector: {item.error}")
                continue
            fields = _signals(key, position[item.index], inferred, detector, embedding_id, events)
            if fields:
                changes.updates.append((task.old.id, fields))
                summary.enriched += 1
            continue
        if item.error:
            events.skipped(key, item.error)
            changes.upserts.append(_error_row(task.found, item.error, item))
            summary.failed += 1
        elif item.reused:  # decoded only when its row's objects or vector are outdated
            relocations.place(task, item, changes, _signals(
                key, position[item.index], inferred, detector, embedding_id, events)
                if item.has_image else {})
        else:
            k = position[item.index]
            objects, why = inferred.objects.get(k, (None, None))
            if why:
                events.notice(f"{key}: {why}")
            row = _blank_row(task.found, item)
            row.update(item.meta, **inferred.captions[k], **inferred.made_by, status="ok",
                       objects=objects,
                       detector_id=detector.detector_id if objects is not None else None)
            changes.upserts.append(row)
            _count(summary, task.reason)
    return changes


def _signals(key: str, k: int, inferred: Inferred, detector: DeferredDetector | None,
             embedding_id: str | None, events: Events) -> dict:
    """The columns of the objects and vector the models made for the batch's image `k`
    (of a file whose caption is kept), those they made; a detector's failure is noticed."""
    fields = {}
    objects, why = inferred.objects.get(k, (None, None))
    if why:
        events.notice(f"{key}: {why}")
    elif objects is not None:  # found only where the row needed them
        fields.update(objects=objects, detector_id=detector.detector_id)
    if k in inferred.vectors:
        vector, words = inferred.vectors[k]
        fields.update(embedding_columns(vector, embedding_id, words))
    return fields


class Relocations:
    """Files whose content is already catalogued: each claims the row it came from (a move
    or a touch keeps id and caption), or copies another row's content (a duplicate), with
    the objects and vector made again for it where that row's were outdated (`signals`)."""

    def __init__(self, plan: Plan, catalog) -> None:
        self.plan = plan
        self.by_hash: dict[str, list[FileState]] = defaultdict(list)
        for state in plan.orphans.values():
            if state.sha256 in plan.reuse_hashes:
                self.by_hash[state.sha256].append(state)
        self.claimed: set[int] = set()
        # What reused content looked like before this run changed any row.
        self.contents = catalog.contents_by_hash(plan.reuse_hashes, _CONTENT_COLUMNS)

    def place(self, task: Task, item: Decoded, changes: Changes, signals: dict) -> None:
        summary = self.plan.summary
        file_fields = {"path": task.found.key, "size": item.size, "mtime_ns": item.mtime_ns}
        candidates = self.by_hash.get(item.sha256)
        if task.old and task.old.sha256 == item.sha256:  # touched, same content
            changes.relocations.append((task.old.id, file_fields | signals))
            if signals:  # counted as an unchanged file's enrich
                summary.enriched += 1
            else:
                summary.unchanged += 1
        elif candidates:  # moved or renamed: the row follows the file
            source = candidates.pop()
            self.claimed.add(source.id)
            changes.relocations.append((source.id, file_fields | signals))
            summary.moved += 1
        else:  # content captioned before under another path (files swapped...)
            row = _blank_row(task.found, item)
            row.update(self.contents[item.sha256], status="ok")
            row.update(signals)
            changes.upserts.append(row)
            _count(summary, task.reason)

    def unclaimed(self) -> list[int]:
        """Ids of the orphans no file claimed: their files are gone."""
        return [s.id for s in self.plan.orphans.values() if s.id not in self.claimed]


class _Model:
    """The captioner as a run uses it: set up for its device, loaded once when first needed,
    with the loading time counted apart from the run's (`summary.loading_seconds`)."""

    def __init__(self, captioner: CaptionerLike, summary: Summary) -> None:
        self.captioner = captioner
        self.summary = summary
        self.made_by: dict | None = None  # the captions' provenance columns, once loaded

    def tune(self, options: IngestOptions) -> IngestOptions:
        started = time.monotonic()
        tuned = tuned_options(options, *placement(self.captioner))  # imports torch
        self.summary.loading_seconds += time.monotonic() - started
        return tuned

    def load(self) -> dict:
        """The captions' provenance columns; reading them makes a DeferredCaptioner load
        the model."""
        if self.made_by is None:
            started = time.monotonic()
            self.made_by = provenance(self.captioner)
            self.summary.loading_seconds += time.monotonic() - started
        return self.made_by


def _count(summary: Summary, reason: str) -> None:
    attribute = {"new": "new", "changed": "changed", "recaption": "recaptioned",
                 "retry": "retried"}[reason]
    setattr(summary, attribute, getattr(summary, attribute) + 1)


def _blank_row(found: Found, item: Decoded | None = None) -> dict:
    """A row with the file's columns filled in (from the read when there was one)."""
    row = dict.fromkeys(name for name in COLUMN_NAMES if name not in _KEPT_COLUMNS)
    row.update(path=found.key, size=found.size, mtime_ns=found.mtime_ns, ingested_at=utcnow())
    if item is not None and item.size is not None:
        row.update(size=item.size, mtime_ns=item.mtime_ns, sha256=item.sha256)
    return row


def _error_row(found: Found, reason: str, item: Decoded | None = None) -> dict:
    row = _blank_row(found, item)
    row.update(status="error", error=reason)
    return row
