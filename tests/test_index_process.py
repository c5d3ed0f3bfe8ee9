"""IndexProcess: the index written by a child process ends up as SearchIndex writes it,
and the child's failures, death or orphaning never hang or silently pass."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from capindex.errors import IndexingError
from capindex.indexer import SearchIndex
from capindex.indexer.index_process import IndexProcess


def _rows(start: int, count: int, status: str = "ok") -> list[dict]:
    words = ["dog", "beach", "red", "child", "water", "snow", "grass", "ball"]
    return [{"id": i, "seq": i, "status": status, "path": f"/photos/IMG_{i}_{words[i % 8]}.jpg",
             "caption": f"a {words[i % 8]} and a {words[(i * 3) % 8]}",
             "tags": [{"label": "tabby", "prob": 0.5}]} for i in range(start, start + count)]


def test_same_index_as_in_process(tmp_path):
    inline, child = SearchIndex(tmp_path / "inline"), IndexProcess(tmp_path / "child")
    for index in (inline, child):
        index.update(_rows(1, 50))
        index.update(_rows(51, 30), deleted_ids=[3, 4])
        index.update(_rows(10, 2, status="error"))  # error rows leave the index
        index.flush(final=True)
    assert not child._process.is_alive()
    written = SearchIndex(tmp_path / "child")
    assert written.doc_count() == inline.doc_count() == 76
    for query in ("dog", "beach red", "img_7", "snow OR ball", "tabby"):
        assert written.search(query, limit=100) == inline.search(query, limit=100)


def test_a_failure_in_the_child_is_raised_at_the_end(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    index = IndexProcess(tmp_path / "file" / "index")  # cannot be created
    index.update(_rows(1, 5))
    with pytest.raises(IndexingError, match=r"file/index failed \(.*Error"):
        index.flush(final=True)


def test_a_killed_child_is_reported_not_waited_for(tmp_path):
    index = IndexProcess(tmp_path / "ix")
    index._process.kill()
    index._process.join()
    index.update(_rows(1, 5))
    with pytest.raises(IndexingError, match="exit code -9"):
        index.flush(final=True)


def test_discard_commits_nothing_and_ends_the_child(tmp_path):
    index = IndexProcess(tmp_path / "ix", first_flush_seconds=3600)
    index.update(_rows(1, 5))
    index.discard()
    assert not index._process.is_alive()
    assert SearchIndex(tmp_path / "ix").doc_count() == 0


_ORPHAN = """
import os, sys, time
from capindex.indexer.index_process import IndexProcess
index = IndexProcess(sys.argv[1])
time.sleep(0.5)
print(index._process.pid, flush=True)
os._exit(0)  # no flush, no discard: the child must notice on its own
"""


def test_the_child_ends_when_the_main_process_is_gone(tmp_path):
    done = subprocess.run([sys.executable, "-c", _ORPHAN, str(tmp_path / "ix")],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    pid = int(done.stdout.split()[0])
    deadline = time.monotonic() + 10
    while _alive(pid):
        assert time.monotonic() < deadline, "the indexing process outlived its parent"
        time.sleep(0.1)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (reparented, not yet reaped) has ended
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False
