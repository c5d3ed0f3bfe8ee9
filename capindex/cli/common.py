"""What every command shares: the library chosen by --library, library errors as one line,
names made safe to print, and a query that may start with "-"."""

from __future__ import annotations

import re
from contextlib import contextmanager

import click

from capindex.errors import CapindexError

# What a terminal would act on rather than show: C0 and C1 control characters (newline,
# ESC, BEL...), DEL, the bidirectional overrides, and the surrogates that stand for bytes
# of a name that are not UTF-8.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def printable(text: str) -> str:
    """`text` with each control character escaped as Python writes it (\\n, \\x1b, \\u202e),
    for text output: a file name holding a newline or an escape sequence stays one line
    and cannot drive the terminal. (JSON output escapes them itself.)"""
    return _UNPRINTABLE.sub(lambda m: repr(m.group())[1:-1], text)


@contextmanager
def library_errors():
    """A CapindexError becomes `Error: MESSAGE` and exit status 1."""
    try:
        yield
    except CapindexError as exc:
        raise click.ClickException(printable(str(exc))) from exc


def library(ctx: click.Context):
    """The `capindex.Library` named by --library (or $CAPINDEX_HOME, or the default)."""
    from capindex.api import Library

    return Library(ctx.obj["library_dir"])


class DashWordsCommand(click.Command):
    """A command whose arguments are words that may start with "-" (`capindex search -cat`).

    An argument starting with a single "-" that is not one of the command's own options
    (-n, -h...) is taken as a word, as the help promises for NOT: `-word`. Options may
    come before, between or after the words; "--" ends the options as usual, and a
    mistyped long option (--jsn) is still an error. Click alone would read `-cat` as the
    short options -c -a -t, and `-nature` as `-n ature`.
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        flags, valued = set(), set()
        for param in self.get_params(ctx):
            if isinstance(param, click.Option):
                names = [*param.opts, *param.secondary_opts]
                (flags if param.is_flag or param.count else valued).update(names)
        options, words = [], []
        i = 0
        while i < len(args):
            arg = args[i]
            if arg == "--":
                words.extend(args[i + 1:])
                break
            if arg in valued:  # `-n 5`: the value goes with it
                options.extend(args[i:i + 2])
                i += 2
                continue
            if arg in flags or arg.startswith("--") or (arg[:2] in valued and arg[2:].isdigit()):
                options.append(arg)  # --json, --limit=5, -n5; an unknown --option stays an error
            else:  # a word, also one that starts with "-"
                words.append(arg)
            i += 1
        return super().parse_args(ctx, [*options, "--", *words] if words else options)
