"""Re-running ingest: unchanged, moved, deleted, changed, recaption, exclude, repairs."""

from __future__ import annotations

import json
import os
import shutil
import time

import pytest
from fakes import FakeCaptioner, solid
from helpers import check_library

import capindex.pipeline.decode as decode
from capindex.errors import ModelError
from capindex.pipeline.caption import DeferredCaptioner
from capindex.store.library_dir import LibraryDir as Library


@pytest.fixture
def ingested(cli, photos, capindex_home, fake):
    """`photos` ingested once; returns the rows by path."""
    result = cli("ingest", photos, "--workers", "0")
    assert result.exit_code == 0, result.output
    fake.batches.clear()
    return check_library(capindex_home)


def summary_line(result) -> str:
    return next(line for line in result.stderr.splitlines() if " new, " in line)


def search(cli, query) -> list[str]:
    result = cli("search", query, "--json")
    assert result.exit_code == 0, result.output
    return [hit["path"] for hit in json.loads(result.stdout)]


def test_the_model_is_loaded_only_when_there_is_something_to_read(cli, photos, ingested, fake):
    def must_not_load():
        raise AssertionError("the model was loaded")

    unused = DeferredCaptioner(fake.weights_hash, must_not_load)
    result = cli("ingest", photos, "--workers", "0", captioner=unused)
    assert result.exit_code == 0, result.output
    assert summary_line(result).startswith("0 new, 4 unchanged, 0 moved, 0 failed")

    def slow_load():
        time.sleep(1.5)
        return fake

    solid(photos / "new.jpg", (200, 100, 0))
    result = cli("ingest", photos, "--workers", "0", captioner=DeferredCaptioner(
        fake.weights_hash, slow_load))
    assert result.exit_code == 0, result.output
    line = summary_line(result)
    assert line.startswith("1 new, 4 unchanged, 0 moved, 0 failed; 1 captioned in ")
    assert float(line.split(" captioned in ")[1].split(" s ")[0]) < 1.5  # loading is not the run


def test_a_run_of_moved_files_loads_no_model(cli, photos, ingested, capindex_home, fake):
    def must_not_load():
        raise AssertionError("the model was loaded")

    placed = []
    unused = DeferredCaptioner(fake.weights_hash, must_not_load,
                               place=lambda: placed.append(1) or ("cpu", None))
    os.rename(photos / "red.jpg", photos / "sunset.jpg")
    os.rename(photos / "sub", photos / "renamed")
    result = cli("ingest", photos, "--workers", "0", captioner=unused)
    assert result.exit_code == 0, result.output
    assert summary_line(result).startswith("0 new, 2 unchanged, 2 moved, 0 failed; 0 captioned")
    assert placed == [1]  # the decode stage was set up for the model's device, not loaded
    assert check_library(capindex_home)[str(photos / "sunset.jpg")]["caption"] == \
        ingested[str(photos / "red.jpg")]["caption"]

    # a new file among moved ones: the model is loaded when its batch comes, once
    loads = []
    os.rename(photos / "sunset.jpg", photos / "red.jpg")
    solid(photos / "new.jpg", (200, 100, 0))
    result = cli("ingest", photos, "--workers", "0", "--batch-size", "1", captioner=DeferredCaptioner(
        fake.weights_hash, lambda: loads.append(1) or fake, place=lambda: ("cpu", None)))
    assert result.exit_code == 0, result.output
    assert summary_line(result).startswith("1 new, 3 unchanged, 1 moved, 0 failed; 1 captioned")
    assert loads == [1] and fake.captioned == 1


def test_a_model_that_fails_to_load_mid_run_keeps_the_moves_already_written(
        cli, photos, ingested, capindex_home, fake):
    def broken():
        raise ModelError("m.pt: not a readable checkpoint")

    os.rename(photos / "red.jpg", photos / "a_red.jpg")  # moved: its batch comes first
    solid(photos / "z_new.jpg", (200, 100, 0))  # new: its batch needs the model
    result = cli("ingest", photos, "--workers", "0", "--batch-size", "1",
                 captioner=DeferredCaptioner(fake.weights_hash, broken, place=lambda: ("cpu", None)))
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == "Error: m.pt: not a readable checkpoint"
    with Library(capindex_home).open_catalog() as catalog:  # the catalogue is the record
        rows = {row["path"]: row for row in catalog.rows()}
    assert rows[str(photos / "a_red.jpg")]["caption"] == ingested[str(photos / "red.jpg")]["caption"]
    assert str(photos / "z_new.jpg") not in rows

    result = cli("ingest", photos, "--workers", "0")  # a model that loads finishes the job
    assert result.exit_code == 0, result.output
    assert summary_line(result).startswith("1 new, 4 unchanged, 0 moved, 0 failed; 1 captioned")
    assert set(check_library(capindex_home)) == set(rows) | {str(photos / "z_new.jpg")}


def test_unchanged_files_are_not_opened(cli, photos, ingested, capindex_home, fake, monkeypatch):
    opened = []
    monkeypatch.setattr(decode, "read_file", lambda path, *limits: opened.append(path))
    result = cli("ingest", photos, "--workers", "0")
    assert result.exit_code == 0
    assert summary_line(result).startswith("0 new, 4 unchanged, 0 moved, 0 failed; 0 captioned")
    assert opened == [] and fake.batches == []
    after = check_library(capindex_home)
    assert {p: r["seq"] for p, r in after.items()} == {p: r["seq"] for p, r in ingested.items()}


def test_moved_and_renamed_files_keep_their_caption(cli, photos, ingested, capindex_home, fake):
    (photos / "trip").mkdir()
    os.rename(photos / "red.jpg", photos / "trip" / "sunset.jpg")
    os.rename(photos / "sub", photos / "renamed")
    result = cli("ingest", photos, "--workers", "0")
    assert result.exit_code == 0
    assert summary_line(result).startswith("0 new, 2 unchanged, 2 moved, 0 failed; 0 captioned")
    assert fake.batches == []  # recognised by hash, not decoded
    rows = check_library(capindex_home)
    moved = rows[f"{photos}/trip/sunset.jpg"]
    old = ingested[f"{photos}/red.jpg"]
    assert (moved["id"], moved["caption"], moved["ingested_at"]) == (old["id"], old["caption"],
                                                                     old["ingested_at"])
    assert rows[f"{photos}/renamed/gray.jpg"]["id"] == ingested[f"{photos}/sub/gray.jpg"]["id"]
    assert f"{photos}/red.jpg" not in rows
    assert search(cli, "sunset") == [f"{photos}/trip/sunset.jpg"]  # new file name indexed


def test_deleted_files_leave_catalogue_and_index(cli, photos, ingested, capindex_home):
    assert search(cli, "blue") == [f"{photos}/blue.jpg"]
    (photos / "blue.jpg").unlink()
    result = cli("ingest", photos, "--workers", "0")
    assert "1 deleted" in summary_line(result)
    rows = check_library(capindex_home)
    assert f"{photos}/blue.jpg" not in rows and len(rows) == 3
    assert search(cli, "blue") == []


def test_changed_content_is_captioned_again(cli, photos, ingested, capindex_home, fake):
    solid(photos / "green.png", (20, 20, 220), size=(50, 50))
    result = cli("ingest", photos, "--workers", "0")
    assert summary_line(result).startswith("0 new, 3 unchanged, 0 moved, 1 changed, 0 failed; "
                                           "1 captioned")
    row = check_library(capindex_home)[f"{photos}/green.png"]
    assert row["id"] == ingested[f"{photos}/green.png"]["id"]
    assert (row["caption"], row["width"]) == ("a dark blue picture", 50)


def test_touched_file_is_hashed_not_captioned(cli, photos, ingested, capindex_home, fake):
    path = photos / "red.jpg"
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 5 * 10**9))
    result = cli("ingest", photos, "--workers", "0")
    assert summary_line(result).startswith("0 new, 4 unchanged, 0 moved, 0 failed; 0 captioned")
    assert fake.batches == []
    row = check_library(capindex_home)[str(path)]
    assert row["mtime_ns"] == path.stat().st_mtime_ns  # so the next run skips it unopened
    assert row["id"] == ingested[str(path)]["id"]


def test_a_copy_is_a_new_row(cli, photos, ingested, capindex_home):
    shutil.copy(photos / "red.jpg", photos / "red-copy.jpg")
    result = cli("ingest", photos, "--workers", "0")
    assert summary_line(result).startswith("1 new, 4 unchanged, 0 moved")
    rows = check_library(capindex_home)
    assert rows[f"{photos}/red-copy.jpg"]["caption"] == rows[f"{photos}/red.jpg"]["caption"]


def test_swapped_files_swap_captions(cli, photos, capindex_home, fake):
    red, blue = photos / "red.jpg", photos / "blue.jpg"
    os.utime(red, ns=(10**18, 10**18))
    os.utime(blue, ns=(2 * 10**18, 2 * 10**18))
    cli("ingest", photos, "--workers", "0")
    fake.batches.clear()
    os.rename(red, photos / "tmp.jpg")
    os.rename(blue, red)
    os.rename(photos / "tmp.jpg", blue)
    result = cli("ingest", photos, "--workers", "0", "--batch-size", "1")
    assert summary_line(result).startswith("0 new, 2 unchanged, 0 moved, 2 changed, 0 failed; "
                                           "0 captioned")
    rows = check_library(capindex_home)
    assert rows[str(red)]["caption"] == "a dark blue picture"
    assert rows[str(blue)]["caption"] == "a dark red picture"


def test_file_moved_over_another(cli, photos, ingested, capindex_home):
    os.replace(photos / "blue.jpg", photos / "red.jpg")
    result = cli("ingest", photos, "--workers", "0")
    assert result.exit_code == 0
    assert summary_line(result).startswith("0 new, 2 unchanged, 1 moved")
    rows = check_library(capindex_home)
    assert set(rows) == {f"{photos}/red.jpg", f"{photos}/green.png", f"{photos}/sub/gray.jpg"}
    assert rows[f"{photos}/red.jpg"]["id"] == ingested[f"{photos}/blue.jpg"]["id"]
    assert rows[f"{photos}/red.jpg"]["caption"] == "a dark blue picture"


def test_recaption_redoes_captions_of_another_model(cli, photos, ingested, capindex_home):
    newer = FakeCaptioner("fake-v2")
    result = cli("ingest", photos, "--workers", "0", captioner=newer)
    assert result.exit_code == 0
    assert "4 images have captions from another model (use --recaption to redo them)" \
        in result.stderr
    assert newer.batches == []

    result = cli("ingest", photos, "--workers", "0", "--recaption", captioner=newer)
    assert "4 recaptioned" in summary_line(result)
    assert newer.captioned == 4
    rows = check_library(capindex_home)
    assert {r["model_id"] for r in rows.values()} == {"fake-v2"}
    assert {r["weights_hash"] for r in rows.values()} == {"hash-of-fake-v2"}
    assert json.loads(rows[f"{photos}/red.jpg"]["decoding"]) == newer.decoding
    assert {p: r["id"] for p, r in rows.items()} == {p: r["id"] for p, r in ingested.items()}


def test_moved_file_is_recaptioned_when_asked(cli, photos, ingested, capindex_home):
    os.rename(photos / "red.jpg", photos / "moved.jpg")
    newer = FakeCaptioner("fake-v2")
    result = cli("ingest", photos, "--workers", "0", "--recaption", captioner=newer)
    assert result.exit_code == 0
    rows = check_library(capindex_home)
    assert rows[f"{photos}/moved.jpg"]["model_id"] == "fake-v2"
    assert f"{photos}/red.jpg" not in rows


def test_other_folders_are_left_alone(cli, photos, tmp_path, capindex_home):
    other = tmp_path / "other"
    solid(other / "x.jpg")
    cli("ingest", photos, "--workers", "0")
    cli("ingest", other, "--workers", "0")
    result = cli("ingest", photos, "--workers", "0")
    assert "deleted" not in summary_line(result)
    assert f"{other}/x.jpg" in check_library(capindex_home)
    # A single file can be ingested on its own too, and a sibling folder's prefix is no match.
    solid(tmp_path / "photos-2" / "y.jpg")
    cli("ingest", tmp_path / "photos-2" / "y.jpg", "--workers", "0")
    cli("ingest", photos, "--workers", "0")
    assert f"{tmp_path}/photos-2/y.jpg" in check_library(capindex_home)


def test_exclude(cli, photos, ingested, capindex_home):
    result = cli("ingest", photos, "--workers", "0", "--exclude", "*.png", "--exclude", "sub")
    assert "2 deleted" in summary_line(result)
    assert set(check_library(capindex_home)) == {f"{photos}/red.jpg", f"{photos}/blue.jpg"}


def test_lost_index_and_parquet_are_rebuilt(cli, photos, ingested, capindex_home):
    (capindex_home / "keyword.sqlite").unlink()
    shutil.rmtree(capindex_home / "parquet")
    result = cli("ingest", photos, "--workers", "0")
    assert result.exit_code == 0
    check_library(capindex_home)
    assert search(cli, "red") == [f"{photos}/red.jpg"]
