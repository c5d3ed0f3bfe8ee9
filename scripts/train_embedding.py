"""Train the search-by-meaning image embedding (until `capindex train-embedding` exists).

  python scripts/train_embedding.py --data /work/shared/datasets/flickr8k \
      --data /work/shared/datasets/coco-1997 --out capindex/weights/embedding.pt \
      --cache-dir /work/.cache-capindex
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time

import torch

from capindex.training.embedding import train_embedding_from_dirs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", action="append", required=True,
                        help="dataset folder; repeat; the first one's val split drives early stopping")
    parser.add_argument("--out", required=True)
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--patience", type=int)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--holdout", type=int, default=200)
    parser.add_argument("--cache-dir")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    report = train_embedding_from_dirs(
        args.data, args.out, args.epochs, args.batch_size, args.lr, args.patience, args.seed,
        args.holdout, args.cache_dir, log=lambda m: print(m, file=sys.stderr, flush=True),
        command="python " + shlex.join(sys.argv))
    report["timings"]["total_s"] = round(time.perf_counter() - start, 1)
    print(json.dumps({k: report[k] for k in ("best", "timings", "out")}, indent=1))


if __name__ == "__main__":
    main()
