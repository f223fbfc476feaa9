#!/usr/bin/env python
"""TieredCache (a FastCache/SharedMemoryCache L1 in front of Redis) against
Django's RedisCache and django-redis on the same redis-server.

    python bench/bench_tiered.py [--quick] [--markdown] [--json out.json]

Latency rows run every backend side by side in this one process, in
interleaved rounds, with bench.py's harness (calibrated rounds, GC off,
medians, median of per-round ratios):

l1_hit      get of a key in L1 (TieredCache, FastCache L1) vs a get of the
            same key from RedisCache and from django-redis (and, for
            reference, LocMemCache and a bare FastCache).
request30   a request doing 30 lookups at a 90% L1 hit rate: 27 L1 hits and 3
            keys whose L1 copy was invalidated just before (the L1 delete is
            timed too), read from Redis and refilled; vs 30 RedisCache gets.

Throughput: 2 processes (multiprocessing "spawn") each run bench_shared.py's
90% get / 10% set mix over 1000 keys for a fixed time, on TieredCache with one
SharedMemoryCache L1 segment for both and Redis invalidation, and on
RedisCache; rounds alternate the order.  Every set goes to Redis (and
invalidates the other process's copy), so 10% of the operations pay a round
trip whatever L1 does: the ratio cannot exceed ~10x by construction.

redis-server is started on a free 127.0.0.1 port (tests/servers.py, which
installs it with apt-get when missing and we are root) and always stopped.
The exit status is 0 whether or not targets are met; the last line is
"targets met: X/Y".
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from itertools import repeat
from typing import Any

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
if BENCH_DIR not in sys.path:
    sys.path.insert(0, BENCH_DIR)

import bench_shared  # noqa: E402  (and tests/ for the server helpers)
from servers import ensure_server_binaries, start_server, stop_servers  # noqa: E402

import bench as harness  # noqa: E402  (also puts the repo root on sys.path)
from bench import STR_VALUE, Prepare, Row, Timed, measure, pair_row  # noqa: E402

L1_HIT_VS_REDIS = 30.0
L1_HIT_VS_DJANGO_REDIS = 10.0
REQUEST30_TARGET = 8.0
TP_TARGET = 20.0
TP_PROCESSES = 2
TP_SEGMENT = "bench-tiered-tp"
REQUEST_KEYS = [f"req:{i}" for i in range(30)]


def caches_setting(url: str) -> dict[str, Any]:
    setting = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "redis": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                  "LOCATION": url},
        "tiered": {
            "BACKEND": "django_fastcache.TieredCache",
            "OPTIONS": {"L2": "redis", "INVALIDATION": url, "L1_TIMEOUT": 60},
        },
        "tiered_shared": {
            "BACKEND": "django_fastcache.TieredCache",
            "OPTIONS": {"L2": "redis", "INVALIDATION": url, "L1_TIMEOUT": 60,
                        "L1": {"BACKEND": "django_fastcache.SharedMemoryCache",
                               "LOCATION": TP_SEGMENT,
                               "OPTIONS": bench_shared.TP_OPTIONS}},
        },
    }
    if django_redis_version():
        setting["django_redis"] = {"BACKEND": "django_redis.cache.RedisCache",
                                   "LOCATION": url + "/0"}
    return setting


def django_redis_version() -> str | None:
    return bench_shared.client_version("django-redis")


def setup(url: str) -> None:
    import django
    from django.conf import settings

    settings.configure(CACHES=caches_setting(url))
    django.setup()


def ready(cache: Any) -> Any:
    deadline = time.monotonic() + 10
    while not cache._state.usable and time.monotonic() < deadline:
        time.sleep(0.01)
    if not cache._state.usable:
        raise RuntimeError("TieredCache listener did not subscribe in 10 s")
    return cache


def w_get(cache: Any) -> Prepare:
    key = "bench:hit"
    cache.set(key, STR_VALUE)
    assert cache.get(key) == STR_VALUE
    return harness.call1(cache.get, key)


def w_request_redis(cache: Any) -> Prepare:
    cache.set_many(dict.fromkeys(REQUEST_KEYS, STR_VALUE))
    get = cache.get

    def prepare(n: int) -> tuple[Timed, int]:
        def timed() -> None:
            for _ in repeat(None, n):
                for key in REQUEST_KEYS:
                    get(key)
        return timed, n
    return prepare


def w_request_tiered(cache: Any) -> Prepare:
    cache.set_many(dict.fromkeys(REQUEST_KEYS, STR_VALUE))
    get = cache.get
    hits = REQUEST_KEYS[:27]
    misses = REQUEST_KEYS[27:]
    made = [cache.make_key(k) for k in misses]
    drop = cache._state.drop_keys  # what an invalidation from another host does
    for key in REQUEST_KEYS:
        assert get(key) == STR_VALUE
    before = dict(cache._state.counters)

    def prepare(n: int) -> tuple[Timed, int]:
        def timed() -> None:
            for _ in repeat(None, n):
                drop(made)
                for key in hits:
                    get(key)
                for key in misses:
                    get(key)
        return timed, n
    prepare.before = before  # type: ignore[attr-defined]
    return prepare


# --------------------------------------------------------------------------
# Throughput


def tp_worker(index: int, url: str, conn: Any) -> None:
    import gc
    import random

    setup(url)
    from django.core.cache import caches

    targets = {"TieredCache": ready(caches["tiered_shared"]),
               "RedisCache": caches["redis"]}
    rng = random.Random(2000 + index)
    keys = bench_shared.TP_KEYS
    blocks = [tuple(rng.choices(keys, k=10)) for _ in range(bench_shared.TP_CHUNK * 64)]
    size = bench_shared.TP_CHUNK
    chunks = [blocks[i:i + size] for i in range(0, len(blocks), size)]
    targets["TieredCache"].get_many(keys)  # L1 warm, as on a running site
    gc.collect()
    gc.disable()
    conn.send("ready")
    while True:
        msg = conn.recv()
        if msg is None:
            break
        label, start_at, duration = msg
        conn.send(bench_shared._mix(targets[label], chunks, start_at, duration))
    conn.send(targets["TieredCache"].stats())


def run_throughput(url: str, seconds: float, rounds: int) -> dict[str, Any]:
    import multiprocessing

    from django.core.cache import caches

    caches["redis"].set_many(dict.fromkeys(bench_shared.TP_KEYS, STR_VALUE))
    ctx = multiprocessing.get_context("spawn")
    workers, conns = [], []
    totals: dict[str, list[float]] = {"TieredCache": [], "RedisCache": []}
    stats = []
    try:
        for i in range(TP_PROCESSES):
            parent_end, child_end = ctx.Pipe()
            p = ctx.Process(target=tp_worker, args=(i, url, child_end), daemon=True)
            p.start()
            child_end.close()
            workers.append(p)
            conns.append(parent_end)
        for c in conns:
            if not c.poll(120) or c.recv() != "ready":
                raise RuntimeError("a throughput worker did not start")
        for r in range(rounds):
            order = list(totals) if r % 2 == 0 else list(totals)[::-1]
            for label in order:
                start_at = time.monotonic() + 0.05
                for c in conns:
                    c.send((label, start_at, seconds))
                rate = 0.0
                for c in conns:
                    ops, secs, _cpu = c.recv()
                    rate += ops / secs
                totals[label].append(rate)
                bench_shared.log(f"bench_tiered: throughput round {r + 1}/{rounds} "
                                 f"{label}: {rate:,.0f} ops/s")
        for c in conns:
            c.send(None)
            stats.append(c.recv())
    finally:
        for p in workers:
            p.join(5)
            if p.is_alive():
                p.terminate()
                p.join(5)
    ratios = [t / r for t, r in zip(totals["TieredCache"], totals["RedisCache"],
                                    strict=True)]
    hits = sum(s["l1_hits"] for s in stats)
    lookups = hits + sum(s["l2_hits"] + s["misses"] for s in stats)
    return {"totals": totals, "ratio": statistics.median(ratios),
            "l1_hit_rate": hits / lookups if lookups else None}


# --------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    cfg = harness.QUICK if args.quick else harness.FULL
    tp_seconds, tp_rounds = (1.0, 2) if args.quick else (2.0, 5)

    reason, _spent = ensure_server_binaries()
    if reason and bench_shared.which("redis-server") is None:
        print(f"bench_tiered: {reason}", file=sys.stderr)
        return 2
    workdir = tempfile.mkdtemp(prefix="bench-tiered-")
    shm_dir = tempfile.mkdtemp(prefix="bench-tiered-shm-")
    os.environ.setdefault(bench_shared.SHM_DIR_ENV, shm_dir)
    atexit.register(stop_servers)
    atexit.register(shutil.rmtree, workdir, True)
    atexit.register(shutil.rmtree, shm_dir, True)
    t_start = time.monotonic()
    try:
        server = start_server("redis", workdir)
        setup(server.url)
        from django.core.cache import caches

        tiered = ready(caches["tiered"])
        redis_cache = caches["redis"]
        rows: list[Row] = []
        others = [("RedisCache", redis_cache, L1_HIT_VS_REDIS)]
        djr = django_redis_version()
        if djr:
            others.append((f"django-redis {djr}", caches["django_redis"],
                           L1_HIT_VS_DJANGO_REDIS))
        others.append(("LocMemCache", caches["default"], None))
        # What the tier costs over its L1 alone.
        from django_fastcache import FastCache

        others.append(("FastCache (the L1 alone)",
                       FastCache("bench-tiered-l1-alone", {}), None))

        bench_shared.log("bench_tiered: l1_hit ...")
        tiered_rounds, *other_rounds = measure(
            [w_get(tiered)] + [w_get(c) for _, c, _ in others], cfg)
        for (label, _, target), rounds in zip(others, other_rounds, strict=True):
            rows.append(pair_row("l1_hit", f"get, L1 hit, vs {label}", target,
                                 rounds, tiered_rounds))

        bench_shared.log("bench_tiered: request30 ...")
        tiered.reset_stats()
        prep = w_request_tiered(tiered)
        t_rounds, r_rounds = measure([prep, w_request_redis(redis_cache)], cfg)
        rows.append(pair_row("request30", "30 lookups, 90% L1 hits, vs RedisCache",
                             REQUEST30_TARGET, r_rounds, t_rounds))
        st = tiered.stats()
        hit_rate = st["l1_hits"] / max(1, st["l1_hits"] + st["l2_hits"] + st["misses"])

        bench_shared.log("bench_tiered: throughput ...")
        tp = run_throughput(server.url, tp_seconds, tp_rounds)
    finally:
        stop_servers()

    cells = [["case", "TieredCache ns/op", "other ns/op", "ratio", "spread", "target",
              "result"]]
    for row in rows:
        cells.append([
            f"{row.case}: {row.title}", f"{row.b:,.0f}", f"{row.a:,.0f}",
            f"{row.ratio:.1f}x", f"±{row.spread:.0f}%" if row.spread else "",
            row.target_label,
            "report" if row.passed is None else ("PASS" if row.passed else "FAIL"),
        ])
    tp_pass = tp["ratio"] >= TP_TARGET
    cells.append([
        f"throughput: {TP_PROCESSES} processes, 90/10 get/set, TieredCache"
        "(SharedMemoryCache, Redis) vs RedisCache",
        f"{statistics.median(tp['totals']['TieredCache']):,.0f} ops/s",
        f"{statistics.median(tp['totals']['RedisCache']):,.0f} ops/s",
        f"{tp['ratio']:.1f}x", "", f">={TP_TARGET:g}x", "PASS" if tp_pass else "FAIL",
    ])
    render = harness.render_markdown if args.markdown else harness.render_text
    print(render(cells))
    print(f"request30 L1 hit rate: {hit_rate:.1%}; throughput L1 hit rate: "
          f"{tp['l1_hit_rate']:.1%}; redis {server.version}; "
          f"{time.monotonic() - t_start:.0f} s")
    judged = [r.passed for r in rows if r.passed is not None] + [tp_pass]
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": [vars(r) for r in rows], "throughput": tp}, f, indent=1)
    print(f"targets met: {sum(judged)}/{len(judged)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
