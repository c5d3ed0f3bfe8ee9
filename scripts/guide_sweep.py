"""One sweep of guided-decoding settings on Flickr8k val and the coco-1997 hold-out.

    python scripts/guide_sweep.py [--model CKPT] [--out sweep.json]

Each setting is scored as `capindex evaluate --guide ...` scores it (same code path:
`capindex.training.evaluate.evaluate`), with the features, tags and detections loaded
once. Settings are chosen on Flickr8k val CIDEr-D; the coco hold-out is reported beside.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from capindex.model.captioner import Captioner  # noqa: E402
from capindex.model.guide import Guide, GuideConfig  # noqa: E402
from capindex.training.datasets import read_dataset  # noqa: E402
from capindex.training.evaluate import evaluate  # noqa: E402

SETTINGS = [GuideConfig()]
SETTINGS += [GuideConfig("boost", t, t, b) for t in (0.3, 0.5, 0.7) for b in (1.0, 2.0, 3.0)]
SETTINGS += [GuideConfig("constrain", t, t, 0.0, g) for t in (0.3, 0.5, 0.7) for g in (1, 3)]
SETTINGS += [GuideConfig("fallback", t, t, 0.0, 1) for t in (0.3, 0.5, 0.7)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--data", default="/work/shared/datasets")
    parser.add_argument("--cache-dir", default="/work/.cache-capindex")
    parser.add_argument("--out", default=None)
    parser.add_argument("--only", default=None, help="comma-separated setting indices")
    args = parser.parse_args()
    torch.set_num_threads(1)
    captioner = Captioner.load(args.model, device="cpu")
    sets = [read_dataset(Path(args.data) / n) for n in ("flickr8k", "coco-1997")]
    rows = []
    chosen = range(len(SETTINGS)) if not args.only else map(int, args.only.split(","))
    for i in chosen:
        config = SETTINGS[i]
        captioner.guide_config = config
        captioner.guide = Guide(captioner.vocab, config) if config.mode != "off" else None
        started = time.perf_counter()
        result = {ds.name: evaluate(captioner, ds, "val", Path(args.cache_dir)) for ds in sets}
        row = {"setting": i, "guide": config.__dict__,
               **{f"{name} {m}": round(r["scores"][m], 4) for name, r in result.items()
                  for m in ("BLEU-4", "CIDEr-D")},
               **{f"{name} words": r["vocabulary"]["distinct_words"] for name, r in result.items()},
               "seconds": round(time.perf_counter() - started, 1)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
