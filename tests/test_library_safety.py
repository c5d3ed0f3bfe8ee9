"""What a library lets other people do: the library folder is its owner's alone, and
capindex refuses one that another user owns or could write."""

from __future__ import annotations

import os
import stat

import pytest


@pytest.fixture
def library(cli, photos, capindex_home):
    assert cli("ingest", photos, "--workers", "0").exit_code == 0
    return capindex_home


def test_the_library_folder_is_its_owners_alone(library):
    assert stat.S_IMODE(library.stat().st_mode) == 0o700
    assert stat.S_IMODE((library / "keyword.sqlite").stat().st_mode) == 0o600


@pytest.mark.parametrize("where", ["", "index"])  # index/: an older capindex's Whoosh folder
def test_a_library_others_can_write_is_refused(cli, library, where):
    folder = library / where if where else library
    folder.mkdir(exist_ok=True)
    folder.chmod(0o777)
    try:
        result = cli("search", "red")
    finally:
        folder.chmod(0o700)
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: the library folder {folder} can be written by other users, who could change "
        f"what capindex reads; make it yours alone with: chmod go-w {folder}\n")


def test_a_library_of_another_user_is_refused(cli, library, monkeypatch):
    someone = os.geteuid() + 4242
    monkeypatch.setattr(os, "geteuid", lambda: someone)
    for args in (["search", "red"], ["info"], ["ingest", library.parent / "photos"]):
        result = cli(*args)
        assert result.exit_code == 1
        assert result.stderr.startswith(f"Error: the library folder {library} belongs to "
                                         "another user")
        assert len(result.stderr.splitlines()) == 1

