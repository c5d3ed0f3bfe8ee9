"""Test doubles and generated images shared by the ingest tests (and run_fake_ingest.py)."""

from __future__ import annotations

import os
import struct
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from capindex.model.preprocess import normalize


@dataclass(frozen=True)
class FakeCaption:
    text: str
    score: float
    tags: list


class FakeCaptioner:
    """The Captioner interface without a model: the caption names the image's main colour.

    Records every batch so tests can check what reached the model.
    """

    def __init__(self, model_id: str = "fake-v1", delay: float = 0.0) -> None:
        self.model_id = model_id
        self.weights_hash = f"hash-of-{model_id}"
        self.decoding = {"method": "fake", "beam_size": 1}
        self.device = torch.device("cpu")
        self.delay = delay  # seconds per batch, to make a run slow enough to interrupt
        self.batches: list[torch.Tensor] = []

    @property
    def captioned(self) -> int:
        return sum(len(b) for b in self.batches)

    def caption_batch(self, images: torch.Tensor) -> list[FakeCaption]:
        # As the real Captioner: uint8 pixels from the decode stage, or normalised floats.
        assert images.dtype in (torch.uint8, torch.float32) and tuple(images.shape[1:]) == (3, 224, 224)
        if images.dtype == torch.uint8:
            images = normalize(images)
        self.batches.append(images.clone())
        if self.delay:
            time.sleep(self.delay)
        return [describe(image) for image in images]


class DyingCaptioner(FakeCaptioner):
    """The fake captioner, but a magenta image kills its process, as a native crash would."""

    def caption_batch(self, images: torch.Tensor) -> list[FakeCaption]:
        means = images.float().mean(dim=(2, 3))  # (B, 3)
        if images.dtype == torch.uint8 and any(r > 200 and g < 50 and b > 200 for r, g, b in means.tolist()):
            os._exit(1)
        return super().caption_batch(images)


def colour_of(pixels: torch.Tensor) -> str:
    means = pixels.mean(dim=(1, 2))  # (3,) in [-1, 1]
    if means.max() - means.min() < 0.15:
        return "gray"
    return ("red", "green", "blue")[int(means.argmax())]


def describe(image: torch.Tensor) -> FakeCaption:
    """(3, 224, 224) -> "a dark red picture", plus "with red above blue" when the halves differ."""
    brightness = "bright" if image.mean() > 0 else "dark"
    colour = colour_of(image)
    top, bottom = colour_of(image[:, :112]), colour_of(image[:, 112:])
    text = f"a {brightness} {colour} picture"
    if top != bottom:
        text += f" with {top} above {bottom}"
    return FakeCaption(text, -0.5, [(f"{colour} thing", 0.9), ("picture frame", 0.05)])


# -- generated images -----------------------------------------------------------

def solid(path: Path, colour=(200, 30, 30), size=(64, 48), mode="RGB", **save) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, colour).save(path, **save)
    return path


def huge_png(path: Path, width: int, height: int) -> Path:
    """A valid 1-bit PNG of width x height made in well under a second: rows of zeros compress ~1000:1."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed bits
    compressor = zlib.compressobj(9)
    rows_per_piece = max(1, (1 << 22) // len(row))
    pieces = []
    for start in range(0, height, rows_per_piece):
        pieces.append(compressor.compress(row * min(rows_per_piece, height - start)))
    pieces.append(compressor.flush())
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n")
        f.write(chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)))
        f.write(chunk(b"IDAT", b"".join(pieces)))
        f.write(chunk(b"IEND", b""))
    return path


def exif_rotated_jpeg(path: Path) -> Path:
    """80x40 JPEG, left half red, right half blue, EXIF orientation 6 (display rotated 90 CW)."""
    img = Image.new("RGB", (80, 40), (220, 20, 20))
    img.paste((20, 20, 220), (40, 0, 80, 40))
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010F] = "FakeCam"
    exif[0x0110] = "Model 1"
    exif.get_ifd(0x8769)[0x9003] = "2021:07:04 12:30:45"
    gps = exif.get_ifd(0x8825)
    gps.update({1: "N", 2: (48.0, 51.0, 29.0), 3: "W", 4: (2.0, 17.0, 40.0)})
    img.save(path, exif=exif, quality=95)
    return path


def bad_input_folder(root: Path) -> dict[str, str]:
    """Every awkward input of issue 3 in one folder; returns file name -> expected outcome.

    Outcome "ok" means it must caption; anything else is the start of the error reason.
    """
    root.mkdir(parents=True, exist_ok=True)
    expected: dict[str, str] = {}

    solid(root / "good.jpg")
    expected["good.jpg"] = "ok"
    (root / "empty.jpg").write_bytes(b"")
    expected["empty.jpg"] = "empty file"
    whole = (root / "good.jpg").read_bytes()
    (root / "truncated.jpg").write_bytes(whole[: len(whole) // 2])
    expected["truncated.jpg"] = "truncated or corrupt image"
    (root / "text.jpg").write_text("this is not a picture\n")
    expected["text.jpg"] = "not a readable image"
    huge_png(root / "bomb.png", 30000, 30000)
    expected["bomb.png"] = ("image too large (900,000,000 pixels; the limit is 120,000,000), "
                            "possibly a decompression bomb")
    huge_png(root / "big.png", 12000, 12000)  # over the limit but under 2x: a warning in Pillow
    expected["big.png"] = ("image too large (144,000,000 pixels; the limit is 120,000,000), "
                           "possibly a decompression bomb")
    os.symlink(root / "missing.jpg", root / "broken.jpg")
    expected["broken.jpg"] = "broken symbolic link"
    os.symlink("loop.jpg", root / "loop.jpg")
    expected["loop.jpg"] = "symbolic link loop"
    os.symlink("..", root / "sub-back")  # a directory loop: must not walk forever
    non_utf8 = os.path.join(os.fsencode(root), b"caf\xe9.jpg")
    solid(Path(os.fsdecode(non_utf8)), colour=(30, 200, 30))
    expected["caf\\xe9.jpg"] = "ok"

    solid(root / "gray.png", colour=100, mode="L")
    expected["gray.png"] = "ok"
    solid(root / "cmyk.jpg", colour=(0, 255, 255, 0), mode="CMYK")  # red in CMYK
    expected["cmyk.jpg"] = "ok"
    Image.new("I;16", (64, 48), 40000).save(root / "gray16.png")
    expected["gray16.png"] = "ok"
    palette = Image.new("P", (64, 48), 1)
    palette.putpalette([0, 0, 0, 30, 30, 220] + [0] * 762)
    palette.save(root / "palette-alpha.png", transparency=0)
    expected["palette-alpha.png"] = "ok"
    frames = [Image.new("P", (64, 48), i) for i in range(3)]
    frames[0].save(root / "animated.gif", save_all=True, append_images=frames[1:], duration=100)
    expected["animated.gif"] = "ok"
    exif_rotated_jpeg(root / "rotated.jpg")
    expected["rotated.jpg"] = "ok"
    solid(root / "upper.JPEG")
    expected["upper.JPEG"] = "ok"
    solid(root / "deep" / "er" / "picture.webp", colour=(20, 20, 200))
    expected["deep/er/picture.webp"] = "ok"
    solid(root / "bitmap.bmp")
    expected["bitmap.bmp"] = "ok"
    solid(root / "scan.tiff")
    expected["scan.tiff"] = "ok"

    (root / "notes.txt").write_text("not an image name: ignored")
    solid(root / ".hidden.jpg")  # hidden: ignored
    return expected
