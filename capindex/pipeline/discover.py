"""Stage 1: find the image files under the paths given to `capindex ingest`.

Only `os.scandir` and `stat` here: no file is opened, so an unchanged library
re-scans fast. Problems found on the way (a broken symlink, a symlink loop, a
directory that cannot be listed) come out as `Found` entries with `error` set.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from fnmatch import fnmatch

from capindex.errors import describe_failure

# Matched on the lower-cased suffix, so .JPG and .Jpeg count too.
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})


@dataclass(frozen=True)
class Found:
    path: str  # as the OS names it (undecodable bytes as surrogate escapes)
    key: str  # the catalogue's `path`: absolute and valid UTF-8
    size: int | None = None
    mtime_ns: int | None = None
    error: str | None = None  # set when the file (or directory) cannot be used
    is_dir: bool = False  # an unreadable directory: its catalogued files are left alone


def catalog_path(path: str) -> str:
    """The catalogue key of an OS path: bytes that are not UTF-8 become \\xNN."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def is_under(key: str, root_key: str) -> bool:
    """Whether catalogue path `key` is `root_key` or inside it."""
    return key == root_key or key.startswith(root_key.rstrip(os.sep) + os.sep)


def discover(roots: Iterable[str], exclude: Sequence[str] = ()) -> Iterator[Found]:
    """Image files under `roots` (directories recursively, files as given), each once.

    Skipped: names starting with "." and anything matching an `exclude` glob
    (tested on the name and on the path relative to its root). Directory
    symlinks are followed, each directory at most once, so loops end.
    """
    seen: set[str] = set()
    visited: set[tuple[int, int]] = set()
    for root in roots:
        root = os.path.abspath(root)
        try:
            info = os.stat(root)
        except OSError as exc:
            found = _failed(root, exc)
        else:
            if stat.S_ISDIR(info.st_mode):
                for found in _walk(root, exclude, visited):
                    if found.key not in seen:
                        seen.add(found.key)
                        yield found
                continue
            found = _file(root, info)  # a file named explicitly: any extension
        if found.key not in seen:
            seen.add(found.key)
            yield found


def _walk(root: str, exclude: Sequence[str], visited: set) -> Iterator[Found]:
    """Depth first in name order, so files come out sorted by path."""
    stack: list[Iterator[os.DirEntry]] = []
    listing = _list(root, visited)
    if isinstance(listing, Found):
        yield listing
        return
    stack.append(iter(listing))
    while stack:
        entry = next(stack[-1], None)
        if entry is None:
            stack.pop()
            continue
        if entry.name.startswith(".") or _excluded(entry.path, root, exclude):
            continue
        try:
            is_dir = entry.is_dir()
        except OSError:
            is_dir = False  # a symlink loop: reported below if it has an image name
        if is_dir:
            listing = _list(entry.path, visited)
            if isinstance(listing, Found):
                yield listing
            elif listing:
                stack.append(iter(listing))
            continue
        if os.path.splitext(entry.name)[1].lower() not in IMAGE_EXTENSIONS:
            continue
        try:
            info = os.stat(entry.path)
        except OSError as exc:
            yield _failed(entry.path, exc)
        else:
            yield _file(entry.path, info)


def _list(directory: str, visited: set) -> list[os.DirEntry] | Found:
    """A directory's entries sorted by name; [] when already walked; a Found on error."""
    try:
        info = os.stat(directory)
        if (info.st_dev, info.st_ino) in visited:
            return []  # reached again through a symlink
        visited.add((info.st_dev, info.st_ino))
        with os.scandir(directory) as it:
            return sorted(it, key=lambda e: e.name)
    except OSError as exc:
        return Found(directory, catalog_path(directory), error=describe_failure(exc), is_dir=True)


def _excluded(path: str, root: str, patterns: Sequence[str]) -> bool:
    if not patterns:
        return False
    name = os.path.basename(path)
    relative = os.path.relpath(path, root)
    return any(fnmatch(name, p) or fnmatch(relative, p) for p in patterns)


def _file(path: str, info: os.stat_result) -> Found:
    key = catalog_path(path)
    if not stat.S_ISREG(info.st_mode):
        return Found(path, key, error="not a regular file")
    return Found(path, key, size=info.st_size, mtime_ns=info.st_mtime_ns)


def _failed(path: str, exc: OSError) -> Found:
    if exc.errno == errno.ENOENT and os.path.islink(path):
        reason = "broken symbolic link"
    else:
        reason = describe_failure(exc)
    return Found(path, catalog_path(path), error=reason)
