"""The one path from an image file to the encoder's input tensor.

Training, `capindex caption` and `capindex ingest` all call `load_image` and
`to_tensor`, so a 4000x3000 photo is seen exactly as its 224x224 copy would be.

Flickr8k ships whole frames squashed to 224x224 (aspect ratio not kept), so the
model is trained on squashed frames and every photo is squashed the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, ImageOps

INPUT_SIZE = 224
# EfficientNet-Lite was trained on pixels scaled to [-1, 1]: (x - 127) / 128.
_MEAN = 127.0
_STD = 128.0
# JPEGs decode at the smallest DCT scale (1/2, 1/4, 1/8) that keeps this many times
# the model's input size on each side: a 12 MP frame at 1/4 scale (1000x750). A
# margin of 1.5 (1/8 scale) needs 23% less decoding work but moves the input by a
# third of an 8-bit level on average, enough to change some captions
# (docs/performance.md), so the model keeps seeing what a full decode gives.
DRAFT_MARGIN = 2
# Refuse images whose pixel count suggests a decompression bomb (PIL warns at 89 MP).
MAX_PIXELS = 120_000_000
Image.MAX_IMAGE_PIXELS = MAX_PIXELS


def load_image(source: str | Path | BinaryIO, size: int = INPUT_SIZE) -> Image.Image:
    """Open `source` (a path or a binary file object) and return an RGB image of `size` x `size`.

    JPEGs are decoded at a reduced scale (libjpeg's DCT scaling via `draft`) when
    the result is still at least twice the target size (DRAFT_MARGIN), so a 12 MP
    frame is never decoded in full just to be shrunk; the final resize then makes
    the same input a full decode would (within JPEG rounding). EXIF orientation
    is applied.
    """
    with Image.open(source) as img:
        return prepare(img, size)


def prepare(img: Image.Image, size: int = INPUT_SIZE) -> Image.Image:
    """An image just opened (pixels not yet decoded) -> RGB `size` x `size`, as `load_image`.

    For callers that read the header first (size, EXIF) and then want the model
    input from the same open file, without opening and parsing it twice.
    """
    if img.format == "JPEG":
        margin = int(size * DRAFT_MARGIN)
        img.draft("RGB", (margin, margin))
    img = ImageOps.exif_transpose(img)
    return to_rgb(img).resize((size, size), Image.Resampling.BICUBIC, reducing_gap=None)


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode (L, P with alpha, CMYK, I;16, RGBA...) to RGB on white."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit / 32-bit grey: rescale to 8 bits instead of clipping.
        arr = np.asarray(img, dtype=np.float32)
        hi = float(arr.max()) or 1.0
        img = Image.fromarray((arr / hi * 255).clip(0, 255).astype(np.uint8), mode="L")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, img).convert("RGB")
    return img.convert("RGB")


def to_pixels(img: Image.Image) -> torch.Tensor:
    """RGB PIL image -> uint8 tensor (3, H, W).

    The values are laid out channels-last in memory (H, W, 3), as the pixels
    come; the encoder runs channels-last on CPU, so no copy is needed to get there.
    """
    data = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8)
    return data.view(img.height, img.width, 3).permute(2, 0, 1)  # (3, H, W)


def normalize(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 pixels (..., 3, H, W) -> the encoder's float input; the memory layout is kept."""
    return (pixels.float() - _MEAN) / _STD


def to_tensor(img: Image.Image) -> torch.Tensor:
    """RGB PIL image -> float tensor (3, H, W) normalised for the encoder (channels-last)."""
    return normalize(to_pixels(img))


def image_tensor(source: str | Path | BinaryIO) -> torch.Tensor:
    """`load_image` then `to_tensor`: the encoder input for one file."""
    return to_tensor(load_image(source))
