"""The JSON API and the photo bytes (docs/web.md documents each route).

Files are found only through the catalogue (`Library.photo_path`, `Library.thumbnail`) by an
integer id from the URL; no path from a request ever reaches the file system. Errors are
`{"error": "one line"}` with a 4xx/5xx status.
"""

from __future__ import annotations

import json
from urllib.parse import parse_qs

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response

from capindex.errors import CapindexError, byte_size
from capindex.web import data
from capindex.web.pages import render, state_of
from capindex.web.security import same_origin_post

MAX_FORM_BYTES = 64_000
MAX_CAPTION_CHARS = 1000
FORM = "application/x-www-form-urlencoded"


def error(message: str, status: int) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


class TooLarge(Exception):
    pass


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused (TooLarge) as soon as it passes `limit` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise TooLarge
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise TooLarge
    return bytes(body)


async def search(request: Request) -> Response:
    """GET /api/search: `data.search_results` as JSON."""
    state = state_of(request)
    try:
        query = data.SearchRequest.from_params(request.query_params)
        return JSONResponse(await run_in_threadpool(data.search_results, state.library, query))
    except (data.BadRequest, CapindexError) as exc:
        return error(str(exc), data.http_status(exc))


async def facets(request: Request) -> Response:
    """GET /api/facets: cameras, objects and tags with their counts, and the dates taken."""
    try:
        return JSONResponse(await run_in_threadpool(data.facets, state_of(request).library))
    except CapindexError as exc:
        return error(str(exc), data.http_status(exc))


async def image(request: Request) -> Response:
    """GET /api/images/{id}: the photo page's data."""
    image_id = request.path_params["image_id"]
    try:
        details = await run_in_threadpool(data.photo_details, state_of(request).library, image_id)
    except CapindexError as exc:
        return error(str(exc), data.http_status(exc))
    if details is None:
        return error(f"no photo has the id {image_id}", 404)
    return JSONResponse(details)


async def image_file(request: Request) -> Response:
    """GET /images/{id}: the photo's file as catalogued, with its media type from the
    catalogue (formats a browser cannot show come as a download)."""
    library = state_of(request).library
    image_id = request.path_params["image_id"]
    if image_id > data.MAX_ID:
        return error("not found", 404)

    def find():  # photo_path: the catalogued file of a captioned photo, if it is there now
        photo = library.photo(image_id)
        return photo, library.photo_path(image_id) if photo else None

    try:
        photo, path = await run_in_threadpool(find)
    except CapindexError as exc:
        return error(str(exc), data.http_status(exc))
    if path is None:
        return error("not found", 404)
    media_type = data.BROWSER_TYPES.get(photo.get("format") or "")
    headers = {"cache-control": "private, no-cache"}
    if photo.get("sha256"):
        headers["etag"] = f'"{photo["sha256"]}"'
        if _matches(request, headers["etag"]):
            return Response(status_code=304, headers=headers)
    if media_type is None:
        headers["content-disposition"] = "attachment"
    return FileResponse(path, media_type=media_type or "application/octet-stream", headers=headers)


def _matches(request: Request, etag: str) -> bool:
    wanted = request.headers.get("if-none-match", "")
    return etag in [tag.strip() for tag in wanted.split(",")]


async def thumbnail(request: Request) -> Response:
    """GET /thumbs/{id}?size=320: a JPEG within size x size, made once and kept in the
    library by content hash; ETag = that hash, so a browser revalidates for free."""
    image_id = request.path_params["image_id"]
    size = request.query_params.get("size", str(data.THUMB_SIZE))
    if not size.isdigit() or int(size) not in data.THUMB_SIZES:
        return error(f"size must be one of {', '.join(map(str, data.THUMB_SIZES))}", 400)
    if image_id > data.MAX_ID:
        return error("not found", 404)
    try:
        path = await run_in_threadpool(state_of(request).library.thumbnail, image_id, int(size))
    except CapindexError as exc:
        return error(str(exc), data.http_status(exc))
    if path is None:
        return error("not found", 404)
    headers = {"etag": f'"{path.stem}"', "cache-control": "private, max-age=3600"}
    if _matches(request, headers["etag"]):
        return Response(status_code=304, headers=headers)
    return FileResponse(path, media_type="image/jpeg", headers=headers)


async def edit_caption(request: Request) -> Response:
    """POST /api/images/{id}/caption: set the user's caption, or revert to the generated one.

    JSON `{"caption": "text"}` or `{"revert": true}` answers with the photo's data; the
    photo page's form (caption=, action=save|revert, csrf_token=) is sent back to the page.
    """
    state = state_of(request)
    image_id = request.path_params["image_id"]
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    try:
        body = await read_body(request, MAX_FORM_BYTES)
    except TooLarge:
        return error(f"the request is larger than {byte_size(MAX_FORM_BYTES)}", 413)
    try:
        if kind == "application/json":
            fields = json.loads(body or b"{}")
            if not isinstance(fields, dict):
                raise ValueError
            revert, text, form_token = fields.get("revert") is True, fields.get("caption"), None
        elif kind == FORM:
            form = {k: v[0] for k, v in parse_qs(body.decode("utf-8"), keep_blank_values=True).items()}
            revert, text = form.get("action") == "revert", form.get("caption")
            form_token = form.get("csrf_token")
        else:
            return error("send the caption as JSON ({\"caption\": \"...\"}) or as a form", 415)
    except ValueError:
        return error("the request body is not valid JSON or form data", 400)
    if not same_origin_post(request, state.csrf_token, form_token):
        return error("a caption edit must come from this server's page (Origin or CSRF token)", 403)
    if not revert and (not isinstance(text, str) or len(text) > MAX_CAPTION_CHARS):
        return error(f"caption must be text of at most {MAX_CAPTION_CHARS} characters", 400)

    def change():
        if state.library.photo(image_id) is None:
            return None
        if revert:
            state.library.revert_caption(image_id)
        else:
            state.library.edit_caption(image_id, text)
        return data.photo_details(state.library, image_id)

    def failed(message: str, status: int) -> Response:  # the form's user gets a page
        if kind == FORM:
            return render(request, "error.html", status, message=message,
                          back=f"/photos/{image_id}")
        return error(message, status)

    if image_id > data.MAX_ID:
        return failed(f"no photo has the id {image_id}", 404)
    try:
        details = await run_in_threadpool(change)
    except (ValueError, CapindexError) as exc:
        return failed(str(exc), data.http_status(exc))
    if details is None:
        return failed(f"no photo has the id {image_id}", 404)
    if kind == FORM:
        return RedirectResponse(f"/photos/{image_id}", status_code=303)
    return JSONResponse(details)


async def caption_upload(request: Request) -> Response:
    """POST /api/caption: the photo's bytes as the body (any image type, at most the upload
    cap) -> {"caption", "alt_captions", "tags", "objects", "width", "height"}. Decoded in
    memory with ingest's limits; nothing is written anywhere."""
    state = state_of(request)
    if not same_origin_post(request, state.csrf_token):
        return error("an upload must come from this server's page (Origin or CSRF token)", 403)
    if request.headers.get("content-type", "").lower().startswith("multipart/"):
        return error("send the photo's bytes as the request body, not as a form "
                     "(curl --data-binary @photo.jpg)", 415)
    try:
        body = await read_body(request, state.max_upload_bytes)
    except TooLarge:
        return error(f"the photo is larger than the upload limit "
                     f"({byte_size(state.max_upload_bytes)})", 413)
    if not body:
        return error("the request has no photo in its body", 400)
    try:
        return JSONResponse(await run_in_threadpool(state.describe, body))
    except CapindexError as exc:  # ImageUnreadable: 400; a model that cannot load: 503
        return error(str(exc), data.http_status(exc))
