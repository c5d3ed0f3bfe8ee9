"""`capindex serve`: a web page over the Library API (the `[serve]` extra: Starlette,
Jinja2, uvicorn). Routes call the Library, templates only render, and the JSON API is the
pages' data.

    app.py        create_app(library, token=None): the routes, the Guard, the shared state
    security.py   Guard: loopback host or token, cross-site writes refused, CSP and nosniff
    data.py       request parameters -> the dicts the pages render and the API returns
    pages.py      the HTML pages (templates/)
    json_api.py   the JSON API and the photo and thumbnail bytes, by catalogue id only
    render.py     the Jinja environment (autoescaping) and its display filters
"""

from __future__ import annotations

__all__ = ["create_app"]


def __getattr__(name: str):
    if name == "create_app":
        from capindex.web.app import create_app

        return create_app
    raise AttributeError(f"module 'capindex.web' has no attribute {name!r}")
