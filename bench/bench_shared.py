#!/usr/bin/env python
"""SharedMemoryCache against FastCache, memcached and Redis, plus throughput
with 1, 2 and 4 processes on one segment.

Latency: each case runs SharedMemoryCache, FastCache and (unless
--no-servers) Django's PyMemcacheCache and RedisCache side by side in this one
process, in interleaved rounds, with bench.py's harness (calibrated rounds,
GC off, medians, median of per-round ratios).  memcached and redis-server are
real servers this script starts on free 127.0.0.1 ports (installing the Debian
packages first when they are missing and we are root) and always stops again.

Throughput: 1, 2 and 4 worker processes (multiprocessing "spawn") each run a
90% get / 10% set mix over 1000 keys for a fixed time; SharedMemoryCache has
all of them on one segment, FastCache gives each its own table (the
no-sharing baseline).  See bench/README.md.

    python bench/bench_shared.py [--quick] [--markdown] [--json out.json]
                                 [--no-servers]

The exit status is 0 whether or not targets are met (2 if a backend cannot be
imported); the last line is "targets met: X/Y".
"""

from __future__ import annotations

import argparse
import atexit
import gc
import importlib.metadata
import json
import os
import random
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
if BENCH_DIR not in sys.path:
    sys.path.insert(0, BENCH_DIR)

import bench as harness  # noqa: E402  (also puts the repo root on sys.path)
from bench import (  # noqa: E402
    DICT_VALUE,
    INT_VALUE,
    STR_VALUE,
    Backend,
    Config,
    Prepare,
    Row,
    measure,
    pair_row,
    w_get,
    w_get_miss,
    w_incr,
    w_set,
)

FASTCACHE = "django_fastcache.FastCache"
SHARED = "django_fastcache.SharedMemoryCache"
PYMEMCACHE = "django.core.cache.backends.memcached.PyMemcacheCache"
REDIS = "django.core.cache.backends.redis.RedisCache"
SHM_DIR_ENV = "DJANGO_FASTCACHE_SHM_DIR"

SHARED_VS_FAST_TARGET = 0.5  # FastCache ns / SharedMemoryCache ns: within 2x
SHARED_VS_SERVER_TARGET = 20.0  # server ns / SharedMemoryCache ns, get hits

# Throughput workload
TP_KEYS = [f"tp:{i}" for i in range(1000)]
TP_OPTIONS = {"MAX_ENTRIES": 2000}  # 1000 keys: the mix never culls
TP_SHARED_LOCATION = "bench-tp-shared"
TP_FAST_LOCATION = "bench-tp-fast"
TP_PROCESSES = (1, 2, 4)
TP_CHUNK = 32  # blocks of 10 ops between clock checks (~100-300 us)


@dataclass
class Settings:
    latency: Config
    tp_seconds: float
    tp_rounds: int


FULL = Settings(latency=harness.FULL, tp_seconds=2.0, tp_rounds=5)
QUICK = Settings(latency=harness.QUICK, tp_seconds=1.0, tp_rounds=2)


def log(msg: str, end: str = "\n") -> None:
    print(msg, end=end, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# Servers: tests/servers.py (shared with the test suite) installs them if
# missing, starts them on free loopback ports and always stops them:
# try/finally in main, atexit, SIGTERM/SIGHUP/SIGQUIT handlers, and a
# watchdog for a benchmark killed outright.

sys.path.insert(0, os.path.join(os.path.dirname(BENCH_DIR), "tests"))
from servers import (  # noqa: E402
    Server,
    ensure_server_binaries,
    start_server,
    stop_servers,
)


def _on_signal(signum: int, _frame: object) -> None:
    stop_servers()
    raise SystemExit(128 + signum)


def client_version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


# --------------------------------------------------------------------------
# Latency


@dataclass
class LatencyCase:
    id: str
    title: str
    workload: Callable[[Any], Prepare]
    server_target: float | None


LATENCY_CASES = [
    LatencyCase("get_str", "get hit str", w_get(STR_VALUE), SHARED_VS_SERVER_TARGET),
    LatencyCase("get_int", "get hit int", w_get(INT_VALUE), SHARED_VS_SERVER_TARGET),
    LatencyCase("get_dict", "get hit 10-key dict", w_get(DICT_VALUE),
                SHARED_VS_SERVER_TARGET),
    LatencyCase("get_miss", "get miss", w_get_miss, None),
    LatencyCase("set_str", "set str (overwrite)", w_set(STR_VALUE), None),
    LatencyCase("incr", "incr", w_incr, None),
]


def run_latency(shared: Backend, others: Sequence[Backend],
                cfg: Config) -> dict[str, list[Row]]:
    """Rows per reference backend (column A), SharedMemoryCache as column B.
    All backends of a case interleave in the same rounds, so each ratio is a
    per-round ratio against the same SharedMemoryCache rounds."""
    rows: dict[str, list[Row]] = {o.label: [] for o in others}
    for case in LATENCY_CASES:
        t0 = time.monotonic()
        log(f"bench_shared: {case.id} ...", end="")
        variants = [case.workload(shared.make())]
        variants += [case.workload(o.make()) for o in others]
        b_rounds, *a_rounds = measure(variants, cfg)
        for other, a in zip(others, a_rounds, strict=True):
            target = (SHARED_VS_FAST_TARGET if other.path == FASTCACHE
                      else case.server_target)
            rows[other.label].append(pair_row(case.id, case.title, target, a, b_rounds))
        log(f" {time.monotonic() - t0:.1f} s")
    return rows


# --------------------------------------------------------------------------
# Throughput.  Workers are spawned once and kept: each holds a FastCache (its
# own table) and a SharedMemoryCache (the one segment), prefilled, and runs
# one timed mix per command.  All workers of a run start at one monotonic
# instant (CLOCK_MONOTONIC is system-wide) and stop after the same duration.


def _mix(cache: Any, chunks: list[list[tuple[str, ...]]], start_at: float,
         duration: float) -> tuple[int, float, float]:
    """(operations, wall seconds, CPU seconds of this process)."""
    get, set_, v = cache.get, cache.set, STR_VALUE
    mono = time.monotonic
    wait = start_at - mono()
    if wait > 0:
        time.sleep(wait)
    cpu0 = time.process_time()
    t0 = mono()
    end = t0 + duration
    ops = 0
    done = False
    while not done:
        for chunk in chunks:
            for a, b, c, d, e, f, g, h, i, j in chunk:
                get(a)
                get(b)
                get(c)
                get(d)
                get(e)
                get(f)
                get(g)
                get(h)
                get(i)
                set_(j, v)
            ops += 10 * len(chunk)
            if mono() >= end:
                done = True
                break
    return ops, mono() - t0, time.process_time() - cpu0


def tp_worker(index: int, conn: Any) -> None:
    """Runs in a spawned process: set up, report ready, then serve commands
    (label, start_at, duration) -> (ops, seconds, cpu seconds) until None."""
    harness.setup_django()
    from django_fastcache import FastCache, SharedMemoryCache

    params = {"OPTIONS": dict(TP_OPTIONS)}
    caches = {
        "SharedMemoryCache": SharedMemoryCache(TP_SHARED_LOCATION, params),
        "FastCache": FastCache(TP_FAST_LOCATION, params),
    }
    for key in TP_KEYS:
        caches["FastCache"].set(key, STR_VALUE)
    # Proof of sharing: the parent reads every worker's pid from the segment.
    caches["SharedMemoryCache"].set(f"tp:pid:{index}", os.getpid())
    rng = random.Random(1000 + index)
    blocks = [tuple(rng.choices(TP_KEYS, k=10)) for _ in range(TP_CHUNK * 64)]
    chunks = [blocks[i:i + TP_CHUNK] for i in range(0, len(blocks), TP_CHUNK)]
    gc.collect()
    gc.disable()
    conn.send(("ready", os.getpid()))
    while True:
        msg = conn.recv()
        if msg is None:
            break
        label, start_at, duration = msg
        conn.send(_mix(caches[label], chunks, start_at, duration))


@dataclass
class Throughput:
    seconds: float
    rounds: int
    # label -> processes -> per-round total ops/s
    totals: dict[str, dict[int, list[float]]] = field(default_factory=dict)
    per_process: dict[str, dict[int, list[list[float]]]] = field(default_factory=dict)
    # label -> processes -> per-round CPU seconds of all workers / wall seconds
    cores_used: dict[str, dict[int, list[float]]] = field(default_factory=dict)
    shared_pids_seen: bool = False


def run_throughput(s: Settings) -> Throughput:
    import multiprocessing

    from django_fastcache import SharedMemoryCache

    shared = SharedMemoryCache(TP_SHARED_LOCATION, {"OPTIONS": dict(TP_OPTIONS)})
    shared.clear()
    for key in TP_KEYS:
        shared.set(key, STR_VALUE)

    ctx = multiprocessing.get_context("spawn")
    n_workers = max(TP_PROCESSES)
    workers = []
    conns = []
    result = Throughput(seconds=s.tp_seconds, rounds=s.tp_rounds)
    t0 = time.monotonic()
    log(f"bench_shared: throughput, spawning {n_workers} workers ...", end="")
    try:
        for i in range(n_workers):
            parent_end, child_end = ctx.Pipe()
            p = ctx.Process(target=tp_worker, args=(i, child_end), daemon=True,
                            name=f"bench-shared-worker-{i}")
            p.start()
            child_end.close()
            workers.append(p)
            conns.append(parent_end)
        pids = []
        for c in conns:
            if not c.poll(120):
                raise RuntimeError("a throughput worker did not start in 120 s")
            _, pid = c.recv()
            pids.append(pid)
        result.shared_pids_seen = all(
            shared.get(f"tp:pid:{i}") == pid for i, pid in enumerate(pids))
        log(f" {time.monotonic() - t0:.1f} s")

        labels = ["SharedMemoryCache", "FastCache"]
        for label in labels:
            result.totals[label] = {k: [] for k in TP_PROCESSES}
            result.per_process[label] = {k: [] for k in TP_PROCESSES}
            result.cores_used[label] = {k: [] for k in TP_PROCESSES}
        for r in range(s.tp_rounds):
            order = labels if r % 2 == 0 else labels[::-1]
            for k in TP_PROCESSES:
                for label in order:
                    log(f"bench_shared: throughput round {r + 1}/{s.tp_rounds}, "
                        f"{label}, {k} process{'es' if k > 1 else ''} ...", end="")
                    start_at = time.monotonic() + 0.05
                    for c in conns[:k]:
                        c.send((label, start_at, s.tp_seconds))
                    rates = []
                    cores = 0.0
                    for c in conns[:k]:
                        if not c.poll(s.tp_seconds + 60):
                            raise RuntimeError("a throughput worker stopped answering")
                        ops, secs, cpu = c.recv()
                        rates.append(ops / secs)
                        cores += cpu / secs
                    result.totals[label][k].append(sum(rates))
                    result.per_process[label][k].append(rates)
                    result.cores_used[label][k].append(cores)
                    log(f" {sum(rates):,.0f} ops/s on {cores:.2f} cores")
    finally:
        for c in conns:
            try:
                c.send(None)
            except OSError:
                pass
        for p in workers:
            p.join(5)
            if p.is_alive():
                p.terminate()
                p.join(5)
    return result


def throughput_table(tp: Throughput) -> list[list[str]]:
    sh, fc = tp.totals["SharedMemoryCache"], tp.totals["FastCache"]
    sh_cpu, fc_cpu = tp.cores_used["SharedMemoryCache"], tp.cores_used["FastCache"]
    cells = [["processes", "SharedMemoryCache ops/s", "scaling", "CPU",
              "FastCache ops/s", "scaling", "CPU", "Shared / Fast"]]

    def median_ratio(num: list[float], den: list[float]) -> float:
        return statistics.median([x / y for x, y in zip(num, den, strict=True)])

    for k in TP_PROCESSES:
        cells.append([
            str(k),
            f"{statistics.median(sh[k]):,.0f}",
            f"{median_ratio(sh[k], sh[1]):.2f}x",
            f"{statistics.median(sh_cpu[k]):.2f}",
            f"{statistics.median(fc[k]):,.0f}",
            f"{median_ratio(fc[k], fc[1]):.2f}x",
            f"{statistics.median(fc_cpu[k]):.2f}",
            f"{median_ratio(sh[k], fc[k]):.2f}x",
        ])
    return cells


# --------------------------------------------------------------------------
# Main


LEGEND = (
    "ratio = median over rounds of A ns/op / SharedMemoryCache ns/op; higher "
    "favours SharedMemoryCache.\nspread = half the interquartile range of the "
    "per-round ratios, as % of the median. vs FastCache the target is >=0.5x "
    "(SharedMemoryCache\nwithin 2x of FastCache); vs a server it is >=20x on get "
    "hits, the other rows are reported."
)
TP_LEGEND = (
    "Throughput: total ops/s of all processes, each running 90% get / 10% set over "
    "1000 keys for {secs:g} s\n(median of {rounds} round(s)); SharedMemoryCache: "
    "all processes on one segment; FastCache: a table per process\n(no sharing). "
    "scaling = median of per-round total(N) / total(1); Shared / Fast = median of "
    "per-round ratios.\nCPU = cores' worth of CPU time the workers got (their CPU "
    "seconds / wall seconds, median): below N\n(or below the core count) means "
    "time-sharing or a busy machine. This machine has {cores} usable core(s)."
)


def _json_or_text(args: argparse.Namespace, facts: dict[str, Any],
                  tables: list[tuple[str, list[list[str]]]],
                  tp_cells: list[list[str]] | None, tp_legend: str) -> None:
    if args.markdown:
        print("\n".join(f"- **{k}**: {v}" for k, v in facts.items()))
        for title, cells in tables:
            print()
            print(f"**{title}**")
            print()
            print(harness.render_markdown(cells))
        print()
        print(LEGEND.replace("\n", " "))
        if tp_cells:
            print()
            print("**Throughput, 90% get / 10% set, N processes**")
            print()
            print(harness.render_markdown(tp_cells))
            print()
            print(tp_legend.replace("\n", " "))
    else:
        width = max(len(k) for k in facts)
        print("\n".join(f"{k.rjust(width)}: {v}" for k, v in facts.items()))
        for title, cells in tables:
            print()
            print(title)
            print(harness.render_text(cells))
        print()
        print(LEGEND)
        if tp_cells:
            print()
            print("Throughput, 90% get / 10% set, N processes")
            print(harness.render_text(tp_cells))
            print()
            print(tp_legend)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="SharedMemoryCache vs FastCache, memcached and Redis; "
                    "multi-process throughput.")
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK.latency.rounds} rounds of "
                             f"{QUICK.latency.round_ms:g} ms, {QUICK.tp_seconds:g} s "
                             "throughput runs (default "
                             f"{FULL.latency.rounds} of {FULL.latency.round_ms:g} ms, "
                             f"{FULL.tp_rounds} x {FULL.tp_seconds:g} s)")
    parser.add_argument("--markdown", action="store_true",
                        help="print the tables as Markdown")
    parser.add_argument("--json", metavar="PATH", help="write all rounds as JSON")
    parser.add_argument("--no-servers", action="store_true",
                        help="skip memcached and Redis (no install, no servers)")
    args = parser.parse_args(argv)
    s = QUICK if args.quick else FULL

    started = time.monotonic()
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(sig, _on_signal)
    atexit.register(stop_servers)

    # A private segment directory, in tmpfs like the default /dev/shm when
    # there is one (a disk-backed file would add writeback to the numbers).
    shm_parent = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    shm_dir = tempfile.mkdtemp(prefix="fastcache-bench-", dir=shm_parent)
    os.environ[SHM_DIR_ENV] = shm_dir  # before any SharedMemoryCache exists
    workdir = tempfile.mkdtemp(prefix="fastcache-bench-servers-")
    atexit.register(shutil.rmtree, shm_dir, True)
    atexit.register(shutil.rmtree, workdir, True)
    install_secs = 0.0
    try:
        harness.setup_django()
        try:
            fast = harness._backend(FASTCACHE, "bench-fast", {})
            shared = harness._backend(SHARED, "bench-shared", {})
        except Exception as exc:
            print(f"bench_shared: cannot import a backend: {type(exc).__name__}: "
                  f"{exc}", file=sys.stderr)
            return 2

        facts = harness.machine_facts(fast, shared)
        del facts["A"], facts["B"]
        facts["B (every table)"] = f"SharedMemoryCache = {SHARED}"
        facts["segment dir"] = f"{shm_dir} (${SHM_DIR_ENV}, removed afterwards)"
        others = [fast]
        skipped: list[str] = []
        if args.no_servers:
            skipped.append("memcached/Redis rows: skipped (--no-servers)")
        else:
            reason, install_secs = ensure_server_binaries()
            servers: dict[str, Server] = {}
            if reason is None:
                for name in ("memcached", "redis"):
                    try:
                        servers[name] = start_server(name, workdir)
                    except (OSError, RuntimeError) as exc:
                        skipped.append(f"{name} rows: skipped, server did not start: "
                                       f"{exc}")
            else:
                skipped.append(f"memcached/Redis rows: skipped: {reason}")
            for name, dist, path, loc in (
                    ("memcached", "pymemcache", PYMEMCACHE, "127.0.0.1:{port}"),
                    ("redis", "redis", REDIS, "redis://127.0.0.1:{port}")):
                if name not in servers:
                    continue
                version = client_version(dist)
                if version is None:
                    skipped.append(f"{name} rows: skipped, the {dist} client is not "
                                   "installed (pip install -r requirements/bench.txt)")
                    continue
                srv = servers[name]
                others.append(harness._backend(path, loc.format(port=srv.port), {}))
                facts[name] = (f"{srv.version} on 127.0.0.1:{srv.port}, "
                               f"client {dist} {version}")
        for line in skipped:
            log(f"bench_shared: {line}")
        if skipped:
            facts["skipped"] = "; ".join(skipped)
        if install_secs:
            facts["package install"] = f"{install_secs:.1f} s (not in elapsed)"
        facts["harness loop floor"] = (f"{harness._loop_floor_ns():.0f} ns/op "
                                       "(included in all)")
        facts["rounds"] = (f"{s.latency.rounds} interleaved rounds of "
                           f"~{s.latency.round_ms:g} ms per backend, GC off; "
                           f"throughput {s.tp_rounds} x {s.tp_seconds:g} s per "
                           "backend and process count")

        bench_start = time.monotonic()
        latency = run_latency(shared, others, s.latency)
        stop_servers()  # the throughput part does not use them
        tp = run_throughput(s)
        facts["load average at end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
        facts["elapsed"] = (f"{time.monotonic() - bench_start:.1f} s benchmarking, "
                            f"{time.monotonic() - started - install_secs:.1f} s "
                            "in all")
        if not tp.shared_pids_seen:
            facts["WARNING"] = ("the parent did not read every worker's pid from "
                                "the segment: processes did not share it")

        tables = []
        for o in others:
            title = f"{o.label} (A) vs SharedMemoryCache (B), one process"
            tables.append((title, harness.table(latency[o.label], o, shared)))
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
            else os.cpu_count()
        tp_legend = TP_LEGEND.format(secs=tp.seconds, rounds=tp.rounds, cores=cores)
        _json_or_text(args, facts, tables, throughput_table(tp), tp_legend)

        rows = [r for o in others for r in latency[o.label]]
        judged = [r for r in rows if r.target is not None]
        met = sum(1 for r in judged if r.passed)
        if args.json:
            with open(args.json, "w") as f:
                json.dump({
                    "facts": facts,
                    "config": {"latency": asdict(s.latency),
                               "throughput_seconds": s.tp_seconds,
                               "throughput_rounds": s.tp_rounds},
                    "latency": {label: [asdict(r) for r in rs]
                                for label, rs in latency.items()},
                    "throughput": asdict(tp),
                    "targets_met": met, "targets": len(judged),
                }, f, indent=1)
        print(f"targets met: {met}/{len(judged)}")
        return 0
    finally:
        stop_servers()
        shutil.rmtree(shm_dir, ignore_errors=True)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
