#!/usr/bin/env python
"""Side-by-side benchmark: Django's LocMemCache against django_fastcache.FastCache.

Every case runs both backends in this one process, in interleaved rounds
(A, B, A, B, ...), each round a calibrated inner loop of a few tens of
milliseconds with the garbage collector off.  A row reports the median ns/op
of each backend over the rounds and the median of the per-round ratios
A / B, so a burst of noise from a neighbour on this shared machine hits one
round pair, not a whole backend.  Memory is measured apart, in fresh
subprocesses.  See bench/README.md.

    python bench/bench.py [--quick] [--cases get_str,incr] [--json out.json]
                          [--markdown] [--backend2 dotted.path]

The exit status is 0 whether or not targets are met: this measures, it does
not gate.  The last line is "targets met: X/Y".
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import decimal
import gc
import importlib
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from itertools import repeat
from time import perf_counter_ns
from typing import Any

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    # After site-packages: an installed django_fastcache wins over the tree.
    # The header prints which file was measured.
    sys.path.append(REPO_ROOT)

LOCMEM = "django.core.cache.backends.locmem.LocMemCache"
FASTCACHE = "django_fastcache.FastCache"

# A prepare function is called outside the timing with an iteration count n;
# it builds whatever the round needs (fresh keys, a refilled table, waiting
# threads) and returns the timed callable and how many operations it does.
Timed = Callable[[], object]
Prepare = Callable[[int], tuple[Timed, int]]


# --------------------------------------------------------------------------
# Configuration and backends


@dataclass
class Config:
    rounds: int
    round_ms: float
    memory_repeats: int
    memory_entries: int = 100_000

    @property
    def round_ns(self) -> float:
        return self.round_ms * 1e6


FULL = Config(rounds=25, round_ms=30.0, memory_repeats=3)
QUICK = Config(rounds=9, round_ms=10.0, memory_repeats=1)


def setup_django() -> None:
    import django
    from django.conf import settings

    if not settings.configured:
        settings.configure()
    django.setup()


def import_dotted(path: str) -> Any:
    module, _, attr = path.rpartition(".")
    if not module:
        raise ImportError(f"{path!r} is not a dotted path to a class")
    return getattr(importlib.import_module(module), attr)


def merge_params(extra: dict[str, Any] | None,
                 options: dict[str, int]) -> dict[str, Any]:
    """Backend params: the case's OPTIONS over any --params2-style extras."""
    params = dict(extra or {})
    merged = {**(params.get("OPTIONS") or {}), **options}
    if merged:
        params["OPTIONS"] = merged
    return params


@dataclass
class Backend:
    label: str
    path: str
    cls: type
    location: str
    extra: dict[str, Any] = field(default_factory=dict)

    def make(self, suffix: str = "", **options: int) -> Any:
        """A fresh, empty instance; suffix separates stores of one case."""
        cache = self.peer(suffix, **options)
        cache.clear()
        return cache

    def peer(self, suffix: str = "", **options: int) -> Any:
        """An instance on the store of that suffix (as CacheHandler's per-thread
        instances share one LOCATION)."""
        return self.cls(self.location + suffix, merge_params(self.extra, options))


# --------------------------------------------------------------------------
# Timing


def _time_ns(timed: Timed) -> int:
    t0 = perf_counter_ns()
    timed()
    return perf_counter_ns() - t0


def _calibrate(prepare: Prepare, target_ns: float) -> int:
    """An n whose round takes about target_ns; its runs double as warm-up."""
    n = 1
    while True:
        timed, _ = prepare(n)
        t = _time_ns(timed)
        if t >= target_ns / 4:
            break
        n *= 8 if t < target_ns / 100 else 2
    for _ in range(2):
        n = max(1, round(n * target_ns / max(t, 1)))
        timed, _ = prepare(n)
        t = _time_ns(timed)
    return max(1, round(n * target_ns / max(t, 1)))


def measure(variants: Sequence[Prepare], cfg: Config) -> list[list[float]]:
    """ns/op of each variant per round; the variants interleave in every round."""
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        ns = [_calibrate(p, cfg.round_ns) for p in variants]
        for p, n in zip(variants, ns, strict=True):  # one more warm-up round each
            timed, _ = p(n)
            timed()
        per_round: list[list[float]] = [[] for _ in variants]
        for _ in range(cfg.rounds):
            for i, (p, n) in enumerate(zip(variants, ns, strict=True)):
                timed, ops = p(n)
                per_round[i].append(_time_ns(timed) / ops)
        return per_round
    finally:
        if was_enabled:
            gc.enable()
        gc.collect()


# --------------------------------------------------------------------------
# Results


@dataclass
class Row:
    case: str
    title: str
    unit: str  # "ns" (per op), "B" (per entry) or "x" (a ratio of a backend to itself)
    a: float
    b: float
    ratio: float | None  # median of per-round A/B; higher is better for B
    spread: float | None  # half the ratio's interquartile range, % of its median
    target: float | None
    target_label: str = "report"
    target_on: str = "ratio"  # or "b": the target applies to column B alone
    passed: bool | None = None
    rounds: dict[str, list[float]] = field(default_factory=dict)

    def judge(self) -> Row:
        if self.target is not None:
            value = self.ratio if self.target_on == "ratio" else self.b
            self.passed = value is not None and value >= self.target
        return self


def _spread(values: Sequence[float]) -> float | None:
    if len(values) < 2:
        return None
    q1, _, q3 = statistics.quantiles(values, n=4)
    med = statistics.median(values)
    return 100.0 * (q3 - q1) / 2 / med if med else None


def pair_row(case: str, title: str, target: float | None,
             a: Sequence[float], b: Sequence[float], unit: str = "ns") -> Row:
    ratios = [x / y for x, y in zip(a, b, strict=True)]
    return Row(
        case=case, title=title, unit=unit,
        a=statistics.median(a), b=statistics.median(b),
        ratio=statistics.median(ratios), spread=_spread(ratios),
        target=target,
        target_label=f">={target:g}x" if target is not None else "report",
        rounds={"a": list(a), "b": list(b), "ratio": ratios},
    ).judge()


def self_ratio_row(case: str, title: str, target_b: float | None, label: str,
                   a_num: Sequence[float], a_den: Sequence[float],
                   b_num: Sequence[float], b_den: Sequence[float]) -> Row:
    """A row whose columns are each backend's own per-round ratio num/den."""
    ra = [x / y for x, y in zip(a_num, a_den, strict=True)]
    rb = [x / y for x, y in zip(b_num, b_den, strict=True)]
    return Row(
        case=case, title=title, unit="x",
        a=statistics.median(ra), b=statistics.median(rb),
        ratio=None, spread=_spread(rb),
        target=target_b, target_label=label if target_b is not None else "report",
        target_on="b", rounds={"a": ra, "b": rb},
    ).judge()


# --------------------------------------------------------------------------
# Workloads.  Each takes a fresh cache, stores what it needs untimed, and
# returns a Prepare.  Loops are `for _ in repeat(None, n)` over local names:
# the cheapest Python loop, identical for both backends.

STR_VALUE = "hello, this is a cached fragment of text"
INT_VALUE = 123456
DICT_VALUE = {f"field_{i}": f"value number {i}" for i in range(10)}
LIST_VALUE = list(range(100))
# A row an API view caches: UUID id, aware datetime, Decimal price.
ROW_VALUE = {
    "id": uuid.UUID("6f1c2a4e-8b3d-4c5e-9f70-1a2b3c4d5e6f"),
    "created": datetime.datetime(2024, 5, 17, 9, 30, 12, 345678,
                                 tzinfo=datetime.timezone.utc),
    "price": decimal.Decimal("1299.99"),
    "name": "Ergonomic keyboard, walnut",
    "tags": ["office", "hardware", "bestseller"],
}
KEY = "bench:key"
MISSING = "bench:missing"
BATCH = [f"bench:many:{i}" for i in range(20)]
BATCH_DATA = dict.fromkeys(BATCH, STR_VALUE)
# get_many of rows: what a view caching a page of small records reads.
BATCH_DICTS = {k: {"id": i, "name": f"user {i}", "email": f"user{i}@example.com",
                   "active": True} for i, k in enumerate(BATCH)}

_fresh = itertools.count()


def fresh_keys(n: int, tag: str = "new") -> list[str]:
    """n keys never used before in this process."""
    return [f"{tag}:{i}" for i in itertools.islice(_fresh, n)]


def call1(f: Callable[[Any], Any], x: Any) -> Prepare:
    def prepare(n: int) -> tuple[Timed, int]:
        def timed() -> None:
            for _ in repeat(None, n):
                f(x)
        return timed, n
    return prepare


def call2(f: Callable[[Any, Any], Any], x: Any, y: Any) -> Prepare:
    def prepare(n: int) -> tuple[Timed, int]:
        def timed() -> None:
            for _ in repeat(None, n):
                f(x, y)
        return timed, n
    return prepare


def w_get(value: Any) -> Callable[[Any], Prepare]:
    def workload(cache: Any) -> Prepare:
        cache.set(KEY, value)
        assert cache.get(KEY) == value
        return call1(cache.get, KEY)
    return workload


def w_get_safe(cache: Any) -> Prepare:
    # Built here: SafeString needs Django imported (setup_django runs first).
    from django.utils.safestring import mark_safe

    return w_get(mark_safe(STR_VALUE))(cache)


def w_get_miss(cache: Any) -> Prepare:
    assert cache.get(MISSING) is None
    return call1(cache.get, MISSING)


def w_set(value: Any) -> Callable[[Any], Prepare]:
    def workload(cache: Any) -> Prepare:
        return call2(cache.set, KEY, value)
    return workload


def w_add_existing(cache: Any) -> Prepare:
    cache.set(KEY, STR_VALUE)
    assert cache.add(KEY, STR_VALUE) is False
    return call2(cache.add, KEY, STR_VALUE)


def w_get_or_set_hit(cache: Any) -> Prepare:
    cache.set(KEY, STR_VALUE)

    def compute() -> str:
        raise AssertionError("get_or_set hit computed")

    assert cache.get_or_set(KEY, compute) == STR_VALUE
    return call2(cache.get_or_set, KEY, compute)


def w_incr(cache: Any) -> Prepare:
    cache.set(KEY, 0)
    return call1(cache.incr, KEY)


def w_has_key(cache: Any) -> Prepare:
    cache.set(KEY, STR_VALUE)
    assert cache.has_key(KEY)
    return call1(cache.has_key, KEY)


def w_touch(cache: Any) -> Prepare:
    cache.set(KEY, STR_VALUE)
    assert cache.touch(KEY)
    return call1(cache.touch, KEY)


def w_delete_set(cache: Any) -> Prepare:
    delete, set_ = cache.delete, cache.set
    set_(KEY, STR_VALUE)

    def prepare(n: int) -> tuple[Timed, int]:
        def timed() -> None:
            for _ in repeat(None, n):
                delete(KEY)
                set_(KEY, STR_VALUE)
        return timed, n
    return prepare


def w_get_many(cache: Any) -> Prepare:
    cache.set_many(BATCH_DATA)
    assert len(cache.get_many(BATCH)) == len(BATCH)
    return call1(cache.get_many, BATCH)


def w_get_many_dicts(cache: Any) -> Prepare:
    cache.set_many(BATCH_DICTS)
    assert cache.get_many(BATCH) == BATCH_DICTS
    return call1(cache.get_many, BATCH)


def w_set_many(cache: Any) -> Prepare:
    return call1(cache.set_many, BATCH_DATA)


def w_delete_many(cache: Any) -> Prepare:
    """delete_many of 20 present keys; the refill happens untimed each round."""
    set_many, delete_many = cache.set_many, cache.delete_many
    batches: list[list[str]] = []

    def prepare(n: int) -> tuple[Timed, int]:
        while len(batches) < n:
            batches.append([f"dm:{len(batches)}:{j}" for j in range(20)])
        use = batches[:n]
        for batch in use:
            set_many(dict.fromkeys(batch, STR_VALUE))

        def timed() -> None:
            for batch in use:
                delete_many(batch)
        return timed, n
    return prepare


def w_async(op: str) -> Callable[[Any, asyncio.AbstractEventLoop], Prepare]:
    def workload(cache: Any, loop: asyncio.AbstractEventLoop) -> Prepare:
        cache.set(KEY, STR_VALUE)
        if op == "aget":
            call = cache.aget

            async def body(n: int) -> None:
                for _ in repeat(None, n):
                    await call(KEY)
        else:
            call = cache.aset

            async def body(n: int) -> None:
                for _ in repeat(None, n):
                    await call(KEY, STR_VALUE)

        def prepare(n: int) -> tuple[Timed, int]:
            return (lambda: loop.run_until_complete(body(n))), n
        return prepare
    return workload


def w_set_full(cache: Any, max_entries: int) -> tuple[Prepare, Callable[[], bool]]:
    """set of a never-seen key into a table already at max_entries.  Also
    returns a check that culling happened (the oldest entry is gone)."""
    set_ = cache.set
    fill = fresh_keys(max_entries, "fill")
    for k in fill:
        set_(k, STR_VALUE)
    assert cache.has_key(fill[0])

    def prepare(n: int) -> tuple[Timed, int]:
        keys = fresh_keys(n)

        def timed() -> None:
            for k in keys:
                set_(k, STR_VALUE)
        return timed, n
    return prepare, lambda: not cache.has_key(fill[0])


MIX_KEYS = [f"mix:{i}" for i in range(200)]  # < 300: the mix never culls


def w_mix(backend: Backend, suffix: str, threads: int, seed: int) -> Prepare:
    """90% get / 10% set over 200 hot keys, `threads` threads, each with its
    own backend instance on the shared store (as Django's per-thread caches).
    n counts operations over all threads."""
    import random

    rng = random.Random(seed)
    cache = backend.make(suffix)
    for k in MIX_KEYS:
        cache.set(k, STR_VALUE)
    peers = [backend.peer(suffix) for _ in range(threads)]
    blocks: list[list[tuple[str, ...]]] = [[] for _ in range(threads)]

    def worker(peer: Any, mine: list[tuple[str, ...]],
               barrier: threading.Barrier) -> None:
        get, set_, v = peer.get, peer.set, STR_VALUE
        barrier.wait()
        for a, b, c, d, e, f, g, h, i, j in mine:
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

    def prepare(n: int) -> tuple[Timed, int]:
        per_thread = max(1, n // (10 * threads))
        for own in blocks:
            while len(own) < per_thread:
                own.append(tuple(rng.choices(MIX_KEYS, k=10)))
        barrier = threading.Barrier(threads + 1)
        workers = [
            threading.Thread(target=worker, args=(peers[t], blocks[t][:per_thread],
                                                  barrier), daemon=True)
            for t in range(threads)
        ]
        for w in workers:
            w.start()

        def timed() -> None:
            barrier.wait()  # all workers are already parked here
            for w in workers:
                w.join()
        return timed, per_thread * 10 * threads
    return prepare


# --------------------------------------------------------------------------
# Cases


@dataclass
class Case:
    id: str
    run: Callable[[Backend, Backend, Config], list[Row]]
    about: str


def simple_case(case_id: str, title: str, target: float | None,
                workload: Callable[[Any], Prepare], about: str,
                **options: int) -> Case:
    def run(a: Backend, b: Backend, cfg: Config) -> list[Row]:
        pa = workload(a.make(**options))
        pb = workload(b.make(**options))
        ra, rb = measure([pa, pb], cfg)
        return [pair_row(case_id, title, target, ra, rb)]
    return Case(case_id, run, about)


def async_case(case_id: str, title: str, target: float | None, op: str,
               about: str) -> Case:
    def run(a: Backend, b: Backend, cfg: Config) -> list[Row]:
        loop = asyncio.new_event_loop()
        try:
            work = w_async(op)
            pa = work(a.make(), loop)
            pb = work(b.make(), loop)
            ra, rb = measure([pa, pb], cfg)
        finally:
            loop.close()
        return [pair_row(case_id, title, target, ra, rb)]
    return Case(case_id, run, about)


def run_cull(a: Backend, b: Backend, cfg: Config) -> list[Row]:
    # Both configurations remove 100 entries per cull: 300 // 3, 30000 // 300.
    small = {"MAX_ENTRIES": 300}  # default CULL_FREQUENCY (3)
    big = {"MAX_ENTRIES": 30_000, "CULL_FREQUENCY": 300}
    work = [
        w_set_full(a.make(**small), 300),
        w_set_full(b.make(**small), 300),
        w_set_full(a.make("-big", **big), 30_000),
        w_set_full(b.make("-big", **big), 30_000),
    ]
    a_small, b_small, a_big, b_big = measure([p for p, _ in work], cfg)
    for (_, culled), who in zip(work, [a, b, a, b], strict=True):
        if not culled():
            print(f"\nbench: warning: {who.label} never culled its oldest entry",
                  file=sys.stderr)
    return [
        pair_row("cull", "set new key, full, MAX_ENTRIES=300 (cull 100)", 3.0,
                 a_small, b_small),
        pair_row("cull", "set new key, full, MAX_ENTRIES=30000/CF=300 (cull 100)",
                 None, a_big, b_big),
        self_ratio_row("cull", "  cull scaling: cost @30000 / cost @300", None, "",
                       a_big, a_small, b_big, b_small),
    ]


def run_mix(a: Backend, b: Backend, cfg: Config) -> list[Row]:
    # Each backend's 1- and 2-thread rounds are adjacent, since the target is
    # on their ratio; thread timings are the noisiest here, so twice the rounds.
    variants = [
        w_mix(a, "", 1, seed=1),
        w_mix(a, "-mix2", 2, seed=2),
        w_mix(b, "", 1, seed=1),
        w_mix(b, "-mix2", 2, seed=2),
    ]
    a1, a2, b1, b2 = measure(variants, dataclasses.replace(cfg, rounds=cfg.rounds * 2))
    # ns/op(1 thread) / ns/op(2 threads, total) = throughput(2T) / throughput(1T).
    return [
        pair_row("mix", "mix 90% get/10% set, 1 thread", None, a1, b1),
        pair_row("mix", "mix 90% get/10% set, 2 threads (total)", None, a2, b2),
        self_ratio_row("mix", "  2-thread / 1-thread total throughput", 0.95,
                       ">=0.95x (B)", a1, a2, b1, b2),
    ]


def run_stats(a: Backend, b: Backend, cfg: Config) -> list[Row]:
    """What the always-on counters cost B: the same calls on two B tables,
    one with this process's counting switched off.  Column A = counters off,
    column B = counters on, so the ratio is time(off) / time(on)."""
    on, off = b.make("-stats-on"), b.make("-stats-off")
    store = getattr(getattr(off, "_fc", None), "store", None)
    if store is None or not hasattr(store, "_count"):
        return []  # not a fastcache backend: nothing to measure
    store._count(False)
    try:
        rounds = dataclasses.replace(cfg, rounds=cfg.rounds * 2)
        rows = []
        for title, work in (("get hit str", w_get(STR_VALUE)), ("get miss", w_get_miss),
                            ("set str (overwrite)", w_set(STR_VALUE))):
            r_off, r_on = measure([work(off), work(on)], rounds)
            row = pair_row("stats", f"  counters off/on (B): {title}", 0.98,
                           r_off, r_on)
            row.target_label = ">=0.98x (<=2%)"
            rows.append(row)
        return rows
    finally:
        store._count(True)


# Memory -------------------------------------------------------------------


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # not Linux: peak RSS is the best we have
        import resource

        scale = 1 if sys.platform == "darwin" else 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def memory_child(path: str, entries: int, extra: dict[str, Any]) -> None:
    """Runs in a fresh interpreter: RSS growth from storing `entries` entries."""
    setup_django()
    cls = import_dotted(path)
    cache = cls("bench-memory", merge_params(extra, {"MAX_ENTRIES": entries * 2}))
    cache.set("warm", "x" * 100)  # first-use allocations are not per entry
    cache.delete("warm")
    gc.collect()
    before = _rss_bytes()
    set_ = cache.set
    for i in range(entries):
        set_(f"user:session:{i:08d}", f"{i:0100d}")  # 100-char value
    gc.collect()
    after = _rss_bytes()
    assert cache.get(f"user:session:{entries - 1:08d}") == f"{entries - 1:0100d}"
    json.dump({"before": before, "after": after,
               "per_entry": (after - before) / entries}, sys.stdout)


def _memory_of(backend: Backend, entries: int) -> float:
    out = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--memory-child", backend.path,
         "--memory-entries", str(entries), "--params1", json.dumps(backend.extra)],
        check=True, capture_output=True, text=True,
    )
    return float(json.loads(out.stdout)["per_entry"])


def run_memory(a: Backend, b: Backend, cfg: Config) -> list[Row]:
    ra: list[float] = []
    rb: list[float] = []
    for _ in range(cfg.memory_repeats):
        ra.append(_memory_of(a, cfg.memory_entries))
        rb.append(_memory_of(b, cfg.memory_entries))
    row = pair_row("memory", f"RSS per entry, {cfg.memory_entries // 1000}k x "
                   "100-char values", 1.0, ra, rb, unit="B")
    row.target_label = ">=1x (B <= A)"
    return [row]


CASES: list[Case] = [
    simple_case("get_str", "get hit str", 5.0, w_get(STR_VALUE),
                "get of a present key holding a 40-char str"),
    simple_case("get_int", "get hit int", 5.0, w_get(INT_VALUE),
                "get of a present key holding an int"),
    simple_case("get_dict", "get hit 10-key dict", 6.0, w_get(DICT_VALUE),
                "get of a 10-key str->str dict (decoding dominates)"),
    simple_case("get_safestring", "get hit SafeString (template fragment)", 5.0,
                w_get_safe, "get of a present key holding the 40-char str as a "
                "SafeString, what {% cache %} stores (B decodes it with fc_codec.c)"),
    simple_case("get_row", "get hit dict with datetime/Decimal/UUID fields", None,
                w_get(ROW_VALUE),
                "get of an API-row dict: id UUID, created datetime (UTC), price "
                "Decimal, name str, tags list of 3 strs"),
    simple_case("get_list", "get hit 100-element list", 6.0, w_get(LIST_VALUE),
                "get of list(range(100))"),
    simple_case("get_miss", "get miss", 5.0, w_get_miss,
                "get of an absent key, returning the default"),
    simple_case("set_str", "set str (overwrite)", None, w_set(STR_VALUE),
                "set of one key, over and over, to a 40-char str"),
    simple_case("set_dict", "set 10-key dict (overwrite)", 6.0, w_set(DICT_VALUE),
                "set of one key to a 10-key dict (encoding dominates)"),
    simple_case("add_existing", "add existing key", 4.0, w_add_existing,
                "add of a present key (returns False, stores nothing)"),
    simple_case("get_or_set_hit", "get_or_set hit", 5.0, w_get_or_set_hit,
                "get_or_set of a present key with a callable default (single-flight "
                "never claims on a hit)"),
    simple_case("incr", "incr", 5.0, w_incr, "incr by 1 of an int value"),
    simple_case("has_key", "has_key hit", 4.0, w_has_key,
                "has_key of a present key"),
    simple_case("touch", "touch", None, w_touch,
                "touch of a present key (new expiry from the default timeout)"),
    simple_case("delete_set", "delete + set", None, w_delete_set,
                "delete of a present key, then set it again (one op = both)"),
    simple_case("get_many", "get_many(20) hit", 5.0, w_get_many,
                "get_many of 20 present keys; one op = one call"),
    simple_case("get_many_dicts", "get_many(20) hit, 4-key dicts", 6.0,
                w_get_many_dicts,
                "get_many of 20 present keys holding small dicts (id, name, email, "
                "active); one op = one call"),
    simple_case("set_many", "set_many(20)", 3.0, w_set_many,
                "set_many of the same 20 keys (overwrites); one op = one call"),
    simple_case("delete_many", "delete_many(20) hit", None, w_delete_many,
                "delete_many of 20 present keys (refilled untimed)",
                MAX_ENTRIES=10_000_000),
    async_case("aget", "aget hit", 50.0, "aget",
               "await aget of a present key, N awaits per event-loop run"),
    async_case("aset", "aset", None, "aset", "await aset of one key"),
    Case("cull", run_cull,
         "set of never-seen keys into a full table: MAX_ENTRIES=300 with the "
         "default CULL_FREQUENCY, and MAX_ENTRIES=30000/CULL_FREQUENCY=300 "
         "(both cull 100 entries about every 101st set)"),
    Case("mix", run_mix,
         "90/10 get/set over 200 keys, 1 thread and 2 threads; thread scaling"),
    Case("stats", run_stats,
         "cost of the always-on stats() counters: B's get hit, get miss and set "
         "with its counters switched off vs on (time off / time on >= 0.98)"),
    Case("memory", run_memory,
         "RSS growth per entry filling 100k entries, fresh subprocess each"),
]
CASE_IDS = [c.id for c in CASES]


# --------------------------------------------------------------------------
# Machine facts and output


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_rev() -> str:
    try:
        rev = subprocess.run(["git", "-C", REPO_ROOT, "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", REPO_ROOT, "status", "--porcelain",
                                "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout
        return rev + ("+dirty" if dirty.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _loop_floor_ns() -> float:
    """ns/op of the harness loop itself around a trivial builtin call."""
    prepare = call1(len, "x")
    return statistics.median(measure([prepare], Config(5, 5.0, 0))[0])


def machine_facts(a: Backend, b: Backend) -> dict[str, Any]:
    import django

    try:
        fc = importlib.import_module("django_fastcache")
        fc_version = f"{fc.__version__} ({os.path.dirname(fc.__file__)})"
    except Exception as exc:  # the C module may not build yet
        fc_version = f"unavailable: {type(exc).__name__}: {exc}"
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count()
    return {
        "date": datetime.datetime.now(datetime.timezone.utc)
        .isoformat(timespec="seconds"),
        "cpu": _cpu_model(),
        "cores": f"{os.cpu_count()} (usable: {affinity})",
        "load average": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "python": f"{platform.python_implementation()} {platform.python_version()} "
                  f"({sys.executable})",
        "django": django.__version__,
        "django_fastcache": fc_version,
        "git": _git_rev(),
        "A": f"{a.label} = {a.path}" + (f" {a.extra}" if a.extra else ""),
        "B": f"{b.label} = {b.path}" + (f" {b.extra}" if b.extra else ""),
    }


def _fmt_value(row: Row, value: float) -> str:
    if row.unit == "ns":
        return f"{value:,.0f}"
    if row.unit == "B":
        return f"{value:,.0f} B"
    return f"{value:.2f}x"


def table(rows: Sequence[Row], a: Backend, b: Backend) -> list[list[str]]:
    out = [["case", f"{a.label} ns/op", f"{b.label} ns/op", "ratio", "spread",
            "target", "PASS/FAIL"]]
    for r in rows:
        out.append([
            r.title,
            _fmt_value(r, r.a),
            _fmt_value(r, r.b),
            f"{r.ratio:.2f}x" if r.ratio is not None else "-",
            f"±{r.spread:.0f}%" if r.spread is not None else "-",
            r.target_label,
            {True: "PASS", False: "FAIL", None: "-"}[r.passed],
        ])
    return out


def render_text(cells: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    lines = []
    for n, row in enumerate(cells):
        parts = [c.ljust(w) if i == 0 else c.rjust(w)
                 for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        lines.append("  ".join(parts).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def render_markdown(cells: list[list[str]]) -> str:
    head, *body = cells
    lines = ["| " + " | ".join(head) + " |",
             "|" + "|".join([":---"] + ["---:"] * (len(head) - 1)) + "|"]
    for row in body:
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |")
    return "\n".join(lines)


LEGEND = (
    "ratio = median over round pairs of A ns/op / B ns/op (RSS row: A bytes / B "
    "bytes); higher favours B.\nspread = half the interquartile range of the "
    "per-round ratios, as % of the median. Scaling rows ('x') are each backend's "
    "own ratio; their target applies to column B."
)


# --------------------------------------------------------------------------
# Main


def _backend(path: str, location: str, extra: dict[str, Any],
             other: str | None = None) -> Backend:
    cls = import_dotted(path)
    label = cls.__name__
    if other == label:
        label += "#2"
    return Backend(label=label, path=path, cls=cls, location=location, extra=extra)


def _json_params(text: str) -> dict[str, Any]:
    value = json.loads(text)
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="LocMemCache vs FastCache, interleaved in one process.")
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK.rounds} rounds of {QUICK.round_ms:g} ms "
                             f"(default {FULL.rounds} of {FULL.round_ms:g} ms)")
    parser.add_argument("--cases", help="comma-separated case ids: "
                        + ",".join(CASE_IDS))
    parser.add_argument("--list", action="store_true", help="list the cases")
    parser.add_argument("--json", metavar="PATH", help="write all rounds as JSON")
    parser.add_argument("--markdown", action="store_true",
                        help="print the table as Markdown")
    parser.add_argument("--backend1", default=LOCMEM, metavar="DOTTED.PATH",
                        help="reference backend (column A; default LocMemCache)")
    parser.add_argument("--backend2", default=FASTCACHE, metavar="DOTTED.PATH",
                        help="backend under test (column B; default FastCache)")
    parser.add_argument("--params1", type=_json_params, default={}, metavar="JSON",
                        help="extra params for backend1 (OPTIONS are merged)")
    parser.add_argument("--params2", type=_json_params, default={}, metavar="JSON",
                        help='extra params for backend2, e.g. \'{"OPTIONS": {...}}\'')
    parser.add_argument("--rounds", type=int, help="override the round count")
    parser.add_argument("--round-ms", type=float, help="override the round length")
    parser.add_argument("--memory-child", metavar="DOTTED.PATH",
                        help=argparse.SUPPRESS)
    parser.add_argument("--memory-entries", type=int, default=100_000,
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.memory_child:
        memory_child(args.memory_child, args.memory_entries, args.params1)
        return 0
    if args.list:
        for c in CASES:
            print(f"{c.id:14} {c.about}")
        return 0

    cfg = QUICK if args.quick else FULL
    cfg = Config(rounds=args.rounds or cfg.rounds,
                 round_ms=args.round_ms or cfg.round_ms,
                 memory_repeats=cfg.memory_repeats)
    selected = CASES
    if args.cases:
        wanted = [s.strip() for s in args.cases.split(",") if s.strip()]
        unknown = [w for w in wanted if w not in CASE_IDS]
        if unknown:
            parser.error(f"unknown case(s) {', '.join(unknown)}; "
                         f"known: {', '.join(CASE_IDS)}")
        selected = [c for c in CASES if c.id in wanted]

    setup_django()
    try:
        a = _backend(args.backend1, "bench-locmem", args.params1)
        b = _backend(args.backend2, "bench-fast", args.params2, other=a.label)
    except Exception as exc:
        print(f"bench: cannot import a backend: {type(exc).__name__}: {exc}\n"
              f"bench: to check the harness alone, run with --backend2 {LOCMEM}",
              file=sys.stderr)
        return 2

    facts = machine_facts(a, b)
    facts["harness loop floor"] = f"{_loop_floor_ns():.0f} ns/op (included in all)"
    facts["rounds"] = (f"{cfg.rounds} interleaved rounds of ~{cfg.round_ms:g} ms "
                       "per backend, GC off")
    rows: list[Row] = []
    started = perf_counter_ns()
    for case in selected:
        t0 = perf_counter_ns()
        print(f"bench: {case.id} ...", end="", file=sys.stderr, flush=True)
        new = case.run(a, b, cfg)
        rows.extend(new)
        print(f" {(perf_counter_ns() - t0) / 1e9:.1f} s", file=sys.stderr, flush=True)
    elapsed = (perf_counter_ns() - started) / 1e9
    facts["elapsed"] = f"{elapsed:.1f} s"

    cells = table(rows, a, b)
    if args.markdown:
        print("\n".join(f"- **{k}**: {v}" for k, v in facts.items()))
        print()
        print(render_markdown(cells))
        print()
        print(LEGEND.replace("\n", " "))
    else:
        width = max(len(k) for k in facts)
        print("\n".join(f"{k.rjust(width)}: {v}" for k, v in facts.items()))
        print()
        print(render_text(cells))
        print()
        print(LEGEND)
    judged = [r for r in rows if r.target is not None]
    met = sum(1 for r in judged if r.passed)

    if args.json:
        with open(args.json, "w") as f:
            json.dump({"facts": facts, "config": asdict(cfg),
                       "rows": [asdict(r) for r in rows],
                       "targets_met": met, "targets": len(judged)}, f, indent=1)
    print(f"targets met: {met}/{len(judged)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
