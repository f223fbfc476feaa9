#!/usr/bin/env python
"""Load the example shop with each cache backend in turn and compare.

    python loadtest.py                          # locmem, then fast
    python loadtest.py --backends locmem,fast,shared --seconds 5 --threads 8

For each backend the script starts its own server on 127.0.0.1 (a threaded
Django WSGI server in a child process, on a free port), warms it up, zeroes
the counters through the shop's /stats/reset/, then runs client threads with
persistent HTTP/1.1 connections for a bounded time and number of requests.
It reports requests/s, latency percentiles, the cache hit rate from the
backend's stats() (fastcache backends; LocMemCache has no counters) and how
many list pages the @cache_page decorator served without running the view.
The server is stopped when its run ends, on Ctrl-C, and if this script dies
(the server exits when its parent goes away, and after --server-lifetime).

Everything runs in one machine: the client threads compete with the server
for CPU, and one server process means the GIL bounds the throughput.  The
numbers compare backends under the same conditions; they are not a capacity
figure for a real deployment.
"""

from __future__ import annotations

import argparse
import atexit
import http.client
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http.cookies import SimpleCookie

HERE = os.path.dirname(os.path.abspath(__file__))
HOST = "127.0.0.1"
CATEGORIES = ("", "books", "garden", "kitchen", "music", "toys")
PRODUCTS = 60
BACKENDS = ("locmem", "fast", "shared")  # FASTCACHE_BACKEND values


# --------------------------------------------------------------------------
# Server side (a child process: loadtest.py --serve)


def serve(lifetime: float) -> None:
    """Serve mysite on a free loopback port; print the port; exit when the
    parent dies, on SIGTERM, or after ``lifetime`` seconds."""
    sys.path.insert(0, HERE)
    from mysite import use_checkout

    use_checkout()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
    if os.environ.get("FASTCACHE_BACKEND") == "shared":
        # Start from an empty segment, as the other backends start empty.
        from django_fastcache import remove_segment

        remove_segment("example-shop")

    from django.core.servers.basehttp import ThreadedWSGIServer, WSGIRequestHandler
    from django.core.wsgi import get_wsgi_application

    class QuietHandler(WSGIRequestHandler):
        # Headers and body go out in separate writes: without TCP_NODELAY the
        # client's delayed ACK adds ~40 ms to every keep-alive response.
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: object) -> None:
            pass

    app = get_wsgi_application()
    httpd = ThreadedWSGIServer((HOST, 0), QuietHandler)
    httpd.set_app(app)
    parent = os.getppid()

    def watchdog() -> None:
        deadline = time.monotonic() + lifetime
        while time.monotonic() < deadline and os.getppid() == parent:
            time.sleep(0.2)
        httpd.shutdown()

    signal.signal(
        signal.SIGTERM, lambda *_: threading.Thread(target=httpd.shutdown).start()
    )
    threading.Thread(target=watchdog, daemon=True).start()
    print(f"PORT {httpd.server_address[1]}", flush=True)
    try:
        httpd.serve_forever(poll_interval=0.1)
    finally:
        httpd.server_close()
        if os.environ.get("FASTCACHE_BACKEND") == "shared":
            from django_fastcache import remove_segment

            remove_segment("example-shop")


class Server:
    """A ``loadtest.py --serve`` child with one backend."""

    def __init__(self, backend: str, lifetime: float) -> None:
        env = dict(os.environ, FASTCACHE_BACKEND=backend, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                os.path.abspath(__file__),
                "--serve",
                "--server-lifetime",
                str(lifetime),
            ],
            cwd=HERE,
            env=env,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,  # Ctrl-C reaches us, we stop it
        )
        _servers.append(self)
        self.port = self._read_port(timeout=30)

    def _read_port(self, timeout: float) -> int:
        result: list[str] = []
        stdout = self.proc.stdout
        assert stdout is not None
        reader = threading.Thread(
            target=lambda: result.append(stdout.readline()), daemon=True
        )
        reader.start()
        reader.join(timeout)
        line = result[0] if result else ""
        if not line.startswith("PORT "):
            self.stop()
            raise RuntimeError(
                f"the server did not start (exit code {self.proc.returncode}); "
                "run `python manage.py check` in example/ to see why"
            )
        return int(line.split()[1])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()
        if self in _servers:
            _servers.remove(self)


_servers: list[Server] = []
_stopping = threading.Event()


def _stop_all() -> None:
    _stopping.set()
    for server in list(_servers):
        server.stop()


atexit.register(_stop_all)


# --------------------------------------------------------------------------
# Client side


def request(
    conn: http.client.HTTPConnection, method: str, path: str, cookie: str = ""
) -> tuple[int, bytes, http.client.HTTPResponse]:
    headers = {"Cookie": cookie} if cookie else {}
    conn.request(method, path, headers=headers)
    response = conn.getresponse()
    body = response.read()
    return response.status, body, response


def get_json(port: int, method: str, path: str) -> dict:
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        status, body, _ = request(conn, method, path)
    finally:
        conn.close()
    if status != 200:
        raise RuntimeError(f"{method} {path} returned {status}")
    return json.loads(body)


@dataclass
class Tally:
    requests: int = 0
    errors: int = 0
    list_requests: int = 0
    latencies: list[float] = field(default_factory=list)


def pick_path(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.5:
        category = rng.choice(CATEGORIES)
        return f"/?category={category}" if category else "/"
    if roll < 0.85:
        # A few popular products get most of the views.
        pk = min(PRODUCTS, int(rng.paretovariate(1.2)))
        return f"/products/{pk}/"
    return "/api/popular/"


def client(
    port: int,
    seed: int,
    deadline: float,
    budget: list[int],
    lock: threading.Lock,
    tally: Tally,
) -> None:
    rng = random.Random(seed)
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    cookie = ""
    local = Tally()
    try:
        while time.monotonic() < deadline and not _stopping.is_set():
            with lock:
                if budget[0] <= 0:
                    break
                budget[0] -= 1
            path = pick_path(rng)
            start = time.perf_counter()
            try:
                status, _, response = request(conn, "GET", path, cookie)
            except (OSError, http.client.HTTPException):
                local.errors += 1
                conn.close()
                conn = http.client.HTTPConnection(HOST, port, timeout=10)
                continue
            local.latencies.append(time.perf_counter() - start)
            local.requests += 1
            local.list_requests += path == "/" or path.startswith("/?")
            if status != 200:
                local.errors += 1
            set_cookie = response.headers.get("Set-Cookie")
            if set_cookie:
                jar = SimpleCookie(set_cookie)
                if "sessionid" in jar:
                    cookie = f"sessionid={jar['sessionid'].value}"
    finally:
        conn.close()
        with lock:
            tally.requests += local.requests
            tally.errors += local.errors
            tally.list_requests += local.list_requests
            tally.latencies.extend(local.latencies)


def drive(
    port: int, threads: int, seconds: float, max_requests: int, seed: int
) -> tuple[Tally, float]:
    tally = Tally()
    lock = threading.Lock()
    budget = [max_requests]
    deadline = time.monotonic() + seconds
    workers = [
        threading.Thread(
            target=client,
            args=(port, seed + i, deadline, budget, lock, tally),
            daemon=True,
        )
        for i in range(threads)
    ]
    start = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return tally, time.perf_counter() - start


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def run_backend(backend: str, args: argparse.Namespace) -> dict:
    server = Server(backend, lifetime=args.seconds + args.warmup + 60)
    try:
        drive(server.port, args.threads, args.warmup, args.max_requests, seed=10_000)
        get_json(server.port, "POST", "/stats/reset/")
        tally, elapsed = drive(
            server.port, args.threads, args.seconds, args.max_requests, seed=args.seed
        )
        info = get_json(server.port, "GET", "/stats/")
    finally:
        server.stop()
    runs = info["view_runs"].get("product_list", 0)
    page_hits = 1 - runs / tally.list_requests if tally.list_requests else None
    return {
        "backend": backend,
        "class": info["backend"],
        "requests": tally.requests,
        "errors": tally.errors,
        "seconds": round(elapsed, 2),
        "requests_per_s": round(tally.requests / elapsed, 1) if elapsed else 0.0,
        "p50_ms": round(percentile(tally.latencies, 0.50) * 1000, 2),
        "p99_ms": round(percentile(tally.latencies, 0.99) * 1000, 2),
        "cache_hit_rate": info["hit_rate"],
        "cache_stats": info["stats"],
        "list_pages": tally.list_requests,
        "list_pages_from_cache": page_hits,
    }


def pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def report(results: list[dict]) -> str:
    header = (
        "backend",
        "requests",
        "errors",
        "req/s",
        "p50 ms",
        "p99 ms",
        "cache hit rate",
        "list pages from cache",
    )
    rows = [
        (
            r["backend"],
            str(r["requests"]),
            str(r["errors"]),
            f"{r['requests_per_s']:.0f}",
            f"{r['p50_ms']:.2f}",
            f"{r['p99_ms']:.2f}",
            pct(r["cache_hit_rate"]),
            pct(r["list_pages_from_cache"]),
        )
        for r in results
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(
            cell.rjust(w) if i else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    base = next((r for r in results if r["backend"] == "locmem"), None)
    for r in results:
        if base and r is not base and base["requests_per_s"]:
            ratio = r["requests_per_s"] / base["requests_per_s"]
            lines.append(f"{r['backend']}: {ratio:.2f}x the requests/s of locmem")
    if any(r["cache_hit_rate"] is None for r in results):
        lines.append("cache hit rate n/a: LocMemCache keeps no counters.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--backends",
        default="locmem,fast",
        help="comma-separated FASTCACHE_BACKEND values (default: locmem,fast)",
    )
    parser.add_argument(
        "--threads", type=int, default=8, help="client threads (default 8)"
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=8.0,
        help="measured seconds per backend (default 8)",
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=1.0,
        help="unmeasured seconds per backend first (default 1)",
    )
    parser.add_argument(
        "--max-requests",
        type=int,
        default=100_000,
        help="request budget per measured run (default 100000)",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--server-lifetime", type=float, default=120.0, help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)

    if args.serve:
        serve(args.server_lifetime)
        return 0

    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = sorted(set(backends) - set(BACKENDS))
    if unknown or not backends:
        parser.error(
            f"--backends takes some of {', '.join(BACKENDS)}, got {args.backends!r}"
        )
    # SIGTERM and SIGINT (even if inherited as ignored, as for background
    # jobs of a script) unwind through the finally below, which stops the server.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGINT, signal.default_int_handler)
    results = []
    try:
        for backend in backends:
            if not args.json:
                print(
                    f"{backend}: {args.threads} threads for {args.seconds:g} s ...",
                    file=sys.stderr,
                    flush=True,
                )
            results.append(run_backend(backend, args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        _stop_all()
    print(json.dumps(results, indent=2) if args.json else report(results))
    return 1 if any(r["errors"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
