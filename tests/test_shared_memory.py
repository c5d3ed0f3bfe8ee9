"""The decoded batches in flight fit /dev/shm (a container's is often 64 MB); a batch that
still does not fit stops the run with one line, and what was committed stays."""

from __future__ import annotations

import pytest
from helpers import check_library

import capindex.pipeline.decode as decode
import capindex.pipeline.supervise as supervise
from capindex.errors import SharedMemoryFull
from capindex.pipeline.options import IngestOptions
from capindex.pipeline.shared_memory import fit_shared_memory, shared_memory_free
from capindex.store.library_dir import LibraryDir as Library

MB = 2**20
TORCH_MESSAGE = ("unable to allocate shared memory(shm) for file </torch_1_2_3>: "
                 "No space left on device (28)")


def test_batches_in_flight_fit_in_half_the_free_shared_memory():
    gpu = IngestOptions(batch_size=256, workers=15, prefetch_batches=2)  # 30 x 38.5 MB
    assert fit_shared_memory(gpu, None) == (gpu, "")  # no /dev/shm (macOS)
    assert fit_shared_memory(gpu, 4096 * MB) == (gpu, "")
    fitted, note = fit_shared_memory(gpu, 1024 * MB)  # half of it holds 13 batches
    assert (fitted.workers, fitted.prefetch_batches, fitted.batch_size) == (13, 1, 256)
    assert note.startswith("/dev/shm has 1024 MB free") and "13 workers keeping 1 batch" in note
    fitted, _ = fit_shared_memory(gpu, 64 * MB)  # not two batches: one at a time
    assert (fitted.workers, fitted.prefetch_batches) == (1, 1)
    with pytest.raises(SharedMemoryFull, match=r"\(/dev/shm, 32 MB free\)"):
        fit_shared_memory(gpu, 32 * MB)  # not one batch: it could only fail later
    cpu = IngestOptions(batch_size=16, workers=8, prefetch_batches=2)  # 16 x 2.4 MB
    fitted, _ = fit_shared_memory(cpu, 64 * MB)
    assert (fitted.workers, fitted.prefetch_batches) == (8, 1)
    in_process = IngestOptions(batch_size=16, workers=0)
    assert fit_shared_memory(in_process, 1) == (in_process, "")
    assert shared_memory_free("/no/such/folder") is None


def test_ingest_says_when_it_decodes_with_less(cli, fake, photos, capindex_home, monkeypatch):
    monkeypatch.setattr("capindex.pipeline.ingest.shared_memory_free", lambda: 3 * MB)
    result = cli("ingest", photos, "--workers", "2")
    assert result.exit_code == 0, result.output
    assert ("note: /dev/shm has 3 MB free, so decoding runs with 1 worker keeping 1 batch of "
            "16 ahead each") in result.stderr
    assert len(check_library(capindex_home)) == 4


def test_a_torch_shared_memory_failure_becomes_one_line():
    def batches():
        raise RuntimeError("Caught RuntimeError in DataLoader worker process 0.\n"
                           f"Original Traceback (most recent call last):\n...\n{TORCH_MESSAGE}")
        yield

    with pytest.raises(SharedMemoryFull, match=r"do not fit in shared memory \(/dev/shm"):
        supervise._next_batch(batches(), None, None, 1.0)


def test_a_batch_that_does_not_fit_stops_the_run_and_keeps_the_ones_before(
        cli, photos, capindex_home, monkeypatch):
    real, sent = decode.collate, []

    def collate(items):  # in the worker (forked after this patch): its second batch fails
        sent.append(1)
        if len(sent) == 2:
            raise RuntimeError(TORCH_MESSAGE)
        return real(items)

    monkeypatch.setattr(decode, "collate", collate)
    result = cli("ingest", photos, "--workers", "1", "--batch-size", "2")
    assert result.exit_code == 1
    error = result.stderr.strip().splitlines()
    assert len(error) == 1 and error[0].startswith(
        "Error: decoded batches do not fit in shared memory (/dev/shm")
    with Library(capindex_home).open_catalog() as catalog:  # the first batch, committed
        assert len(list(catalog.rows())) == 2  # (the Parquet mirror and index: next run)
    monkeypatch.setattr(decode, "collate", real)
    assert cli("ingest", photos, "--workers", "1").exit_code == 0
    assert len(check_library(capindex_home)) == 4
