"""The HTML pages: each gets its dict from `capindex.web.data` (the same data as its JSON
twin in `json_api.py`) and renders a template; nothing else happens here."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from capindex.errors import CapindexError, byte_size
from capindex.web import data

if TYPE_CHECKING:
    from capindex.web.app import ServeState


def state_of(request: Request) -> ServeState:
    return request.app.state.serve


def render(request: Request, template: str, status: int = 200, back: str | None = None,
           **context) -> HTMLResponse:
    state = state_of(request)
    html = state.templates.get_template(template).render(
        back=back, csrf_token=state.csrf_token, library=str(state.library.root),
        upload_limit=byte_size(state.max_upload_bytes), **context)
    return HTMLResponse(html, status_code=status)


async def index(request: Request) -> Response:
    """`/`: the search form with its filters, the results (the data of /api/search) and
    the upload box."""
    state = state_of(request)
    search = results = error = None
    status = 200
    try:
        search = data.SearchRequest.from_params(request.query_params)
        results = await run_in_threadpool(data.search_results, state.library, search)
    except (data.BadRequest, CapindexError) as exc:
        error, status = str(exc), data.http_status(exc)
    try:
        facets = await run_in_threadpool(data.facets, state.library)
    except CapindexError:
        facets = data.facets_of({})
    search = search or data.SearchRequest(q=request.query_params.get("q", ""))
    more = previous = None
    if results and results["next"]:
        more = search.url("/", offset=search.offset + len(results["results"]))
    if search.offset:
        previous = search.url("/", offset=max(0, search.offset - search.limit))
    return render(request, "index.html", status, search=search, results=results, facets=facets,
                  error=error, more_url=more, previous_url=previous)


async def photo(request: Request) -> Response:
    """`/photos/{id}`: one photo (the data of /api/images/{id})."""
    state = state_of(request)
    image_id = request.path_params["image_id"]
    try:
        details = await run_in_threadpool(data.photo_details, state.library, image_id)
    except CapindexError as exc:
        return render(request, "error.html", data.http_status(exc), message=str(exc))
    if details is None:
        return render(request, "error.html", 404, message=f"No photo has the id {image_id}.")
    return render(request, "photo.html", photo=details)


async def not_found(request: Request, exc: Exception) -> Response:
    if request.url.path.startswith("/api/"):
        return JSONResponse({"error": "not found"}, status_code=404)
    return render(request, "error.html", 404, message="There is no page here.")


async def not_allowed(request: Request, exc: Exception) -> Response:
    return JSONResponse({"error": f"{request.method} is not allowed here"}, status_code=405)
