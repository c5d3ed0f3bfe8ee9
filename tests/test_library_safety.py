"""What a library lets other people do: a tampered index runs no code, the library folder is
its owner's alone, and capindex refuses one that another user owns or could write."""

from __future__ import annotations

import importlib
import io
import os
import pickle
import pkgutil
import stat

import pytest
import whoosh


class RunsCode:
    """Unpickled, it creates the folder `marker`: proof that a pickle ran code."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@pytest.fixture
def library(cli, photos, capindex_home):
    assert cli("ingest", photos, "--workers", "0").exit_code == 0
    return capindex_home


def toc_layout(toc) -> tuple[int, int, int]:
    """Where the table of contents holds its pickles: (schema start, schema end, segments start)."""
    from whoosh.filedb.structfile import StructFile

    with open(toc, "rb") as f:
        stream = StructFile(f)
        for _ in range(3):
            stream.read_varint()  # int, long and float sizes
        stream.read_int(), stream.read_int()  # byte order check, format version
        for _ in range(3):
            stream.read_varint()  # Whoosh release
        schema_start = stream.tell()
        stream.read_string()  # the pickled schema
        schema_end = stream.tell()
        stream.read_int(), stream.read_int()  # generation, unused
        return schema_start, schema_end, stream.tell()


def the_toc(library):
    (toc,) = (library / "index").glob("_MAIN_*.toc")
    return toc


def test_a_crafted_segment_list_runs_no_code(cli, library, tmp_path):
    marker = tmp_path / "ran"
    toc = the_toc(library)
    *_, segments = toc_layout(toc)
    toc.write_bytes(toc.read_bytes()[:segments] + pickle.dumps(RunsCode(str(marker))))
    result = cli("search", "red")
    assert not marker.exists(), "the index's pickle ran code"
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: the search index in {library / 'index'} is damaged")
    assert "not allowed in a Whoosh index" in result.stderr
    assert len(result.stderr.splitlines()) == 1
    result = cli("info")
    assert not marker.exists()
    assert "search index: needs a rebuild" in result.stdout


def test_a_crafted_schema_runs_no_code(cli, library, tmp_path):
    from whoosh.filedb.structfile import StructFile

    marker = tmp_path / "ran"
    toc = the_toc(library)
    start, end, _ = toc_layout(toc)
    buffer = io.BytesIO()
    StructFile(buffer).write_string(pickle.dumps(RunsCode(str(marker))))
    data = toc.read_bytes()
    toc.write_bytes(data[:start] + buffer.getvalue() + data[end:])
    result = cli("search", "red")
    assert not marker.exists(), "the schema's pickle ran code"
    assert result.exit_code == 1 and "not allowed in a Whoosh index" in result.stderr


def global_ref(module: str, name: str) -> bytes:
    """A protocol 4 pickle of the global `module`.`name` (STACK_GLOBAL)."""
    def text(value: str) -> bytes:
        return b"\x8c" + bytes([len(value)]) + value.encode() + b"\x94"

    return b"\x80\x04" + text(module) + text(name) + b"\x93\x94."


@pytest.mark.parametrize("payload", [
    pickle.dumps(RunsCode("/nonexistent/ran")),
    b"cos\nsystem\n(S'true'\ntR.",  # protocol 0: os.system("true")
    b"cbuiltins\neval\n(S'1'\ntR.",
    global_ref("whoosh.util.loading", "find_object"),  # a Whoosh function that imports anything
    global_ref("whoosh.lang.wordnet", "parse_file"),
    global_ref("whoosh.fields", "os.system"),  # a dotted name reaches through a module
    global_ref("whoosh.filedb.filestore", "FileStorage"),  # Whoosh, but not index data
])
def test_the_restricted_unpickler_refuses_everything_but_whooshs_data(payload):
    from capindex.store import whoosh_pickles

    with pytest.raises(pickle.UnpicklingError, match="not allowed in a Whoosh index"):
        whoosh_pickles.loads(payload)


def test_the_restricted_unpickler_reads_a_real_schema():
    from capindex.store import whoosh_pickles
    from capindex.store.keyword import make_schema

    schema = whoosh_pickles.loads(pickle.dumps(make_schema(), 2))
    assert schema.names() == make_schema().names()
    assert whoosh_pickles.loads(pickle.dumps({"a": frozenset({1}), "b": (1.5, b"x")}, 2)) == \
        {"a": frozenset({1}), "b": (1.5, b"x")}


def test_every_place_whoosh_unpickles_index_data_is_restricted():
    """After apply(), no Whoosh module that reads an index holds pickle's own loaders.

    Left alone: the writer's temporary sort runs (externalsort, multiproc: written and read
    back by the same ingest) and the unpickler of the old -110 index format, whose
    loader is removed (whoosh.legacy)."""
    from capindex.store import whoosh_pickles

    whoosh_pickles.apply()
    holders = set()
    for info in pkgutil.walk_packages(whoosh.__path__, "whoosh."):
        try:
            module = importlib.import_module(info.name)
        except Exception:  # dead modules of Whoosh that cannot be imported
            continue
        for value in vars(module).values():
            if value is pickle or value is pickle.load or value is pickle.loads:
                holders.add(info.name)
    assert holders <= {"whoosh.externalsort", "whoosh.multiproc", "whoosh.util.loading"}, holders
    assert not importlib.import_module("whoosh.index").toc_loaders


def test_the_library_folder_is_its_owners_alone(library):
    assert stat.S_IMODE(library.stat().st_mode) == 0o700
    assert stat.S_IMODE((library / "index").stat().st_mode) == 0o700


@pytest.mark.parametrize("where", ["", "index"])
def test_a_library_others_can_write_is_refused(cli, library, where):
    folder = library / where if where else library
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

