"""Jinja templates with autoescaping on for every file, and the few display filters they use.

Templates only render: they get the dicts of `capindex.web.data` and format values
(a coordinate, a probability, a file name); every string goes out escaped.
"""

from __future__ import annotations

from pathlib import PurePosixPath

from jinja2 import Environment, PackageLoader, StrictUndefined


def environment() -> Environment:
    env = Environment(loader=PackageLoader("capindex.web", "templates"), autoescape=True,
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(coordinates=coordinates, percent=percent, file_name=file_name,
                       when=when)
    return env


def coordinates(lat: float | None, lon: float | None) -> str:
    """48.858400° N, 2.294500° E: a place as text, no map link (nothing leaves the machine)."""
    if lat is None or lon is None:
        return ""
    return (f"{abs(lat):.6f}° {'N' if lat >= 0 else 'S'}, "
            f"{abs(lon):.6f}° {'E' if lon >= 0 else 'W'}")


def percent(probability: float | None) -> str:
    return "" if probability is None else f"{100 * probability:.0f}%"


def file_name(path: str) -> str:
    return PurePosixPath(path).name


def when(iso: str | None) -> str:
    """2019-06-01T14:03:00 -> 2019-06-01 14:03:00 (the camera's local time, as recorded)."""
    return "" if not iso else str(iso).replace("T", " ")
