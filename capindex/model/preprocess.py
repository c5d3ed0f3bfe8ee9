"""The one path from an image file to the encoder's input tensor.

Training, `capindex caption` and `capindex ingest` all call `load_pixels` (or
`prepare` on a file already open), so a 4000x3000 photo is seen exactly as its
224x224 copy would be.

Flickr8k ships whole frames squashed to 224x224 (aspect ratio not kept), so the
model is trained on squashed frames and every photo is squashed the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from capindex.model import INPUT_SIZE

# Names what this module makes of a file; cached training features are keyed by it, so a
# change here (as when the resize moved from Pillow to torch) is never mixed with old ones.
PREPROCESS_ID = "squash224-bicubic-torch"
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


def load_pixels(source: str | Path | BinaryIO, size: int = INPUT_SIZE) -> torch.Tensor:
    """Open `source` (a path or a binary file object): the model input's uint8 pixels (3, size, size).

    JPEGs are decoded at a reduced scale (libjpeg's DCT scaling via `draft`) when
    the result is still at least twice the target size (DRAFT_MARGIN), so a 12 MP
    frame is never decoded in full just to be shrunk; the final resize then makes
    the same input a full decode would (within JPEG rounding). EXIF orientation
    is applied.
    """
    with Image.open(source) as img:
        return prepare(img, size)


def prepare(img: Image.Image, size: int = INPUT_SIZE) -> torch.Tensor:
    """An image just opened (pixels not yet decoded) -> uint8 pixels (3, size, size), as `load_pixels`.

    For callers that read the header first (size, EXIF) and then want the model
    input from the same open file, without opening and parsing it twice.
    """
    if img.format == "JPEG":
        margin = int(size * DRAFT_MARGIN)
        img.draft("RGB", (margin, margin))
    img = ImageOps.exif_transpose(img)
    return resize(to_pixels(to_rgb(img)), size)


def resize(pixels: torch.Tensor, size: int = INPUT_SIZE) -> torch.Tensor:
    """uint8 pixels (3, H, W) -> (3, size, size): antialiased bicubic, as Pillow's resize.

    torch's uint8 kernel computes Pillow's filter (a = -0.5, support widened by the
    scale when shrinking) with SIMD: 0.3 ms for a 500x375 photo where Pillow takes
    1.7 ms. Its outputs differ from Pillow's by one or two levels in a few pixels
    (0.003 levels on average over COCO photos), the rounding of their fixed-point
    sums (tests/test_model.py); COCO hold-out scores are unchanged (docs/performance.md).
    """
    height, width = pixels.shape[1:]
    batch = pixels.unsqueeze(0)
    # torch resizes the width first, as Pillow does, except that Pillow (13+) shrinks
    # the height first when it loses more than twice as many rows as the width loses
    # columns. The order matters where a pass clips at 0 or 255.
    if height > size and height - size > 2 * (width - size):
        batch = _interpolate(batch, (size, width))
    return _interpolate(batch, (size, size))[0]


def _interpolate(batch: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(batch.shape[2:]) == size:
        return batch
    return F.interpolate(batch, size=size, mode="bicubic", antialias=True)


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


def to_image(pixels: torch.Tensor) -> Image.Image:
    """uint8 pixels (3, H, W) -> a PIL image: the model's view of a photo, to look at."""
    return Image.fromarray(pixels.permute(1, 2, 0).contiguous().numpy())


def normalize(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 pixels (..., 3, H, W) -> the encoder's float input; the memory layout is kept."""
    return (pixels.float() - _MEAN) / _STD


def image_tensor(source: str | Path | BinaryIO) -> torch.Tensor:
    """`load_pixels` then `normalize`: the encoder's float input (3, 224, 224) for one file."""
    return normalize(load_pixels(source))
