"""The data of every page and of the JSON API: request parameters in, plain dicts out.

The pages render exactly these dicts (datasette's shape: the JSON is the page's data), so
`/?q=cat` and `/api/search?q=cat` show the same results. Everything here calls the
`capindex.Library` API; nothing reads the library's files directly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from datetime import date
from typing import TYPE_CHECKING
from urllib.parse import urlencode

from capindex.errors import (
    EmptyLibraryError,
    ImageUnreadable,
    LibraryBusyError,
    PhotoNotFound,
    QuerySyntaxError,
)
from capindex.search.modes import SEARCH_MODES

if TYPE_CHECKING:
    from capindex.api import Library
    from capindex.search import Hit

PAGE_SIZE = 50
MAX_LIMIT = 200
SIMILAR = 12
MAX_ID = 2 ** 63 - 1          # SQLite's largest rowid: a larger id names no photo
THUMB_SIZES = (160, 320, 640, 1280)
THUMB_SIZE = 320
# What a browser shows in an <img>; other formats (TIFF) are served as downloads.
BROWSER_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "GIF": "image/gif", "WEBP": "image/webp",
                 "BMP": "image/bmp", "MPO": "image/jpeg"}
FILTER_NAMES = ("after", "before", "camera", "object", "tag")


class BadRequest(ValueError):
    """A request parameter that cannot be used; the message names it (HTTP 400)."""


def http_status(exc: Exception) -> int:
    """The HTTP status of a failed request: 400 for what the request asked (a bad
    parameter, a malformed query, an empty caption), 409 while an ingest holds the library,
    503 when the library cannot be read (damaged index or catalogue)."""
    if isinstance(exc, (BadRequest, QuerySyntaxError, ImageUnreadable, ValueError)):
        return 400
    if isinstance(exc, (PhotoNotFound, EmptyLibraryError)):
        return 404
    if isinstance(exc, LibraryBusyError):
        return 409
    return 503


@dataclass(frozen=True)
class SearchRequest:
    """One search as the page and the API take it: `?q=&limit=&offset=&mode=` and the filters."""

    q: str = ""
    limit: int = PAGE_SIZE
    offset: int = 0
    mode: str = "hybrid"
    after: date | None = None
    before: date | None = None
    camera: str | None = None
    object: str | None = None
    tag: str | None = None

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> SearchRequest:
        """Parse query parameters; empty values mean "not set". Raises BadRequest."""
        def text(name: str) -> str | None:
            value = (params.get(name) or "").strip()
            return value or None

        mode = text("mode") or "hybrid"
        if mode not in SEARCH_MODES:
            raise BadRequest(f"mode must be one of {', '.join(SEARCH_MODES)}, not {mode!r}")
        return cls(q=text("q") or "", limit=_integer(params, "limit", PAGE_SIZE, 1, MAX_LIMIT),
                   offset=_integer(params, "offset", 0, 0, 1_000_000), mode=mode,
                   after=_date(params, "after"), before=_date(params, "before"),
                   camera=text("camera"), object=text("object"), tag=text("tag"))

    def filters(self):
        """The `capindex.search.filters.Filters` of this request (None when it sets none)."""
        from capindex.search.filters import Filters

        filters = Filters(after=self.after, before=self.before, camera=self.camera,
                          object=self.object, tag=self.tag)
        return None if filters.is_empty() else filters

    def params(self, **changes) -> dict[str, str]:
        """The query parameters that say this request (defaults left out), with `changes`."""
        out = {}
        for name, value in asdict(replace(self, **changes)).items():
            if value in (None, "") or value == getattr(SearchRequest, name, None):
                continue
            out[name] = value.isoformat() if isinstance(value, date) else str(value)
        return out

    def url(self, base: str, **changes) -> str:
        params = self.params(**changes)
        return f"{base}?{urlencode(params)}" if params else base


def _integer(params: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    value = (params.get(name) or "").strip()
    if not value:
        return default
    if not value.isdigit() or not low <= int(value) <= high:
        raise BadRequest(f"{name} must be a whole number from {low} to {high}, not {value!r}")
    return int(value)


def _date(params: Mapping[str, str], name: str) -> date | None:
    value = (params.get(name) or "").strip()
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise BadRequest(f"{name} must be a date written YYYY-MM-DD, not {value!r}") from None


def links(image_id: int) -> dict[str, str]:
    """The URLs of one photo: its page, its file and its thumbnail."""
    return {"url": f"/photos/{image_id}", "image": f"/images/{image_id}",
            "thumbnail": f"/thumbs/{image_id}"}


def hit_record(hit: Hit) -> dict:
    """One search result: the object `capindex search --json` prints, with the photo's URLs."""
    return {**hit.to_dict(), **links(hit.id)}


def search_results(library: Library, request: SearchRequest) -> dict:
    """The results of `request` and how many images its pages go through.

    {"query", "mode", "filters", "offset", "limit", "count", "results": [hit...], "next":
    API URL of the next page or None, "notes": [...], "message": why there is nothing to
    search, or None}. Raises the library's errors (a malformed query, a damaged index)."""
    filters = request.filters()
    notes: list[str] = []
    out = {"query": request.q, "mode": request.mode,
           "filters": {name: request.params().get(name) for name in FILTER_NAMES},
           "offset": request.offset, "limit": request.limit, "count": 0, "results": [],
           "next": None, "notes": notes, "message": None}
    try:
        hits, count = library.search_page(request.q, request.limit, offset=request.offset,
                                          filters=filters, mode=request.mode, notes=notes)
    except EmptyLibraryError:
        out["message"] = "Nothing is captioned yet: run `capindex ingest PATH` to add photos."
        return out
    out["results"] = [hit_record(hit) for hit in hits]
    out["count"] = max(count, request.offset + len(hits))
    if len(hits) == request.limit and request.offset + len(hits) < out["count"]:
        out["next"] = request.url("/api/search", offset=request.offset + len(hits))
    return out


def photo_details(library: Library, image_id: int) -> dict | None:
    """Everything the photo page shows: the catalogue row (no embedding), its URLs, the
    media type a browser gets for it, and similar photos. None when the id is unknown."""
    if not 0 <= image_id <= MAX_ID:
        return None
    photo = library.photo(image_id)
    if photo is None:
        return None
    similar = library.similar(image_id, SIMILAR) if photo.get("status") == "ok" else []
    return {**photo, **links(image_id), "media_type": BROWSER_TYPES.get(photo.get("format") or ""),
            "similar": [hit_record(hit) for hit in similar if hit.id != image_id]}


def facets(library: Library) -> dict:
    """The filter menus' choices (`Library.facets`); empty on an empty library."""
    try:
        return facets_of(library.facets())
    except EmptyLibraryError:
        return facets_of({})


def facets_of(found: dict) -> dict:
    """`Library.facets()` as JSON-ready lists."""
    return {"cameras": [list(item) for item in found.get("cameras", [])],
            "objects": [list(item) for item in found.get("objects", [])],
            "tags": [list(item) for item in found.get("tags", [])],
            "taken": list(found["taken"]) if found.get("taken") else None}
