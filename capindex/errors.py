"""The few exceptions the library raises; `capindex.cli` turns each into a one-line message.

Every message says what happened and what to do about it. Per-file problems (a
corrupt JPEG, a broken symlink) are not exceptions: they become rows with
`status='error'` and one `skipping PATH: REASON` line.
"""

from __future__ import annotations


class CapindexError(Exception):
    """Base class: something the user can fix, described in one line."""


class EmptyLibraryError(CapindexError):
    def __init__(self, library: str) -> None:
        super().__init__(
            f"the library at {library} is empty; add photos first with: capindex ingest PATH"
        )


class LibraryBusyError(CapindexError):
    def __init__(self, library: str) -> None:
        super().__init__(
            f"another capindex ingest is already writing to {library}; "
            "wait for it to finish (search works meanwhile)"
        )


class QuerySyntaxError(CapindexError):
    def __init__(self, query: str, problem: str) -> None:
        super().__init__(
            f"cannot parse query {query!r}: {problem}. Use plain words, \"quoted phrases\", "
            "AND / OR / NOT, or field:word with the fields caption, alt, objects, tags, words "
            "and name"
        )


class CatalogDamaged(CapindexError):
    """The catalogue (the source of truth) is damaged or gone: nothing can rebuild it."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(
            f"the catalogue {path} {problem}; restore it from a backup, or start over from "
            "your photos with: capindex ingest --rebuild PATH... (which keeps the old one aside)"
        )


class IndexDamaged(CapindexError):
    """The search index cannot be read; the next ingest rebuilds it from the catalogue."""

    def __init__(self, directory: str, problem: str) -> None:
        self.problem = problem  # "missing" or "damaged: ..."
        super().__init__(
            f"the search index in {directory} is {problem}; rebuild it from the catalogue with: "
            "capindex ingest PATH... (your photo folders; unchanged photos are not read again)"
        )


class UnsafeLibraryError(CapindexError):
    """The library could be changed by someone else (what it shows and searches)."""


class DecodeWorkerDied(CapindexError):
    """A decode worker died between files, so no file can be blamed and skipped."""

    def __init__(self, how: str) -> None:
        super().__init__(
            f"a decode worker process died between files ({how or 'killed'}); what was "
            "committed is kept: run the same command again to go on"
        )


class SharedMemoryFull(CapindexError):
    """The decode workers cannot hand over a batch: /dev/shm is too small for it."""

    def __init__(self, free_mb: float | None) -> None:
        free = f", {free_mb:.0f} MB free" if free_mb is not None else ""
        super().__init__(
            f"decoded batches do not fit in shared memory (/dev/shm{free}); what was "
            "committed is kept: run again with a smaller --batch-size or fewer --workers, "
            "or give /dev/shm more room (in Docker: --shm-size=2g or --ipc=host)"
        )


class PhotoNotFound(CapindexError):
    """A photo named by id or path that the library does not hold (as captioned)."""

    def __init__(self, photo: int | str, library: str) -> None:
        what = f"no photo with id {photo}" if isinstance(photo, int) else f"{photo} is not"
        super().__init__(f"{what} in the library at {library}; see capindex search or "
                         "capindex export for what it holds")


class ImageUnreadable(CapindexError):
    """An image given to describe (an upload) cannot be decoded: the reason in one line."""


class ModelError(CapindexError):
    """A model checkpoint is missing, unreadable or not a capindex checkpoint."""


class EngineError(CapindexError):
    """The distributed engine cannot run: Ray is not installed, or its cluster not reached."""


class DatasetError(CapindexError):
    """A training or evaluation dataset folder is missing a part or malformed."""


class UnusableFile(OSError):
    """A file that is refused before it is read: not a regular file (a FIFO, a device),
    too large, or empty. The message is the REASON of `skipping PATH: REASON`."""


def byte_size(count: int) -> str:
    """A file size for messages: `3,000 MB`, `1.7 MB`, `700 bytes`."""
    if count < 10**6:
        return f"{count:,} bytes"
    if count % 10**6 == 0:
        return f"{count // 10**6:,} MB"
    return f"{count / 1e6:,.1f} MB"


def too_large(size: int, limit: int, what: str = "file") -> str:
    """The reason given for a file over a size limit (checked before it is read)."""
    return f"{what} too large ({byte_size(size)}; the limit is {byte_size(limit)})"


def first_line(exc: BaseException, limit: int = 200) -> str:
    """An exception's message in one line: its first, at most `limit` characters (its type
    when it has none)."""
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__


def describe_failure(exc: BaseException) -> str:
    """Why one file could not be captioned, in a few words (the REASON of `skipping PATH: REASON`)."""
    import errno
    import re

    from PIL import Image, UnidentifiedImageError

    if isinstance(exc, UnusableFile):
        return str(exc)
    if isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        found = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(found.group(1)):,} pixels" if found else "too many pixels"
        return (f"image too large ({size}; the limit is {Image.MAX_IMAGE_PIXELS:,}), "
                "possibly a decompression bomb")
    if isinstance(exc, UnidentifiedImageError):
        return "not a readable image"
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, IsADirectoryError):
        return "is a directory"
    if isinstance(exc, FileNotFoundError):
        return "file not found (moved or deleted during the run)"
    if isinstance(exc, OSError) and exc.errno == errno.ELOOP:
        return "symbolic link loop"
    if isinstance(exc, OSError) and exc.errno is not None:
        return f"cannot read file ({(exc.strerror or str(exc)).lower()})"
    # Pillow reports damaged data as OSError without errno, SyntaxError, ValueError, EOFError...
    return f"truncated or corrupt image ({exc})" if str(exc) else "truncated or corrupt image"
