"""Threads: no unexpected exceptions, no deadlocks, atomic incr and add.

Every join has a deadline (fc_helpers.run_threads), so a deadlock fails the
test instead of hanging the run.
"""

from __future__ import annotations

import asyncio
import random
import sys
import threading
from decimal import Decimal

import pytest
from fc_helpers import SlowFloat, StrKey, run_threads, run_with_deadline

THREADS = 8


@pytest.fixture(autouse=True)
def frequent_thread_switches():
    """Switch threads every 10 us instead of 5 ms, to interleave more."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    yield
    sys.setswitchinterval(old)


def _mixed_worker(cache, seed, iterations, barrier):
    rnd = random.Random(seed)
    keys = [f"k{i}" for i in range(12)] + list(range(4))
    barrier.wait()
    for i in range(iterations):
        k = rnd.choice(keys)
        op = rnd.randrange(22)
        timeout = rnd.choice([None, 0, 1, 300, 0.001])
        try:
            if op == 0:
                cache.set(k, i, timeout)
            elif op == 1:
                cache.add(k, i, timeout)
            elif op == 2:
                cache.get(k)
            elif op == 3:
                cache.touch(k, timeout)
            elif op == 4:
                cache.delete(k)
            elif op == 5:
                cache.has_key(k)
            elif op == 6:
                cache.incr(k, 1)
            elif op == 7:
                cache.decr(k, 2)
            elif op == 8:
                cache.get_many(rnd.sample(keys, 4))
            elif op == 9:
                assert cache.set_many({k: i, rnd.choice(keys): [i]}, timeout) == []
            elif op == 10:
                cache.delete_many(rnd.sample(keys, 3))
            elif op == 11 and rnd.random() < 0.05:
                cache.clear()
            elif op == 12:
                cache.get_or_set(k, lambda: i, timeout)  # noqa: B023
            elif op == 13:
                cache.incr_version(k)
            elif op == 14:
                cache.decr_version(k, version=2)
            elif op == 15:
                _ = k in cache
            elif op == 16 and rnd.random() < 0.1:
                asyncio.run(cache.aset(k, i))
                asyncio.run(cache.aget_many([k, "k0"]))
            elif op == 17:
                list(cache._cache)
                cache._expire_info.get(cache.make_key(k))
            elif op == 18:
                cache.set(k, {"big": "x" * rnd.randrange(1, 5000)})
            elif op == 19:
                cache.close()
            elif op == 20:  # incr of a float: FastCache's read-add-write path
                cache.set(k, 0.5)
                cache.incr(k, 0.25)
            else:
                cache.set(k, i)
                cache.get(k)
        except ValueError as exc:  # incr/decr/incr_version on a missing key
            assert "not found" in str(exc), exc
        except TypeError as exc:  # incr of a list written by set_many
            assert "can only concatenate list" in str(
                exc
            ) or "unsupported operand" in str(exc), exc


# Where the GIL is off (free-threaded CPython), LocMemCache itself fails this
# test: its OrderedDict is iterated while another thread changes it ("OrderedDict
# mutated during iteration"), since Django's lock guards only its writes.
# FastCache and SharedMemoryCache must pass it everywhere (README: Free-threaded
# Python).
GIL_OFF = not getattr(sys, "_is_gil_enabled", lambda: True)()


def test_mixed_calls_on_a_culling_cache(make_cache, impl, request):
    if impl == "locmem" and GIL_OFF:
        request.applymarker(
            pytest.mark.xfail(
                reason="LocMemCache is not thread-safe without the GIL", strict=False
            )
        )
    c = make_cache(OPTIONS={"MAX_ENTRIES": 10, "CULL_FREQUENCY": 3})
    barrier = threading.Barrier(THREADS)
    errors = run_threads(
        [
            lambda seed=seed: _mixed_worker(c, seed, 2500, barrier)
            for seed in range(THREADS)
        ],
        timeout=60,
    )
    assert errors == []
    assert not c._lock.locked()
    # The store is consistent afterwards: every entry has an expiry, and the
    # entry count stays near MAX_ENTRIES.
    entries = list(c._cache)
    assert len(entries) == len(set(entries)) == len(c._expire_info)
    assert sorted(c._expire_info) == sorted(entries)
    assert len(entries) <= 10
    c.clear()
    c.set("after", 1)
    assert c.get("after") == 1


@pytest.mark.parametrize(
    "start, delta",
    [
        (0, 1),
        (2**63 - 4000, 1),  # crosses the 64-bit boundary mid-run
        (10**20, 3),
        (0.0, 0.5),
        (1.5, -0.25),
        (Decimal(0), Decimal("0.5")),
        (SlowFloat(0.0), 0.5),  # + releases the GIL
    ],
    ids=["int", "int64-edge", "bigint", "float", "float-neg", "decimal", "slow-add"],
)
def test_concurrent_incr_is_exact(make_cache, start, delta):
    c = make_cache()
    c.set("counter", start, None)
    n = 100 if isinstance(start, SlowFloat) else 1000
    barrier = threading.Barrier(THREADS)

    def worker():
        barrier.wait()
        for _ in range(n):
            c.incr("counter", delta)

    assert run_threads([worker] * THREADS, timeout=60) == []
    expected = start + THREADS * n * delta
    assert c.get("counter") == expected
    assert type(c.get("counter")) is type(expected)


def test_concurrent_incr_and_decr_balance(make_cache):
    c = make_cache()
    c.set("n", 0)
    barrier = threading.Barrier(THREADS)

    def worker(i):
        barrier.wait()
        for _ in range(1000):
            if i % 2:
                c.incr("n", 3)
            else:
                c.decr("n", 3)

    assert run_threads([lambda i=i: worker(i) for i in range(THREADS)], 60) == []
    assert c.get("n") == 0


def test_add_has_exactly_one_winner(make_cache):
    c = make_cache()
    keys = [f"k{i}" for i in range(200)]
    barrier = threading.Barrier(THREADS)
    wins: dict[int, list[str]] = {i: [] for i in range(THREADS)}

    def worker(i):
        order = keys[:]
        random.Random(i).shuffle(order)
        barrier.wait()
        for k in order:
            if c.add(k, i):
                wins[i].append(k)

    assert run_threads([lambda i=i: worker(i) for i in range(THREADS)], 60) == []
    won = sorted(k for ks in wins.values() for k in ks)
    assert won == sorted(keys)
    for i, ks in wins.items():
        for k in ks:
            assert c.get(k) == i


def test_get_or_set_agrees(make_cache):
    c = make_cache()
    barrier = threading.Barrier(THREADS)
    results: list = []

    def worker(i):
        barrier.wait()
        for n in range(100):
            results.append((n, c.get_or_set(f"k{n}", lambda: i)))  # noqa: B023

    assert run_threads([lambda i=i: worker(i) for i in range(THREADS)], 60) == []
    by_key: dict[int, set] = {}
    for n, value in results:
        by_key.setdefault(n, set()).add(value)
    assert all(len(values) == 1 for values in by_key.values())
    assert all(c.get(f"k{n}") in values for n, values in by_key.items())


def test_shared_location_between_instances_and_threads(cache_cls, make_cache):
    # CacheHandler gives each thread its own instance on one LOCATION.
    instances = [make_cache(LOCATION="shared") for _ in range(THREADS)]
    instances[0].set("n", 0)
    barrier = threading.Barrier(THREADS)

    def worker(cache):
        barrier.wait()
        for _ in range(500):
            cache.incr("n")

    assert run_threads([lambda c=c: worker(c) for c in instances], 60) == []
    assert instances[-1].get("n") == THREADS * 500


# --------------------------------------------------------------------------
# Re-entrancy: user code that runs during a call calls the same cache.


class Reentrant:
    """Pickling and unpickling it uses the cache it is stored in."""

    caches: dict[str, object] = {}

    def __init__(self, token, payload):
        self.token = token
        self.payload = payload

    def __getstate__(self):
        cache = Reentrant.caches[self.token]
        cache.set("written-while-pickling", self.payload)
        cache.get("written-while-pickling")
        _ = "anything" in cache
        return {"token": self.token, "payload": self.payload}

    def __setstate__(self, state):
        self.__dict__.update(state)
        cache = Reentrant.caches[self.token]
        cache.set("written-while-unpickling", self.payload)
        cache.has_key("x")


class ReducesThroughCache:
    caches: dict[str, object] = {}

    def __init__(self, token):
        self.token = token

    def __reduce__(self):
        cache = ReducesThroughCache.caches[self.token]
        cache.add("reduce-add", 1)
        cache.delete("reduce-add")
        return (ReducesThroughCache, (self.token,))


def test_value_pickling_calls_the_same_cache(make_cache):
    c = make_cache()
    token = f"reentrant-{id(c)}"
    Reentrant.caches[token] = c
    ReducesThroughCache.caches[token] = c
    try:

        def scenario():
            c.set("v", Reentrant(token, [1, 2]))
            assert c.get("written-while-pickling") == [1, 2]
            got = c.get("v")
            assert got.payload == [1, 2]
            assert c.get("written-while-unpickling") == [1, 2]
            assert c.add("v2", Reentrant(token, "a")) is True
            c.set_many({"m1": Reentrant(token, "b"), "m2": ReducesThroughCache(token)})
            c.get_many(["m1", "m2", "v2"])
            assert c.get_or_set("gos", lambda: Reentrant(token, "c")).payload == "c"
            asyncio.run(c.aset("av", Reentrant(token, "d")))
            assert asyncio.run(c.aget("av")).payload == "d"
            c.incr_version("v2")
            return True

        assert run_with_deadline(scenario, timeout=20) is True
        assert not c._lock.locked()
    finally:
        Reentrant.caches.pop(token, None)
        ReducesThroughCache.caches.pop(token, None)


def test_key_str_calls_the_same_cache(make_cache):
    c = make_cache()

    class KeyUsingCache(StrKey):
        def __str__(self):
            c.set("from-str", self.text)
            c.get("from-str")
            return self.text

    def scenario():
        key = KeyUsingCache("k")
        c.set(key, 1)
        assert c.get(key) == 1
        assert c.get_many([key, KeyUsingCache("j")]) == {key: 1}
        c.set_many({key: 2, KeyUsingCache("j"): 3})
        assert c.incr(key) == 3
        assert c.has_key(key) and key in c
        assert c.touch(key) is True
        c.delete_many([KeyUsingCache("j")])
        assert c.delete(key) is True
        assert c.get("from-str") == "k"
        return True

    assert run_with_deadline(scenario, timeout=20) is True


def test_reentrancy_under_thread_contention(make_cache):
    c = make_cache(OPTIONS={"MAX_ENTRIES": 5})
    token = f"reentrant-contention-{id(c)}"
    Reentrant.caches[token] = c
    try:
        barrier = threading.Barrier(4)

        def worker(i):
            barrier.wait()
            for n in range(300):
                c.set(f"k{n % 7}", Reentrant(token, n))
                c.get(f"k{(n + i) % 7}")

        assert run_threads([lambda i=i: worker(i) for i in range(4)], 30) == []
    finally:
        Reentrant.caches.pop(token, None)
