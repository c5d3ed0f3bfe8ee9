"""`create_app(library)`: the Starlette application behind `capindex serve`.

    app = create_app(capindex.Library("~/capindex-library"), token=None)
    uvicorn.run(app, host="127.0.0.1", port=8765)

Routes (pages in `pages.py`, JSON and bytes in `json_api.py`, both over `data.py`):

    GET  /                          search box, filters, results grid, caption an upload
    GET  /photos/{id}               one photo: boxes, captions, tags, EXIF, similar photos
    GET  /api/search?q=&limit=&offset=&mode=&after=&before=&camera=&object=&tag=
    GET  /api/images/{id}           the photo page's data
    GET  /api/facets                the filter menus' choices
    GET  /images/{id}, /thumbs/{id} the file and its thumbnail, by catalogue id only
    POST /api/images/{id}/caption   edit or revert the user's caption
    POST /api/caption               caption an uploaded photo, storing nothing
    GET  /static/...                the page's CSS and JavaScript

The library is asked again on every request (each call opens the catalogue read-only),
so photos an ingest adds while the server runs appear without a restart.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from capindex.web import json_api, pages
from capindex.web.render import environment
from capindex.web.security import Guard, new_csrf_token

if TYPE_CHECKING:
    from jinja2 import Environment

    from capindex.api import Library

MAX_UPLOAD_MB = 25
# Requests served at once (Starlette runs each in a thread, anyio allows 40 by default):
# one per core. Searches are Python and numpy under one interpreter lock, so more threads
# only take turns: with 20 clients at once on 2 cores, 40 threads cost 41 CPU-ms a
# request and answered 30 a second (p95 954 ms), 2 threads 21 CPU-ms and 57 a second (p95
# 416 ms) (docs/web.md, "Speed").
REQUEST_THREADS = max(2, os.cpu_count() or 2)


@dataclass
class ServeState:
    """What every route reads: the library, the page's CSRF token, the limits, and the
    collaborators used to caption an upload (None: the library's own, loaded once)."""

    library: Library
    csrf_token: str
    max_upload_bytes: int
    templates: Environment
    captioner: object | None = None
    detector: object | None = None

    def describe(self, data: bytes) -> dict:
        """`Library.describe` for an upload (the library loads its models once)."""
        return self.library.describe(data, captioner=self.captioner, detector=self.detector)


def create_app(library: Library, token: str | None = None, *, max_upload_mb: float = MAX_UPLOAD_MB,
               captioner=None, detector=None) -> Starlette:
    """The web app over `library`. `token` None: answer loopback host names only (see
    `capindex.web.security`); else every request must carry it. `captioner`/`detector`:
    what captions an upload (default: the library's models, loaded on the first upload)."""
    state = ServeState(library=library, csrf_token=new_csrf_token(),
                       max_upload_bytes=int(max_upload_mb * 10**6), templates=environment(),
                       captioner=captioner, detector=detector)
    routes = [
        Route("/", pages.index),
        Route("/photos/{image_id:int}", pages.photo),
        Route("/api/search", json_api.search),
        Route("/api/facets", json_api.facets),
        Route("/api/images/{image_id:int}", json_api.image),
        Route("/api/images/{image_id:int}/caption", json_api.edit_caption, methods=["POST"]),
        Route("/api/caption", json_api.caption_upload, methods=["POST"]),
        Route("/images/{image_id:int}", json_api.image_file),
        Route("/thumbs/{image_id:int}", json_api.thumbnail),
        Mount("/static", StaticFiles(packages=[("capindex.web", "static")]), name="static"),
    ]
    app = Starlette(routes=routes, middleware=[Middleware(Guard, token=token)],
                    exception_handlers={404: pages.not_found, 405: pages.not_allowed},
                    lifespan=_request_threads)
    app.state.serve = state
    return app


@contextlib.asynccontextmanager
async def _request_threads(app: Starlette):
    """Serve REQUEST_THREADS requests at once (anyio's thread limit, set in the server's loop)."""
    import anyio.to_thread

    anyio.to_thread.current_default_thread_limiter().total_tokens = REQUEST_THREADS
    yield
