"""Compare training levers of the search-by-meaning image embedding on Flickr8k val.

Features and caption embeddings are prepared once (cached), then each named run
trains from scratch with its overrides of EmbeddingTrainConfig and appends one
JSON line (best epoch, its val scores, every epoch's scores) to --results.

  python scripts/embedding_levers.py --data /work/shared/datasets/flickr8k \
      --data /work/shared/datasets/coco-1997 --cache-dir /work/.cache-capindex \
      --results levers.jsonl --run 'baseline={}' --run 'all5={"captions_per_image": 5}'
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict

import torch

from capindex.model.embedding import save_embedding
from capindex.training.datasets import read_dataset
from capindex.training.embedding import EmbeddingTrainConfig, fit, prepare_data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", action="append", required=True)
    parser.add_argument("--cache-dir", required=True)
    parser.add_argument("--results", required=True)
    parser.add_argument("--run", action="append", required=True, help="NAME=JSON overrides")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--save-dir", help="write each run's best network to DIR/NAME.pt")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    log = lambda m: print(m, file=sys.stderr, flush=True)
    datasets = [read_dataset(d, holdout=200, seed=0) for d in args.data]
    start = time.perf_counter()
    data = prepare_data(datasets, args.cache_dir, log)
    log(f"data ready in {time.perf_counter() - start:.1f}s {data.timings}")
    for spec in args.run:
        name, _, overrides = spec.partition("=")
        overrides = json.loads(overrides or "{}")
        config = EmbeddingTrainConfig(**overrides)
        log(f"== {name}: {overrides}")
        net, report = fit(data, config, log)
        if args.save_dir:
            save_embedding(f"{args.save_dir}/{name}.pt", net,
                           {"model_id": f"lever-{name}", "train_config": asdict(config),
                            "best": report["best"], "command": " ".join(sys.argv)})
        row = {"name": name, "overrides": overrides, "config": asdict(config), **report}
        with open(args.results, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        best = report["best"]
        flickr = best["val"][data.val[0].name]
        log(f"== {name}: best epoch {best['epoch']} {flickr} ({report['train_seconds']}s)")


if __name__ == "__main__":
    main()
