#!/usr/bin/env python
"""What a 320 px thumbnail costs, side by side with what ingest spends on the same image:
its decode (`decode.decode_image`, as a decode worker runs it) and the model
(`Captioner.caption_batch`, batches of 16), on the benchmark's small (500x375) and large
(12 MP) JPEGs, all in one run (docs/performance.md, "Thumbnails").

    python benchmarks/thumbnail_cost.py --images 32 --out thumbs.json

Thumbnails are made on first request (`Library.thumbnail`), so ingest pays none of this;
the ratio says what making them at ingest would add to each image's CPU time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = str(Path(__file__).resolve().parent.parent)
if REPO not in sys.path:
    sys.path.insert(0, REPO)


def _per_image_ms(function, items) -> float:
    """Median over 3 passes of the CPU milliseconds per item."""
    passes = []
    for _ in range(3):
        started = time.process_time()
        for item in items:
            function(item)
        passes.append((time.process_time() - started) * 1000 / len(items))
    return statistics.median(passes)


class _Thumbnails:
    """Makes the thumbnail of a file, each time into a fresh folder: made, never found."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.root = Path(tempfile.mkdtemp(prefix="thumbs-"))
        self.made = 0

    def __call__(self, path: Path) -> None:
        from capindex.pipeline.thumbnail import make_thumbnail

        self.made += 1
        make_thumbnail(str(path), self.root / str(self.made), self.size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    import torch

    from benchmarks.capbench.data import make_set
    from capindex.model.captioner import Captioner
    from capindex.pipeline.decode import decode_image

    torch.set_num_threads(1)  # CPU time per image, as one core spends it
    captioner = Captioner.load(device="cpu")
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="capindex-thumbs-"))
    results = {}
    for name in ("small", "large"):
        paths = make_set(data_dir / name, name, args.images)
        blobs = [p.read_bytes() for p in paths]
        pixels = torch.stack([decode_image(b)[1] for b in blobs[:16]])  # (16, 3, 224, 224)
        decode_ms = _per_image_ms(decode_image, blobs)
        thumb_ms = _per_image_ms(_Thumbnails(args.size), paths)
        model_ms = _per_image_ms(captioner.caption_batch, [pixels]) / len(pixels)
        results[name] = {"images": len(paths), "thumbnail_ms": round(thumb_ms, 2),
                         "decode_ms": round(decode_ms, 2), "model_ms": round(model_ms, 2),
                         "thumbnail_share_of_ingest_cpu": round(
                             thumb_ms / (decode_ms + model_ms), 3)}
        print(name, results[name], file=sys.stderr)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
