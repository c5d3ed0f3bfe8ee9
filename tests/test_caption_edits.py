"""The user's caption: stored beside the generated one, shown and searched instead of it,
kept across re-captioning and moves, exported, reverted; `capindex edit`; the upgrade of
a library written before the column existed."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys

import pyarrow.parquet as pq
import pytest
from fakes import FakeCaptioner
from helpers import check_library
from test_damage import make_read_only, run_read_only

import capindex
from capindex.errors import LibraryBusyError, PhotoNotFound
from capindex.store.parquet import ParquetMirror
from capindex.store.schema import SCHEMA_VERSION


@pytest.fixture
def lib(tmp_path, photos, fake):
    library = capindex.Library(tmp_path / "lib")
    library.ingest([photos], captioner=fake, workers=0)
    return library


def _id(lib, name):
    return next(h.id for h in lib.search("picture", 10, mode="keyword") if h.path.endswith(name))


def _jsonl(lib) -> dict[str, dict]:
    import io

    out = io.StringIO()
    lib.export(out, format="jsonl")
    return {json.loads(line)["path"].rsplit("/", 1)[-1]: json.loads(line)
            for line in out.getvalue().splitlines()}


def test_an_edit_wins_in_display_and_search_and_a_revert_undoes_it(lib, photos):
    red = _id(lib, "red.jpg")
    assert lib.search("crimson", mode="keyword") == []
    assert lib.edit_caption(red, "  A crimson  sunset\nover Brighton ") == red

    (hit,) = lib.search("crimson brighton", mode="keyword")
    assert (hit.id, hit.caption, hit.user_caption) == (red, "A crimson sunset over Brighton",
                                                       "A crimson sunset over Brighton")
    assert hit.generated_caption == "a dark red picture"
    assert hit.to_dict()["generated_caption"] == "a dark red picture"
    # the model's caption is still searched (the alt field), below a caption match
    assert red in [h.id for h in lib.search("red", mode="keyword")]
    photo = lib.photo(red)
    assert (photo["caption"], photo["generated_caption"], photo["user_caption"]) == (
        "A crimson sunset over Brighton", "a dark red picture", "A crimson sunset over Brighton")
    assert "embedding" not in photo and isinstance(photo["ingested_at"], str)
    json.dumps(photo)  # every value is JSON's

    rows = check_library(lib.root)  # catalogue, mirror and index agree (new seq everywhere)
    assert rows[str(photos / "red.jpg")]["user_caption"] == "A crimson sunset over Brighton"
    mirror = ParquetMirror(lib.dir.parquet_dir).read().to_pylist()
    assert [r["user_caption"] for r in mirror if r["id"] == red] == ["A crimson sunset over Brighton"]
    exported = _jsonl(lib)["red.jpg"]
    assert (exported["caption"], exported["user_caption"]) == (
        "a dark red picture", "A crimson sunset over Brighton")

    assert lib.revert_caption(str(photos / "red.jpg")) == red  # by path this time
    assert lib.search("crimson", mode="keyword") == []
    assert lib.photo(red)["caption"] == "a dark red picture"
    assert lib.photo(red)["user_caption"] is None
    check_library(lib.root)


def test_edits_refuse_blank_text_and_unknown_photos(lib, photos):
    red = _id(lib, "red.jpg")
    with pytest.raises(ValueError, match="the caption is empty"):
        lib.edit_caption(red, " \n\t")
    with pytest.raises(PhotoNotFound, match=re.escape(f"no photo with id 999 in the library at {lib.root}")):
        lib.edit_caption(999, "words")
    with pytest.raises(PhotoNotFound, match=r"nowhere\.jpg is not in the library"):
        lib.edit_caption(str(photos / "nowhere.jpg"), "words")
    assert lib.photo(999) is None and lib.photo_path(999) is None


def test_the_user_caption_survives_recaptioning_another_model_and_a_move(lib, photos):
    red = _id(lib, "red.jpg")
    lib.edit_caption(red, "my red square")
    other = FakeCaptioner("fake-v2")
    summary = lib.ingest([photos], captioner=other, workers=0, recaption=True)
    assert summary.recaptioned == 4 and other.captioned == 4
    photo = lib.photo(red)
    assert (photo["model_id"], photo["user_caption"], photo["caption"]) == (
        "fake-v2", "my red square", "my red square")
    (photos / "moved").mkdir()
    (photos / "red.jpg").rename(photos / "moved" / "red.jpg")
    assert lib.ingest([photos], captioner=other, workers=0).moved == 1
    photo = lib.photo(red)
    assert photo["path"].endswith("moved/red.jpg") and photo["user_caption"] == "my red square"
    assert [h.id for h in lib.search("square", mode="keyword")] == [red]
    check_library(lib.root)


def test_an_edit_is_refused_while_an_ingest_writes(lib):
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import fcntl, os, time\n"
         f"fd = os.open({str(lib.dir.lock_path)!r}, os.O_RDWR)\n"
         "fcntl.lockf(fd, fcntl.LOCK_EX)\nprint('locked', flush=True)\ntime.sleep(60)\n"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(LibraryBusyError, match="another capindex ingest is already writing"):
            lib.edit_caption(_id(lib, "red.jpg"), "words")
    finally:
        holder.kill()
        holder.wait()
    assert lib.photo(_id(lib, "red.jpg"))["user_caption"] is None


def test_capindex_edit_by_path_and_id(cli, photos, capindex_home):
    cli("ingest", photos, "--workers", "0")
    red = photos / "red.jpg"
    result = cli("edit", red, "a", "crimson", "square")
    assert result.exit_code == 0, result.output
    lib = capindex.Library(capindex_home)
    red_id = _id(lib, "red.jpg")
    assert result.stdout == f"{red} (id {red_id}): a crimson square\n"
    found = cli("search", "crimson", "--mode", "keyword", "--json")
    assert [h["user_caption"] for h in json.loads(found.stdout)] == ["a crimson square"]

    result = cli("edit", "--id", red_id, "--revert")
    assert (result.exit_code, result.stdout) == (0, f"{red} (id {red_id}): a dark red picture "
                                                    "(generated)\n")
    result = cli("edit", "--id", red_id, "scarlet")
    assert result.exit_code == 0 and lib.photo(red_id)["user_caption"] == "scarlet"


@pytest.mark.parametrize("args, message", [
    (["{photos}/nowhere.jpg", "words"], "Error: {photos}/nowhere.jpg is not in the library at "
                                         "{home}; see capindex search or capindex export for "
                                         "what it holds\n"),
    (["--id", "999", "words"], "Error: no photo with id 999 in the library at {home}; see "
                               "capindex search or capindex export for what it holds\n"),
    (["{photos}/red.jpg", " "], "Error: the caption is empty; give the new caption, or --revert "
                                "to the generated one\n"),
    (["{photos}/red.jpg"], "Error: the caption is empty; give the new caption, or --revert to "
                           "the generated one\n"),
])
def test_capindex_edit_errors_are_one_line(cli, photos, capindex_home, args, message):
    cli("ingest", photos, "--workers", "0")
    result = cli("edit", *[a.format(photos=photos) for a in args])
    assert (result.exit_code, result.stdout) == (1, "")
    assert result.stderr == message.format(photos=photos, home=capindex_home)


def test_capindex_edit_usage_errors(cli, photos):
    cli("ingest", photos, "--workers", "0")
    both = cli("edit", photos / "red.jpg", "words", "--revert")
    assert both.exit_code == 2 and "give a CAPTION or --revert, not both" in both.stderr
    nothing = cli("edit")
    assert nothing.exit_code == 2 and "name the photo: PHOTO (a catalogued file) or --id N" in \
        nothing.stderr


def test_a_read_only_library_refuses_an_edit_in_one_line(tmp_path, photos, fake):
    library = tmp_path / "lib"
    capindex.Library(library).ingest([photos], captioner=fake, workers=0)
    paths = make_read_only(library)
    try:
        edit = run_read_only(["edit", photos / "red.jpg", "words"], library, tmp_path)
    finally:
        for path in paths:
            path.chmod(path.stat().st_mode | 0o200)
    assert edit.returncode == 1
    assert edit.stderr.startswith(f"Error: cannot write to the library at {library} (")
    assert edit.stderr.endswith("); editing a caption needs to (search, export and info work "
                                "on a read-only library)\n")
    assert capindex.Library(library).photo(1)["user_caption"] is None


def downgrade_to_schema_2(root) -> None:
    """Make `root` look as a library written before schema 3: the catalogue without the
    user_caption and concepts columns and the taken_at index, Parquet parts of version 2."""
    db = sqlite3.connect(root / "catalog.sqlite")
    db.execute("DROP INDEX ix_images_taken_at")
    db.execute('ALTER TABLE images DROP COLUMN "user_caption"')
    db.execute('ALTER TABLE images DROP COLUMN "concepts"')
    db.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    db.commit()
    db.close()
    for part in (root / "parquet").glob("*.parquet"):
        table = pq.read_table(part).drop_columns(["user_caption", "concepts"])
        pq.write_table(table.replace_schema_metadata({"capindex.schema_version": "2"}), part)


def test_a_library_from_schema_2_is_upgraded_by_an_edit_and_keeps_everything(lib, photos):
    before = _jsonl(lib)
    downgrade_to_schema_2(lib.root)
    # search reads an older catalogue as it is, and does not change it
    assert [h.path for h in lib.search("red", mode="keyword")] == [str(photos / "red.jpg")]
    db = sqlite3.connect(lib.root / "catalog.sqlite")
    assert db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == ("2",)
    db.close()
    lib.edit_caption(str(photos / "red.jpg"), "my red square")
    after = _jsonl(lib)
    assert set(after) == set(before)
    for name, row in after.items():
        user = row.pop("user_caption")
        assert user == ("my red square" if name == "red.jpg" else None)
        old = dict(before[name])
        old.pop("user_caption")
        if name == "red.jpg":  # its new seq, nothing else
            assert row.pop("seq") > old.pop("seq")
        assert row == old
    rows = check_library(lib.root)  # the mirror was rewritten in the new schema
    assert pq.read_schema(next(lib.dir.parquet_dir.glob("*.parquet"))).metadata[
        b"capindex.schema_version"] == str(SCHEMA_VERSION).encode()
    assert len(rows) == 4
    db = sqlite3.connect(lib.root / "catalog.sqlite")
    assert db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (
        str(SCHEMA_VERSION),)
    assert ("ix_images_taken_at",) in db.execute(
        "SELECT name FROM sqlite_master WHERE type = 'index'").fetchall()
    db.close()
    red = _id(lib, "red.jpg")
    assert [h.id for h in lib.search("square", mode="keyword")] == [red]


def test_a_library_from_schema_2_is_upgraded_by_an_ingest(lib, photos, fake):
    downgrade_to_schema_2(lib.root)
    summary = lib.ingest([photos], captioner=fake, workers=0)
    assert (summary.unchanged, summary.captioned) == (4, 0)
    rows = check_library(lib.root)
    assert all(row["user_caption"] is None for row in rows.values())
    assert lib.search("red", mode="keyword")


def test_ingest_rebuild_keeps_the_users_captions(lib, photos, fake):
    red = _id(lib, "red.jpg")
    lib.edit_caption(red, "Sunset over Brighton")
    lib.ingest([photos], captioner=fake, workers=0, rebuild=True)

    (hit,) = lib.search("brighton", mode="keyword")
    assert hit.path.endswith("red.jpg")
    assert (hit.user_caption, hit.generated_caption) == ("Sunset over Brighton",
                                                         "a dark red picture")
    assert _jsonl(lib)["red.jpg"]["user_caption"] == "Sunset over Brighton"
    assert sum(1 for row in _jsonl(lib).values() if row["user_caption"]) == 1
