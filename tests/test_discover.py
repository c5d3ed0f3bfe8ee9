"""Stage 1 (discover) and the per-file failure reasons."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from fakes import solid
from PIL import Image, UnidentifiedImageError

import capindex.model.preprocess  # noqa: F401  (sets the pixel limit the pipeline uses)
from capindex.errors import describe_failure
from capindex.pipeline.discover import catalog_path, discover, is_under


def names(found, root) -> list[str]:
    return [os.path.relpath(f.path, root) for f in found]


def test_walks_recursively_in_name_order_with_any_case_extension(tmp_path):
    for name in ("b.JPG", "a.jpeg", "c.Png", "d/e.webp", "d/f.gif", "g.tif", "h.TIFF", "i.bmp",
                 "skip.txt", "skip.heic", ".hidden.jpg", ".cache/x.jpg"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    found = list(discover([tmp_path]))
    assert names(found, tmp_path) == ["a.jpeg", "b.JPG", "c.Png", "d/e.webp", "d/f.gif", "g.tif",
                                      "h.TIFF", "i.bmp"]
    assert all(f.error is None and f.size == 1 and f.mtime_ns for f in found)


def test_exclude_matches_names_and_relative_paths(tmp_path):
    for name in ("keep.jpg", "x.png", "thumbs/t.jpg", "deep/thumbs/t.jpg", "deep/a.jpg"):
        solid(tmp_path / name)
    found = discover([tmp_path], exclude=["*.png", "thumbs"])
    assert names(found, tmp_path) == ["deep/a.jpg", "keep.jpg"]
    found = discover([tmp_path], exclude=["deep/*"])
    assert names(found, tmp_path) == ["keep.jpg", "thumbs/t.jpg", "x.png"]


def test_each_file_once_across_overlapping_roots_and_symlinks(tmp_path):
    solid(tmp_path / "a" / "x.jpg")
    os.symlink(tmp_path / "a", tmp_path / "link-to-a")
    os.symlink(tmp_path, tmp_path / "a" / "up")  # a cycle
    found = list(discover([tmp_path, tmp_path / "a", tmp_path / "a" / "x.jpg"]))
    assert names(found, tmp_path) == ["a/x.jpg"]


def test_a_named_file_counts_whatever_its_extension(tmp_path):
    (tmp_path / "photo.data").write_bytes(b"x")
    assert names(discover([tmp_path / "photo.data"]), tmp_path) == ["photo.data"]


def test_special_files(tmp_path):
    os.mkfifo(tmp_path / "pipe.jpg")
    os.symlink(tmp_path / "gone.jpg", tmp_path / "dangling.jpg")
    os.symlink("self.jpg", tmp_path / "self.jpg")
    found = {os.path.basename(f.path): f.error for f in discover([tmp_path])}
    assert found == {"dangling.jpg": "broken symbolic link", "pipe.jpg": "not a regular file",
                     "self.jpg": "symbolic link loop"}


def test_non_utf8_names_get_a_printable_catalogue_path(tmp_path):
    raw = os.path.join(os.fsencode(tmp_path), b"caf\xe9 \xff.jpg")
    solid(Path(os.fsdecode(raw)))
    (found,) = discover([tmp_path])
    assert found.path == os.fsdecode(raw)  # still opens
    assert found.key == f"{tmp_path}/caf\\xe9 \\xff.jpg"
    assert found.key.encode("utf-8")
    assert catalog_path("/plain/é.jpg") == "/plain/é.jpg"


def test_is_under():
    assert is_under("/a/b/c.jpg", "/a/b") and is_under("/a/b", "/a/b")
    assert not is_under("/a/bc/d.jpg", "/a/b")
    assert is_under("/x.jpg", "/")


@pytest.mark.parametrize("exc, reason", [
    (UnidentifiedImageError("cannot identify image file"), "not a readable image"),
    (Image.DecompressionBombError("Image size (300000000 pixels) exceeds limit of 240000000 "
                                  "pixels, could be decompression bomb DOS attack."),
     "image too large (300,000,000 pixels; the limit is 120,000,000), possibly a decompression "
     "bomb"),
    (PermissionError(errno.EACCES, "Permission denied"), "permission denied"),
    (OSError(errno.ELOOP, "Too many levels of symbolic links"), "symbolic link loop"),
    (FileNotFoundError(errno.ENOENT, "No such file"), "file not found (moved or deleted during "
                                                      "the run)"),
    (OSError(errno.EIO, "Input/output error"), "cannot read file (input/output error)"),
    (OSError("image file is truncated (3 bytes not processed)"),
     "truncated or corrupt image (image file is truncated (3 bytes not processed))"),
    (SyntaxError("broken PNG file"), "truncated or corrupt image (broken PNG file)"),
])
def test_failure_reasons(exc, reason):
    assert describe_failure(exc) == reason


def test_files_come_out_in_path_order(tmp_path):
    """One walk yields paths sorted as the catalogue sorts them (planning merges the two):
    a folder sorts as its name + "/", so "a-b/x.jpg" and "a b/x.jpg" come before "a/x.jpg"."""
    for name in ("a/x.jpg", "a-b/x.jpg", "a b/x.jpg", "a.jpg", "a0.jpg", "a/b/y.jpg", "a/b-c.jpg",
                 "ab/z.jpg", "é/x.jpg", "z.jpg"):
        solid(tmp_path / name)
    keys = [found.key for found in discover([tmp_path])]
    assert len(keys) == 10 and keys == sorted(keys)
    assert [os.path.relpath(k, tmp_path) for k in keys[:4]] == ["a b/x.jpg", "a-b/x.jpg",
                                                                "a.jpg", "a/b-c.jpg"]
