"""A library on disk: its directory, where each store lives in it, and the writer lock.

A library is one directory::

    catalog.sqlite   the catalogue: one row per image (the source of truth; catalog.py)
    parquet/         the Parquet mirror of the catalogue (parquet.py)
    index/           the Whoosh keyword index (keyword.py)
    vectors/         the image vectors, one memory-mapped file (vectors.py)
    ingest.lock      held by the one ingest that may write at a time

Its location: `--library DIR`, else `$CAPINDEX_HOME`, else the platform's user
data directory (platformdirs: ~/.local/share/capindex on Linux).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from capindex.errors import CapindexError, EmptyLibraryError, LibraryBusyError

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
        self.index_dir = self.root / "index"
        self.vectors_dir = self.root / "vectors"
        self.lock_path = self.root / "ingest.lock"

    def __repr__(self) -> str:
        return f"LibraryDir({str(self.root)!r})"

    def exists(self) -> bool:
        return self.catalog_path.is_file()

    def open_catalog(self, create: bool = False) -> Catalog:
        """The catalogue; raises EmptyLibraryError when there is none and `create` is False."""
        from capindex.store.catalog import Catalog

        if not create and not self.exists():
            raise EmptyLibraryError(str(self.root))
        if create:
            try:
                self.root.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise CapindexError(
                    f"cannot create the library at {self.root}: {exc.strerror}; "
                    "choose another with --library DIR or CAPINDEX_HOME"
                ) from exc
        return Catalog(self.catalog_path, create=create)

    @contextmanager
    def ingest_lock(self) -> Iterator[None]:
        """Hold the library's writer lock, or raise LibraryBusyError at once.

        A POSIX record lock (lockf): the kernel drops it when the process dies,
        even by kill -9, and forked DataLoader workers do not inherit it.
        """
        import fcntl

        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                raise LibraryBusyError(str(self.root)) from exc
            yield
        finally:
            os.close(fd)  # closing releases the lock
