"""Differential testing: random call sequences on LocMemCache and the implementation
under test side by side, with one fake clock, asserting after every step identical
results, exceptions (type and message), warnings, entries (made key, expiry,
value) and LRU order.

In the "locmem" run both sides are LocMemCache: that checks the machine itself is
deterministic (no real clock, no shared state), so a difference in the
"fastcache" run is FastCache's.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
from decimal import Decimal
from unittest import mock

from conftest import FakeClock
from django.core.cache.backends import locmem
from django.core.cache.backends.base import DEFAULT_TIMEOUT
from django.core.cache.backends.locmem import LocMemCache
from fc_helpers import Point, describe, outcome, snapshot
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

ABSENT = object()  # "leave the setting out"

PLAIN_KEYS = ["a", "b", "c", 1, 2, "1", "é"]
# "a b" and the long key make CacheKeyWarnings; the outcomes compare them.
KEYS = st.sampled_from(PLAIN_KEYS + ["a b", "k" * 248])
ASYNC_KEYS = st.sampled_from(PLAIN_KEYS)
KEY_LISTS = st.lists(KEYS, max_size=4)
VERSIONS = st.sampled_from([None, None, 1, 2, 3])
TIMEOUTS = st.sampled_from(
    [DEFAULT_TIMEOUT, DEFAULT_TIMEOUT, None, 0, 0.0, -1, 1, 2.5, 10, 300, False, True]
)
VALUES = st.one_of(
    st.integers(-5, 5),
    st.integers(-(2**70), 2**70),
    st.sampled_from([2**63 - 1, -(2**63), 2**64 - 1, 2**64, True, False, None]),
    st.floats(width=64),
    st.text(max_size=4),
    st.binary(max_size=4),
    st.lists(st.integers(0, 3), max_size=3),
    st.sampled_from([Decimal("1.5"), (1, 2), {"d": 1}, {1, 2}, Point(1, 2)]),
)
DELTAS = st.one_of(
    st.integers(-3, 3),
    st.sampled_from([2**64, -(2**63), 0.5, -1.25, True, "x", Decimal(1), [9], None]),
)
ADVANCE = st.sampled_from([0, 0.5, 1, 1.5, 2.5, 10, 300, 1000])
_locations = itertools.count()


class CacheComparison(RuleBasedStateMachine):
    def __init__(self, cls_a: type, cls_b: type) -> None:
        super().__init__()
        self.cls_a, self.cls_b = cls_a, cls_b
        self.clock = FakeClock()
        self.a = self.b = None
        self.calls = {"a": 0, "b": 0}
        self.locations: list[str] = []

    # -- plumbing ------------------------------------------------------------

    def both(self, fn, *, is_async: bool = False, twin: bool = False) -> None:
        """Run fn(cache, side) on both caches at the same clock; compare.

        twin: use the second instance on each side, which shares the store
        but has its own VERSION, TIMEOUT and culling limits.
        """
        results = []
        pairs = (
            (("a", self.a2), ("b", self.b2)) if twin else (("a", self.a), ("b", self.b))
        )
        with mock.patch("time.time", self.clock):
            for side, cache in pairs:
                call = functools.partial(fn, cache, side)
                if is_async:
                    call = functools.partial(asyncio.run, call())
                results.append(outcome(call))
        assert results[0] == results[1]
        assert self.calls["a"] == self.calls["b"]

    def default_factory(self, side: str, value):
        def compute():
            self.calls[side] += 1
            return value

        return compute

    @invariant()
    def same_entries_and_order(self) -> None:
        if self.a is None:
            return
        assert list(self.a._cache) == list(self.b._cache)
        assert snapshot(self.a) == snapshot(self.b)
        assert self.a._max_entries == self.b._max_entries
        assert self.a._cull_frequency == self.b._cull_frequency
        assert self.a.default_timeout == self.b.default_timeout
        assert not self.a._lock.locked() and not self.b._lock.locked()

    def teardown(self) -> None:
        for cache in (self.a, self.b):
            if cache is not None:
                cache.clear()
        for name in self.locations:
            locmem._caches.pop(name, None)
            locmem._expire_info.pop(name, None)
            locmem._locks.pop(name, None)

    # -- configuration ---------------------------------------------------------

    @initialize(
        max_entries=st.integers(1, 10),
        cull_frequency=st.integers(0, 4),
        timeout=st.sampled_from([ABSENT, ABSENT, None, 0, 5, 300, "60"]),
        prefix=st.sampled_from([ABSENT, "", "p", "pré fix"]),
        version=st.sampled_from([ABSENT, 1, 2]),
    )
    def build(self, max_entries, cull_frequency, timeout, prefix, version):
        params = {
            "OPTIONS": {"MAX_ENTRIES": max_entries, "CULL_FREQUENCY": cull_frequency}
        }
        for name, value in (
            ("TIMEOUT", timeout),
            ("KEY_PREFIX", prefix),
            ("VERSION", version),
        ):
            if value is not ABSENT:
                params[name] = value
        n = next(_locations)
        loc_a, loc_b = f"differential-{n}-a", f"differential-{n}-b"
        self.locations += [loc_a, loc_b]
        self.a = self.cls_a(loc_a, params)
        self.b = self.cls_b(loc_b, params)
        twin = {
            "VERSION": 2,
            "TIMEOUT": 7,
            "OPTIONS": {"MAX_ENTRIES": 4, "CULL_FREQUENCY": 2},
        }
        self.a2 = self.cls_a(loc_a, twin)
        self.b2 = self.cls_b(loc_b, twin)

    @rule(max_entries=st.integers(-1, 10))
    def reconfigure_max_entries(self, max_entries):
        self.a._max_entries = self.b._max_entries = max_entries

    @rule(cull_frequency=st.integers(0, 4))
    def reconfigure_cull_frequency(self, cull_frequency):
        self.a._cull_frequency = self.b._cull_frequency = cull_frequency

    @rule(timeout=st.sampled_from([None, 0, 3, 300]))
    def reconfigure_default_timeout(self, timeout):
        self.a.default_timeout = self.b.default_timeout = timeout

    @rule(seconds=ADVANCE)
    def advance_clock(self, seconds):
        self.clock.advance(seconds)

    # -- the API ---------------------------------------------------------------

    @rule(key=KEYS, value=VALUES, timeout=TIMEOUTS, version=VERSIONS)
    def set(self, key, value, timeout, version):
        self.both(lambda c, s: c.set(key, value, timeout, version))

    @rule(key=KEYS, value=VALUES, timeout=TIMEOUTS, version=VERSIONS)
    def add(self, key, value, timeout, version):
        self.both(lambda c, s: c.add(key, value, timeout, version))

    @rule(key=KEYS, version=VERSIONS)
    def get(self, key, version):
        self.both(lambda c, s: c.get(key, "<miss>", version))

    @rule(key=KEYS, timeout=TIMEOUTS, version=VERSIONS)
    def touch(self, key, timeout, version):
        self.both(lambda c, s: c.touch(key, timeout, version))

    @rule(key=KEYS, version=VERSIONS)
    def delete(self, key, version):
        self.both(lambda c, s: c.delete(key, version))

    @rule(key=KEYS, version=VERSIONS)
    def has_key(self, key, version):
        self.both(lambda c, s: c.has_key(key, version))

    @rule(key=KEYS)
    def contains(self, key):
        self.both(lambda c, s: key in c)

    @rule(key=KEYS, delta=DELTAS, version=VERSIONS)
    def incr(self, key, delta, version):
        self.both(lambda c, s: c.incr(key, delta, version))

    @rule(key=KEYS, delta=DELTAS, version=VERSIONS)
    def decr(self, key, delta, version):
        self.both(lambda c, s: c.decr(key, delta, version))

    @rule(keys=KEY_LISTS, version=VERSIONS)
    def get_many(self, keys, version):
        self.both(lambda c, s: c.get_many(keys, version))

    @rule(
        data=st.dictionaries(KEYS, VALUES, max_size=4),
        timeout=TIMEOUTS,
        version=VERSIONS,
    )
    def set_many(self, data, timeout, version):
        self.both(lambda c, s: c.set_many(data, timeout, version))

    @rule(keys=KEY_LISTS, version=VERSIONS)
    def delete_many(self, keys, version):
        self.both(lambda c, s: c.delete_many(keys, version))

    @rule()
    def clear(self):
        self.both(lambda c, s: c.clear())

    @rule(
        key=KEYS,
        value=VALUES,
        use_callable=st.booleans(),
        timeout=TIMEOUTS,
        version=VERSIONS,
    )
    def get_or_set(self, key, value, use_callable, timeout, version):
        def call(c, side):
            default = self.default_factory(side, value) if use_callable else value
            return c.get_or_set(key, default, timeout, version)

        self.both(call)

    @rule(key=KEYS, delta=st.sampled_from([1, 2, -1]), version=VERSIONS)
    def incr_version(self, key, delta, version):
        self.both(lambda c, s: c.incr_version(key, delta, version))

    @rule(key=KEYS, delta=st.sampled_from([1, 2]), version=VERSIONS)
    def decr_version(self, key, delta, version):
        self.both(lambda c, s: c.decr_version(key, delta, version))

    @rule(
        op=st.sampled_from(
            ["set", "add", "get", "incr", "delete", "touch", "get_many"]
        ),
        key=KEYS,
        value=VALUES,
    )
    def via_twin_instance(self, op, key, value):
        calls = {
            "set": lambda c, s: c.set(key, value),
            "add": lambda c, s: c.add(key, value),
            "get": lambda c, s: c.get(key, "<miss>"),
            "incr": lambda c, s: c.incr(key),
            "delete": lambda c, s: c.delete(key, version=1),
            "touch": lambda c, s: c.touch(key),
            "get_many": lambda c, s: c.get_many([key, "a"], version=1),
        }
        self.both(calls[op], twin=True)

    @rule()
    def close(self):
        self.both(lambda c, s: c.close())

    # -- async: BaseCache's composites over each backend's a* primitives --------

    @rule(key=ASYNC_KEYS, value=VALUES, timeout=TIMEOUTS, version=VERSIONS)
    def aset(self, key, value, timeout, version):
        self.both(lambda c, s: c.aset(key, value, timeout, version), is_async=True)

    @rule(key=ASYNC_KEYS, value=VALUES, timeout=TIMEOUTS)
    def aadd(self, key, value, timeout):
        self.both(lambda c, s: c.aadd(key, value, timeout), is_async=True)

    @rule(key=ASYNC_KEYS, version=VERSIONS)
    def aget(self, key, version):
        self.both(lambda c, s: c.aget(key, "<miss>", version), is_async=True)

    @rule(key=ASYNC_KEYS, timeout=TIMEOUTS)
    def atouch(self, key, timeout):
        self.both(lambda c, s: c.atouch(key, timeout), is_async=True)

    @rule(key=ASYNC_KEYS)
    def adelete_and_ahas_key(self, key):
        self.both(lambda c, s: c.ahas_key(key), is_async=True)
        self.both(lambda c, s: c.adelete(key), is_async=True)

    @rule(key=ASYNC_KEYS, delta=DELTAS)
    def aincr(self, key, delta):
        self.both(lambda c, s: c.aincr(key, delta), is_async=True)

    @rule(key=ASYNC_KEYS, delta=st.integers(-3, 3))
    def adecr(self, key, delta):
        self.both(lambda c, s: c.adecr(key, delta), is_async=True)

    @rule(keys=st.lists(ASYNC_KEYS, max_size=3))
    def aget_many_and_adelete_many(self, keys):
        self.both(lambda c, s: c.aget_many(keys), is_async=True)
        self.both(lambda c, s: c.adelete_many(keys[:1]), is_async=True)

    @rule(data=st.dictionaries(ASYNC_KEYS, VALUES, max_size=3), timeout=TIMEOUTS)
    def aset_many(self, data, timeout):
        self.both(lambda c, s: c.aset_many(data, timeout), is_async=True)

    @rule(key=ASYNC_KEYS, value=VALUES, timeout=TIMEOUTS)
    def aget_or_set(self, key, value, timeout):
        self.both(
            lambda c, s: c.aget_or_set(key, self.default_factory(s, value), timeout),
            is_async=True,
        )

    @rule(key=ASYNC_KEYS, delta=st.sampled_from([1, -1]))
    def aincr_version(self, key, delta):
        self.both(lambda c, s: c.aincr_version(key, delta), is_async=True)

    @rule()
    def aclear(self):
        self.both(lambda c, s: c.aclear(), is_async=True)


SETTINGS = settings(
    max_examples=200,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def test_differential(impl, cache_cls):
    run_state_machine_as_test(
        lambda: CacheComparison(LocMemCache, cache_cls), settings=SETTINGS
    )


def test_machine_detects_differences():
    """The comparison is not vacuous: a backend that differs in one corner fails."""

    class OffByOneCull(LocMemCache):
        def _cull(self):
            if self._cull_frequency == 0:
                return super()._cull()
            for _ in range(len(self._cache) // self._cull_frequency + 1):
                if self._cache:
                    key, _ = self._cache.popitem()
                    del self._expire_info[key]

    try:
        run_state_machine_as_test(
            lambda: CacheComparison(LocMemCache, OffByOneCull),
            settings=settings(SETTINGS, max_examples=100, phases=[Phase.generate]),
        )
    except AssertionError:
        return
    raise AssertionError("the state machine did not notice an extra culled entry")


def test_describe_distinguishes_results():
    assert describe(-0.0) != describe(0.0)
    assert describe(float("nan")) == describe(float("nan"))
    assert describe({1: True}) != describe({1: 1})
