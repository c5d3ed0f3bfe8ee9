"""A damaged library: each store says in one line what is wrong and what to do, and nothing
that can be rebuilt from the catalogue stays broken.

The search index and the Parquet mirror are derived from the catalogue: damaged or gone,
the next ingest rebuilds them (info says so, search says how). The catalogue is the source
of truth: damaged or gone, every command stops with one line, and `ingest --rebuild` starts
over from the files, keeping the old catalogue aside. A read-only library can still be
searched, exported and described.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import check_library, make_whoosh_era

from capindex.store.library_dir import LibraryDir

RUNNER = Path(__file__).with_name("run_fake_ingest.py")
REPO = RUNNER.parent.parent


@pytest.fixture
def library(cli, photos, capindex_home) -> Path:
    assert cli("ingest", photos, "--workers", "0").exit_code == 0
    return capindex_home


def one_error_line(result, *parts: str) -> str:
    """The command failed with exit 1 and a single `Error: ...` line holding every part."""
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for part in parts:
        assert part in lines[0]
    return lines[0]


# -- the search index (derived): rebuilt by the next ingest ---------------------------------

def garble_index(library: Path) -> None:
    (library / "keyword.sqlite").write_bytes(b"not an SQLite file at all" * 100)


def damage_pages(library: Path) -> None:
    """Overwrite the middle of the index file: SQLite's own checks see it."""
    path = library / "keyword.sqlite"
    data = bytearray(path.read_bytes())
    page = 4096
    for start in range(page, len(data), page):  # every page but the header's
        data[start + 8:start + 200] = b"\xff" * 192
    path.write_bytes(bytes(data))


def delete_index(library: Path) -> None:
    (library / "keyword.sqlite").unlink()


def whoosh_era(library: Path) -> None:
    make_whoosh_era(library)


@pytest.mark.parametrize("damage, problem", [
    (garble_index, "damaged: it could not be read"),
    (damage_pages, "damaged"),
    (delete_index, "missing"),
    (whoosh_era, "from an older capindex (Whoosh)"),
])
def test_a_damaged_index_is_reported_then_rebuilt_by_ingest(cli, photos, library, fake, damage,
                                                            problem):
    damage(library)

    result = cli("info")
    assert result.exit_code == 0, result.output
    assert "search index: needs a rebuild (" in result.stdout and problem in result.stdout
    assert "capindex ingest" in result.stdout
    assert "4 documents" not in result.stdout

    one_error_line(cli("search", "red"), "the search index in", problem,
                   "rebuild it from the catalogue with: capindex ingest")

    before = fake.captioned
    result = cli("ingest", photos, "--workers", "0")
    assert result.exit_code == 0, result.output
    assert "note: the search index " in result.stderr and "rebuilding it from the catalogue" \
        in result.stderr
    assert fake.captioned == before  # rebuilt from the catalogue: nothing captioned again
    assert len(check_library(library)) == 4
    result = cli("search", "red")
    assert result.exit_code == 0 and "red.jpg" in result.stdout
    assert "search index: 4 documents" in cli("info").stdout
    assert not (library / "index").exists()  # an older capindex's Whoosh folder is gone


def test_an_index_that_is_fine_is_not_rebuilt(cli, photos, library):
    result = cli("ingest", photos, "--workers", "0")
    assert result.exit_code == 0
    assert "note:" not in result.stderr


def test_damaged_parquet_heals_on_the_next_ingest(cli, photos, library, fake):
    (part,) = (library / "parquet").glob("part-*.parquet")
    os.truncate(part, part.stat().st_size // 2)
    result = cli("info")
    assert result.exit_code == 0, result.output
    assert "parquet: 0 rows in 1 files (1 damaged; the next capindex ingest rewrites them " \
        "from the catalogue)" in result.stdout
    before = fake.captioned
    result = cli("ingest", photos, "--workers", "0")
    assert result.exit_code == 0, result.output
    assert fake.captioned == before
    assert len(check_library(library)) == 4
    assert "parquet: 4 rows in 1 files\n" in cli("info").stdout


# -- the catalogue (source of truth): one line, then restore or --rebuild -------------------

def empty_catalogue(library: Path) -> None:
    os.truncate(library / "catalog.sqlite", 0)


def truncated_catalogue(library: Path) -> None:
    path = library / "catalog.sqlite"
    os.truncate(path, path.stat().st_size // 2)


def garbled_catalogue(library: Path) -> None:
    path = library / "catalog.sqlite"
    data = bytearray(path.read_bytes())
    data[:4096] = bytes((i * 37 + 11) % 256 for i in range(4096))
    path.write_bytes(bytes(data))


def missing_catalogue(library: Path) -> None:
    (library / "catalog.sqlite").unlink()


CATALOGUE_DAMAGE = [
    (empty_catalogue, "is empty (0 bytes)"),
    (truncated_catalogue, "is damaged ("),
    (garbled_catalogue, "is damaged ("),
    (missing_catalogue, "is missing, but the library holds"),
]


@pytest.mark.parametrize("damage, problem", CATALOGUE_DAMAGE)
def test_a_damaged_catalogue_stops_every_command_with_one_line(cli, photos, library, fake,
                                                              tmp_path, damage, problem):
    catalogue = library / "catalog.sqlite"
    damage(library)
    kept = catalogue.read_bytes() if catalogue.exists() else None
    mirror = sorted(p.name for p in (library / "parquet").iterdir())
    what_to_do = "restore it from a backup, or start over from your photos with: " \
                 "capindex ingest --rebuild"
    for args in (["info"], ["search", "red"], ["export", tmp_path / "out.csv"]):
        one_error_line(cli(*args), f"the catalogue {catalogue} {problem}", what_to_do)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["library", "photos"]  # no export
    before = fake.captioned
    one_error_line(cli("ingest", photos, "--workers", "0"), problem, what_to_do)
    assert fake.captioned == before  # nothing captioned again behind the user's back
    assert (catalogue.read_bytes() if catalogue.exists() else None) == kept  # nothing changed
    assert sorted(p.name for p in (library / "parquet").iterdir()) == mirror


@pytest.mark.parametrize("damage, problem", CATALOGUE_DAMAGE)
def test_ingest_rebuild_starts_over_and_keeps_the_old_catalogue_aside(cli, photos, library,
                                                                      fake, damage, problem):
    damage(library)
    kept = (library / "catalog.sqlite").read_bytes() if damage is not missing_catalogue \
        else None
    old_parts = sorted(p.read_bytes() for p in (library / "parquet").glob("*.parquet"))
    before = fake.captioned

    result = cli("ingest", "--rebuild", photos, "--workers", "0")
    assert result.exit_code == 0, result.output
    assert fake.captioned == before + 4  # every file captioned again
    rows = check_library(library)
    assert sorted(Path(p).name for p in rows) == ["blue.jpg", "gray.jpg", "green.png", "red.jpg"]
    assert "search index: 4 documents" in cli("info").stdout
    set_aside = list(library.glob("catalog.sqlite.damaged-*"))
    if kept is None:
        assert not set_aside
    else:
        (old,) = [p for p in set_aside if not p.name.endswith(("-wal", "-shm"))]
        assert old.read_bytes() == kept  # the damaged catalogue is kept, unchanged
        assert f"note: moved the catalogue aside to {old}" in result.stderr
    (mirror,) = library.glob("parquet.before-rebuild-*")
    assert sorted(p.read_bytes() for p in mirror.glob("*.parquet")) == old_parts
    assert f"Parquet mirror{'' if kept is not None else ' aside'} to {mirror}" in result.stderr


def test_rebuild_of_a_healthy_library_keeps_the_old_catalogue_too(cli, photos, library):
    with sqlite3.connect(library / "catalog.sqlite") as db:
        before = db.execute("select path, caption from images order by path").fetchall()
    result = cli("ingest", "--rebuild", photos, "--workers", "0")
    assert result.exit_code == 0, result.output
    (old,) = [p for p in library.glob("catalog.sqlite.damaged-*")
              if not p.name.endswith(("-wal", "-shm"))]
    with sqlite3.connect(f"file:{old}?mode=ro", uri=True) as db:
        assert db.execute("select path, caption from images order by path").fetchall() == before
    assert len(check_library(library)) == 4


def test_a_library_whose_catalogue_is_being_created_is_not_damaged(cli, photos, capindex_home):
    """The catalogue is created under a temporary name and renamed when complete, so
    no file named catalog.sqlite ever lacks its tables."""
    LibraryDir(capindex_home).open_catalog(create=True).close()
    assert not list(capindex_home.glob("catalog.sqlite.new*"))
    with sqlite3.connect(capindex_home / "catalog.sqlite") as db:
        tables = {name for (name,) in db.execute("select name from sqlite_master")}
    assert {"images", "meta"} <= tables
    assert cli("ingest", photos, "--workers", "0").exit_code == 0


# -- a read-only library: search, export and info still work --------------------------------

def run_read_only(args: list, library: Path, tmp_path: Path):
    """`capindex ARGS` in a subprocess that cannot write the library (as root: without
    CAP_DAC_OVERRIDE, so the permission bits hold for root too)."""
    prefix = []
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv: root writes a read-only folder")
        drop = "-dac_override,-dac_read_search"
        prefix = [setpriv, f"--bounding-set={drop}", f"--inh-caps={drop}"]
    proc = subprocess.run(
        [*prefix, sys.executable, str(RUNNER), "0", "1024", *map(str, args)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
        env={**os.environ, "CAPINDEX_HOME": str(library), "PYTHONPATH": str(REPO)})
    if proc.returncode and "setpriv" in proc.stderr:
        pytest.skip(f"setpriv cannot drop capabilities here: {proc.stderr.strip()}")
    return proc


def make_read_only(library: Path) -> list[Path]:
    paths = [library, *library.rglob("*")]
    for path in paths:
        path.chmod(path.stat().st_mode & ~0o222)
    return paths


def test_a_read_only_library_can_be_searched_exported_and_described(library, photos,
                                                                    tmp_path):
    listing = sorted(p.relative_to(library).as_posix() for p in library.rglob("*"))
    paths = make_read_only(library)
    out = tmp_path / "out"
    out.mkdir()
    try:
        search = run_read_only(["search", "red"], library, tmp_path)
        export = run_read_only(["export", out / "all.csv"], library, tmp_path)
        info = run_read_only(["info"], library, tmp_path)
        ingest = run_read_only(["ingest", photos, "--workers", "0"], library, tmp_path)
    finally:
        for path in paths:
            path.chmod(path.stat().st_mode | 0o200)
    assert search.returncode == 0, search.stderr
    assert "red.jpg" in search.stdout
    assert export.returncode == 0, export.stderr
    assert len((out / "all.csv").read_text().splitlines()) == 5
    assert info.returncode == 0, info.stderr
    assert "images: 4 (4 captioned, 0 failed)" in info.stdout
    assert "search index: 4 documents" in info.stdout
    assert ingest.returncode == 1
    assert ingest.stderr.startswith(f"Error: cannot write to the library at {library} (")
    assert len(ingest.stderr.splitlines()) == 1, ingest.stderr
    assert sorted(p.relative_to(library).as_posix() for p in library.rglob("*")) == listing
    assert len(check_library(library)) == 4
