#!/usr/bin/env python
"""How fast `capindex serve` answers, against a real server on 127.0.0.1 (docs/web.md, "Speed"):

1. /api/search warm, one client: p50 and p95 over the queries, limit 50;
2. a page of 50 results: the page (`/?q=...&limit=50`) against its JSON (`/api/search`),
   so the difference is what rendering the HTML costs, and the template alone;
3. CLIENTS clients searching at once for SECONDS: requests, errors, p50 and p95;

and for 1 and 3 the server's CPU time a request (its process's, from /proc: on a loaded
machine what an idle core would take).

    python benchmarks/web_speed.py --library LIB --out web.json

The server is `capindex serve` in a child process (its own interpreter), so the clients
do not share its GIL. Only loopback is ever contacted; every loop is bounded.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlencode

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

QUERIES = ["dog", "beach", "a man riding a bike", "two children playing in the water", "red car",
           "snow", "a girl in a pink dress", "people walking down a street", "cat", "grass -dog",
           "a black dog runs through the grass", "mountain", "water", "ball", "a woman sitting"]


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _summary(ms: list[float]) -> dict:
    return {"requests": len(ms), "p50_ms": round(statistics.median(ms), 1),
            "p95_ms": round(_percentile(ms, 0.95), 1)}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _timed_get(client, url: str) -> tuple[float, int]:
    started = time.perf_counter()
    response = client.get(url)
    return (time.perf_counter() - started) * 1000, response.status_code


def _search_url(base: str, query: str, page: bool = False) -> str:
    return f"{base}/{'' if page else 'api/search'}?{urlencode({'q': query, 'limit': 50})}"


def server_cpu_seconds(pid: int) -> float | None:
    """The server process's CPU time so far (user + system, Linux /proc), None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one_client(base: str, rounds: int, server_pid: int | None = None) -> dict:
    """p50/p95 wall ms of /api/search and of the page, and the server's mean CPU ms a
    request (what an idle core would take; wall time grows with the machine's load)."""
    import httpx

    out = {}
    with httpx.Client(timeout=30) as client:
        for query in QUERIES:  # warm: every query once
            client.get(_search_url(base, query))
            client.get(_search_url(base, query, page=True))
        for name, page in (("api_search", False), ("page_of_50", True)):
            ms = []
            cpu_before = server_cpu_seconds(server_pid) if server_pid else None
            for _ in range(rounds):
                for query in QUERIES:
                    ms.append(_timed_get(client, _search_url(base, query, page=page))[0])
            out[name] = _summary(ms)
            if cpu_before is not None:
                out[name]["server_cpu_ms_mean"] = round(
                    (server_cpu_seconds(server_pid) - cpu_before) * 1000 / len(ms), 1)
    return out


def template_alone(library: Path, rounds: int) -> dict:
    """Rendering index.html for 50 results, without HTTP or search."""
    from capindex.api import Library
    from capindex.web import data
    from capindex.web.render import environment

    lib, template = Library(library), environment().get_template("index.html")
    results = data.search_results(lib, data.SearchRequest(q="dog", limit=50))
    facets = data.facets(lib)
    ms = []
    for _ in range(rounds):
        started = time.perf_counter()
        template.render(search=data.SearchRequest(q="dog", limit=50), results=results, facets=facets,
                        error=None, more_url=None, previous_url=None, back=None, csrf_token="x",
                        library=str(library), upload_limit="25 MB")
        ms.append((time.perf_counter() - started) * 1000)
    return {**_summary(ms), "results": len(results["results"])}


def many_clients(base: str, clients: int, seconds: float, server_pid: int | None = None) -> dict:
    import httpx

    times: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def client_loop(k: int) -> None:
        with httpx.Client(timeout=30) as client:
            i = k
            while time.monotonic() < stop_at:
                try:
                    ms, status = _timed_get(client, _search_url(base, QUERIES[i % len(QUERIES)]))
                except httpx.HTTPError as exc:
                    ms, status = 0.0, repr(exc)
                with lock:
                    if status == 200:
                        times.append(ms)
                    else:
                        errors.append(str(status))
                i += 1

    cpu_before = server_cpu_seconds(server_pid) if server_pid else None
    threads = [threading.Thread(target=client_loop, args=(k,)) for k in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 60)
    cpu = (None if cpu_before is None or not times else
           round((server_cpu_seconds(server_pid) - cpu_before) * 1000 / len(times), 1))
    return {"clients": clients, "seconds": seconds, **_summary(times), "server_cpu_ms_mean": cpu,
            "errors": len(errors),
            "error_examples": errors[:3], "requests_per_s": round(len(times) / seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--library", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=3, help="passes over the queries (one client)")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "capindex", "--library", str(args.library), "serve",
                               "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              cwd=REPO, env=os.environ.copy())
    try:
        import httpx

        deadline = time.monotonic() + 120
        while True:
            try:
                httpx.get(base + "/api/facets", timeout=5)
                break
            except httpx.HTTPError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"the server did not start: {server.stderr.read().decode()}") from None
                time.sleep(0.2)
        from capindex.api import Library

        report = {"library": str(args.library), "images": Library(args.library).info()["ok"],
                  "cpus": os.cpu_count(), "load_average": os.getloadavg(),
                  "one_client": one_client(base, args.rounds, server.pid),
                  "template_alone": template_alone(args.library, 20),
                  "many_clients": many_clients(base, args.clients, args.seconds, server.pid)}
    finally:
        server.terminate()
        server.wait(30)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
