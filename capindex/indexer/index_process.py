"""The Whoosh index's writing, in a process of its own while an ingest reads files.

Indexing a caption (word analysis, stemming, postings) costs about 0.5 ms of
Python. In the ingest's main process that time is taken from the model: on a
GPU the main process is what limits the rate (docs/performance.md, "GPU").
`IndexProcess` has the writing half of `SearchIndex`'s interface (`update`,
`flush`, `discard`); the main process only turns rows into documents and
queues them, and a child process runs a `SearchIndex` that commits them on its
usual schedule.

Crash safety is unchanged: the index only ever receives rows already committed
to the catalogue, and the next run's reconcile restores whatever a failed or
killed indexing process did not commit. The child ignores SIGINT from its start
(the main process decides when to stop) and exits when the main process is gone.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import queue
import signal
import threading
from pathlib import Path
from typing import Iterable

from capindex.errors import IndexingError
from capindex.indexer.whoosh_index import SearchIndex, changes

# How often a waiting child checks that the main process is still alive, in seconds.
PARENT_CHECK_SECONDS = 1.0


class IndexProcess:
    """`SearchIndex(directory, **settings)`'s writing, done by a child process.

    `update` returns at once; errors in the child come back from `flush(final=True)`
    (the end of the run), as an `IndexingError` naming the index directory.
    """

    def __init__(self, directory: Path, **settings) -> None:
        self.directory = Path(directory)
        # spawn: a fresh interpreter, safe whatever threads or GPU context the parent holds.
        context = multiprocessing.get_context("spawn")
        self._requests = context.Queue()
        self._replies = context.Queue()
        self._process = context.Process(target=serve, name="capindex-index", daemon=True,
                                        args=(str(directory), settings, self._requests,
                                              self._replies))
        with sigint_ignored():  # inherited: a Ctrl-C cannot stop the child mid-import
            self._process.start()

    def update(self, rows: Iterable[dict], deleted_ids: Iterable[int] = ()) -> None:
        """Queue committed catalogue rows and deletions, as `SearchIndex.update`."""
        entries = list(changes(rows, deleted_ids))
        if entries:
            self._requests.put(("queue", entries))

    def flush(self, final: bool = False) -> None:
        """Commit what is queued; `final` also merges segments and ends the process.

        A non-final flush is left to the child's schedule (it is only a request).
        """
        if not final:
            return
        self._requests.put(("finish", None))
        error = self._reply()
        self._process.join()
        if error:
            raise IndexingError(str(self.directory), error)

    def discard(self) -> None:
        """Stop without committing what is still queued (the next reconcile restores it)."""
        if self._process.is_alive():
            self._requests.put(("discard", None))
            self._process.join(timeout=10)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()

    def _reply(self) -> str | None:
        while True:
            try:
                return self._replies.get(timeout=PARENT_CHECK_SECONDS)
            except queue.Empty:
                if not self._process.is_alive():
                    return f"the indexing process ended with exit code {self._process.exitcode}"


@contextlib.contextmanager
def sigint_ignored():
    """SIGINT ignored in this process for the block (where signals can be set: main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.SIG_DFL if previous is None else previous)


def serve(directory: str, settings: dict, requests, replies) -> None:
    """The child: queue documents into a SearchIndex until told to finish or discard.

    After an error it keeps reading (so the parent never blocks) and reports the
    error when asked to finish.
    """
    parent = multiprocessing.parent_process()
    index = SearchIndex(Path(directory), **settings)
    error = None
    while True:
        try:
            kind, entries = requests.get(timeout=PARENT_CHECK_SECONDS)
        except queue.Empty:
            if parent is not None and not parent.is_alive():
                return
            continue
        if kind == "discard":
            return
        try:
            if error is None and kind == "queue":
                index.queue(entries)
            elif error is None and kind == "finish":
                index.flush(final=True)
        except Exception as exc:  # reported at "finish"
            error = f"{type(exc).__name__}: {exc}"
        if kind == "finish":
            replies.put(error)
            return
