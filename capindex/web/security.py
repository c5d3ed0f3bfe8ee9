"""Who may talk to `capindex serve`, and the headers every answer carries.

`Guard` is a plain ASGI middleware in front of every route:

- Host: without an access token only loopback names are answered (127.0.0.1, localhost,
  [::1]), so a web page that points its own domain at 127.0.0.1 (DNS rebinding) gets 400.
- Token: with one, every request must carry it (`?token=T` once, which sets an HttpOnly
  cookie; or the cookie; or `Authorization: Bearer T`), else 401.
- Cross-site writes: a POST whose Origin is another site, or that the browser marks
  `Sec-Fetch-Site: cross-site`, is refused (403) before any route runs. `same_origin_post`
  is the routes' second check: this server's Origin or the page's CSRF token (needed
  when there is no Origin, or it is "null": a privacy setting, a sandboxed frame).
- Headers: a Content-Security-Policy without inline script, nosniff, no framing, no
  Referer to other sites (a token in a URL must not leak).
"""

from __future__ import annotations

import hmac
import ipaddress
import re
import secrets
from urllib.parse import urlsplit

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

TOKEN_COOKIE = "capindex_token"
CSRF_HEADER = "x-csrf-token"
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_TOKEN_CHARACTERS = re.compile(r"[A-Za-z0-9._~-]+")

CONTENT_SECURITY_POLICY = ("default-src 'self'; img-src 'self' blob:; object-src 'none'; "
                           "base-uri 'none'; frame-ancestors 'none'; form-action 'self'")
SECURITY_HEADERS = (
    ("content-security-policy", CONTENT_SECURITY_POLICY),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "same-origin"),
    ("cross-origin-opener-policy", "same-origin"),
    ("cross-origin-resource-policy", "same-origin"),
)


def is_loopback(host: str) -> bool:
    """True for a name or address that only this machine can reach."""
    host = host.strip("[]").lower()
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def access_token(host: str, token: str | None) -> str | None:
    """The token a server bound to `host` must require: the one given, else a new random one
    for any address other than loopback, else None (loopback needs none)."""
    if token is not None:
        if len(token) < 8 or not _TOKEN_CHARACTERS.fullmatch(token):
            raise ValueError("the token must be at least 8 characters: letters, digits, - _ . ~")
        return token
    return None if is_loopback(host) else secrets.token_urlsafe(24)


def new_csrf_token() -> str:
    return secrets.token_urlsafe(32)


def _same(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def _host_name(request: Request) -> str | None:
    try:
        return urlsplit("//" + request.headers.get("host", "")).hostname
    except ValueError:
        return None


def own_origin(request: Request) -> str:
    """This server's origin as the browser sees it: scheme://host[:port] of the request."""
    return f"{request.url.scheme}://{request.headers.get('host', '')}"


def same_origin_post(request: Request, csrf_token: str, form_token: str | None = None) -> bool:
    """A state-changing request from this server's own page: its Origin is ours, or it
    carries the page's CSRF token (header X-CSRF-Token, or `form_token` from the form)."""
    origin = request.headers.get("origin")
    if origin not in (None, "null"):
        return origin == own_origin(request)
    return _same(request.headers.get(CSRF_HEADER), csrf_token) or _same(form_token, csrf_token)


class Guard:
    """ASGI middleware: host check, token check, cross-site write check, security headers."""

    def __init__(self, app, token: str | None) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        refusal = self.refusal(request)
        set_cookie = (refusal is None and self.token is not None
                      and _same(request.query_params.get("token"), self.token)
                      and not _same(request.cookies.get(TOKEN_COOKIE), self.token))

        async def send_with_headers(message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS:
                    headers[name] = value
                if set_cookie:
                    headers.append("set-cookie", f"{TOKEN_COOKIE}={self.token}; Path=/; HttpOnly; "
                                                 "SameSite=Strict")
            await send(message)

        if refusal is not None:
            await refusal(scope, receive, send_with_headers)
        else:
            await self.app(scope, receive, send_with_headers)

    def refusal(self, request: Request) -> Response | None:
        """The answer to a request that may not reach the routes, or None."""
        if self.token is None:
            host = _host_name(request)
            if host is None or not is_loopback(host):
                return PlainTextResponse("400 Bad Request: this server answers only to a loopback "
                                         "address (127.0.0.1, localhost)", status_code=400)
        elif not self.authorised(request):
            return PlainTextResponse("401 Unauthorized: open the URL with ?token= that "
                                     "`capindex serve` printed", status_code=401)
        if request.method in UNSAFE_METHODS:
            origin = request.headers.get("origin")
            cross_site = request.headers.get("sec-fetch-site") == "cross-site"
            if cross_site or origin not in (None, "null", own_origin(request)):
                return PlainTextResponse("403 Forbidden: a request from another site may not "
                                         "change this library", status_code=403)
        return None

    def authorised(self, request: Request) -> bool:
        assert self.token is not None
        bearer = request.headers.get("authorization", "")
        return (_same(request.cookies.get(TOKEN_COOKIE), self.token)
                or _same(request.query_params.get("token"), self.token)
                or (bearer.startswith("Bearer ") and _same(bearer[7:], self.token)))
