"""The library commands: `capindex ingest`, `search`, `edit`, `export`, `info`, each a thin layer
over `capindex.api.Library` (torch, pyarrow and SQLAlchemy load inside them)."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

import click

from capindex.api import ENGINES
from capindex.cli.common import DashWordsCommand, library, library_errors, printable
from capindex.cli.progress import Progress, format_summary
from capindex.errors import QuerySyntaxError
from capindex.model import PRECISIONS
from capindex.pipeline.options import DEFAULT_MAX_FILE_SIZE
from capindex.search.modes import SEARCH_MODES
from capindex.store.export import FORMATS, format_from_suffix

# `capindex ingest` exit statuses (also in its --help)
EXIT_SOME_FAILED = 3
EXIT_INTERRUPTED = 130
INTERRUPTED = "interrupted: what was written is kept; run the same command again to finish"
DATE = click.DateTime(formats=["%Y-%m-%d"])


@click.command()
@click.argument("paths", nargs=-1, required=True, metavar="PATH...",
                type=click.Path(exists=True, path_type=str))
@click.option("--batch-size", type=click.IntRange(1, 4096),
              help="Images per model call.  [default: 16 with the model on the CPU, 256 on "
                   "a GPU (64 on one with less than 8 GiB)]")
@click.option("--workers", type=click.IntRange(0, 64),
              help="Processes that read, hash and decode files while the model runs; "
                   "0 does it in the main process.  [default: with the model on the CPU, "
                   "one per CPU at low priority, at most 8; on a GPU, CPUs - 1, at most 16]")
@click.option("--device", default="auto", show_default=True,
              type=click.Choice(["auto", "cpu", "cuda"]),
              help="Where the model runs; auto picks cuda when available.")
@click.option("--model", "model_path", metavar="CHECKPOINT",
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Caption with this checkpoint instead of the model shipped with capindex.")
@click.option("--threads", type=click.IntRange(1, 256),
              help="CPU threads the model uses (decode workers use one each).  "
                   "[default: one per core]")
@click.option("--precision", default="auto", show_default=True,
              type=click.Choice(PRECISIONS),
              help="Encoder arithmetic: auto is fp32; bf16 autocast is faster on CPUs with "
                   "AVX512-BF16, and changes some captions (fp16 runs fp32 on a CPU).")
@click.option("--pin-memory/--no-pin-memory", default=False,
              help="With the model on a GPU, copy batches to it from page-locked memory "
                   "(slower on an H100; for comparison).  [default: no]")
@click.option("--exclude", multiple=True, metavar="GLOB",
              help="Skip files and folders whose name or path relative to PATH matches; "
                   "repeatable, e.g. --exclude '*.png' --exclude 'thumbs/*'.")
@click.option("--objects/--no-objects", default=True,
              help="Find the objects in each image (YOLOX-nano, 80 COCO classes) for search; "
                   "an existing library gains them on its next ingest.  [default: objects]")
@click.option("--recaption", is_flag=True,
              help="Caption again the images whose caption was made by another model.")
@click.option("--retry-failed", is_flag=True, help="Try again the files that failed before.")
@click.option("--rebuild", is_flag=True,
              help="Start over from the files (for a damaged catalogue): move the catalogue "
                   "aside as catalog.sqlite.damaged-TIME and its Parquet mirror as "
                   "parquet.before-rebuild-TIME (both kept), then caption every file again.")
@click.option("--max-file-size", "max_file_mb", type=click.IntRange(1), metavar="MB",
              default=DEFAULT_MAX_FILE_SIZE // 10**6, show_default=True,
              help="Files larger than this many megabytes fail without being read.")
@click.option("--engine", default="local", show_default=True, type=click.Choice(ENGINES),
              help="Where files are read and the models run: this machine, or a Ray cluster "
                   "(pip install 'capindex[ray]'; docs/scale-out.md). The rows are the same.")
@click.option("--address", metavar="auto|HOST:PORT",
              help="With --engine ray: the Ray cluster to join.  [default: a local Ray "
                   "started for the run, with this machine's CPUs]")
@click.option("-q", "--quiet", is_flag=True,
              help="No progress bar and no summary (bad files are still reported).")
@click.option("--json", "as_json", is_flag=True,
              help="Print the summary as a JSON object on stdout (the counts and seconds).")
@click.pass_context
def ingest(ctx, paths, batch_size, workers, device, model_path, threads, precision, pin_memory,
           exclude, objects, recaption, retry_failed, rebuild, max_file_mb, engine, address,
           quiet, as_json):
    """Caption the images under each PATH and add them to the library.

    Folders are walked recursively for .jpg .jpeg .png .webp .bmp .gif .tif
    .tiff files (any case); names starting with "." are skipped. Re-running is
    incremental: unchanged files are not read again, moved files keep their
    caption, deleted files leave the library. A file that cannot be read is
    reported as "skipping PATH: REASON", recorded with status=error and skipped
    on later runs unless --retry-failed. A damaged or missing search index or
    Parquet mirror is rebuilt from the catalogue; a damaged catalogue stops the
    run (restore it, or start over with --rebuild). A folder that cannot be
    read now (not mounted, no permission) is reported once and its files are
    kept as they are.

    \b
    Exit status:
      0    every file is captioned or was already up to date
      1    an error stopped it (library busy, model missing, a decode worker
           died between files, ...); what was written is kept
      2    bad usage (an unknown option, a PATH that does not exist)
      3    finished, but some files or folders could not be read (see the
           "skipping" lines)
      130  interrupted by Ctrl-C: what was written is kept; run again to finish

    \b
    Examples:
        capindex ingest ~/Pictures --exclude 'thumbs/*'
        capindex ingest /shared/photos --engine ray --address auto
    """
    if address is not None and engine != "ray":
        raise click.BadParameter("--address needs --engine ray", param_hint="'--address'")
    if device == "cuda" and engine == "local":
        import torch

        if not torch.cuda.is_available():
            raise click.BadParameter("CUDA is not available on this machine; use --device cpu "
                                     "or auto", param_hint="'--device'")
    if threads:
        import torch

        torch.set_num_threads(threads)
    with library_errors():
        settings = {"precision": precision} if precision != "auto" else {}
        captioner = ctx.obj["load_captioner"](model_path, device, **settings)
        detector = ctx.obj["load_detector"]() if objects else None
    try:
        with library_errors(), _stop_on_sigint() as stop:
            summary = library(ctx).ingest(
                paths, captioner=captioner, objects=detector is not None, detector=detector,
                events=Progress(quiet),
                should_stop=lambda: stop.is_set(), engine=engine, address=address,
                batch_size=batch_size, workers=workers,
                pin_memory=pin_memory, exclude=tuple(exclude), recaption=recaption,
                retry_failed=retry_failed, rebuild=rebuild, max_file_size=max_file_mb * 10**6)
    except KeyboardInterrupt:
        click.echo(INTERRUPTED, err=True)
        ctx.exit(EXIT_INTERRUPTED)
    if as_json:
        click.echo(json.dumps(dataclasses.asdict(summary)))
    elif not quiet:
        click.echo(format_summary(summary), err=True)
    if summary.interrupted:
        click.echo(INTERRUPTED, err=True)
        ctx.exit(EXIT_INTERRUPTED)
    if summary.failed:
        ctx.exit(EXIT_SOME_FAILED)


@contextmanager
def _stop_on_sigint():
    """First Ctrl-C: finish the current batch, then stop. Second: stop at once.

    At once means the process exits there and then (status 130), as after kill -9: what
    was committed is kept and the next run repairs the rest. An exception raised from
    the handler could land anywhere, in a DataLoader's __del__ or a cleanup, where Python
    prints it as a traceback and goes on.
    """
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum, frame):
        if stop.is_set():
            # (on a terminal the progress bar's line is not ended)
            click.echo(("\n" if sys.stderr.isatty() else "") + INTERRUPTED, err=True)
            sys.stderr.flush()
            os._exit(EXIT_INTERRUPTED)
        stop.set()
        click.echo("\nstopping after the current batch (Ctrl-C again to stop now)", err=True)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)


@click.command(cls=DashWordsCommand)
@click.argument("words", nargs=-1, metavar="QUERY")
@click.option("-n", "--limit", default=10, show_default=True, type=click.IntRange(1, 10_000),
              help="How many results at most.")
@click.option("--mode", default="hybrid", show_default=True, type=click.Choice(SEARCH_MODES),
              help="keyword: words only (BM25); semantic: meaning only (the text-image "
                   "embedding); hybrid: both, fused by rank (keyword only for a library "
                   "without image vectors).")
@click.option("--like", "like", metavar="PHOTO", type=click.Path(dir_okay=False, path_type=str),
              help="Rank the library by how alike its photos are to PHOTO (catalogued or not).")
@click.option("--offset", default=0, show_default=True, type=click.IntRange(0),
              help="Skip this many results first (the next page: --offset 10).")
@click.option("--after", type=DATE, metavar="YYYY-MM-DD",
              help="Only photos taken on or after this day (EXIF capture date).")
@click.option("--before", type=DATE, metavar="YYYY-MM-DD",
              help="Only photos taken on or before this day.")
@click.option("--camera", metavar="TEXT",
              help="Only photos whose camera make or model holds TEXT (any case): canon.")
@click.option("--object", "object_label", metavar="LABEL",
              help="Only photos in which this object was detected (a COCO label: dog, car).")
@click.option("--tag", metavar="TEXT",
              help="Only photos with a tag holding TEXT (ImageNet labels: tabby, seashore).")
@click.option("--json", "as_json", is_flag=True,
              help="Print the results as a JSON array (with each hit's keyword and vector "
                   "scores).")
@click.pass_context
def search(ctx, words, limit, mode, like, offset, after, before, camera, object_label, tag,
           as_json):
    """Find images by what they show: words in their caption, detected objects, tags or
    file name (BM25), fused with search by meaning.

    Any word of QUERY may match and images matching more words rank higher;
    "dogs" and "running" find dog and run; broader words work too (animal,
    pet, child, vehicle: from WordNet); a sentence also matches by meaning
    ("a toddler splashes in a fountain"). NOT word (or -word) leaves out the
    images with that word; "quoted phrases", AND / OR and field:word (fields
    caption, alt, objects, tags, words, name) work too. Prints rank, score,
    path and caption, one image a line. QUERY may be one argument or several
    (`capindex search -cat` works; "--" ends the options). The filters
    (--after, --before, --camera, --object, --tag) apply before --limit; with
    filters and no QUERY, the photos that pass them are listed newest taken
    first.

    \b
    Examples:
        capindex search "dog on a beach" --limit 5
        capindex search "dog -cat"
        capindex search --like holiday/IMG_2041.jpg
        capindex search dog --after 2019-01-01 --before 2019-12-31 --camera canon
        capindex search --object dog --offset 10
    """
    from capindex.search.filters import Filters

    query = " ".join(words)
    try:
        filters = Filters(after=after and after.date(), before=before and before.date(),
                          camera=camera, object=object_label, tag=tag)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--after' / '--before'") from exc
    if not query and not like and filters.is_empty():
        raise click.UsageError("give a QUERY, --like PHOTO, or a filter (--after, --before, "
                               "--camera, --object, --tag)")
    if query and not query.strip() and not like and filters.is_empty():
        raise click.ClickException(str(QuerySyntaxError(query, "the query is empty")))
    notes: list[str] = []
    with library_errors():
        hits = library(ctx).search(query, limit, offset=offset, filters=filters, mode=mode,
                                   like=like, notes=notes)
    for note in notes:
        click.echo(f"note: {note}", err=True)
    if as_json:
        click.echo(json.dumps([hit.to_dict() for hit in hits], indent=2, ensure_ascii=False))
        return
    if not hits:
        what = f"match {query!r}" if query or like else "pass the filters"
        more = " and the filters" if (query or like) and not filters.is_empty() else ""
        click.echo(printable(f"no images {what}{more}"
                             + (f" after the first {offset}" if offset else "")), err=True)
    for hit in hits:
        click.echo(printable(f"{hit.rank:>3}  {hit.score:6.2f}  {hit.path}  {hit.caption}"))


@click.command()
@click.argument("photo", required=False, metavar="PHOTO")
@click.argument("caption", nargs=-1, metavar="CAPTION")
@click.option("--id", "photo_id", type=click.IntRange(1), metavar="N",
              help="Name the photo by its id (the `id` of search --json) instead of PHOTO.")
@click.option("--revert", is_flag=True,
              help="Drop your caption: the generated one is shown and searched again.")
@click.pass_context
def edit(ctx, photo, caption, photo_id, revert):
    """Replace the caption of PHOTO (a catalogued file) with CAPTION, or --revert.

    Your caption is shown and searched instead of the generated one, which
    is kept (searched with a lower weight, exported as `caption` beside
    `user_caption`). It stays when the photo is captioned again (--recaption,
    another model). While an ingest is writing to the library, an edit is
    refused (run it again once the ingest is done).

    \b
    Examples:
        capindex edit ~/Pictures/IMG_2041.jpg "Rex on Brighton beach"
        capindex edit --id 12 "Rex on Brighton beach"
        capindex edit ~/Pictures/IMG_2041.jpg --revert
    """
    words = list(caption)
    if photo_id is not None and photo is not None:
        words.insert(0, photo)  # with --id, every argument is the caption
    image = photo_id if photo_id is not None else photo
    if image is None:
        raise click.UsageError("name the photo: PHOTO (a catalogued file) or --id N")
    text = " ".join(words)
    if revert and text:
        raise click.UsageError("give a CAPTION or --revert, not both")
    if not revert and not text.strip():
        raise click.ClickException("the caption is empty; give the new caption, or --revert "
                                   "to the generated one")
    lib = library(ctx)
    with library_errors():
        row_id = lib.revert_caption(image) if revert else lib.edit_caption(image, text)
        row = lib.photo(row_id)
    click.echo(printable(f"{row['path']} (id {row_id}): {row['caption']}"
                         + (" (generated)" if revert else "")))


@click.command()
@click.argument("out", type=click.Path(dir_okay=False, allow_dash=True, path_type=str))
@click.option("--format", "fmt", type=click.Choice(FORMATS),
              help="Output format.  [default: from OUT's extension: .parquet, .csv, .jsonl]")
@click.pass_context
def export(ctx, out, fmt):
    """Write the whole catalogue to OUT as Parquet, CSV or JSON Lines.

    One row per image with the columns listed in docs/architecture.md
    (path, caption, caption_score, tags, size, EXIF fields, provenance,
    status, ...). OUT "-" writes CSV or JSON Lines to standard output.

    \b
    Example:
        capindex export captions.parquet
        capindex export - --format jsonl | head
    """
    fmt = fmt or format_from_suffix(out)
    if fmt is None:
        raise click.BadParameter("cannot tell the format from the file name; add --format "
                                 "parquet, csv or jsonl", param_hint="'--format'")
    if out == "-" and fmt == "parquet":
        raise click.BadParameter("Parquet cannot go to standard output; give a file name",
                                 param_hint="'OUT'")
    with library_errors():
        count = library(ctx).export(sys.stdout if out == "-" else out, fmt)
    if out == "-":
        return
    click.echo(f"exported {count} rows to {out} ({fmt})", err=True)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the information as JSON.")
@click.pass_context
def info(ctx, as_json):
    """Show where the library is, how many images it holds, failures and models.

    \b
    Example:
        capindex info --json
    """
    with library_errors():
        report = library(ctx).info()
    if as_json:
        click.echo(json.dumps(report, indent=2, ensure_ascii=False))
        return
    click.echo(printable(f"library: {report['library']}"))
    if not report["images"]:
        click.echo("no images yet; add some with: capindex ingest PATH")
        return
    click.echo(f"images: {report['images']} ({report['ok']} captioned, "
               f"{report['failed']} failed)")
    for model in report["models"]:
        click.echo(printable(f"model: {model['model_id']} (weights "
                             f"{str(model['weights_hash'])[:12]}): {model['images']} images"))
    click.echo(f"last ingest: {report['last_ingest']}")
    damaged = report["parquet_unreadable"]
    click.echo(f"parquet: {report['parquet_rows']} rows in {report['parquet_files']} files"
               + (f" ({damaged} damaged; the next capindex ingest rewrites them from the "
                  "catalogue)" if damaged else ""))
    if report["index_problem"]:
        click.echo(f"search index: needs a rebuild ({report['index_problem']}); run capindex "
                   "ingest on your photo folders to rebuild it from the catalogue")
    else:
        click.echo(f"search index: {report['index_documents']} documents")
    if report["vectors"] is None:
        click.echo("vector index: damaged; the next capindex ingest rebuilds it")
    elif report["vectors"]:
        click.echo(f"vector index: {report['vectors']} images ({report['vector_model']})")
    if report["failures"]:
        click.echo(f"failures (first {len(report['failures'])}; see capindex export):")
        for failure in report["failures"]:
            click.echo(printable(f"  {failure['path']}: {failure['error']}"))


LIBRARY_COMMANDS = (ingest, search, edit, export, info)
