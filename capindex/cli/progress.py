"""What the user sees while ingest runs: a progress bar and `skipping` lines on stderr, and
the summary line at the end."""

from __future__ import annotations

import sys

import click

from capindex.cli.common import printable


class Progress:
    """Ingest events -> a tqdm bar (images/s) and `skipping` lines, on stderr."""

    def __init__(self, quiet: bool = False, force: bool = False) -> None:
        self.quiet = quiet
        self.force = force  # draw the bar even when stderr is not a terminal
        self.bar = None

    def start(self, total: int) -> None:
        if self.quiet or not total:
            return
        from tqdm import tqdm

        self.bar = tqdm(total=total, unit=" images", desc="captioning", file=sys.stderr,
                        disable=False if self.force else None, dynamic_ncols=True)

    def advance(self, count: int) -> None:
        if self.bar is not None:
            self.bar.update(count)

    def skipped(self, path: str, reason: str) -> None:
        self._line(f"skipping {path}: {reason}")

    def notice(self, text: str) -> None:
        self._line(f"note: {text}")

    def _line(self, line: str) -> None:
        line = printable(line)
        if self.bar is not None and not self.bar.disable:
            self.bar.write(line, file=sys.stderr)
        else:
            click.echo(line, err=True)

    def finish(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def format_summary(summary) -> str:
    rate = summary.captioned / summary.seconds if summary.seconds else 0.0
    parts = [f"{summary.new} new", f"{summary.unchanged} unchanged", f"{summary.moved} moved"]
    for label in ("changed", "recaptioned", "retried", "enriched", "deleted"):
        if getattr(summary, label):
            parts.append(f"{getattr(summary, label)} {label}")
    parts.append(f"{summary.failed} failed")
    lines = [f"{', '.join(parts)}; {summary.captioned} captioned in {summary.seconds:.1f} s "
             f"({rate:.1f} images/s)"]
    if summary.previously_failed:
        lines.append(f"{summary.previously_failed} files failed in an earlier run and were "
                     "not read again (use --retry-failed)")
    if summary.other_model:
        lines.append(f"{summary.other_model} images have captions from another model "
                     "(use --recaption to redo them)")
    return "\n".join(lines)
