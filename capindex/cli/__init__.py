"""The `capindex` command: a thin click layer over the library API (`capindex.api`).

This is the one place real collaborators are built (the captioner, the progress bar)
and the only code that prints or picks exit codes. Heavy imports (torch, pyarrow,
SQLAlchemy) happen inside the commands, so `capindex --help` is fast. Library
errors (capindex.errors) become one-line `Error: ...` messages.

    __init__.py          the `capindex` group and --library
    library_commands.py  ingest, search, edit, export, info
    model_commands.py    caption, train, evaluate
    serve_command.py     serve (the web page, capindex.web)
    progress.py          the progress bar, `skipping` lines and the ingest summary
"""

from __future__ import annotations

from pathlib import Path

import click

from capindex.cli.library_commands import LIBRARY_COMMANDS
from capindex.cli.model_commands import MODEL_COMMANDS
from capindex.cli.serve_command import SERVE_COMMANDS
from capindex.pipeline.caption import load_captioner
from capindex.pipeline.detect import load_detector


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="capindex")
@click.option("--library", "library_dir", metavar="DIR",
              type=click.Path(file_okay=False, path_type=Path),
              help="Library directory (catalogue, Parquet files, search index). "
                   "Default: $CAPINDEX_HOME, else the user data directory "
                   "(~/.local/share/capindex on Linux).")
@click.pass_context
def main(ctx: click.Context, library_dir: Path | None) -> None:
    """Caption photo folders offline, then search them by keyword.

    \b
    Example:
        capindex ingest ~/Pictures
        capindex search "dog on a beach"
    """
    ctx.ensure_object(dict)
    ctx.obj.setdefault("load_captioner", load_captioner)
    ctx.obj.setdefault("load_detector", load_detector)
    ctx.obj["library_dir"] = library_dir


for _command in (*LIBRARY_COMMANDS, *MODEL_COMMANDS, *SERVE_COMMANDS):
    main.add_command(_command)
