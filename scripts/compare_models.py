"""Score several checkpoints side by side (greedy and beam) for the model card.

Needs the datasets in ../shared/datasets. Example:

    python scripts/compare_models.py capindex/weights/default.pt runs/lstm.pt runs/rnn.pt \
        --out docs/model-comparison.json

Prints a Markdown table: BLEU-1..4, ROUGE-L and CIDEr-D on Flickr8k val (1,000 images,
five references) and on the coco-1997 hold-out (200 images, one reference), plus
captioning speed per image on this machine (encoder + decoder, batch of 16, CPU).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from capindex.model.captioner import Captioner
from capindex.model.preprocess import image_tensor
from capindex.training.datasets import read_dataset
from capindex.training.evaluate import evaluate

DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets"
SAMPLES = Path(__file__).resolve().parents[1] / "sample_images"


def speed(captioner: Captioner, batch: int = 16, rounds: int = 2) -> float:
    """Milliseconds per image for encoder + decoder on a batch of sample photos."""
    files = sorted(SAMPLES.glob("*.jpg"))
    images = torch.stack([image_tensor(files[i % len(files)]) for i in range(batch)])
    captioner.caption_batch(images)  # warm-up
    started = time.perf_counter()
    for _ in range(rounds):
        captioner.caption_batch(images)
    return 1000 * (time.perf_counter() - started) / (rounds * batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--beams", default="1,3,5")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    from platformdirs import user_cache_dir

    cache = args.cache_dir or Path(user_cache_dir("capindex")) / "features"
    sets = [read_dataset(args.data / "flickr8k"), read_dataset(args.data / "coco-1997")]
    rows = []
    for model in args.models:
        for beam in [int(b) for b in args.beams.split(",")]:
            captioner = Captioner.load(model, device="cpu", beam_size=beam)
            row = {"model": str(model), "cell": captioner.decoder.config.cell, "beam": beam,
                   "ms_per_image": round(speed(captioner), 1)}
            for ds in sets:
                row[ds.name] = evaluate(captioner, ds, "val", cache)["scores"]
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(f"\nMachine: {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}\n")
    print("| cell | beam | Flickr8k BLEU-1 | BLEU-4 | ROUGE-L | CIDEr-D | coco-1997 BLEU-4 | CIDEr-D "
          "| ms/image |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        f, c = r["flickr8k"], r["coco-1997"]
        print(f"| {r['cell']} | {r['beam']} | {f['BLEU-1']:.3f} | {f['BLEU-4']:.3f} | "
              f"{f['ROUGE-L']:.3f} | {f['CIDEr-D']:.3f} | {c['BLEU-4']:.3f} | {c['CIDEr-D']:.3f} | "
              f"{r['ms_per_image']} |")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
