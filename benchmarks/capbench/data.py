"""The benchmark's JPEGs, made here: textured like photos, so file sizes and decode work
are realistic.

`small` is about 500x375 like web photos, `large` 4000x3000 (12 MP) like a camera's
frames, with EXIF. Both are jittered crops of sample_images/ with sensor-like noise.
A set is made once in its folder and reused while its manifest matches.
"""

from __future__ import annotations

import io
import json
import os
import random
import shutil
import statistics
import time
from pathlib import Path
from typing import TYPE_CHECKING

from .report import log

if TYPE_CHECKING:  # Pillow loads when images are made
    from PIL import Image

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "sample_images"
SETS = {"small": (500, 375), "large": (4000, 3000)}
DATA_VERSION = 2  # bump when the generated images change (a --data-dir is then remade)


def _texture(rng: random.Random, size: tuple[int, int], sources: list) -> Image.Image:
    """A jittered crop of a sample photo, resized to `size` (width, height)."""
    from PIL import Image, ImageOps

    src = sources[rng.randrange(len(sources))]
    w, h = src.size
    cw, ch = int(w * rng.uniform(0.45, 0.95)), int(h * rng.uniform(0.45, 0.95))
    x, y = rng.randrange(w - cw + 1), rng.randrange(h - ch + 1)
    img = src.crop((x, y, x + cw, y + ch))
    if rng.random() < 0.5:
        img = ImageOps.mirror(img)
    resample = Image.Resampling.BICUBIC if size[0] <= 1000 else Image.Resampling.BILINEAR
    return img.resize(size, resample)


def _add_noise(img, np_rng, sigma: float, noise_field=None):
    """Sensor-like noise, so that JPEG sizes are those of real photos, not of smooth upscales."""
    import numpy as np
    from PIL import Image

    pixels = np.asarray(img, dtype=np.int16)
    if noise_field is None:
        noise = np_rng.normal(0, sigma, size=(*pixels.shape[:2], 1)).astype(np.int16)
    else:  # a shared field, shifted: generating 12 MP of fresh noise per image is slow
        dy, dx = (int(v) for v in np_rng.integers(0, 64, size=2))
        noise = np.roll(noise_field, (dy, dx), axis=(0, 1))
    return Image.fromarray(np.clip(pixels + noise, 0, 255).astype(np.uint8))


def _camera_exif(index: int):
    from PIL import Image

    exif = Image.Exif()
    exif[0x010F] = "BenchCam"  # Make
    exif[0x0110] = "Model 12"  # Model
    exif[0x0112] = 1  # Orientation: upright
    exif.get_ifd(0x8769)[0x9003] = f"2024:06:{1 + index % 28:02d} 12:{index % 60:02d}:00"
    return exif


def _with_comment(jpeg: bytes, text: str) -> bytes:
    """The same JPEG with a COM segment after SOI: same pixels, different bytes (and hash)."""
    payload = text.encode()
    return jpeg[:2] + b"\xff\xfe" + (len(payload) + 2).to_bytes(2, "big") + payload + jpeg[2:]


_SOURCES: list = []  # the sample photos, for the processes that make small images


def _make_small(task: tuple[str, int, int]) -> None:
    """One small JPEG, from its own seed: image i is the same whatever the set's size."""
    import numpy as np

    path, index, seed = task
    rng = random.Random(f"small-{seed}-{index}")
    img = _add_noise(_texture(rng, SETS["small"], _SOURCES),
                     np.random.default_rng([seed, index]), sigma=3.0)
    img.save(path, "JPEG", quality=rng.choice([85, 90, 95]))


def _on_every_core(function, tasks: list) -> None:
    """function(task) for each task, in forked processes (here where fork is unavailable)."""
    import multiprocessing

    if len(tasks) < 64 or "fork" not in multiprocessing.get_all_start_methods():
        for task in tasks:
            function(task)
        return
    with multiprocessing.get_context("fork").Pool(os.cpu_count()) as pool:
        for _ in pool.imap_unordered(function, tasks, chunksize=16):
            pass


def make_set(directory: Path, name: str, count: int, seed: int = 0) -> list[Path]:
    """`count` JPEGs of set `name` in `directory` (reused when that many or more are there)."""
    import numpy as np
    from PIL import Image

    manifest = directory / "manifest.json"
    want = {"version": DATA_VERSION, "set": name, "seed": seed}
    paths = [directory / f"{name}_{i:05d}.jpg" for i in range(count)]
    if manifest.is_file():
        have = json.loads(manifest.read_text())
        if ({k: have.get(k) for k in want} == want and have.get("count", 0) >= count
                and all(p.is_file() for p in paths)):
            return paths
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    _SOURCES[:] = [Image.open(p).convert("RGB") for p in sorted(SAMPLES.glob("*.jpg"))]
    started = time.monotonic()
    if name == "small":
        _on_every_core(_make_small, [(str(path), i, seed) for i, path in enumerate(paths)])
    else:
        # Distinct 12 MP frames are slow to make (~0.5 s each); the set cycles through
        # a pool of them, each file made unique by a JPEG comment (decode work is the same).
        rng = random.Random(f"{name}-{seed}")
        np_rng = np.random.default_rng(seed)
        size = SETS[name]
        pool = min(count, 16)
        field = np_rng.normal(0, 5.0, size=(size[1], size[0], 1)).astype(np.int16)
        frames = []
        for i in range(pool):
            img = _add_noise(_texture(rng, size, _SOURCES), np_rng, 5.0, noise_field=field)
            buf = io.BytesIO()
            img.save(buf, "JPEG", quality=92, exif=_camera_exif(i))
            frames.append(buf.getvalue())
        for i, path in enumerate(paths):
            path.write_bytes(_with_comment(frames[i % pool], f"capindex benchmark image {i}"))
    manifest.write_text(json.dumps({**want, "count": count}))
    log(f"made {count} {name} images in {directory} ({time.monotonic() - started:.1f} s)")
    return paths


def describe_set(paths: list[Path]) -> dict:
    from PIL import Image

    sizes = [p.stat().st_size for p in paths]
    with Image.open(paths[0]) as img:
        width, height = img.size
    return {"images": len(paths), "width": width, "height": height,
            "mean_file_kb": round(statistics.fmean(sizes) / 1024, 1),
            "total_mb": round(sum(sizes) / 2**20, 1)}


def linked_subset(paths: list[Path], directory: Path) -> Path:
    """A folder holding `paths` (hard links; copies where links are not possible)."""
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    for path in paths:
        try:
            os.link(path, directory / path.name)
        except OSError:
            shutil.copyfile(path, directory / path.name)
    return directory
