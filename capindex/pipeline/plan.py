"""Planning an ingest: sort what discovery found into tasks, using only the catalogue
and stat() (no file is opened).

- same path, size and mtime as catalogued: unchanged, not opened (a failed file
  is retried only with --retry-failed; a caption by another model is redone
  only with --recaption);
- otherwise it is a task: read and hashed, then captioned unless its content is
  already catalogued (a moved, renamed or touched file: `reuse_hashes`); such a file
  is decoded only when that row's objects or vector were made by another model than
  this run's, or are missing (`enrich_hashes`): they are made again, the caption kept;
- a file over `options.max_file_size` fails without being opened;
- a catalogued file under the given paths that is no longer found is an orphan:
  deleted at the end of the run, unless it turns out to have moved (not after an
  interrupted run). Deletion only follows a listing that succeeded and lacks the
  file: under a folder or PATH that cannot be read now (not listed, not entered,
  a link whose target is missing) every row is kept as it is, and the folder is
  reported once.

Planning never holds the whole catalogue: the files found, in path order, are merged with
one ordered scan of the catalogue's rows under the given paths (`Catalog.plan_rows`: the
planning index, never the wide rows), so an unchanged file costs a comparison of a few
values; only the files that may be tasks have their rows read whole (`CHUNK` at a time),
and a row the merge passes over is an orphan. A re-run over a million catalogued photos
holds little but a chunk of files (docs/performance.md, "1,000,000 photos").
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from itertools import islice
from typing import Protocol

from capindex.errors import too_large
from capindex.pipeline.discover import Found, catalog_path, is_under
from capindex.pipeline.options import IngestOptions
from capindex.pipeline.report import Events, Summary
from capindex.store.catalog import FileState, PlanRow

TOO_LARGE = "file too large ("  # how `errors.too_large` starts the reason of a file over the limit
CHUNK = 5000  # files whose rows are read whole per catalogue lookup


class CatalogStates(Protocol):
    """The catalogue reads planning makes (`store.catalog.Catalog` has them)."""

    def plan_rows(self, roots: Sequence[str], weights_hash: str, detector_id: str | None,
                  embedding_id: str | None) -> Iterable[PlanRow]: ...

    def states_of(self, paths: Sequence[str]) -> dict[str, FileState]: ...

    def has_paths_under(self, root: str) -> bool: ...


@dataclass
class Task:
    found: Found
    reason: str  # new | changed | recaption | retry | enrich (objects only, no captioning)
    old: FileState | None = None


@dataclass
class Plan:
    tasks: list[Task] = field(default_factory=list)
    failures: list[Found] = field(default_factory=list)  # discovery errors to record
    orphans: dict[str, FileState] = field(default_factory=dict)  # catalogued, not found now
    reuse_hashes: frozenset[str] = frozenset()
    enrich_hashes: frozenset[str] = frozenset()  # of those, rows whose objects or vector are outdated
    summary: Summary = field(default_factory=Summary)


def plan_ingest(catalog: CatalogStates, found: Iterable[Found], roots: Sequence[str],
                weights_hash: str, options: IngestOptions, events: Events,
                detector_id: str | None = None, embedding_id: str | None = None,
                chunk: int = CHUNK) -> Plan:
    """Sort what discovery found into tasks, using only the catalogue and stat().

    `weights_hash` is the captioner's: a caption recording another one is another model's
    (the model id comes from the same checkpoint file, so the hash alone tells).
    `detector_id`, `embedding_id`: the object detector's and the embedding's; an unchanged
    row whose objects or vector another model made, or none yet (a library from before
    them), gets an "enrich" task: read again for what it lacks, its caption kept.

    The files found are merged with the catalogue's rows under `roots`, both in path
    order: a row passed over is not found (an orphan, unless under a folder that cannot
    be read now); a file out of order (a second PATH sorting before the first, a name
    that is not UTF-8) is looked up by its path instead, and its row is then not an orphan.
    """
    plan = Plan()
    summary = plan.summary
    recaption = options.recaption
    rows = iter(catalog.plan_rows([catalog_path(os.path.abspath(r)) for r in roots],
                                  weights_hash, detector_id or None, embedding_id or None))
    row = next(rows, None)
    last = ""  # the last key merged
    gone: list[str] = []  # catalogued under the roots, passed over by the merge
    strays: set[str] = set()  # keys out of order, looked up by path
    unlisted: list[str] = []  # directories that could not be read
    pending: list[tuple[Found, bool]] = []  # (file, whether to look its row up), found order
    lookups = 0  # files in `pending` whose row is looked up
    for entry in found:
        if entry.is_dir:
            if entry.maybe_dir and not catalog.has_paths_under(entry.key):
                continue  # a link that cannot be followed, with nothing catalogued under it
            events.skipped(entry.key, entry.error)
            unlisted.append(entry.key)
            summary.failed += 1
            continue
        key = entry.key
        if key <= last:
            strays.add(key)
            pending.append((entry, True))
        else:
            last = key
            while row is not None and row[0] < key:
                if not _under_any(row[0], unlisted):
                    gone.append(row[0])
                row = next(rows, None)
            if row is None or row[0] != key:
                pending.append((entry, False))  # new
                continue
            _, size, mtime_ns, current, same_captioner = row
            row = next(rows, None)
            if (current and size == entry.size and mtime_ns == entry.mtime_ns
                    and entry.error is None and (same_captioner or not recaption)):
                # Unchanged, captioned, nothing missing: the common case, no FileState made.
                summary.unchanged += 1
                summary.other_model += not same_captioner
                continue
            pending.append((entry, True))
        lookups += 1
        if lookups >= chunk:
            _settle(plan, catalog, pending, weights_hash, options, detector_id, embedding_id)
            pending, lookups = [], 0
    _settle(plan, catalog, pending, weights_hash, options, detector_id, embedding_id)
    while row is not None:
        if not _under_any(row[0], unlisted):
            gone.append(row[0])
        row = next(rows, None)
    # A stray's row was passed over by the merge; a folder reported late (a later PATH)
    # keeps what is under it.
    gone = [key for key in gone if key not in strays and not _under_any(key, unlisted)]
    orphans: dict[str, FileState] = {}
    for keys in _batches(gone, chunk):
        orphans.update(catalog.states_of(keys))
    plan.orphans = dict(sorted(orphans.items(), key=lambda item: item[1].id))

    def reusable(state: FileState | None) -> bool:
        return bool(state and state.status == "ok" and state.sha256
                    and (not options.recaption or state.weights_hash == weights_hash))

    def outdated(state: FileState) -> bool:  # as an unchanged row that gets an "enrich" task
        return bool((detector_id and state.detector_id != detector_id)
                    or (embedding_id and state.embedding_model != embedding_id))

    reused = [s for s in plan.orphans.values() if reusable(s)] + [
        t.old for t in plan.tasks if t.reason == "changed" and reusable(t.old)]
    plan.reuse_hashes = frozenset(s.sha256 for s in reused)
    plan.enrich_hashes = frozenset(
        [s.sha256 for s in reused if outdated(s)]
        # an enrich task's own file, when a moved copy of it makes its content a reused one
        + [t.old.sha256 for t in plan.tasks
           if t.reason == "enrich" and t.old.sha256 in plan.reuse_hashes])
    return plan


def _settle(plan: Plan, catalog: CatalogStates, pending: list[tuple[Found, bool]],
            weights_hash: str, options: IngestOptions, detector_id: str | None,
            embedding_id: str | None) -> None:
    """Sort the files that are not simply unchanged, in the order found, with their rows
    read whole (one lookup for the chunk)."""
    states = catalog.states_of([entry.key for entry, look_up in pending if look_up])
    for entry, _ in pending:
        _sort(plan, entry, states.get(entry.key), weights_hash, options, detector_id,
              embedding_id)


def _under_any(key: str, folders: list[str]) -> bool:
    return bool(folders) and any(is_under(key, folder) for folder in folders)


def _sort(plan: Plan, entry: Found, old: FileState | None, weights_hash: str,
          options: IngestOptions, detector_id: str | None, embedding_id: str | None) -> None:
    """One discovered file (`old`: its catalogue row, if any) into the plan."""
    summary = plan.summary
    unchanged = old is not None and (old.size, old.mtime_ns) == (entry.size, entry.mtime_ns)
    oversize = not entry.error and entry.size > options.max_file_size
    if oversize and not (unchanged and old.status == "ok"):  # a row already good stays
        entry = replace(entry, error=too_large(entry.size, options.max_file_size))
    if entry.error:
        if old and old.status == "error" and old.error == entry.error and not options.retry_failed:
            summary.previously_failed += 1
        else:
            plan.failures.append(entry)
        return
    if not unchanged:
        plan.tasks.append(Task(entry, "changed" if old else "new", old))
    elif old.status != "ok":
        # Refused by size before, under the limit now: what failed it no longer holds.
        if options.retry_failed or (old.error or "").startswith(TOO_LARGE):
            plan.tasks.append(Task(entry, "retry", old))
        else:
            summary.previously_failed += 1
    elif old.weights_hash != weights_hash and options.recaption and not oversize:
        plan.tasks.append(Task(entry, "recaption", old))
    elif not oversize and ((detector_id and old.detector_id != detector_id)
                           or (embedding_id and old.embedding_model != embedding_id)):
        plan.tasks.append(Task(entry, "enrich", old))
        summary.other_model += old.weights_hash != weights_hash
    else:
        summary.other_model += old.weights_hash != weights_hash
        summary.unchanged += 1


def _batches(items: Iterable, size: int) -> Iterator[list]:
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch
