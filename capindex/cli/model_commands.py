"""The model commands: `capindex caption`, `capindex train`, `capindex train-scst`,
`capindex evaluate`.

Registered on the main group by capindex/cli/__init__.py. Torch is imported inside the commands so
that `capindex --help` stays fast.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from capindex.cli.common import printable
from capindex.errors import CapindexError, describe_failure
from capindex.pipeline.options import DEFAULT_MAX_FILE_SIZE

DEVICES = click.Choice(["auto", "cpu", "cuda"])


def _default_cache_dir() -> Path:
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("capindex")) / "features"


def _model_option(f):
    return click.option("--model", "model_path", type=click.Path(dir_okay=False, path_type=Path),
                        help="Checkpoint to use (default: the shipped model).")(f)


def _guide_options(f):
    """--guide and its settings (model/guide.py), as `caption` and `evaluate` take them."""
    from capindex.model.guide import MODES, shipped_guide

    default = shipped_guide()
    f = click.option("--bonus", default=default.bonus, show_default=True, type=float,
                     help="Log-probability added to a detected label's words (--guide boost).")(f)
    f = click.option("--tag-threshold", default=default.tag_threshold, show_default=True,
                     type=click.FloatRange(0, 1),
                     help="ImageNet probability from which a tag guides the caption.")(f)
    f = click.option("--object-threshold", default=default.object_threshold,
                     show_default=True, type=click.FloatRange(0, 1),
                     help="Detector score from which an object guides the caption.")(f)
    return click.option("--guide", default=default.mode, show_default=True,
                        type=click.Choice(MODES),
                        help="Decoding guided by detected labels: boost their words, or "
                             "constrain the caption to hold one.")(f)


def _guide_config(mode, object_threshold, tag_threshold, bonus):
    """The shipped guide with the options' values (the rest, e.g. max_groups, as shipped)."""
    from dataclasses import replace

    from capindex.model.guide import shipped_guide

    return replace(shipped_guide(), mode=mode, object_threshold=object_threshold,
                   tag_threshold=tag_threshold, bonus=bonus)


@click.command()
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@_model_option
@click.option("--beam-size", default=3, show_default=True, type=click.IntRange(1, 20),
              help="Beam width; 1 is greedy decoding.")
@click.option("--device", default="auto", show_default=True, type=DEVICES,
              help="Where the model runs: auto picks cuda when available.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.option("--max-file-size", "max_file_mb", type=click.IntRange(1), metavar="MB",
              default=DEFAULT_MAX_FILE_SIZE // 10**6, show_default=True,
              help="Files larger than this many megabytes are skipped without being read.")
@_guide_options
def caption(images, model_path, beam_size, device, as_json, max_file_mb, guide,
            object_threshold, tag_threshold, bonus):
    """Print a caption for each IMAGE.

    Files are read and decoded as `capindex ingest` does: the same size and
    pixel limits, only regular files.

    Example: capindex caption sample_images/chelsea.jpg --json
    """
    from capindex.model.captioner import Captioner
    from capindex.pipeline.decode import load_image
    from capindex.pipeline.detect import detect_objects, load_detector

    try:
        captioner = Captioner.load(model_path, device=device, beam_size=beam_size,
                                   guide=_guide_config(guide, object_threshold, tag_threshold,
                                                       bonus))
        # a guided caption is worded after the detected objects, as ingest's
        detector = load_detector() if captioner.guide is not None else None
    except CapindexError as exc:
        raise click.ClickException(printable(str(exc))) from exc
    failed = 0
    for path in images:
        try:
            meta, pixels = load_image(str(path), max_file_mb * 10**6)  # uint8 (3, 224, 224)
        except Exception as exc:  # PIL and the OS raise many kinds for a bad file
            click.echo(printable(f"skipping {path}: {describe_failure(exc)}"), err=True)
            failed += 1
            continue
        objects = None
        if detector is not None:
            ((found, _),) = detect_objects(detector, pixels.unsqueeze(0),
                                           [(meta["width"], meta["height"])])
            objects = [found or []]
        (result,) = captioner.caption_batch(pixels.unsqueeze(0), objects=objects)
        if as_json:
            click.echo(json.dumps({"path": str(path), "caption": result.text,
                                   "score": round(result.score, 4),
                                   "tags": [{"label": label, "p": p} for label, p in result.tags]}))
        else:
            click.echo(f"{printable(str(path))}\t{result.text}")
    sys.exit(1 if failed else 0)


def _seed_options(f):
    """--seed and --holdout, as `train` and `train-embedding` take them."""
    f = click.option("--holdout", default=200, show_default=True, type=click.IntRange(0),
                     help="Validation images held out of a dataset that has no split files.")(f)
    return click.option("--seed", default=0, show_default=True, type=int,
                        help="Seed of batch order, dropout, initial weights and hold-out "
                             "choice.")(f)


def _training_data_options(f):
    """--data (repeatable) and --out, as `train` and `train-embedding` take them."""
    f = click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
                     help="Where to write the best checkpoint.")(f)
    return click.option("--data", "data_dirs", multiple=True, required=True,
                        type=click.Path(file_okay=False, exists=True, path_type=Path),
                        help="Dataset folder (images/, captions.csv, optional train.txt/"
                             "val.txt). Repeat for several; the first one's val split drives "
                             "early stopping.")(f)


@click.command()
@_training_data_options
@click.option("--cell", default="gru", show_default=True, type=click.Choice(["gru", "lstm", "rnn"]),
              help="Recurrent cell of the decoder.")
@click.option("--epochs", default=12, show_default=True, type=click.IntRange(1),
              help="Most epochs to train (early stopping may end sooner).")
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(1),
              help="Captions per training step.")
@click.option("--lr", default=4e-4, show_default=True, type=click.FloatRange(0, min_open=True),
              help="Adam learning rate; halved whenever validation CIDEr-D does not improve.")
@click.option("--patience", default=3, show_default=True, type=click.IntRange(1),
              help="Stop after this many epochs without a better validation CIDEr-D.")
@_seed_options
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Where encoder features are cached (default: the user cache dir).")
@click.option("--work-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Where the resumable training state goes (default: next to --out).")
@click.option("--resume", is_flag=True, help="Continue from the state in --work-dir.")
def train(data_dirs, out, cell, epochs, batch_size, lr, patience, seed, holdout, cache_dir,
          work_dir, resume):
    """Train a caption decoder on one or more datasets.

    Example: capindex train --data ../shared/datasets/flickr8k
    --data ../shared/datasets/coco-1997 --out model.pt
    """
    from capindex.training.datasets import read_dataset
    from capindex.training.trainer import TrainConfig
    from capindex.training.trainer import train as run_training

    config = TrainConfig(cell=cell, epochs=epochs, batch_size=batch_size, lr=lr,
                         patience=patience, seed=seed)
    try:
        datasets = [read_dataset(d, holdout=holdout, seed=seed) for d in data_dirs]
        result = run_training(datasets, out, config, cache_dir or _default_cache_dir(),
                              work_dir or out.parent / f"{out.stem}.work", resume=resume,
                              log=lambda m: click.echo(m, err=True))
    except (CapindexError, ValueError) as exc:
        raise click.ClickException(printable(str(exc))) from exc
    click.echo(f"best validation CIDEr-D {result['best_cider']:.3f} after {result['epochs']} "
               f"epochs; checkpoint: {out}")


@click.command("train-scst")
@_training_data_options
@click.option("--init", "init_path", required=True,
              type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="The cross-entropy checkpoint to fine-tune (what `capindex train` wrote).")
@click.option("--epochs", default=3, show_default=True, type=click.IntRange(1),
              help="Passes over the training images.")
@click.option("--lr", default=2e-5, show_default=True, type=click.FloatRange(0, min_open=True),
              help="Adam learning rate.")
@click.option("--samples", default=5, show_default=True, type=click.IntRange(2),
              help="Captions sampled per image; each one's baseline is the others' mean reward.")
@click.option("--images-per-batch", default=32, show_default=True, type=click.IntRange(1),
              help="Images per step.")
@click.option("--val-every", default=0, show_default=True, type=click.IntRange(0),
              help="Also validate (and keep the best) every this many steps; 0: once an epoch.")
@click.option("--max-steps", default=0, show_default=True, type=click.IntRange(0),
              help="Stop after this many steps (validating there); 0: after --epochs.")
@_seed_options
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Where encoder features are cached (default: the user cache dir).")
def train_scst(data_dirs, out, init_path, epochs, lr, samples, images_per_batch, val_every,
               max_steps, seed, holdout, cache_dir):
    """Fine-tune a trained decoder on CIDEr-D (self-critical sequence training).

    Keeps the checkpoint with the best greedy CIDEr-D on the first dataset's val split;
    writes nothing if no step beats --init.

    Example: capindex train-scst --init gru.pt --data ../shared/datasets/flickr8k
    --data ../shared/datasets/coco-1997 --out gru-scst.pt
    """
    from capindex.training.datasets import read_dataset
    from capindex.training.scst import ScstConfig
    from capindex.training.scst import train_scst as run

    config = ScstConfig(epochs=epochs, lr=lr, samples=samples,
                        images_per_batch=images_per_batch, val_every=val_every,
                        max_steps=max_steps, seed=seed)
    try:
        datasets = [read_dataset(d, holdout=holdout, seed=seed) for d in data_dirs]
        result = run(init_path, datasets, out, config, cache_dir or _default_cache_dir(),
                     log=lambda m: click.echo(m, err=True))
    except (CapindexError, ValueError) as exc:
        raise click.ClickException(printable(str(exc))) from exc
    if result["improved"]:
        click.echo(f"best validation CIDEr-D {result['best_cider']:.3f}; checkpoint: {out}")
    else:
        click.echo(f"no step beat {init_path} (validation CIDEr-D {result['best_cider']:.3f}); "
                   f"nothing written")


@click.command()
@click.option("--data", "data_dir", required=True,
              type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="Dataset folder to score on.")
@click.option("--split", default="val", show_default=True, type=click.Choice(["val", "train"]),
              help="Which split of the dataset to caption and score.")
@_model_option
@click.option("--beam-size", default=3, show_default=True, type=click.IntRange(1, 20),
              help="Beam width; 1 is greedy decoding.")
@click.option("--holdout", default=200, show_default=True, type=click.IntRange(0),
              help="Validation images held out of a dataset that has no split files.")
@click.option("--seed", default=0, show_default=True, type=int,
              help="Seed of the hold-out choice (use the one training used).")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Where encoder features are cached (default: the user cache dir).")
@click.option("--device", default="auto", show_default=True, type=DEVICES,
              help="Where the model runs: auto picks cuda when available.")
@_guide_options
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def evaluate(data_dir, split, model_path, beam_size, holdout, seed, cache_dir, device, guide,
             object_threshold, tag_threshold, bonus, as_json):
    """Score a model with BLEU-1..4, ROUGE-L and CIDEr-D (coco-caption scorers).

    Example: capindex evaluate --data ../shared/datasets/flickr8k --beam-size 3
    """
    from capindex.model.captioner import Captioner
    from capindex.training.datasets import read_dataset
    from capindex.training.evaluate import evaluate as run_evaluation

    try:
        captioner = Captioner.load(model_path, device=device, beam_size=beam_size,
                                   guide=_guide_config(guide, object_threshold, tag_threshold,
                                                       bonus))
        dataset = read_dataset(data_dir, holdout=holdout, seed=seed)
        result = run_evaluation(captioner, dataset, split, cache_dir or _default_cache_dir())
    except CapindexError as exc:
        raise click.ClickException(printable(str(exc))) from exc
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    click.echo(f"{result['model']} on {result['dataset']} {split} ({result['images']} images), "
               f"{result['decoding']['method']} k={beam_size}")
    for metric, value in result["scores"].items():
        click.echo(f"  {metric:<8} {value:.4f}")
    click.echo(f"  {result['vocabulary']['distinct_words']} distinct words, "
               f"{result['vocabulary']['distinct_captions']} distinct captions")
    click.echo(f"  decoding {result['decode_images_per_s']} images/s (decoder only)")


@click.command("train-embedding")
@_training_data_options
@click.option("--epochs", type=click.IntRange(1), help="Most epochs (default: the recipe's).")
@click.option("--batch-size", type=click.IntRange(2), help="Images per step (default: the recipe's).")
@click.option("--lr", type=click.FloatRange(0, min_open=True),
              help="AdamW learning rate (default: the recipe's).")
@click.option("--patience", type=click.IntRange(1),
              help="Stop after this many epochs without a better val R@10.")
@_seed_options
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Where encoder features and caption vectors are cached (default: the user "
                   "cache dir).")
def train_embedding(data_dirs, out, epochs, batch_size, lr, patience, seed, holdout, cache_dir):
    """Train the image side of search by meaning (into MiniLM's text space) on datasets.

    Example: capindex train-embedding --data ../shared/datasets/flickr8k
    --data ../shared/datasets/coco-1997 --out embedding.pt
    """
    import shlex

    from capindex.training.embedding import train_embedding_from_dirs

    try:
        report = train_embedding_from_dirs(
            list(data_dirs), out, epochs, batch_size, lr, patience, seed, holdout,
            cache_dir or _default_cache_dir(), log=lambda m: click.echo(m, err=True),
            command="capindex " + shlex.join(sys.argv[1:]))
    except (CapindexError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(json.dumps({k: report[k] for k in ("best", "timings", "out") if k in report},
                          indent=1, default=str))


@click.command("evaluate-search")
@click.option("--data", "data_dir", required=True,
              type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="Dataset folder whose split is ingested and searched.")
@click.option("--split", default="val", show_default=True, type=click.Choice(["val", "train"]),
              help="Which split of the dataset to ingest and search.")
@click.option("--holdout", default=200, show_default=True, type=click.IntRange(0),
              help="Validation images held out of a dataset that has no split files.")
@click.option("--seed", default=0, show_default=True, type=int,
              help="Seed of the hold-out choice (use the one training used).")
@_model_option
@click.option("--device", default="auto", show_default=True, type=DEVICES,
              help="Where the model runs: auto picks cuda when available.")
@click.option("--library", "library_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Keep the evaluation library here (a re-run is then incremental); "
                   "default: a temporary one.")
@click.option("--max-caption-queries", type=click.IntRange(1),
              help="Score only the first N caption queries (default: all).")
@click.option("--signals", is_flag=True,
              help="Score each search signal in turn (keyword fields one by one, semantic, "
                   "hybrid) instead of the default search only.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def evaluate_search(data_dir, split, holdout, seed, model_path, device, library_dir,
                    max_caption_queries, signals, as_json):
    """Score search on a dataset split: word precision@10 and recall@50 for a fixed list of
    words, and R@1/5/10 and median rank of each human caption's image.

    Example: capindex evaluate-search --data ../shared/datasets/flickr8k
    """
    from capindex.training.datasets import read_dataset
    from capindex.training.search_eval import SIGNAL_STEPS, format_report
    from capindex.training.search_eval import evaluate_search as run

    def ingest(library, paths):
        return library.ingest(paths, model=model_path, device=device)

    try:
        dataset = read_dataset(data_dir, holdout=holdout, seed=seed)
        result = run(dataset, split, library_dir, ingest, SIGNAL_STEPS if signals else None,
                     max_caption_queries=max_caption_queries,
                     log=lambda m: click.echo(m, err=True))
    except CapindexError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(json.dumps(result, indent=2) if as_json else format_report(result))


MODEL_COMMANDS = (caption, train, train_scst, evaluate, train_embedding, evaluate_search)
