"""Thumbnails: a small JPEG of a catalogued photo, made on first request and kept.

A thumbnail is named by the content it shows, `SHA256-SIZE.jpg`, in the library's
`thumbs/` folder (`LibraryDir.thumbs_dir`): a moved photo keeps its thumbnail, a changed one
gets a new one. The file is read and decoded by the ingest's rules (`decode.read_file`:
regular files only, at most the size limit; Pillow's pixel limit with its warning made an
error, so a decompression bomb is refused before its pixels are allocated), EXIF
orientation is applied, and JPEGs decode at a reduced scale (`draft`). It is written
under a temporary name and renamed, so a reader never sees half a file and two requests
making the same thumbnail at once both end with a whole one.

Made on first request, not at ingest: ingest pays nothing for it (docs/performance.md).
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import warnings
from pathlib import Path

from PIL import Image, ImageOps

from capindex.errors import UnusableFile
from capindex.model.preprocess import to_rgb
from capindex.pipeline.decode import read_file

QUALITY = 85


def thumbnail_name(sha256: str, size: int) -> str:
    return f"{sha256}-{size}.jpg"


def make_thumbnail(source: str, folder: Path, size: int, sha256: str | None = None,
                   max_file_size: int | None = None) -> Path:
    """The thumbnail of the file at `source`, no larger than size x size, in `folder`:
    the one already there for `sha256` (the catalogued content), else made now from the
    file (named by the content read, which may have changed since it was catalogued).
    Raises OSError (UnusableFile) or Pillow's errors for a file that cannot be used; the
    caller words them (`errors.describe_failure`)."""
    if sha256:
        kept = folder / thumbnail_name(sha256, size)
        if kept.is_file():
            return kept
    data, _ = read_file(source, max_file_size)
    if not data:
        raise UnusableFile("empty file")
    digest = hashlib.sha256(data).hexdigest()
    out = folder / thumbnail_name(digest, size)
    if out.is_file():
        return out
    image = shrink(data, size)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".", suffix=".partial")
    try:
        with os.fdopen(fd, "wb") as f:
            image.save(f, "JPEG", quality=QUALITY)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def shrink(data: bytes, size: int) -> Image.Image:
    """Image bytes -> an RGB image no larger than size x size, upright (EXIF orientation)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(io.BytesIO(data)) as img:
            if img.format == "JPEG":
                img.draft("RGB", (size, size))  # the smallest DCT scale still >= size
            image = to_rgb(ImageOps.exif_transpose(img))
            image.thumbnail((size, size), Image.Resampling.LANCZOS, reducing_gap=3.0)
            return image
