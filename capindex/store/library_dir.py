"""A library on disk: its directory, where each store lives in it, and the writer lock.

A library is one directory::

    catalog.sqlite   the catalogue: one row per image (the source of truth; catalog.py)
    parquet/         the Parquet mirror of the catalogue (parquet.py)
    keyword.sqlite   the keyword index, SQLite FTS5 (keyword.py; keyword.sqlite.sha256 its record)
    vectors/         the image vectors, one memory-mapped file (vectors.py)
    thumbs/          JPEG thumbnails, SHA256-SIZE.jpg, made on first request (thumbnails.py)
    ingest.lock      held by the one writer (an ingest, a caption edit) at a time

Its location: `--library DIR`, else `$CAPINDEX_HOME`, else the platform's user
data directory (platformdirs: ~/.local/share/capindex on Linux).

Who may change it: the library folder is created owner-only (0o700), and a library whose
folder belongs to another user or may be written by group or others is refused
(`check_owner`): whoever can write it could change what capindex shows and searches
(captions, paths to open, thumbnails). `search`, `export` and `info` only read, so a
read-only library works. (`index/`, the Whoosh index of an older capindex, is checked
the same way while it is there; the next ingest deletes it.)
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from capindex.errors import (
    CapindexError,
    CatalogDamaged,
    EmptyLibraryError,
    LibraryBusyError,
    UnsafeLibraryError,
)

if TYPE_CHECKING:  # SQLAlchemy loads only when a catalogue is opened
    from capindex.store.catalog import Catalog

APP_NAME = "capindex"
ENV_VAR = "CAPINDEX_HOME"


def default_library_dir() -> Path:
    """$CAPINDEX_HOME when set, else the platform's user data directory."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir(APP_NAME, appauthor=False))


class LibraryDir:
    """The paths of one library, and the catalogue inside it."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = (Path(root).expanduser() if root else default_library_dir()).absolute()
        self.catalog_path = self.root / "catalog.sqlite"
        self.parquet_dir = self.root / "parquet"
        self.keyword_path = self.root / "keyword.sqlite"
        self.legacy_index_dir = self.root / "index"  # an older capindex's Whoosh index
        self.vectors_dir = self.root / "vectors"
        self.thumbs_dir = self.root / "thumbs"
        self.lock_path = self.root / "ingest.lock"
        self._vectors = None  # vector_index(), made on first use
        self._keyword_cache = None  # keyword_cache(), made on first use

    def __repr__(self) -> str:
        return f"LibraryDir({str(self.root)!r})"

    def exists(self) -> bool:
        return self.catalog_path.is_file()

    def check_owner(self) -> None:
        """UnsafeLibraryError unless the library folder (and an older capindex's index
        folder, while it is there) belong to the user running capindex and only that user
        may write them."""
        for folder in (self.root, self.legacy_index_dir):
            try:
                info = folder.stat()
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise CapindexError(
                    f"cannot open the library at {self.root}: {exc.strerror}") from exc
            if info.st_uid != os.geteuid():
                raise UnsafeLibraryError(
                    f"the library folder {folder} belongs to another user ({_user(info.st_uid)}); "
                    "capindex opens only its own user's libraries: run it as that user, or "
                    "choose another library with --library DIR")
            if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
                raise UnsafeLibraryError(
                    f"the library folder {folder} can be written by other users, who could "
                    f"change what capindex reads; make it yours alone with: chmod go-w {folder}")

    def derived_data(self) -> list[str]:
        """What is here that was made from a catalogue: a Parquet mirror, a search index."""
        found = []
        if any(self.parquet_dir.glob("part-*.parquet")):
            found.append("a Parquet mirror")
        if self.keyword_path.exists() or any(self.legacy_index_dir.glob("_MAIN_*.toc")):
            found.append("a search index")
        return found

    def open_catalog(self, create: bool = False, read_only: bool = False) -> Catalog:
        """The catalogue, created when there is none and `create` (ingest, under the lock);
        `read_only` for commands that only read (it works in a read-only library). Raises
        EmptyLibraryError when there is none and `create` is False, CatalogDamaged when it
        is damaged, or missing while data made from it is still here, and
        UnsafeLibraryError (check_owner)."""
        from capindex.store.catalog import Catalog, create_catalog

        self.check_owner()
        if not self.exists():
            derived = self.derived_data()
            if derived:
                raise CatalogDamaged(str(self.catalog_path), "is missing, but the library "
                                     f"holds {' and '.join(derived)} made from it")
            if not create:
                raise EmptyLibraryError(str(self.root))
            self.make_root()
            create_catalog(self.catalog_path)
        return Catalog(self.catalog_path, read_only=read_only and not create)

    def read_catalog(self):
        """The catalogue for search's reads, without loading SQLAlchemy
        (store/catalog_reader.py); the same checks and errors as open_catalog(read_only=True)."""
        from capindex.store.catalog_reader import CatalogReader

        self.check_owner()
        if not self.exists():
            return self.open_catalog(read_only=True)  # raises what it should
        return CatalogReader(self.catalog_path, lambda: self.open_catalog(read_only=True))

    def vector_index(self):
        """The library's `VectorIndex`, one per LibraryDir: a process that searches again
        (a web server's) keeps the file mapped instead of mapping and faulting it in anew."""
        if self._vectors is None:
            from capindex.store.vectors import VectorIndex

            self._vectors = VectorIndex(self.vectors_dir)
        return self._vectors

    def keyword_cache(self):
        """What the library's keyword searches keep between searches (one per LibraryDir,
        as `vector_index`): `keyword_postings.SearchCache`."""
        if self._keyword_cache is None:
            from capindex.store.keyword_postings import SearchCache

            self._keyword_cache = SearchCache()
        return self._keyword_cache

    def make_root(self) -> None:
        """Create the library folder, owner-only."""
        try:
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise CapindexError(
                f"cannot create the library at {self.root}: {exc.strerror}; "
                "choose another with --library DIR or CAPINDEX_HOME"
            ) from exc

    def set_aside(self) -> tuple[Path | None, Path | None]:
        """Start over (`ingest --rebuild`, under the lock): move the catalogue aside as
        catalog.sqlite.damaged-TIME (with its -wal and -shm files) and the Parquet mirror
        as parquet.before-rebuild-TIME, and delete the search index (words only, rebuilt
        from the new catalogue). Returns where each went (None: there was none)."""
        import shutil

        stamp = time.strftime("%Y%m%dT%H%M%S")
        while any(self.root.glob(f"*.*-{stamp}*")):  # never over an earlier one
            stamp += "b"
        catalogue = mirror = None
        old = self.catalog_path.with_name(f"{self.catalog_path.name}.damaged-{stamp}")
        for suffix in ("", "-wal", "-shm"):
            source = self.catalog_path.with_name(self.catalog_path.name + suffix)
            if source.exists():
                source.rename(old.with_name(old.name + suffix))
                catalogue = old if not suffix else catalogue
        if self.parquet_dir.exists():
            mirror = self.root / f"parquet.before-rebuild-{stamp}"
            self.parquet_dir.rename(mirror)
        for suffix in ("", "-wal", "-shm", ".sha256"):
            self.keyword_path.with_name(self.keyword_path.name + suffix).unlink(missing_ok=True)
        if self.legacy_index_dir.exists():
            shutil.rmtree(self.legacy_index_dir)
        return catalogue, mirror

    @contextmanager
    def ingest_lock(self, purpose: str = "ingest") -> Iterator[None]:
        """Hold the library's writer lock, or raise LibraryBusyError at once. `purpose`
        names the writer in the message for a library that cannot be written.

        A POSIX record lock (lockf): the kernel drops it when the process dies,
        even by kill -9, and forked DataLoader workers do not inherit it.
        """
        import fcntl

        self.make_root()
        self.check_owner()
        try:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise CapindexError(
                f"cannot write to the library at {self.root} ({exc.strerror}); {purpose} "
                "needs to (search, export and info work on a read-only library)") from exc
        try:
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                raise LibraryBusyError(str(self.root)) from exc
            yield
        finally:
            os.close(fd)  # closing releases the lock


def _user(uid: int) -> str:
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"
