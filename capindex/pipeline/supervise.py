"""The decode stage, supervised: a file that kills or hangs its worker fails alone.

A damaged file can crash a native decoder (a segmentation fault kills the worker
process; no exception is raised), the kernel's OOM killer can kill a worker
decoding a huge image, and a decoder bug can loop forever. Without supervision
a crash or a kill stops the whole ingest and a loop stalls it, and the next run
meets the same file again.

    for batch in decode_batches(dataset, batch_size, workers, ...):  # DecodedBatch

Each worker records in shared memory which file it is reading and since when.
When a worker dies, or has been reading one file for `FILE_TIME_LIMIT` seconds
(it is then killed), that file comes out as an item with `error` set, in a batch
of its own, and fresh workers decode the files not yet delivered.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator

import torch
from torch.utils.data import Dataset

from capindex.errors import DecodeWorkerDied, SharedMemoryFull
from capindex.pipeline.decode import Decoded, DecodeDataset, DecodedBatch, make_loader
from capindex.pipeline.shared_memory import shared_memory_free

# A worker reading one file for this long is stopped and the file fails. Decoding the
# largest image allowed (120 MP) takes seconds; this leaves room for slow disks and
# machines, and for workers at low priority.
FILE_TIME_LIMIT = 300.0
# How often, while waiting for a batch, the files being read are checked against the limit.
_CHECK_EVERY = 30.0


def decode_batches(dataset: DecodeDataset, batch_size: int, workers: int,
                   pin_memory: bool = False, prefetch_batches: int = 2,
                   worker_priority: int = 0,
                   file_time_limit: float = FILE_TIME_LIMIT) -> Iterator[DecodedBatch]:
    """`decode.make_loader`'s batches, going on when a worker dies or hangs on a file.

    A worker that dies between files stops the run with DecodeWorkerDied (or torch's
    RuntimeError where the death cannot be traced, see `_how_it_ended`).
    """
    if not workers:  # a crash in the main process ends it; nothing to go on with
        yield from make_loader(dataset, batch_size, 0)
        return
    pending = list(range(len(dataset)))
    while pending:
        tracked = _Tracked(dataset, pending, workers)
        delivered = 0
        try:  # a worker can die before iter() returns
            batches = iter(make_loader(tracked, batch_size, workers, pin_memory, prefetch_batches,
                                       worker_priority, min(_CHECK_EVERY, file_time_limit)))
        except RuntimeError:
            failed = tracked.blame({})
        else:
            with _WorkerWatch(tracked) as watch:  # after iter(), which installs torch's handler
                try:
                    while (batch := _next_batch(batches, tracked, watch,
                                                file_time_limit)) is not None:
                        watch.hold()
                        yield batch
                        delivered += len(batch.items)
                        watch.release()  # raises now for a worker that died meanwhile
                    return
                except (RuntimeError, OSError):  # OSError: a batch its dead sender cannot pass on
                    watch.hold()  # deaths are only noted from here on
                    failed = tracked.blame(watch.seen)  # before `batches` reaps the workers
            del batches
        yield DecodedBatch([Decoded(index, error=reason) for index, reason in failed.items()], None)
        pending = [i for i in pending[delivered:] if i not in failed]


def _next_batch(batches, tracked: _Tracked, watch: _WorkerWatch,
                limit: float) -> DecodedBatch | None:
    """The next batch (None after the last); stops a worker that is over the time limit."""
    while True:
        try:
            return next(batches)
        except StopIteration:
            return None
        except RuntimeError as exc:
            if "unable to allocate shared memory" in str(exc):  # a worker's batch did not fit
                free = shared_memory_free()
                raise SharedMemoryFull(None if free is None else free / 2**20) from None
            if "timed out" not in str(exc):  # torch's "DataLoader timed out after N seconds"
                raise
            watch.hold()
            if tracked.stop_overdue(limit):
                raise
            watch.release()  # only slow: wait on (torch's iterator resumes after a timeout)


class _Tracked(Dataset):
    """dataset[indices[k]] for k, recording which index each worker is reading, and since when."""

    def __init__(self, dataset: DecodeDataset, indices: list[int], workers: int) -> None:
        self.dataset, self.indices = dataset, indices
        # (worker pid, dataset index or -1, start in monotonic ns) per worker, shared with
        # the forked workers
        self.reading = torch.full((workers, 3), -1, dtype=torch.int64).share_memory_()
        self.overdue: dict[int, str] = {}  # index -> reason, for workers stopped by the limit

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int):
        slot = self.reading.numpy()[torch.utils.data.get_worker_info().id]  # a view, same memory
        slot[0], slot[2], slot[1] = os.getpid(), time.monotonic_ns(), self.indices[k]
        try:
            return self.dataset[self.indices[k]]
        finally:
            slot[1] = -1

    def ended(self, seen: dict[int, tuple[int, str]] | None = None) -> dict[int, tuple[int, str]]:
        """{pid: (index it was reading or -1, how it ended)} for each worker that has ended.

        `seen`: what the SIGCHLD handler saw earlier; once the DataLoader has reaped
        a worker, how it ended is no longer known here ("").
        """
        found = {}
        for pid, index, _ in self.reading.tolist():
            if pid >= 0 and (how := _how_it_ended(pid)) is not None:
                found[pid] = (index, how)
        return {**found, **(seen or {})}

    def blame(self, seen: dict[int, tuple[int, str]], wait: float = 1.0) -> dict[int, str]:
        """While handling the loader's exception: {index: reason} for the files that ended
        a worker. With none, DecodeWorkerDied when a worker died all the same (between
        files), else the loader's exception itself.

        Waits up to `wait` s for such a file: the loader can fail on a dying worker's
        closed connection before the kernel reports that the worker ended.
        """
        deadline = time.monotonic() + wait
        while True:
            ended = self.ended(seen)
            files = {index: how for index, how in ended.values() if index >= 0}
            if files:
                return {index: self.overdue.get(index) or "the image decoder crashed on it"
                        + (f" ({how})" if how else "") for index, how in files.items()}
            if time.monotonic() >= deadline:
                break
            time.sleep(0.01)
        for _, how in ended.values():
            raise DecodeWorkerDied(how)
        raise

    def stop_overdue(self, limit: float) -> bool:
        """Kill each worker that has been reading one file for `limit` s; True once any
        was killed and has ended (within 5 s)."""
        now = time.monotonic_ns()
        killed = []
        for pid, index, since in self.reading.tolist():
            if index >= 0 and now - since >= limit * 1e9:
                self.overdue[index] = f"decoding took over {limit:g} s; stopped"
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
        deadline = time.monotonic() + 5.0
        while killed and time.monotonic() < deadline:
            if set(killed) <= set(self.ended()):
                return True
            time.sleep(0.01)
        return False


def _how_it_ended(pid: int) -> str | None:
    """None while child process `pid` runs; else the signal that killed it, as far as known."""
    if hasattr(os, "waitid"):
        try:  # WNOWAIT: look at the exit and leave reaping the worker to the DataLoader
            status = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:  # the DataLoader has reaped it already
            return ""
        if status is None:
            return None
        if status.si_code in (os.CLD_KILLED, os.CLD_DUMPED):
            return signal.strsignal(status.si_status) or f"signal {status.si_status}"
        return f"exit code {status.si_status}"
    try:  # macOS has no waitid; a worker not yet reaped looks alive here
        os.kill(pid, 0)
    except ProcessLookupError:
        return ""
    return None


class _WorkerWatch:
    """Watches the decode workers' deaths through SIGCHLD, in the main thread.

    torch's DataLoader raises a worker's death from its own SIGCHLD handler, wherever
    the main thread is. This handler runs first: it notes how a worker ended
    (`seen`) before the DataLoader reaps it, then passes the signal on to torch's,
    except while held: while the consumer handles a batch (captioning it, committing
    it: that must not be cut in half, so `release` passes it on after) and while a
    death is being looked into. Outside the main thread torch finds a death by
    polling instead.
    """

    def __init__(self, tracked: _Tracked) -> None:
        self.tracked = tracked
        self.seen: dict[int, tuple[int, str]] = {}  # as _Tracked.ended
        self.holding = self.arrived = False
        self.active = (threading.current_thread() is threading.main_thread()
                       and hasattr(signal, "SIGCHLD"))

    def __enter__(self) -> _WorkerWatch:
        if self.active:
            self.previous = signal.getsignal(signal.SIGCHLD)  # None: set outside Python
            signal.signal(signal.SIGCHLD, self._on_sigchld)
        return self

    def __exit__(self, *exc_info) -> None:
        if self.active:
            signal.signal(signal.SIGCHLD,
                          signal.SIG_DFL if self.previous is None else self.previous)

    def hold(self) -> None:
        self.holding = True

    def release(self) -> None:
        self.holding = False
        if self.arrived:
            self.arrived = False
            self._pass_on()

    def _on_sigchld(self, signum, frame) -> None:
        # Only what is known: a worker the DataLoader has reaped since looks like "".
        self.seen.update((pid, ended) for pid, ended in self.tracked.ended().items() if ended[1])
        if self.holding:
            self.arrived = True
        else:
            self._pass_on()

    def _pass_on(self) -> None:
        if callable(self.previous):
            self.previous(signal.SIGCHLD, None)  # torch's: raises if a worker was killed
