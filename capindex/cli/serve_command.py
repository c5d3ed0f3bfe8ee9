"""`capindex serve`: the web page (capindex.web) on uvicorn. Builds the app, binds the
address, prints the URL, runs until Ctrl-C; everything else lives in capindex.web."""

from __future__ import annotations

import socket
from pathlib import Path

import click

from capindex.cli.common import library_errors

DEFAULT_PORT = 8765
SERVE_EXTRA = "capindex serve needs the [serve] extra: pip install 'capindex[serve]'"


def bind(host: str, port: int) -> socket.socket:
    """A socket bound to host:port (not yet listening), or one Error: line."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    return sock


def url_of(host: str, port: int, token: str | None) -> str:
    if host in ("0.0.0.0", "::", ""):
        host = socket.gethostname()
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/" + (f"?token={token}" if token else "")


@click.command()
@click.option("--library", "library_dir", metavar="DIR",
              type=click.Path(file_okay=False, path_type=Path),
              help="Library directory (the same as `capindex --library DIR serve`).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Any address other than loopback requires a token.")
@click.option("--port", default=DEFAULT_PORT, show_default=True, type=click.IntRange(1, 65535),
              help="Port to listen on.")
@click.option("--token", envvar="CAPINDEX_TOKEN", metavar="T",
              help="Require this token on every request (also $CAPINDEX_TOKEN). Default: none on "
                   "loopback, a new random one (printed in the URL) on any other address.")
@click.option("--max-upload-mb", default=25, show_default=True, type=click.IntRange(1, 1024),
              help="Largest photo that may be uploaded for a caption.")
@click.pass_context
def serve(ctx, library_dir, host, port, token, max_upload_mb):
    """Serve the library as a web page: search with thumbnails and filters, photo
    pages with their objects boxed, caption edits, and captions for an uploaded photo.

    The library is read on every request, so an ingest may run beside the server and
    new photos appear without a restart. Only 127.0.0.1 is answered unless --host
    says otherwise; then a token is required and printed in the URL. The JSON API is
    described in docs/web.md.

    \b
    Examples:
        capindex serve                       # http://127.0.0.1:8765/
        capindex --library ~/lib serve --port 9000
        capindex serve --host 0.0.0.0        # other machines, with a token
    """
    try:
        import uvicorn

        from capindex.web.app import create_app
        from capindex.web.security import access_token
    except ImportError as exc:
        raise click.ClickException(f"{SERVE_EXTRA} ({exc})") from exc
    from capindex.api import Library

    try:
        token = access_token(host, token)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--token'") from exc
    lib = Library(library_dir or ctx.obj["library_dir"])
    with library_errors():
        lib.info()  # an unsafe or damaged library stops here with one line
    app = create_app(lib, token=token, max_upload_mb=max_upload_mb)
    sock = bind(host, port)
    click.echo(f"Serving {lib.root} at {url_of(host, port, token)}")
    click.echo("Press Ctrl-C to stop.", err=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    server.run(sockets=[sock])


SERVE_COMMANDS = (serve,)
