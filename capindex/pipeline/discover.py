"""Stage 1: find the image files under the paths given to `capindex ingest`.

Only `os.scandir` and `stat` here: no file is opened, so an unchanged library
re-scans fast. Problems found on the way (a broken symlink, a symlink loop, a
directory that cannot be listed) come out as `Found` entries with `error` set.

A folder that cannot be read right now (it cannot be listed or entered, its link's
target is missing, or a PATH itself cannot be reached) comes out as one entry with
`is_dir` set: the files catalogued under it are left as they are, since nothing says
they are gone. Each file and folder is found once per run, under the first path
that reaches it (symlinks and hard links to it are skipped).
"""

from __future__ import annotations

import errno
import os
import re
import stat
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from fnmatch import fnmatch
from stat import S_ISREG

from capindex.errors import describe_failure

# Matched on the lower-cased suffix, so .JPG and .Jpeg count too.
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})


# Not frozen: a frozen dataclass is built through object.__setattr__, four times slower,
# and a re-scan makes one per file (a million in a large library).
@dataclass(slots=True)
class Found:
    path: str  # as the OS names it (undecodable bytes as surrogate escapes)
    key: str  # the catalogue's `path`: absolute and valid UTF-8
    size: int | None = None
    mtime_ns: int | None = None
    error: str | None = None  # set when the file (or directory) cannot be used
    is_dir: bool = False  # a directory that cannot be read: its catalogued files are left alone
    # A link (not named as an image) that cannot be followed: a folder only if the
    # catalogue holds files under it (`plan_ingest` decides); else it is no image.
    maybe_dir: bool = False


def catalog_path(path: str) -> str:
    """The catalogue key of an OS path: bytes that are not UTF-8 become \\xNN."""
    if path.isascii():  # the key is the path itself (most paths; a quarter of a re-scan's time)
        return path
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def os_path(key: str) -> str:
    """The OS path of catalogue path `key`: each \\xNN back to the byte it stands for
    (`catalog_path`'s inverse; a name holding that text literally is taken as it is when
    such a file exists)."""
    if "\\x" not in key or os.path.lexists(key):
        return key
    return os.fsdecode(re.sub(rb"\\x([0-9a-fA-F]{2})", lambda m: bytes([int(m.group(1), 16)]),
                              key.encode("utf-8")))


def is_under(key: str, root_key: str) -> bool:
    """Whether catalogue path `key` is `root_key` or inside it."""
    return key == root_key or key.startswith(root_key.rstrip(os.sep) + os.sep)


def discover(roots: Iterable[str], exclude: Sequence[str] = ()) -> Iterator[Found]:
    """Image files under `roots` (directories recursively, files as given), each once.

    Skipped: names starting with "." and anything matching an `exclude` glob
    (tested on the name and on the path relative to its root). Directory
    symlinks are followed, each directory at most once, so loops end; a file
    reached again (by a symlink or a hard link: same device and inode) is skipped.
    """
    roots = list(roots)
    seen: set[str] = set()
    visited: set[int] = set()  # `_identity` of the directories and files found
    for root in roots:
        root = os.path.abspath(root)
        try:
            info = os.stat(root)
        except OSError as exc:  # a PATH that cannot be reached now: keep what is under it
            found = _unreachable(root, exc)
        else:
            if stat.S_ISDIR(info.st_mode):
                if len(roots) == 1:  # one walk finds each path once: no set of them all
                    yield from _walk(root, exclude, visited)
                    continue
                for found in _walk(root, exclude, visited):
                    if found.key not in seen:
                        seen.add(found.key)
                        yield found
                continue
            found = _file(root, info, visited)  # a file named explicitly: any extension
        if found is not None and found.key not in seen:
            seen.add(found.key)
            yield found


def _walk(root: str, exclude: Sequence[str], visited: set) -> Iterator[Found]:
    """Depth first, each folder's entries in order of name (a folder's name + "/"), so
    files come out sorted by path (as the catalogue's path index sorts them)."""
    listing = _list(root, visited)
    if isinstance(listing, Found):
        yield listing
        return
    stack: list[Iterator[os.DirEntry]] = [iter(listing)]
    while stack:
        for entry in stack[-1]:  # left by `break` to walk a folder, resumed after it
            name = entry.name
            if name[0] == "." or (exclude and _excluded(entry.path, root, exclude)):
                continue
            dot = name.rfind(".")  # os.path.splitext's suffix, without its cost per file
            image_name = dot > 0 and name[dot:].lower() in IMAGE_EXTENSIONS
            path = entry.path
            try:
                is_dir = entry.is_dir()  # follows a symlink; a missing target is False
            except OSError as exc:  # a link that cannot be followed (loop, no permission...)
                if not image_name:
                    yield _unreachable(path, exc, maybe_dir=True)
                    continue
                is_dir = False  # reported below
            if is_dir:
                listing = _list(path, visited)
                if isinstance(listing, Found):
                    yield listing
                elif listing:
                    stack.append(iter(listing))
                    break
                continue
            if not image_name:
                if entry.is_symlink() and not os.path.exists(path):
                    # Perhaps a folder on a drive that is not mounted: see Found.maybe_dir.
                    yield Found(path, catalog_path(path), error="target missing",
                                is_dir=True, maybe_dir=True)
                continue
            try:
                info = os.stat(path)
            except OSError as exc:
                yield _failed(path, exc)
                continue
            # `_file`, inlined: this runs once per file (a million in a large library).
            if not S_ISREG(info.st_mode):
                yield Found(path, catalog_path(path), error="not a regular file")
                continue
            identity = info.st_dev << 64 | info.st_ino  # `_identity`
            if identity in visited:
                continue  # a symlink or hard link to a file found already
            visited.add(identity)
            yield Found(path, path if path.isascii() else catalog_path(path),
                        info.st_size, info.st_mtime_ns)
        else:
            stack.pop()


def _list(directory: str, visited: set) -> list[os.DirEntry] | Found:
    """A directory's entries in walking order (`_walk`); [] when already walked; a Found
    when it cannot be listed, or listed but not entered (no search permission)."""
    try:
        # Through "." the kernel checks that the directory can be entered, which
        # listing it does not: without that, each file in it would fail on its own.
        info = os.stat(os.path.join(directory, "."))
        if _identity(info) in visited:
            return []  # reached again through a symlink
        visited.add(_identity(info))
        with os.scandir(directory) as it:
            return sorted(it, key=_walk_order)
    except OSError as exc:
        return _unreachable(directory, exc)


def _walk_order(entry: os.DirEntry) -> str:
    """A folder sorts as its name + "/", as the paths inside it do: "a-b" before "a"."""
    try:
        return entry.name + "/" if entry.is_dir() else entry.name
    except OSError:  # a link that cannot be followed
        return entry.name


def _excluded(path: str, root: str, patterns: Sequence[str]) -> bool:
    if not patterns:
        return False
    name = os.path.basename(path)
    relative = os.path.relpath(path, root)
    return any(fnmatch(name, p) or fnmatch(relative, p) for p in patterns)


def _file(path: str, info: os.stat_result, visited: set) -> Found | None:
    """The entry for a file; None when this run found it already under another path."""
    key = catalog_path(path)
    if not stat.S_ISREG(info.st_mode):
        return Found(path, key, error="not a regular file")
    identity = _identity(info)
    if identity in visited:
        return None  # a symlink or hard link to a file found already
    visited.add(identity)
    return Found(path, key, size=info.st_size, mtime_ns=info.st_mtime_ns)


def _identity(info: os.stat_result) -> int:
    """Device and inode as one int: a set of a million takes 70 MB, of tuples 122 MB."""
    return info.st_dev << 64 | info.st_ino


def _failed(path: str, exc: OSError) -> Found:
    if exc.errno == errno.ENOENT and os.path.islink(path):
        reason = "broken symbolic link"
    else:
        reason = describe_failure(exc)
    return Found(path, catalog_path(path), error=reason)


def _unreachable(path: str, exc: OSError, maybe_dir: bool = False) -> Found:
    """A folder (or PATH) that cannot be read now: its catalogued files are left alone."""
    if exc.errno == errno.ENOENT:
        reason = "target missing" if os.path.islink(path) else "not found"
    else:
        reason = describe_failure(exc)
    return Found(path, catalog_path(path), error=reason, is_dir=True, maybe_dir=maybe_dir)
