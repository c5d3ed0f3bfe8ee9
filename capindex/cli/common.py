"""What every command shares: the library chosen by --library, and library errors as one line."""

from __future__ import annotations

from contextlib import contextmanager

import click

from capindex.errors import CapindexError


@contextmanager
def library_errors():
    """A CapindexError becomes `Error: MESSAGE` and exit status 1."""
    try:
        yield
    except CapindexError as exc:
        raise click.ClickException(str(exc)) from exc


def library(ctx: click.Context):
    """The `capindex.Library` named by --library (or $CAPINDEX_HOME, or the default)."""
    from capindex.api import Library

    return Library(ctx.obj["library_dir"])
