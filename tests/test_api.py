"""The public API and the LocMemCache-compatible internals, on both implementations.

Expected values are hard-coded where LocMemCache's behaviour is plain, and
compared with a LocMemCache reference (``make_ref``) where they are subtle.
"""

from __future__ import annotations

import asyncio
import collections
import datetime
import functools
import math
import pickle
import threading
from decimal import Decimal
from unittest import mock

import pytest
from django.core.cache.backends.base import (
    DEFAULT_TIMEOUT,
    CacheKeyWarning,
    memcache_key_warnings,
)
from django.utils.safestring import SafeString
from fc_helpers import (
    PROBE_CACHES,
    PROBE_LOG,
    Color,
    LockProbe,
    Money,
    Name,
    PickleBoom,
    Point,
    RaisesOnPickle,
    RaisesOnUnpickle,
    Ratio,
    RMoney,
    StrKey,
    async_delegates,
    custom_key_func,
    describe,
    outcome,
    snapshot,
)

NOW = 1_700_000_000.0  # the fake clock's start (conftest.FakeClock)
MODULE_LAMBDA = lambda: 1  # noqa: E731


def order(cache):
    return list(cache._cache)


# --------------------------------------------------------------------------
# get / set / add


VALUES = [
    None,
    True,
    False,
    0,
    -1,
    2**31,
    2**63 - 1,
    2**63,
    2**64,
    -(2**64) - 1,
    3**200,
    1.5,
    float("inf"),
    float("-inf"),
    0.1 + 0.2,
    1 + 2j,
    "",
    "text",
    "ünïcødé ✓ \U0001f600",
    "a" * 100_000,
    b"",
    b"\x00\xffbytes",
    bytearray(b"mutable"),
    (),
    (1, "two", 3.0),
    [1, [2, [3]]],
    {"a": 1, "b": [1, 2]},
    {1, 2, 3},
    frozenset({"x"}),
    Decimal("1.10"),
    datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc),
    datetime.date(2024, 2, 29),
    Point(1, [2]),
    range(3),
    Ellipsis,
    "\ud800 lone surrogate \udfff",
    SafeString("<b>safe</b>"),
    Name("str subclass"),
    Money(5),
    Color.RED,
    Ratio(2.5),
    collections.OrderedDict([("b", 1), ("a", 2)]),
    collections.defaultdict(list, {"a": [1]}),
]


@pytest.mark.parametrize("value", VALUES, ids=lambda v: type(v).__name__)
def test_set_get_roundtrip(make_cache, value):
    c = make_cache()
    assert c.set("key", value) is None
    got = c.get("key")
    assert type(got) is type(value)
    assert got == value
    # Every path hands back the same value, and _cache holds its pickle.
    for got in (
        c.get_many(["key"])["key"],
        c.get_or_set("key", None),
        asyncio.run(c.aget("key")),
        pickle.loads(c._cache[":1:key"]),
    ):
        assert type(got) is type(value) and got == value
    assert c.add("k2", value) is True
    assert type(c.get("k2")) is type(value) and c.get("k2") == value
    c.set_many({"k3": value})
    assert type(c.get("k3")) is type(value) and c.get("k3") == value


def test_nan_and_negative_zero(make_cache):
    c = make_cache()
    c.set("nan", float("nan"))
    c.set("negzero", -0.0)
    c.set("nested", [float("nan"), -0.0])
    assert math.isnan(c.get("nan"))
    assert c.get("negzero") == 0.0 and math.copysign(1.0, c.get("negzero")) == -1.0
    nan, zero = c.get("nested")
    assert math.isnan(nan) and math.copysign(1.0, zero) == -1.0


def test_bool_is_not_int(make_cache):
    c = make_cache()
    c.set("t", True)
    c.set("one", 1)
    assert c.get("t") is True
    assert type(c.get("one")) is int
    assert c.get_many(["t", "one"]) == {"t": True, "one": 1}
    assert type(c.get_many(["t"])["t"]) is bool


def test_get_missing_returns_default_object(make_cache):
    c = make_cache()
    sentinel = object()
    assert c.get("missing") is None
    assert c.get("missing", sentinel) is sentinel
    assert c.get("missing", default=sentinel) is sentinel
    c.set("none", None)
    assert c.get("none", sentinel) is None  # a stored None is a hit


def test_keyword_arguments(make_cache):
    c = make_cache()
    assert c.set(key="k", value=1, timeout=None, version=2) is None
    assert c.get(key="k", default="d", version=2) == 1
    assert c.add(key="a", value=2, timeout=10, version=2) is True
    assert c.touch(key="k", timeout=5, version=2) is True
    assert c.incr(key="k", delta=4, version=2) == 5
    assert c.decr(key="k", delta=2, version=2) == 3
    assert c.has_key(key="k", version=2) is True
    assert c.get_many(keys=["k", "a"], version=2) == {"k": 3, "a": 2}
    assert c.set_many(data={"x": 1}, timeout=None, version=2) == []
    assert c.delete_many(keys=["x"], version=2) is None
    assert c.get_or_set(key="g", default=7, timeout=None, version=2) == 7
    assert c.incr_version(key="g", delta=1, version=2) == 3
    assert c.decr_version(key="g", delta=1, version=3) == 2
    assert c.delete(key="k", version=2) is True
    assert c.close() is None


def test_set_overwrites(make_cache):
    c = make_cache()
    c.set("k", "v1")
    c.set("k", "v2")
    assert c.get("k") == "v2"
    assert len(c._cache) == 1


def test_add(make_cache, clock):
    c = make_cache()
    assert c.add("k", "first") is True
    assert c.add("k", "second") is False
    assert c.get("k") == "first"
    # An expired entry counts as absent.
    c.set("e", "old", 1)
    clock.advance(1)
    assert c.add("e", "new") is True
    assert c.get("e") == "new"
    # add with timeout 0 stores an already expired entry.
    assert c.add("z", "zero", 0) is True
    assert c.get("z", "default") == "default"
    # add never refreshes the expiry of a live entry.
    c.set("live", 1, 10)
    exp = c._expire_info[c.make_key("live")]
    assert c.add("live", 2, None) is False
    assert c._expire_info[c.make_key("live")] == exp


def test_add_pickles_even_when_key_exists(make_cache, make_ref):
    for cache in (make_cache(), make_ref()):
        cache.set("k", 1)
        with pytest.raises(PickleBoom):
            cache.add("k", RaisesOnPickle())
        assert cache.get("k") == 1


def test_copy_on_read(make_cache):
    c = make_cache()
    original = [1, {"a": [2]}]
    c.set("k", original)
    original.append("mutated after set")
    first = c.get("k")
    assert first == [1, {"a": [2]}]
    first.append("mutated after get")
    first[1]["a"].append(3)
    second = c.get("k")
    assert second == [1, {"a": [2]}]
    assert first is not second
    assert c.get_many(["k"])["k"] is not c.get_many(["k"])["k"]
    assert c.get_or_set("k", None) is not c.get_or_set("k", None)


# --------------------------------------------------------------------------
# touch / delete / has_key / in


def test_touch(make_cache, clock):
    c = make_cache()
    key = c.make_key("k")
    c.set("k", 1, 10)
    clock.advance(5)
    assert c.touch("k", 10) is True
    assert c._expire_info[key] == clock.now + 10
    assert c.touch("k", None) is True
    assert c._expire_info[key] is None
    assert c.touch("k") is True  # DEFAULT_TIMEOUT
    assert c._expire_info[key] == clock.now + 300
    assert c.touch("missing") is False
    assert c.touch("k", 0) is True
    assert c._expire_info[key] == clock.now - 1
    assert c.get("k") is None


def test_touch_expired_returns_false_without_deleting(make_cache, clock):
    c = make_cache()
    key = c.make_key("k")
    c.set("k", 1, 1)
    clock.advance(1)
    assert c.touch("k", 100) is False
    assert key in c._cache
    assert c._expire_info[key] == NOW + 1


def test_delete(make_cache, clock):
    c = make_cache()
    c.set("k", 1)
    assert c.delete("k") is True
    assert c.delete("k") is False
    assert c.get("k") is None
    assert c.delete("never") is False
    # An expired entry that is still stored is deleted and reported.
    c.set("e", 1, 1)
    clock.advance(5)
    assert c.make_key("e") in c._cache
    assert c.delete("e") is True
    assert c.make_key("e") not in c._cache
    assert c.delete("e") is False


def test_has_key_and_contains(make_cache, clock):
    c = make_cache()
    c.set("k", 1)
    c.set("none", None)
    assert c.has_key("k") is True
    assert c.has_key("none") is True
    assert c.has_key("missing") is False
    assert ("k" in c) is True
    assert ("missing" in c) is False
    c.set("v", 1, version=2)
    assert c.has_key("v") is False
    assert c.has_key("v", version=2) is True


def test_has_key_deletes_expired(make_cache, clock):
    c = make_cache()
    c.set("a", 1, 1)
    c.set("b", 1, 1)
    clock.advance(1)
    assert c.make_key("a") in c._cache
    assert c.has_key("a") is False
    assert c.make_key("a") not in c._cache
    assert c.make_key("a") not in c._expire_info
    assert ("b" in c) is False
    assert c.make_key("b") not in c._cache


def test_get_deletes_expired(make_cache, clock):
    c = make_cache()
    c.set("a", 1, 2)
    clock.advance(1.999)
    assert c.get("a") == 1
    clock.advance(0.001)  # exp <= now: expired exactly at the deadline
    assert c.make_key("a") in c._cache
    assert c.get("a", "gone") == "gone"
    assert c.make_key("a") not in c._cache


def test_clear(make_cache):
    c = make_cache(LOCATION="shared")
    other = make_cache(LOCATION="shared")
    elsewhere = make_cache()
    c.set_many({"a": 1, "b": 2})
    elsewhere.set("a", 1)
    assert c.clear() is None
    assert c.get("a") is None and other.get("b") is None
    assert len(c._cache) == 0 and len(c._expire_info) == 0
    assert elsewhere.get("a") == 1
    c.clear()  # clearing an empty cache is fine
    c.set("a", 3)
    assert other.get("a") == 3


def test_close_is_harmless(make_cache):
    c = make_cache()
    c.set("k", 1)
    assert c.close() is None
    assert c.close(extra="ignored") is None
    assert c.get("k") == 1
    c.set("k", 2)
    assert c.get("k") == 2


# --------------------------------------------------------------------------
# incr / decr


def test_incr_decr(make_cache):
    c = make_cache()
    c.set("n", 1)
    assert c.incr("n") == 2
    assert c.incr("n", 10) == 12
    assert c.decr("n") == 11
    assert c.decr("n", 20) == -9
    assert c.incr("n", -1) == -10
    assert c.decr("n", -10) == 0
    assert c.get("n") == 0
    assert type(c.get("n")) is int


def test_incr_missing(make_cache):
    c = make_cache()
    with pytest.raises(ValueError) as exc:
        c.incr("missing")
    assert str(exc.value) == "Key ':1:missing' not found"
    with pytest.raises(ValueError) as exc:
        c.decr("missing")
    assert str(exc.value) == "Key ':1:missing' not found"
    with pytest.raises(ValueError) as exc:
        c.incr(42, version=7)
    assert str(exc.value) == "Key ':7:42' not found"
    p = make_cache(KEY_PREFIX="pre", VERSION=3)
    with pytest.raises(ValueError) as exc:
        p.incr("missing")
    assert str(exc.value) == "Key 'pre:3:missing' not found"
    assert len(c._cache) == 0


def test_incr_expired_deletes_and_raises(make_cache, clock):
    c = make_cache()
    c.set("n", 1, 1)
    clock.advance(1)
    with pytest.raises(ValueError, match="^Key ':1:n' not found$"):
        c.incr("n")
    assert c.make_key("n") not in c._cache
    assert c.make_key("n") not in c._expire_info


def test_decr_with_unnegatable_delta(make_cache):
    # decr negates delta before looking the key up.
    c = make_cache()
    with pytest.raises(TypeError, match="bad operand type for unary -: 'str'"):
        c.decr("missing", "x")


@pytest.mark.parametrize(
    "value, delta, expected",
    [
        (1, 1, 2),
        (1, 0.5, 1.5),
        (1.5, 1, 2.5),
        (0.1, 0.2, 0.1 + 0.2),
        (True, 1, 2),
        (1, True, 2),
        (Decimal("1.1"), 1, Decimal("2.1")),
        (Decimal("1.1"), Decimal("0.01"), Decimal("1.11")),
        (2**63 - 1, 1, 2**63),
        (2**64 - 1, 1, 2**64),
        (-(2**63), -1, -(2**63) - 1),
        (2**100, 2**100, 2**101),
        (5, 2**70, 5 + 2**70),
        (2**64, -(2**64), 0),
        ("ab", "cd", "abcd"),
        ([1], [2], [1, 2]),
        ((1,), (2,), (1, 2)),
        (1 + 1j, 1, 2 + 1j),
        (Money(1), 1, Money(2)),
        (1, RMoney(2), RMoney(3)),
        (1, Money(2), 3),
        (Color.RED, 1, 2),
        (Ratio(1.5), 1, 2.5),
        (float("inf"), 1, float("inf")),
    ],
)
def test_incr_python_add_semantics(make_cache, value, delta, expected):
    c = make_cache()
    c.set("k", value)
    result = c.incr("k", delta)
    assert type(result) is type(expected)
    assert result == expected
    stored = c.get("k")
    assert type(stored) is type(expected) and stored == expected


@pytest.mark.parametrize(
    "value, delta",
    [
        (None, 1),
        ("1", 1),
        (1, "1"),
        (Decimal("1"), 0.5),
        ([1], 1),
        (1, None),
        ({"a": 1}, 1),
    ],
)
def test_incr_type_errors_leave_value(make_cache, make_ref, value, delta):
    c, ref = make_cache(), make_ref()
    results = []
    for cache in (c, ref):
        cache.set("other", 0)
        cache.set("k", value, 10)
        with pytest.raises(TypeError) as exc:
            cache.incr("k", delta)
        results.append(str(exc.value))
        assert cache.get("k") == value
        assert order(cache) == [cache.make_key("k"), cache.make_key("other")]
    assert results[0] == results[1]


def test_incr_keeps_expiry(make_cache, clock):
    c = make_cache()
    key = c.make_key("k")
    c.set("k", 1, 100)
    before = c._expire_info[key]
    assert before == NOW + 100
    clock.advance(10)
    assert c.incr("k") == 2
    assert c._expire_info[key] == before
    assert c.decr("k", 5) == -3
    assert c._expire_info[key] == before
    c.set("forever", 1, None)
    c.incr("forever")
    assert c._expire_info[c.make_key("forever")] is None


def test_incr_big_ints_roundtrip_through_cache(make_cache):
    c = make_cache()
    c.set("k", 2**64 - 2)
    assert c.incr("k") == 2**64 - 1
    assert c.incr("k") == 2**64
    assert c.get("k") == 2**64
    assert c.decr("k", 2**65) == -(2**64)
    c.set("small", -(2**63))
    assert c.decr("small") == -(2**63) - 1
    assert c.incr("small", 2**63 + 1) == 0


# --------------------------------------------------------------------------
# get_many / set_many / delete_many


def test_get_many(make_cache, clock):
    c = make_cache()
    c.set("a", 1)
    c.set("b", None)
    c.set(3, "three")
    c.set("e", "expired", 1)
    clock.advance(1)
    result = c.get_many(["missing", 3, "b", "a", "e"])
    assert result == {3: "three", "b": None, "a": 1}
    assert list(result) == [3, "b", "a"]
    assert c.make_key("e") not in c._cache
    assert c.get_many([]) == {}
    assert c.get_many(iter(["a", "a"])) == {"a": 1}
    assert c.get_many(k for k in ("a", "missing")) == {"a": 1}
    c.set("v", 2, version=2)
    assert c.get_many(["v", "a"], version=2) == {"v": 2}


def test_get_many_keys_keep_their_identity(make_cache):
    c = make_cache()
    c.set(1, "int")
    key = StrKey("obj")
    c.set(key, "obj")
    result = c.get_many([1, "1", key])
    # The int key 1 and the str key "1" make the same cache key.
    assert result == {1: "int", "1": "int", key: "obj"}
    assert [type(k) for k in result] == [int, str, StrKey]


def test_set_many(make_cache, clock):
    c = make_cache()
    assert c.set_many({"a": 1, 2: "two", "n": None}) == []
    assert c.get_many(["a", 2, "n"]) == {"a": 1, 2: "two", "n": None}
    assert c.set_many({}) == []
    assert c.set_many({"t": 1}, timeout=5) == []
    assert c._expire_info[c.make_key("t")] == NOW + 5
    assert c.set_many({"z": 1}, 0) == []
    assert c.get("z") is None
    assert c.set_many({"v": 1}, version=3) == []
    assert c.get("v") is None and c.get("v", version=3) == 1
    # Insertion order: the last key of the mapping ends most recent.
    c.clear()
    c.set_many({"x": 1, "y": 2, "z": 3})
    assert order(c) == [":1:z", ":1:y", ":1:x"]


def test_delete_many(make_cache):
    c = make_cache()
    c.set_many({"a": 1, "b": 2, "c": 3, 4: 4})
    assert c.delete_many(["a", "missing", 4]) is None
    assert c.get_many(["a", "b", "c", 4]) == {"b": 2, "c": 3}
    assert c.delete_many([]) is None
    assert c.delete_many(k for k in ["b"]) is None
    assert order(c) == [":1:c"]
    c.set("v", 1, version=2)
    c.delete_many(["v"])
    assert c.get("v", version=2) == 1
    c.delete_many(["v"], version=2)
    assert c.get("v", version=2) is None


# --------------------------------------------------------------------------
# get_or_set


def test_get_or_set(make_cache, clock):
    c = make_cache()
    assert c.get_or_set("k", "default") == "default"
    assert c.get("k") == "default"
    assert c.get_or_set("k", "other") == "default"
    calls = []

    def compute():
        calls.append(1)
        return [1, 2]

    assert c.get_or_set("c", compute) == [1, 2]
    assert c.get_or_set("c", compute) == [1, 2]
    assert len(calls) == 1
    # None is stored like any value.
    assert c.get_or_set("none", None) is None
    assert c.has_key("none") is True
    # An already expired add: the default is returned but not kept.
    assert c.get_or_set("zero", "d", timeout=0) == "d"
    assert c.make_key("zero") not in c._cache
    assert c.get_or_set("t", 5, timeout=10) == 5
    assert c._expire_info[c.make_key("t")] == NOW + 10
    assert c.get_or_set("ver", 1, version=2) == 1
    assert c.get("ver") is None and c.get("ver", version=2) == 1


def test_get_or_set_callable_exception_propagates(make_cache):
    c = make_cache()

    def boom():
        raise PickleBoom("from the default callable")

    with pytest.raises(PickleBoom):
        c.get_or_set("k", boom)
    assert c.has_key("k") is False


# --------------------------------------------------------------------------
# versions


def test_versions(make_cache):
    c = make_cache()
    c.set("k", "v1", version=1)
    c.set("k", "v2", version=2)
    assert c.get("k") == "v1"
    assert c.get("k", version=2) == "v2"
    assert c.get("k", version=3) is None
    assert order(c) == [":2:k", ":1:k"]
    v2 = make_cache(VERSION=2, LOCATION="shared")
    v1 = make_cache(LOCATION="shared")
    v1.set("k", "one")
    v2.set("k", "two")
    assert v1.get("k") == "one" and v2.get("k") == "two"
    assert v2.get("k", version=1) == "one"
    assert v2.version == 2


def test_incr_version(make_cache, clock):
    c = make_cache()
    c.set("k", "value", None)
    assert c.incr_version("k") == 2
    assert c.get("k") is None
    assert c.get("k", version=2) == "value"
    assert c.make_key("k") not in c._cache
    # incr_version re-sets the value with the default timeout.
    assert c._expire_info[c.make_key("k", version=2)] == NOW + 300
    assert c.incr_version("k", delta=3, version=2) == 5
    assert c.decr_version("k", version=5) == 4
    assert c.decr_version("k", delta=2, version=4) == 2
    assert c.get("k", version=2) == "value"
    assert order(c) == [":2:k"]


def test_incr_version_default_version(make_cache):
    c = make_cache(VERSION=5)
    c.set("k", 1)
    assert c.incr_version("k") == 6
    assert c.decr_version("k", version=6) == 5
    assert c.get("k") == 1


def test_incr_version_missing(make_cache):
    c = make_cache()
    # BaseCache's message quotes the key as given, not the made key.
    with pytest.raises(ValueError) as exc:
        c.incr_version("missing")
    assert str(exc.value) == "Key 'missing' not found"
    with pytest.raises(ValueError) as exc:
        c.decr_version("missing", version=3)
    assert str(exc.value) == "Key 'missing' not found"


# --------------------------------------------------------------------------
# timeouts


@pytest.mark.parametrize(
    "timeout, expected_delta, alive",
    [
        (None, None, True),
        (0, -1, False),
        (0.0, -1, False),
        (False, -1, False),
        (True, 1, True),
        (-1, -1, False),
        (-5, -5, False),
        (-0.5, -0.5, False),
        (1, 1, True),
        (10, 10, True),
        (0.5, 0.5, True),
        (100.2, 100.2, True),
        (10**12, 10**12, True),
        (DEFAULT_TIMEOUT, 300, True),
    ],
)
def test_timeouts(make_cache, clock, timeout, expected_delta, alive):
    c = make_cache()
    key = c.make_key("k")
    c.set("k", "v", timeout)
    exp = c._expire_info[key]
    if expected_delta is None:
        assert exp is None
    else:
        assert exp == NOW + expected_delta
        assert type(exp) is float
    assert c.has_key("k") is alive
    # The same for add / touch / set_many / get_or_set.
    c.clear()
    assert c.add("k", "v", timeout) is True
    assert c._expire_info[key] == exp
    c.set("k", "v", None)
    assert c.touch("k", timeout) is True
    assert c._expire_info[key] == exp
    c.clear()
    c.set_many({"k": "v"}, timeout)
    assert c._expire_info[key] == exp
    c.clear()
    assert c.get_or_set("k", "d", timeout) == "d"
    assert (key in c._cache) is alive


def test_default_timeout_argument(make_cache, clock):
    c = make_cache(TIMEOUT=60)
    c.set("k", 1)
    c.set("explicit", 1, timeout=DEFAULT_TIMEOUT)
    c.add("a", 1)
    assert c._expire_info[":1:k"] == NOW + 60
    assert c._expire_info[":1:explicit"] == NOW + 60
    assert c._expire_info[":1:a"] == NOW + 60
    clock.advance(60)
    assert c.get("k") is None


@pytest.mark.parametrize(
    "params, expected",
    [
        ({}, 300),
        ({"TIMEOUT": None}, None),
        ({"TIMEOUT": 60}, 60),
        ({"TIMEOUT": "60"}, 60),
        ({"TIMEOUT": 1.9}, 1),
        ({"TIMEOUT": "abc"}, 300),
        ({"TIMEOUT": 0}, 0),
        ({"TIMEOUT": -5}, -5),
        ({"TIMEOUT": 60, "timeout": 5}, 5),
    ],
)
def test_configured_default_timeout(make_cache, clock, params, expected):
    c = make_cache(**params)
    assert c.default_timeout == expected
    assert type(c.default_timeout) is type(expected)
    c.set("k", 1)
    exp = c._expire_info[":1:k"]
    if expected is None:
        assert exp is None
        clock.advance(10**9)
        assert c.get("k") == 1
    else:
        # DEFAULT_TIMEOUT is not mapped like an explicit 0: TIMEOUT=0 gives now + 0.
        assert exp == NOW + expected
        assert c.has_key("k") is (expected > 0)


def test_default_timeout_reassignable(make_cache, clock):
    c = make_cache()
    c.default_timeout = 7
    c.set("k", 1)
    assert c._expire_info[":1:k"] == NOW + 7
    c.default_timeout = None
    c.set("k", 1)
    assert c._expire_info[":1:k"] is None


@pytest.mark.parametrize("timeout", ["5", Decimal("5"), [5], object()])
def test_invalid_timeout_type(make_cache, timeout):
    # LocMemCache fails in get_backend_timeout (float + str...).  Only the
    # exception type is part of the contract; LocMemCache leaves a half-written
    # entry behind, which is not.
    c = make_cache()
    with pytest.raises(TypeError):
        c.set("k", 1, timeout)


def test_float_timeout_precision(make_cache, clock):
    clock.now = 1_700_000_000.123456
    c = make_cache()
    c.set("k", 1, 0.1)
    assert c._expire_info[":1:k"] == 1_700_000_000.123456 + 0.1
    clock.now = 1_700_000_000.123456 + 0.1
    assert c.get("k") is None


# --------------------------------------------------------------------------
# keys


def test_key_prefix(make_cache):
    c = make_cache(KEY_PREFIX="pre")
    c.set("k", 1)
    assert order(c) == ["pre:1:k"]
    plain = make_cache(LOCATION="shared")
    prefixed = make_cache(KEY_PREFIX="p2", LOCATION="shared")
    plain.set("k", "plain")
    prefixed.set("k", "prefixed")
    assert plain.get("k") == "plain" and prefixed.get("k") == "prefixed"
    assert sorted(plain._cache) == [":1:k", "p2:1:k"]
    assert make_cache(KEY_PREFIX=7).make_key("k") == "7:1:k"


def test_made_keys(make_cache):
    c = make_cache()
    c.set(1, "int")
    assert c.get("1") == "int"  # same made key
    c.set(None, "none")
    c.set(b"raw", "bytes")
    c.set(1.5, "float")
    c.set(StrKey("obj"), "obj")
    c.set("ünï", "unicode")
    assert c.get(StrKey("1")) == "int"
    assert c.get("None") == "none"
    assert c.get("b'raw'") == "bytes"
    assert c.get("obj") == "obj"
    assert c.get(StrKey("ünï")) == "unicode"
    assert order(c) == [":1:ünï", ":1:obj", ":1:b'raw'", ":1:None", ":1:1", ":1:1.5"]


@pytest.mark.parametrize("key", ["\ud800", "a\udcffb", "\x00\ud83d"])
def test_keys_with_lone_surrogates(make_cache, make_ref, clock, key):
    results = []
    for cache in (make_cache(), make_ref()):
        steps = [
            outcome(lambda cache=cache: cache.set(key, key)),
            outcome(lambda cache=cache: cache.get(key)),
            outcome(lambda cache=cache: cache.get_many([key])),
            outcome(lambda cache=cache: cache.incr(key + "missing")),
            outcome(lambda cache=cache: cache.has_key(key)),
            snapshot(cache),
            outcome(lambda cache=cache: cache.delete(key)),
        ]
        results.append(steps)
    assert results[0] == results[1]
    assert results[0][1][:3] == ("return", str, describe(key))


def test_key_str_called_once_per_operation(make_cache):
    calls = []

    class Counting:
        def __str__(self):
            calls.append(1)
            return "counted"

    c = make_cache()
    key = Counting()
    c.set(key, 1)
    assert len(calls) == 1
    c.get(key)
    assert len(calls) == 2


def test_key_str_raising_propagates(make_cache):
    class Bad:
        def __str__(self):
            raise PickleBoom("no str for you")

    c = make_cache()
    with pytest.raises(PickleBoom):
        c.set(Bad(), 1)
    with pytest.raises(PickleBoom):
        c.get(Bad())
    assert len(c._cache) == 0


@pytest.mark.parametrize(
    "key_function",
    [custom_key_func, "fc_helpers.custom_key_func"],
    ids=["callable", "dotted"],
)
def test_custom_key_function(make_cache, key_function):
    c = make_cache(KEY_FUNCTION=key_function, KEY_PREFIX="p", VERSION=2)
    assert c.key_func is custom_key_func
    c.set("k", 1)
    c.set(5, 2, version=9)
    assert order(c) == ["CUSTOM_p-9-5", "CUSTOM_p-2-k"]
    assert c.get("k") == 1
    assert c.get_many(["k", 5], version=9) == {5: 2}
    assert c.incr("k") == 2
    with pytest.raises(ValueError, match="^Key 'CUSTOM_p-2-missing' not found$"):
        c.incr("missing")
    assert c.has_key("k") and "k" in c
    assert c.delete("k") is True


def test_key_func_reassigned_at_runtime(make_cache):
    c = make_cache()
    c.set("k", 1)
    c.key_func = custom_key_func
    assert c.get("k") is None
    c.set("k", 2)
    assert order(c) == ["CUSTOM_-1-k", ":1:k"]


def test_subclass_make_key_and_validate_key(cache_cls, make_cache):
    class Sub(cache_cls):
        def make_key(self, key, version=None):
            return "sub/" + str(key)

        def validate_key(self, key):
            if "forbidden" in key:
                raise ValueError("forbidden key " + key)

    c = make_cache(cls=Sub)
    c.set("a b", 1)  # no CacheKeyWarning: validate_key is overridden
    assert order(c) == ["sub/a b"]
    assert c.get("a b") == 1
    with pytest.raises(ValueError, match="forbidden key sub/forbidden"):
        c.set("forbidden", 1)
    with pytest.raises(ValueError, match="^Key 'sub/nope' not found$"):
        c.incr("nope")


def test_subclass_single_key_overrides_feed_the_batches(cache_cls, make_cache):
    calls = []

    class Sub(cache_cls):
        def get(self, key, default=None, version=None):
            calls.append(("get", key))
            return super().get(key, default, version)

        def set(self, key, value, timeout=DEFAULT_TIMEOUT, version=None):
            calls.append(("set", key))
            return super().set(key, value, timeout, version)

        def delete(self, key, version=None):
            calls.append(("delete", key))
            return super().delete(key, version)

    c = make_cache(cls=Sub)
    assert c.set_many({"a": 1, "b": 2}) == []
    assert c.get_many(["a", "b"]) == {"a": 1, "b": 2}
    assert c.delete_many(["a"]) is None
    assert c.get_or_set("g", 3) == 3
    assert c.incr_version("b") == 2
    assert asyncio.run(c.aget("g")) == 3
    assert calls == [
        ("set", "a"), ("set", "b"),
        ("get", "a"), ("get", "b"),
        ("delete", "a"),
        ("get", "g"), ("get", "g"),
        ("get", "b"), ("set", "b"), ("delete", "b"),
        ("get", "g"),
    ]  # fmt: skip


def test_patching_methods_on_the_class(cache_cls, make_cache):
    c = make_cache()
    with mock.patch.object(cache_cls, "add", return_value=False) as add:
        assert c.add("k", 1) is False
        add.assert_called_once_with("k", 1)
    assert c.has_key("k") is False
    with mock.patch.object(cache_cls, "get", return_value="patched"):
        assert c.get("k") == "patched"
        assert c.get_many(["x", "y"]) == {"x": "patched", "y": "patched"}
    assert c.get_many(["x"]) == {}


# --------------------------------------------------------------------------
# key warnings


def expected_warnings(made_key):
    return list(memcache_key_warnings(made_key))


KEYS_WITH_WARNINGS = [
    "a" * 248,  # made key is 251 long
    "has space",
    "tab\tkey",
    "newline\n",
    "nul\x00",
    "\x1f",
    "del\x7f",
    "long and spaced " + "x" * 250,
    "é" * 248,  # 251 code points, 499 UTF-8 bytes
]


@pytest.mark.parametrize("key", KEYS_WITH_WARNINGS, ids=range(len(KEYS_WITH_WARNINGS)))
def test_key_warnings(make_cache, key):
    c = make_cache()
    made = c.make_key(key)
    expected = expected_warnings(made)
    assert expected
    with pytest.warns(CacheKeyWarning) as record:
        c.set(key, 1)
    assert [str(w.message) for w in record] == expected
    assert [w.category for w in record] == [CacheKeyWarning] * len(expected)
    with pytest.warns(CacheKeyWarning) as record:
        assert c.get(key) == 1
    assert [str(w.message) for w in record] == expected


def test_key_warning_text_literal(make_cache):
    c = make_cache()
    with pytest.warns(CacheKeyWarning) as record:
        c.set("a b", 1)
    assert [str(w.message) for w in record] == [
        "Cache key contains characters that will cause errors if used with "
        "memcached: ':1:a b'"
    ]
    key = "k" * 248
    with pytest.warns(CacheKeyWarning) as record:
        c.set(key, 1)
    assert [str(w.message) for w in record] == [
        "Cache key will cause errors if used with memcached: "
        f"':1:{key}' (longer than 250)"
    ]


@pytest.mark.parametrize(
    "key",
    ["a" * 247, "é" * 247, "\x80\xa0", "ünï-cødé", "x\u2028y", "\U0001f600" * 247],
)
def test_keys_without_warnings(make_cache, key):
    # filterwarnings=error: any warning would fail the test.
    c = make_cache()
    assert len(c.make_key(key)) <= 250
    c.set(key, 1)
    assert c.get(key) == 1


def test_key_warning_from_prefix_and_version(make_cache):
    c = make_cache(KEY_PREFIX="my prefix")
    with pytest.warns(CacheKeyWarning) as record:
        c.set("k", 1)
    assert [str(w.message) for w in record] == expected_warnings("my prefix:1:k")
    long_version = make_cache(VERSION="v" * 250)
    with pytest.warns(CacheKeyWarning) as record:
        long_version.get("k")
    assert [str(w.message) for w in record] == expected_warnings(":" + "v" * 250 + ":k")


def test_key_warnings_attributed_like_validate_key(make_cache, make_ref):
    located = []
    for cache in (make_cache(), make_ref()):
        with pytest.warns(CacheKeyWarning) as record:
            cache.set("a b", 1)
        located.append([(w.filename, w.category) for w in record])
    assert located[0] == located[1]


# One entry per API call: (call, number of validate_key calls it makes).
WARNING_CALLS = [
    ("add", lambda c, k: c.add(k, 1)),
    ("get", lambda c, k: c.get(k)),
    ("set", lambda c, k: c.set(k, 1)),
    ("touch", lambda c, k: c.touch(k)),
    ("delete", lambda c, k: c.delete(k)),
    ("has_key", lambda c, k: c.has_key(k)),
    ("contains", lambda c, k: k in c),
    ("incr", lambda c, k: c.incr(k)),
    ("decr", lambda c, k: c.decr(k)),
    ("get_many", lambda c, k: c.get_many([k, "ok", k])),
    ("set_many", lambda c, k: c.set_many({k: 1, "ok": 2})),
    ("delete_many", lambda c, k: c.delete_many([k, "ok"])),
    ("get_or_set", lambda c, k: c.get_or_set(k, 1)),
    ("incr_version", lambda c, k: c.incr_version(k)),
    ("decr_version", lambda c, k: c.decr_version(k, version=3)),
]


@pytest.mark.parametrize("name, call", WARNING_CALLS, ids=[n for n, _ in WARNING_CALLS])
@pytest.mark.parametrize("present", [True, False], ids=["present", "absent"])
def test_key_warnings_per_call(make_cache, make_ref, clock, name, call, present):
    results = []
    for cache in (make_cache(), make_ref()):
        if present:
            with pytest.warns(CacheKeyWarning):
                cache.set("a b", 1)
                cache.set("a b", 1, version=3)
        results.append(
            (outcome(lambda cache=cache: call(cache, "a b")), snapshot(cache))
        )
    assert results[0] == results[1]
    assert results[0][0][-1], "the call emitted no CacheKeyWarning"


def test_key_warning_as_error_stores_nothing(make_cache):
    # With warnings as errors (pyproject's filterwarnings), the warning
    # aborts the call before anything is stored.
    c = make_cache()
    with pytest.raises(CacheKeyWarning):
        c.set("a b", 1)
    with pytest.raises(CacheKeyWarning):
        c.add("a b", 1)
    with pytest.raises(CacheKeyWarning):
        c.set_many({"ok": 1, "a b": 2, "ok2": 3})
    assert order(c) == [":1:ok"]


# --------------------------------------------------------------------------
# pickling


def test_unpicklable_values(make_cache, make_ref, clock):
    local_lambda = lambda: 1  # noqa: E731
    lock = threading.Lock()
    outcomes = []
    for cache in (make_cache(), make_ref()):
        cache.set("k", "previous", 10)
        cache.set("other", 1)
        before = snapshot(cache)
        seen = []
        for bad in (
            local_lambda,
            MODULE_LAMBDA,
            lock,
            RaisesOnPickle(),
            [RaisesOnPickle()],
        ):
            for call in (
                lambda c, v: c.set("k", v),
                lambda c, v: c.add("new", v),
                lambda c, v: c.add("k", v),
                lambda c, v: c.set_many({"k": v}),
                lambda c, v: c.get_or_set("new", v if not callable(v) else [v]),
            ):
                result = outcome(functools.partial(call, cache, bad))
                assert result[0] == "raise"
                seen.append(result)
                assert snapshot(cache) == before
        outcomes.append(seen)
    assert outcomes[0] == outcomes[1]
    kinds = {r[1] for r in outcomes[0]}
    assert {TypeError, PickleBoom} <= kinds  # the lock, RaisesOnPickle
    assert len(kinds) >= 3  # a lambda: PicklingError or AttributeError


def test_set_many_stops_at_first_unpicklable(make_cache, make_ref, clock):
    results = []
    for cache in (make_cache(), make_ref()):
        with pytest.raises(PickleBoom):
            cache.set_many({"a": 1, "b": RaisesOnPickle(), "c": 3})
        results.append(snapshot(cache))
    assert results[0] == results[1]
    assert [k for k, _, _ in results[0]] == [":1:a"]


def test_unpickling_failure(make_cache, make_ref, clock):
    results = []
    for cache in (make_cache(), make_ref()):
        cache.set("bad", RaisesOnUnpickle())
        cache.set("good", 1)
        steps = [
            outcome(lambda cache=cache: cache.get("bad")),
            [k for k in cache._cache],
            outcome(lambda cache=cache: cache.get_many(["good", "bad"])),
            outcome(lambda cache=cache: cache.incr("bad")),
            outcome(lambda cache=cache: cache.get_or_set("bad", 1)),
            outcome(lambda cache=cache: cache.has_key("bad")),
            [k for k in cache._cache],
        ]
        results.append(steps)
    assert results[0] == results[1]
    assert results[0][0][1] is PickleBoom
    # A failed get still marked the entry as most recently used.
    assert results[0][1] == [":1:bad", ":1:good"]


def test_incr_result_unpicklable_leaves_value(make_cache, make_ref, clock):
    results = []
    for cache in (make_cache(), make_ref()):
        cache.set("k", [1])
        cache.set("other", 1)
        r = outcome(lambda cache=cache: cache.incr("k", [RaisesOnPickle()]))
        results.append((r, snapshot(cache)))
    assert results[0] == results[1]
    assert results[0][0][1] is PickleBoom
    assert [k for k, _, _ in results[0][1]] == [":1:other", ":1:k"]


def test_raw_values_are_pickles(make_cache):
    c = make_cache()
    value = {"a": [1, 2.5, None], "b": Point(1, 2)}
    c.set("k", value)
    raw = c._cache[":1:k"]
    assert isinstance(raw, bytes)
    assert pickle.loads(raw) == value


def test_pickling_happens_outside_the_lock(make_cache):
    c = make_cache()
    token = f"probe-{id(c)}"
    PROBE_CACHES[token] = c
    try:
        PROBE_LOG.clear()
        c.set("set", LockProbe(token))
        c.add("add", LockProbe(token))
        c.set_many({"many": LockProbe(token)})
        c.get_or_set("gos", LockProbe(token))
        c.get("set")
        c.get_many(["add", "many"])
        asyncio.run(c.aset("aset", LockProbe(token)))
        asyncio.run(c.aget("aset"))
        log = [(op, locked) for t, op, locked in PROBE_LOG if t == token]
        assert ("dumps", False) in log and ("loads", False) in log
        assert all(locked is False for _, locked in log), log
        # set, add, set_many, get_or_set (add), aset pickle; get_or_set (get),
        # get, get_many x2, aget unpickle.
        assert log.count(("dumps", False)) == 5
        assert log.count(("loads", False)) == 5
    finally:
        PROBE_CACHES.pop(token, None)


def test_lock_not_held_between_calls(make_cache, clock):
    c = make_cache(OPTIONS={"MAX_ENTRIES": 3})
    assert c._lock.locked() is False
    for i in range(5):
        c.set(i, i, 1)
        assert c._lock.locked() is False
    with pytest.raises(ValueError):
        c.incr("missing")
    assert c._lock.locked() is False
    with pytest.raises(TypeError):
        c.set("k", 1)
        c.incr("k", "x")
    assert c._lock.locked() is False
    clock.advance(2)
    c.get_many(range(5))
    assert c._lock.locked() is False


# --------------------------------------------------------------------------
# stores, _cache, _expire_info


def test_same_location_shares_data(make_cache):
    a = make_cache(LOCATION="x")
    b = make_cache(LOCATION="x")
    other = make_cache(LOCATION="y")
    a.set("k", 1)
    assert b.get("k") == 1
    assert other.get("k") is None
    b.incr("k")
    assert a.get("k") == 2
    other.set("k", "other")
    assert a.get("k") == 2
    assert list(a._cache) == list(b._cache) == [":1:k"]


def test_options_are_per_instance_on_a_shared_store(make_cache):
    small = make_cache(LOCATION="x", OPTIONS={"MAX_ENTRIES": 2, "CULL_FREQUENCY": 1})
    large = make_cache(LOCATION="x")
    for i in range(5):
        large.set(i, i)
    assert len(large._cache) == 5
    small.set("s", 1)  # len 5 >= 2: culls everything first
    assert order(large) == [":1:s"]


def test_sharing_by_assigning_internals(make_cache):
    # LocMemCacheTests.setUp shares a store between differently configured
    # instances by assigning _cache and _expire_info.
    main = make_cache()
    prefixed = make_cache(KEY_PREFIX="p")
    prefixed._cache = main._cache
    prefixed._expire_info = main._expire_info
    main.set("k", 1)
    prefixed.set("k", 2)
    assert order(main) == ["p:1:k", ":1:k"]
    assert prefixed.get("k") == 2 and main.get("k") == 1
    assert prefixed.get("k", version=1) == 2
    main.clear()
    assert len(prefixed._cache) == 0


def test_internal_views(make_cache, clock):
    c = make_cache()
    c.set("a", 1, None)
    c.set("b", 2, 10)
    c.set("c", 3, 1)
    clock.advance(5)  # "c" is expired but still stored
    assert list(c._cache) == [":1:c", ":1:b", ":1:a"]
    assert list(c._cache.keys()) == [":1:c", ":1:b", ":1:a"]
    assert len(c._cache) == 3
    assert ":1:c" in c._cache and ":1:zzz" not in c._cache
    assert ":1:a" in c._expire_info
    assert c._expire_info[":1:a"] is None
    assert c._expire_info[":1:b"] == NOW + 10
    assert c._expire_info[":1:c"] == NOW + 1
    assert c._expire_info.get(":1:missing", -1) == -1
    assert sorted(c._expire_info) == [":1:a", ":1:b", ":1:c"]
    assert len(c._expire_info) == 3
    with pytest.raises(KeyError):
        c._cache[":1:missing"]
    with pytest.raises(KeyError):
        c._expire_info[":1:missing"]
    # Reading the internals neither expires nor reorders.
    assert list(c._cache) == [":1:c", ":1:b", ":1:a"]
    assert pickle.loads(c._cache[":1:c"]) == 3


def test_internal_views_are_live(make_cache):
    c = make_cache()
    view = c._cache
    expire = c._expire_info
    c.set("a", 1)
    assert list(view) == [":1:a"] and ":1:a" in expire
    c.delete("a")
    assert list(view) == [] and len(expire) == 0


# --------------------------------------------------------------------------
# async API


async def _async_script(c):
    r = []
    r.append(await c.aset("a", 1))
    r.append(await c.aset("b", [1, 2], timeout=10))
    r.append(await c.aset("n", None, None, version=2))
    r.append(await c.aget("a"))
    r.append(await c.aget("missing", "default"))
    r.append(await c.aget("n", version=2))
    r.append(await c.aadd("a", 2))
    r.append(await c.aadd("c", 3, 5))
    r.append(await c.atouch("a", 50))
    r.append(await c.atouch("missing"))
    r.append(await c.ahas_key("b"))
    r.append(await c.ahas_key("missing"))
    r.append(await c.aincr("a"))
    r.append(await c.adecr("a", 5))
    r.append(await c.aget_many(["a", "b", "missing"]))
    r.append(await c.aset_many({"x": 1, "y": 2}, 20))
    r.append(await c.adelete_many(["x", "missing"]))
    r.append(await c.aget_or_set("g", lambda: "computed"))
    r.append(await c.aget_or_set("g", "not used"))
    r.append(await c.aincr_version("g"))
    r.append(await c.adecr_version("g", version=2))
    r.append(await c.adelete("y"))
    r.append(await c.adelete("y"))
    for coro in (c.aincr("missing"), c.adecr("missing"), c.aincr_version("missing")):
        try:
            await coro
        except ValueError as exc:
            r.append(("ValueError", str(exc)))
    r.append(await c.aclose())
    return r


# aincr/adecr are BaseCache's aget + aset until Django 6.1 (the error names
# the key as given), LocMemCache's incr after (the error names the made key).
AINCR_MISSING = ":1:missing" if async_delegates("incr") else "missing"


def test_async_api(make_cache, make_ref, clock):
    c, ref = make_cache(), make_ref()
    got = asyncio.run(_async_script(c))
    assert got == [
        None, None, None,
        1, "default", None,
        False, True,
        True, False,
        True, False,
        2, -3,
        {"a": -3, "b": [1, 2]},
        [], None,
        "computed", "computed",
        2, 1,
        True, False,
        ("ValueError", f"Key '{AINCR_MISSING}' not found"),
        ("ValueError", f"Key '{AINCR_MISSING}' not found"),
        ("ValueError", "Key 'missing' not found"),
        None,
    ]  # fmt: skip
    assert asyncio.run(_async_script(ref)) == got
    assert snapshot(c) == snapshot(ref)
    assert asyncio.run(c.aclear()) is None
    assert len(c._cache) == 0


def test_aincr_resets_expiry_unlike_incr(make_cache, make_ref, clock):
    # BaseCache.aincr is aget + aset: it re-sets the value with the default
    # timeout, and aset may cull.  incr keeps the expiry.
    snaps = []
    for cache in (make_cache(TIMEOUT=60), make_ref(TIMEOUT=60)):
        cache.set("a", 1, None)
        cache.set("b", 1, 5)
        cache.set("c", 1, 5)
        asyncio.run(cache.aincr("a"))
        asyncio.run(cache.adecr("b", 3))
        cache.incr("c")
        snaps.append(snapshot(cache))
    assert snaps[0] == snaps[1]
    if async_delegates("incr"):
        # Django >= 6.1: aincr is incr, which keeps the expiry
        assert snaps[0] == [
            (":1:c", NOW + 5, "int:2"),
            (":1:b", NOW + 5, "int:-2"),
            (":1:a", None, "int:2"),
        ]
    else:
        assert snaps[0] == [
            (":1:c", NOW + 5, "int:2"),
            (":1:b", NOW + 60, "int:-2"),
            (":1:a", NOW + 60, "int:2"),
        ]


def test_ahas_key_moves_like_aget(make_cache, make_ref):
    # has_key leaves the LRU order alone; ahas_key is BaseCache's aget-based one.
    orders = []
    for cache in (make_cache(), make_ref()):
        cache.set("a", 1)
        cache.set("b", 2)
        cache.has_key("a")
        o1 = order(cache)
        asyncio.run(cache.ahas_key("a"))
        orders.append((o1, order(cache)))
    assert orders[0] == orders[1]
    if async_delegates("has_key"):
        # Django >= 6.1: ahas_key is has_key, which does not move either
        assert orders[0] == ([":1:b", ":1:a"], [":1:b", ":1:a"])
    else:
        assert orders[0] == ([":1:b", ":1:a"], [":1:a", ":1:b"])


def test_async_expiry_and_warnings(make_cache, make_ref, clock):
    results = []
    for cache in (make_cache(), make_ref()):
        asyncio.run(cache.aset("e", 1, 1))
        clock.advance(1)
        r = [
            outcome(lambda cache=cache: asyncio.run(cache.aget("e", "gone"))),
            outcome(lambda cache=cache: asyncio.run(cache.aincr("e"))),
            outcome(lambda cache=cache: asyncio.run(cache.atouch("e"))),
            outcome(lambda cache=cache: asyncio.run(cache.aset("a b", 1))),
            outcome(lambda cache=cache: asyncio.run(cache.aget_many(["a b"]))),
            snapshot(cache),
        ]
        clock.now = NOW
        results.append(r)
    assert results[0] == results[1]
    assert results[0][3][-1], "aset of a key with a space emitted no warning"


def test_async_methods_are_coroutine_functions(cache_cls):
    import inspect

    for name in (
        "aadd aget aset atouch adelete aclear aget_many aset_many adelete_many "
        "aget_or_set ahas_key aincr adecr aincr_version adecr_version aclose"
    ).split():
        assert inspect.iscoroutinefunction(getattr(cache_cls, name)), name


def test_describe_helper_is_type_sensitive():
    # The comparisons above rely on describe() telling these apart.
    assert describe(1) != describe(1.0) != describe(True)
    assert describe({"a": 1}) != describe({"a": 1.0})
    assert describe([1]) != describe((1,))
