"""Culling and LRU order, exactly as LocMemCache does them.

LocMemCache culls inside _set (set, add of an absent/expired key): when
len >= MAX_ENTRIES *before* inserting (even when the key is already stored),
it removes len // CULL_FREQUENCY entries from the least-recently-used end
(expired or not), or everything when CULL_FREQUENCY is 0.
"""

from __future__ import annotations

import asyncio
import random

import pytest
from fc_helpers import async_delegates, outcome, snapshot


def order(cache):
    return list(cache._cache)


def keys(*names, version=1):
    return [f":{version}:{n}" for n in names]


def _perform_cull_test(cache, initial_count, final_count):
    # Django's BaseCacheTests._perform_cull_test.
    for i in range(1, initial_count):
        cache.set(f"cull{i}", "value", 1000)
    count = sum(cache.has_key(f"cull{i}") for i in range(1, initial_count))
    assert count == final_count


def test_cull(make_cache):
    _perform_cull_test(make_cache(OPTIONS={"MAX_ENTRIES": 30}), 50, 29)


def test_zero_cull(make_cache):
    c = make_cache(OPTIONS={"MAX_ENTRIES": 30, "CULL_FREQUENCY": 0})
    _perform_cull_test(c, 50, 19)


def test_cull_delete_when_store_empty(make_cache):
    c = make_cache(OPTIONS={"MAX_ENTRIES": 30})
    c._max_entries = -1
    assert c._max_entries == -1
    c.set("force_cull_delete", "value", 1000)
    assert c.has_key("force_cull_delete") is True
    # Every set culls now: len 1 // 3 = 0, len 2 // 3 = 0, len 3 // 3 = 1 ...
    sizes = []
    for i in range(5):
        c.set(i, i)
        sizes.append(len(c._cache))
    assert sizes == [2, 3, 3, 3, 3]
    assert order(c) == keys(4, 3, 2)


def test_cull_removes_least_recently_used(make_cache):
    c = make_cache(OPTIONS={"MAX_ENTRIES": 30})
    for i in range(30):
        c.set(i, i)
    assert len(c._cache) == 30
    c.set(30, 30)  # 30 >= 30: drop 30 // 3 = 10 oldest, then insert
    assert order(c) == keys(*range(30, 9, -1))


def test_cull_on_overwrite(make_cache):
    c = make_cache(OPTIONS={"MAX_ENTRIES": 6, "CULL_FREQUENCY": 2})
    for i in range(6):
        c.set(i, i)
    c.set(5, "again")  # full: culls 3 even though key 5 exists
    assert order(c) == keys(5, 4, 3)
    assert c.get(5) == "again"


def test_cull_removes_the_key_being_overwritten(make_cache):
    c = make_cache(OPTIONS={"MAX_ENTRIES": 10, "CULL_FREQUENCY": 2})
    for i in range(10):
        c.set(i, i)
    c.set(0, "again")  # 0 is the LRU entry: culled, then inserted anew
    assert order(c) == keys(0, 9, 8, 7, 6, 5)
    assert c.get(0) == "again"


@pytest.mark.parametrize("frequency", [0, 1])
def test_cull_everything(make_cache, frequency):
    c = make_cache(OPTIONS={"MAX_ENTRIES": 5, "CULL_FREQUENCY": frequency})
    for i in range(5):
        c.set(i, i)
    c.set("x", 1)
    assert order(c) == keys("x")
    for i in range(4):
        c.set(i, i)
    c.set(0, "overwrite")  # full again, overwriting: everything goes first
    assert order(c) == keys(0)


def test_cull_frequency_larger_than_len_lets_the_cache_grow(make_cache):
    # len // CULL_FREQUENCY is 0 while len < CULL_FREQUENCY.
    c = make_cache(OPTIONS={"MAX_ENTRIES": 1, "CULL_FREQUENCY": 3})
    sizes = []
    for i in range(8):
        c.set(i, i)
        sizes.append(len(c._cache))
    assert sizes == [1, 2, 3, 3, 3, 3, 3, 3]
    assert order(c) == keys(7, 6, 5)
    big = make_cache(OPTIONS={"MAX_ENTRIES": 2, "CULL_FREQUENCY": 10})
    for i in range(12):
        big.set(i, i)
    assert len(big._cache) == 10  # from len 10 on, each set drops 10 // 10 = 1
    assert order(big)[-1] == ":1:2"


def test_max_entries_zero(make_cache):
    c = make_cache(OPTIONS={"MAX_ENTRIES": 0, "CULL_FREQUENCY": 1})
    for i in range(3):
        c.set(i, i)
        assert order(c) == keys(i)


def test_cull_ignores_expiry(make_cache, clock):
    # Expired entries are neither preferred nor skipped: LRU order only.
    c = make_cache(OPTIONS={"MAX_ENTRIES": 4, "CULL_FREQUENCY": 2})
    c.set("old", 1, None)
    c.set("old2", 1, None)
    c.set("exp", 1, 1)
    c.set("exp2", 1, 1)
    clock.advance(10)
    c.set("new", 1)
    assert order(c) == keys("new", "exp2", "exp")


def test_lru_get(make_cache):
    c = make_cache(OPTIONS={"MAX_ENTRIES": 9})
    for key in range(9):
        c.set(key, key, timeout=None)
    for key in range(6):
        assert c.get(key) == key
    c.set(9, 9, timeout=None)
    for key in range(6):
        assert c.get(key) == key
    for key in range(6, 9):
        assert c.get(key) is None
    assert c.get(9) == 9


def test_lru_set(make_cache):
    c = make_cache(OPTIONS={"MAX_ENTRIES": 9})
    for key in range(9):
        c.set(key, key, timeout=None)
    for key in range(3, 9):
        c.set(key, key, timeout=None)
    c.set(9, 9, timeout=None)
    for key in range(3, 10):
        assert c.get(key) == key
    for key in range(3):
        assert c.get(key) is None


def test_lru_incr(make_cache):
    c = make_cache(OPTIONS={"MAX_ENTRIES": 9})
    for key in range(9):
        c.set(key, key, timeout=None)
    for key in range(6):
        assert c.incr(key) == key + 1
    c.set(9, 9, timeout=None)
    for key in range(6):
        assert c.get(key) == key + 1
    for key in range(6, 9):
        assert c.get(key) is None
    assert c.get(9) == 9


MOVING = [
    ("get", lambda c: c.get(0)),
    ("set", lambda c: c.set(0, "x")),
    ("incr", lambda c: c.incr(0)),
    ("decr", lambda c: c.decr(0)),
    ("get_many", lambda c: c.get_many([0])),
    ("get_or_set", lambda c: c.get_or_set(0, "unused")),
    ("set_many", lambda c: c.set_many({0: 1})),
    ("aget", lambda c: asyncio.run(c.aget(0))),
    ("aincr", lambda c: asyncio.run(c.aincr(0))),
]
# ahas_key is aget-based (moves) until Django 6.1, has_key-based (stays) after.
AHAS_KEY = ("ahas_key", lambda c: asyncio.run(c.ahas_key(0)))
(STAYING_EXTRA, MOVING_EXTRA) = ([AHAS_KEY], []) if async_delegates("has_key") else (
    [], [AHAS_KEY]
)
MOVING += MOVING_EXTRA
STAYING = STAYING_EXTRA + [
    ("has_key", lambda c: c.has_key(0)),
    ("contains", lambda c: 0 in c),
    ("touch", lambda c: c.touch(0, 100)),
    ("add_existing", lambda c: c.add(0, "x")),
    ("get_missing", lambda c: c.get("missing")),
    ("delete_other", lambda c: c.delete(1)),
]


@pytest.mark.parametrize("name, call", MOVING, ids=[n for n, _ in MOVING])
def test_calls_that_move_to_most_recent(make_cache, name, call):
    c = make_cache()
    for i in range(4):
        c.set(i, i)
    call(c)
    assert order(c)[0] == ":1:0"
    assert order(c)[1:] == keys(3, 2, 1)


@pytest.mark.parametrize("name, call", STAYING, ids=[n for n, _ in STAYING])
def test_calls_that_do_not_move(make_cache, name, call):
    c = make_cache()
    for i in range(4):
        c.set(i, i)
    call(c)
    assert order(c) == [
        k for k in keys(3, 2, 1, 0) if name != "delete_other" or k != ":1:1"
    ]


def test_add_of_existing_key_does_not_cull(make_cache):
    c = make_cache(OPTIONS={"MAX_ENTRIES": 3, "CULL_FREQUENCY": 1})
    for i in range(3):
        c.set(i, i)
    assert c.add(1, "x") is False
    assert order(c) == keys(2, 1, 0)
    assert c.add("new", 1) is True  # absent key: _set culls first
    assert order(c) == keys("new")


def test_add_of_expired_key_culls_and_moves(make_cache, clock):
    c = make_cache(OPTIONS={"MAX_ENTRIES": 3, "CULL_FREQUENCY": 3})
    c.set("e", 1, 1)
    c.set("a", 1)
    c.set("b", 1)
    clock.advance(1)
    assert c.add("e", 2) is True  # len 3 >= 3: drops "e" (LRU), then inserts
    assert order(c) == keys("e", "b", "a")
    assert c.get("e") == 2


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.incr(0),
        lambda c: c.touch(0),
        lambda c: c.has_key(0),
        lambda c: c.get(0),
        lambda c: c.delete(0),
        lambda c: c.add(0, 1),
        lambda c: c.get_or_set(0, 1),
    ],
    ids=["incr", "touch", "has_key", "get", "delete", "add_existing", "get_or_set_hit"],
)
def test_calls_that_never_cull(make_cache, call):
    c = make_cache(OPTIONS={"MAX_ENTRIES": 2, "CULL_FREQUENCY": 1})
    for i in range(5):  # MAX_ENTRIES lowered after filling
        c._max_entries = 100
        c.set(i, i)
    c._max_entries = 2
    call(c)
    assert len(c._cache) >= 4


def test_set_many_culls_per_key(make_cache):
    c = make_cache(OPTIONS={"MAX_ENTRIES": 3, "CULL_FREQUENCY": 3})
    assert c.set_many({i: i for i in range(6)}) == []
    # len 3 at key 3: drop 1 (key 0); len 3 at key 4: drop key 1; ...
    assert order(c) == keys(5, 4, 3)


def test_max_entries_and_cull_frequency_reassigned_at_runtime(make_cache):
    c = make_cache()
    assert (c._max_entries, c._cull_frequency) == (300, 3)
    for i in range(10):
        c.set(i, i)
    c._max_entries = 10
    c._cull_frequency = 5
    assert (c._max_entries, c._cull_frequency) == (10, 5)
    c.set("x", 1)  # drops 10 // 5 = 2
    assert order(c) == keys("x", *range(9, 1, -1))
    c._cull_frequency = 0
    c.set("y", 1)  # len 9 < 10: no cull
    c.set("z", 1)  # len 10: clears
    assert order(c) == keys("z")
    c._max_entries = 300
    for i in range(50):
        c.set(i, i)
    assert len(c._cache) == 51


@pytest.mark.parametrize(
    "params, expected",
    [
        ({}, (300, 3)),
        ({"OPTIONS": {"MAX_ENTRIES": 7, "CULL_FREQUENCY": 2}}, (7, 2)),
        ({"OPTIONS": {"MAX_ENTRIES": "7", "CULL_FREQUENCY": "0"}}, (7, 0)),
        ({"OPTIONS": {"MAX_ENTRIES": 7.9}}, (7, 3)),
        ({"max_entries": 5, "cull_frequency": 4}, (5, 4)),
        ({"max_entries": 5, "OPTIONS": {"MAX_ENTRIES": 9}}, (5, 3)),
    ],
)
def test_configured_limits(make_cache, params, expected):
    c = make_cache(**params)
    assert (c._max_entries, c._cull_frequency) == expected
    assert type(c._max_entries) is int and type(c._cull_frequency) is int


def test_shared_store_culls_with_the_writers_limits(make_cache):
    a = make_cache(LOCATION="s", OPTIONS={"MAX_ENTRIES": 4, "CULL_FREQUENCY": 2})
    b = make_cache(LOCATION="s", OPTIONS={"MAX_ENTRIES": 100})
    for i in range(10):
        b.set(i, i)
    a.set("x", 1)  # 10 >= 4: a drops 10 // 2 = 5
    assert order(b) == keys("x", 9, 8, 7, 6, 5)


# --------------------------------------------------------------------------
# Random workloads, compared step by step with the LocMemCache reference.

SYNC_OPS = ["set", "set", "set", "add", "get", "get", "incr", "has_key", "touch"]
SYNC_OPS += ["delete", "get_many", "set_many", "delete_many", "get_or_set", "advance"]


def _random_step(rnd, cache, clock, ops):
    """One random call on cache; returns (op, outcome).  Deterministic in rnd."""
    op = rnd.choice(ops)
    k = rnd.randrange(12)
    timeout = rnd.choice([None, 0, -1, 1, 5, 30])
    calls = {
        "set": lambda: cache.set(k, k, timeout),
        "add": lambda: cache.add(k, -k, timeout),
        "get": lambda: cache.get(k),
        "incr": lambda: cache.incr(k, 2),
        "has_key": lambda: cache.has_key(k),
        "touch": lambda: cache.touch(k, timeout),
        "delete": lambda: cache.delete(k),
        "get_many": lambda: cache.get_many([k, k + 1, k + 2]),
        "set_many": lambda: cache.set_many({k: 1, k + 1: 2}, timeout),
        "delete_many": lambda: cache.delete_many([k, k + 3]),
        "get_or_set": lambda: cache.get_or_set(k, lambda: k * 10, timeout),
        "ahas_key": lambda: asyncio.run(cache.ahas_key(k)),
        "aincr": lambda: asyncio.run(cache.aincr(k)),
        "advance": lambda: clock.advance(rnd.choice([0.5, 1, 3, 10])),
    }
    return op, outcome(calls[op])


@pytest.mark.parametrize("seed", range(12))
def test_random_workload_matches_reference(make_cache, make_ref, clock, seed):
    rnd = random.Random(seed)
    options = {"MAX_ENTRIES": rnd.randint(1, 12), "CULL_FREQUENCY": rnd.randint(0, 4)}
    c = make_cache(OPTIONS=options)
    ref = make_ref(OPTIONS=options)
    if seed % 4 == 0:  # async calls are slower (thread hop on LocMemCache)
        ops, steps = SYNC_OPS + ["ahas_key", "aincr"], 100
    else:
        ops, steps = SYNC_OPS, 200
    history = []
    for step in range(steps):
        state, now = rnd.getstate(), clock.now
        got = _random_step(rnd, c, clock, ops)
        rnd.setstate(state)
        clock.now = now
        want = _random_step(rnd, ref, clock, ops)
        history.append(want[0])
        where = f"seed {seed} step {step}, last ops {history[-6:]}"
        assert got == want, where
        assert order(c) == order(ref), where
        assert snapshot(c) == snapshot(ref), where
    assert set(history) == set(ops)  # the workload used every call
