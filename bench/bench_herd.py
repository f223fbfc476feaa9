#!/usr/bin/env python
"""The thundering herd: many callers of get_or_set on one key that has just
expired, with a slow callable, on LocMemCache and on our backends.

    python bench/bench_herd.py [--threads 32] [--processes 8] [--compute-ms 200]
                               [--rounds 5] [--json out.json] [--markdown]

Two scenarios, each run for several rounds (backends interleaved per round):

- threads: one process, --threads threads released together on a missing
  key, each calling ``cache.get_or_set(key, compute, 300)``.
- processes: --processes forked processes x (--threads / --processes)
  threads each, on the same key at the same moment (SharedMemoryCache is one
  table for all of them; LocMemCache and FastCache are one per process).

With serve-stale (the "+ stale" rows), the key holds a value that expired
within its grace (get_or_set(..., stale=60)): one caller recomputes, every
other caller is answered at once with the expired value.

compute() counts its runs in a shared counter and takes --compute-ms:
sleeping (--work sleep: a slow query, the database doing the work) or
burning CPU in Python (--work cpu: a render, the callers' own cores and GIL
doing it).  A row reports, as medians over the rounds: how many
times compute ran, the compute time spent in total (runs x compute-ms: the
load the herd puts on the database), and the callers' latency p50/p99/max
(start to get_or_set's return).  With single-flight, compute runs once per
key (per host) and everyone else waits for it; LocMemCache runs it once per
caller.  Exit status 0; it measures, it does not gate.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import threading
import time
from typing import Any

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.append(REPO_ROOT)

BACKENDS = {  # the serve-stale rows use FastCache and SharedMemoryCache
    "LocMemCache": "django.core.cache.backends.locmem.LocMemCache",
    "FastCache": "django_fastcache.FastCache",
    "SharedMemoryCache": "django_fastcache.SharedMemoryCache",
}


WORK = "sleep"


def setup_django() -> None:
    import django
    from django.conf import settings

    if not settings.configured:
        settings.configure(USE_TZ=True, CACHES={})
        django.setup()


def make_cache(name: str, location: str) -> Any:
    from django.utils.module_loading import import_string

    cls = import_string(BACKENDS[name])
    return cls(location, {"TIMEOUT": 300, "OPTIONS": {"MAX_ENTRIES": 1000}})


STALE = 60.0


def seed_stale(cache: Any, key: str) -> None:
    """An expired value within its serve-stale grace under key."""
    cache.get_or_set(key, lambda: "stale", timeout=0.05, stale=STALE)
    time.sleep(0.06)
    assert cache.get(key) is None


def herd(cache: Any, key: str, nthreads: int, compute_s: float, runs: Any,
         start_at: float, stale: bool = False) -> list[tuple[float, bool]]:
    """nthreads threads call get_or_set at start_at; their latencies (s), and
    whether each ran compute()."""
    latencies: list[tuple[float, bool]] = []  # (seconds, this caller computed)
    lock = threading.Lock()
    mine = threading.local()

    def compute() -> str:
        mine.computed = True
        with runs.get_lock():
            runs.value += 1
        if WORK == "sleep":
            time.sleep(compute_s)
        else:
            end = time.thread_time() + compute_s  # this thread's own CPU time
            while time.thread_time() < end:
                sum(range(1000))
        return "rendered"

    def caller() -> None:
        mine.computed = False
        delay = start_at - time.time()
        if delay > 0:
            time.sleep(delay)
        t0 = time.perf_counter()
        if stale:
            value = cache.get_or_set(key, compute, 300, stale=STALE)
        else:
            value = cache.get_or_set(key, compute, 300)
        elapsed = time.perf_counter() - t0
        assert value == "rendered" or (stale and value == "stale"), value
        with lock:
            latencies.append((elapsed, mine.computed))

    threads = [threading.Thread(target=caller) for _ in range(nthreads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies


def _child(name: str, location: str, key: str, nthreads: int, compute_s: float,
           runs: Any, start_at: float, out: Any, stale: bool) -> None:
    setup_django()
    cache = make_cache(name, location)
    if stale and name == "FastCache":  # one table per process: seed each
        seed_stale(cache, key)
    out.put(herd(cache, key, nthreads, compute_s, runs, start_at, stale))


def one_round(name: str, args: argparse.Namespace, processes: int,
              round_no: int, stale: bool = False) -> dict[str, Any]:
    ctx = multiprocessing.get_context("fork")
    runs = ctx.Value("i", 0)
    key = f"herd-{name}-{processes}-{round_no}-{int(stale)}-{os.getpid()}"
    location = f"herd-{processes}-{round_no}"
    compute_s = args.compute_ms / 1000
    if processes <= 1:
        cache = make_cache(name, location)
        cache.delete(key)
        if stale:
            seed_stale(cache, key)
        latencies = herd(cache, key, args.threads, compute_s, runs,
                         time.time() + 0.05, stale)
    else:
        per = max(1, args.threads // processes)
        out = ctx.Queue()
        if stale and name == "SharedMemoryCache":
            seed_stale(make_cache(name, location), key)
        start_at = time.time() + 0.3 + 0.02 * processes  # after every fork
        procs = [
            ctx.Process(target=_child,
                        args=(name, location, key, per, compute_s, runs, start_at,
                              out, stale))
            for _ in range(processes)
        ]
        for p in procs:
            p.start()
        latencies = [x for _ in procs for x in out.get(timeout=120)]
        for p in procs:
            p.join(60)
    every = sorted(t for t, _ in latencies)
    others = sorted(t for t, computed in latencies if not computed)

    def p99(xs: list[float]) -> float:
        return 1000 * xs[min(len(xs) - 1, int(len(xs) * 0.99))]

    return {
        "computations": runs.value,
        "compute_s": runs.value * compute_s,
        "p50_ms": 1000 * every[len(every) // 2],
        "p99_ms": p99(every),
        "max_ms": 1000 * every[-1],
        "others_p99_ms": p99(others) if others else None,
        "callers": len(every),
    }


VARIANTS = [("LocMemCache", False), ("FastCache", False), ("SharedMemoryCache", False),
            ("FastCache", True), ("SharedMemoryCache", True)]


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    scenarios = [("threads", 1)]
    if args.processes > 1:
        scenarios.append(("processes", args.processes))
    rows = []
    for scenario, processes in scenarios:
        results: dict[tuple[str, bool], list[dict[str, Any]]] = {
            v: [] for v in VARIANTS}
        for r in range(args.rounds):
            for name, stale in VARIANTS:  # interleaved: noise hits a round
                results[name, stale].append(one_round(name, args, processes, r, stale))
        for (name, stale), rounds in results.items():
            row = {"scenario": scenario,
                   "backend": name + (" + stale" if stale else ""),
                   "processes": processes, "callers": rounds[0]["callers"],
                   "rounds": len(rounds)}
            for field in ("computations", "compute_s", "p50_ms", "p99_ms", "max_ms"):
                row[field] = statistics.median(x[field] for x in rounds)
            others = [x["others_p99_ms"] for x in rounds
                      if x["others_p99_ms"] is not None]
            row["others_p99_ms"] = statistics.median(others) if others else None
            rows.append(row)
    return rows


def markdown(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    how = "sleeps" if args.work == "sleep" else "burns CPU for"
    lines = [
        f"Herd: {args.threads} callers of get_or_set on one missing key, compute() "
        f"{how} {args.compute_ms} ms; "
        f"medians of {args.rounds} rounds.",
        "",
        "| scenario | backend | compute runs | compute time (s) | p50 (ms) | p99 (ms) "
        "| max (ms) | p99 of callers that did not compute (ms) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        where = ("1 process" if r["processes"] == 1
                 else f"{r['processes']} processes x {r['callers'] // r['processes']}")
        others = "-" if r["others_p99_ms"] is None else f"{r['others_p99_ms']:.1f}"
        lines.append(
            f"| {where} | {r['backend']} | {r['computations']:g} "
            f"| {r['compute_s']:.1f} | {r['p50_ms']:.0f} | {r['p99_ms']:.0f} "
            f"| {r['max_ms']:.0f} | {others} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=32)
    parser.add_argument("--processes", type=int, default=8)
    parser.add_argument("--compute-ms", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--work", choices=["sleep", "cpu"], default="sleep")
    parser.add_argument("--json", help="write the rows to this file")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    if "DJANGO_FASTCACHE_SHM_DIR" not in os.environ:
        # Segments in a private directory, removed at exit: never the site's.
        tmp = tempfile.TemporaryDirectory(prefix="fastcache-herd-")
        os.environ["DJANGO_FASTCACHE_SHM_DIR"] = tmp.name
    global WORK
    WORK = args.work
    setup_django()
    rows = run(args)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)
    print(markdown(rows, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
