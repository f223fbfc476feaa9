#!/usr/bin/env python
"""A cached page under load, served by gunicorn workers: Django's page cache on
LocMemCache, django_fastcache's drop-ins and its front on SharedMemoryCache.

    python pageload.py                          # 2 workers, 8 s per run
    python pageload.py --workers 2 --seconds 8 --clients 2 --connections 8
    python pageload.py --page-seconds 1         # the page expires every second

Each run starts its own ``gunicorn mysite.wsgi`` (gunicorn_demo.Gunicorn: a
private segment directory, a free loopback port, stopped at the end; gthread
workers, which keep connections alive) with

    django+locmem   FASTCACHE_PAGES=django  FASTCACHE_BACKEND=locmem
                    Django's UpdateCacheMiddleware/FetchFromCacheMiddleware, a
                    LocMemCache per worker (what a site has today)
    dropin+shared   FASTCACHE_PAGES=dropin  FASTCACHE_BACKEND=shared
    front+shared    FASTCACHE_PAGES=front   FASTCACHE_BACKEND=shared
                    serve_cached() in mysite/wsgi.py: hits never reach Django

and hammers one page, /hot/ (~10 KB, 50 ms to render, every render logged),
from --clients processes with --connections keep-alive connections each (a
minimal HTTP/1.1 client on raw sockets, so that the client costs little CPU).
It reports requests/s, the ratio to django+locmem, the client's share of the
CPU used (client CPU / (client + server CPU), from the processes' rusage: on a
2-core machine the client competes with the workers, so a lower share means
the figure is closer to the server's own capacity), and the renders of the
page during the measured time, for the whole host.  With --page-seconds 1 the
page expires every second: a page cache that renders once per expiry per host
shows about one render a second.

Everything runs on one machine; the numbers compare configurations under the
same conditions and are not a capacity figure.  Exit status: 0, or 2 when a
server could not be run or a response was not 200.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from gunicorn_demo import HOST, Gunicorn  # noqa: E402

RUNS = {
    "django+locmem": ("locmem", "django"),
    "dropin+shared": ("shared", "dropin"),
    "front+shared": ("shared", "front"),
}
PATH = "/hot/"


# --------------------------------------------------------------------------
# The client: keep-alive connections on raw sockets


def _request_bytes() -> bytes:
    return (f"GET {PATH} HTTP/1.1\r\nHost: {HOST}\r\nAccept: text/html\r\n"
            "User-Agent: pageload\r\n\r\n").encode()


def _one(sock: socket.socket, request: bytes, buf: bytearray) -> int:
    """Send one request, read its response; the status code.  buf keeps what
    was read past it (nothing, for a server that does not pipeline)."""
    sock.sendall(request)
    while True:
        end = buf.find(b"\r\n\r\n")
        if end >= 0:
            break
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the headers")
        buf += chunk
    head = bytes(buf[:end]).decode("latin-1")
    status = int(head.split(" ", 2)[1])
    length = 0
    for line in head.split("\r\n")[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    need = end + 4 + length
    while len(buf) < need:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed in the body")
        buf += chunk
    del buf[:need]
    return status


def _client(port: int, connections: int, start_at: float, stop_at: float,
            out: Any) -> None:
    """One client process: `connections` threads, each a keep-alive
    connection sending requests back to back until stop_at; puts
    (requests done in [start_at, stop_at), non-200 statuses, latencies)."""
    request = _request_bytes()
    done = [0] * connections
    bad = [0] * connections
    samples: list[float] = []
    lock = threading.Lock()

    def run(i: int) -> None:
        sock = socket.create_connection((HOST, port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = bytearray()
        mine: list[float] = []
        try:
            while True:
                t0 = time.time()
                if t0 >= stop_at:
                    break
                try:
                    status = _one(sock, request, buf)
                except ConnectionError:  # a worker recycled: reconnect
                    sock.close()
                    sock = socket.create_connection((HOST, port))
                    buf.clear()
                    continue
                if t0 >= start_at:
                    done[i] += 1
                    if status != 200:
                        bad[i] += 1
                    if done[i] % 16 == 0:
                        mine.append(time.time() - t0)
        finally:
            sock.close()
            with lock:
                samples.extend(mine)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.put((sum(done), sum(bad), samples))


# --------------------------------------------------------------------------
# One run


def _cpu_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _renders(log: str, start_at: float, stop_at: float) -> int:
    try:
        with open(log) as fh:
            times = [float(line.split()[1]) for line in fh if line.strip()]
    except FileNotFoundError:
        return 0
    return sum(start_at <= t < stop_at for t in times)


def run_one(name: str, args: argparse.Namespace) -> dict[str, Any]:
    backend, pages = RUNS[name]
    shm_dir = tempfile.mkdtemp(prefix="fastcache-pageload-")
    log = os.path.join(shm_dir, "renders.log")
    os.environ.update(FASTCACHE_PAGES=pages,
                      FASTCACHE_PAGE_SECONDS=str(args.page_seconds),
                      FASTCACHE_RENDER_LOG=log)
    server = Gunicorn(backend, args.workers, False, shm_dir, "warning")
    # gthread workers keep connections alive (sync workers close each one).
    server.extra_args = ["--worker-class", "gthread", "--threads", str(args.threads),
                         "--keep-alive", "30"]
    try:
        server.start()
        server.wait_ready()
        ctx = multiprocessing.get_context("fork")
        out = ctx.Queue()
        cpu0 = _cpu_children()
        start_at = time.time() + args.warmup
        stop_at = start_at + args.seconds
        work = (server.port, args.connections, start_at, stop_at, out)
        clients = [ctx.Process(target=_client, args=work) for _ in range(args.clients)]
        for c in clients:
            c.start()
        results = [out.get(timeout=args.warmup + args.seconds + 60) for _ in clients]
        for c in clients:
            c.join(30)
        client_cpu = _cpu_children() - cpu0
        renders = _renders(log, start_at, stop_at)
        server.stop()
        server_cpu = _cpu_children() - cpu0 - client_cpu
    finally:
        server.stop()
        shutil.rmtree(shm_dir, ignore_errors=True)
    done = sum(r[0] for r in results)
    bad = sum(r[1] for r in results)
    samples = sorted(x for r in results for x in r[2])
    return {
        "run": name,
        "requests_per_s": done / args.seconds,
        "non_200": bad,
        "p50_ms": 1000 * samples[len(samples) // 2] if samples else None,
        "p99_ms": 1000 * samples[int(len(samples) * 0.99)] if samples else None,
        "client_cpu_share": client_cpu / (client_cpu + server_cpu)
        if client_cpu + server_cpu > 0 else None,
        "renders": renders,
    }


def report(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    base = rows[0]["requests_per_s"] or 1.0
    lines = [
        f"gunicorn, {args.workers} gthread workers x {args.threads} threads; "
        f"{args.clients} client processes x "
        f"{args.connections} keep-alive connections; {args.seconds:g} s measured after "
        f"{args.warmup:g} s; page timeout {args.page_seconds} s; one page, {PATH}",
        "",
        "| run | requests/s | vs django+locmem | p50 ms | p99 ms | client share of CPU "
        "| renders (host) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        def ms(v: float | None) -> str:
            return "-" if v is None else f"{v:.2f}"

        cpu = r["client_cpu_share"]
        share = "-" if cpu is None else f"{100 * cpu:.0f}%"
        lines.append(f"| {r['run']} | {r['requests_per_s']:.0f} | "
                     f"{r['requests_per_s'] / base:.2f}x | {ms(r['p50_ms'])} | "
                     f"{ms(r['p99_ms'])} | {share} | {r['renders']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", default=",".join(RUNS),
                        help=f"comma-separated, of: {', '.join(RUNS)}")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4, help="per worker (gthread)")
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--warmup", type=float, default=1.5)
    parser.add_argument("--page-seconds", type=int, default=600)
    parser.add_argument("--json", help="write the rows to this file too")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.runs.split(",") if n.strip()]
    unknown = [n for n in names if n not in RUNS]
    if unknown:
        parser.error(f"unknown runs: {', '.join(unknown)}")
    rows = []
    for name in names:
        try:
            rows.append(run_one(name, args))
        except RuntimeError as exc:
            print(f"pageload: {name}: {exc}", file=sys.stderr)
            return 2
        rate = rows[-1]["requests_per_s"]
        print(f"pageload: {name}: {rate:.0f} requests/s", flush=True)
    print(report(rows, args))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)
    if any(r["non_200"] for r in rows):
        print("pageload: some responses were not 200", file=sys.stderr)
        return 2
    median = statistics.median(r["requests_per_s"] for r in rows)
    return 0 if median > 0 else 2


if __name__ == "__main__":
    sys.exit(main())
