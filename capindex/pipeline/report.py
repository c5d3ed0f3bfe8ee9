"""What an ingest tells its caller: events as it goes, a summary at the end."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Summary:
    new: int = 0
    changed: int = 0
    moved: int = 0
    unchanged: int = 0
    recaptioned: int = 0
    retried: int = 0  # previously failed files that now worked
    enriched: int = 0  # unchanged or touched files whose objects or vector were made again
    # (caption kept)
    deleted: int = 0
    failed: int = 0  # files (or folders) that could not be read in this run
    previously_failed: int = 0  # failed before, unchanged, not retried
    other_model: int = 0  # unchanged, captioned by another model, not recaptioned
    captioned: int = 0  # images that went through the model
    interrupted: bool = False
    seconds: float = 0.0  # the run, but for loading the model
    loading_seconds: float = 0.0  # loading the model (torch and the checkpoint), when needed


class Events:
    """What ingest tells its caller as it goes; the CLI draws a progress bar. Defaults: silence."""

    def start(self, total: int) -> None:
        """`total` files will be read (the rest are unchanged)."""

    def advance(self, count: int) -> None:
        """`count` more files are done."""

    def skipped(self, path: str, reason: str) -> None:
        """A file (or a directory) could not be used."""

    def notice(self, text: str) -> None:
        """Something the user should know about how the run goes (one line)."""

    def finish(self) -> None:
        """No more progress."""
