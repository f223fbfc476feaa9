"""FastCache behaviour that differs from LocMemCache by design (see backend.py):

- invalid or unknown OPTIONS raise ImproperlyConfigured instead of silently
  falling back to the defaults;
- ``_cache`` / ``_expire_info`` are read-only live views of the C store, and
  can only be replaced by another FastCache's views (to share its store);
- ``_lock`` is a view of the table lock with threading.Lock's interface;
- no user code (``__add__``, ``__reduce__``...) ever runs under the table lock,
  not even inside incr, where LocMemCache holds its lock.

Each test states the LocMemCache behaviour it departs from where that is
observable, so the difference stays documented.
"""

from __future__ import annotations

import inspect
import pickle
import threading
from collections.abc import Mapping

import pytest
from conftest import backend_class
from django.core.cache.backends.base import BaseCache
from django.core.cache.backends.locmem import LocMemCache
from django.core.exceptions import ImproperlyConfigured
from fc_helpers import (
    PROBE_CACHES,
    PROBE_LOG,
    LockProbe,
    run_with_deadline,
)


@pytest.fixture
def FastCache():  # noqa: N802 - it is the class
    return backend_class("fastcache")


@pytest.fixture
def make_fast(FastCache, make_ref):
    def make(**params):
        return make_ref(cls=FastCache, **params)

    return make


# --------------------------------------------------------------------------
# configuration


def _not_int(where, value):
    return f"{where} must be a non-negative integer, got {value!r}"


def _unknown(names):
    known = "(known: CULL_FREQUENCY, LOCK_TIMEOUT, MAX_ENTRIES, STALE_SECONDS)"
    return f"Unknown OPTIONS for django_fastcache: {names} {known}"


MAX, CULL = "OPTIONS['MAX_ENTRIES']", "OPTIONS['CULL_FREQUENCY']"
BAD_PARAMS = [
    ({"OPTIONS": {"MAX_ENTRIES": "abc"}}, _not_int(MAX, "abc")),
    ({"OPTIONS": {"MAX_ENTRIES": None}}, _not_int(MAX, None)),
    ({"OPTIONS": {"MAX_ENTRIES": -1}}, _not_int(MAX, -1)),
    ({"OPTIONS": {"MAX_ENTRIES": True}}, _not_int(MAX, True)),
    ({"OPTIONS": {"MAX_ENTRIES": [3]}}, _not_int(MAX, [3])),
    ({"OPTIONS": {"CULL_FREQUENCY": "x"}}, _not_int(CULL, "x")),
    ({"OPTIONS": {"CULL_FREQUENCY": -2}}, _not_int(CULL, -2)),
    ({"OPTIONS": {"CULL_FREQUENCY": False}}, _not_int(CULL, False)),
    ({"max_entries": "abc"}, _not_int("max_entries", "abc")),
    ({"cull_frequency": 1.5j}, _not_int("cull_frequency", 1.5j)),
    ({"OPTIONS": {"MAX_ENTRY": 10}}, _unknown("'MAX_ENTRY'")),
    ({"OPTIONS": {"max_entries": 1, "cull_frequency": 2}},
     _unknown("'cull_frequency', 'max_entries'")),
    ({"OPTIONS": {"MAX_ENTRIES": 10, 3: 1}}, _unknown("3")),
    ({"OPTIONS": [("MAX_ENTRIES", 1)]},
     "OPTIONS must be a dict, got [('MAX_ENTRIES', 1)]"),
]  # fmt: skip


@pytest.mark.parametrize("params, message", BAD_PARAMS)
def test_invalid_options_raise(FastCache, params, message):
    with pytest.raises(ImproperlyConfigured) as exc:
        FastCache("fastcache-only-invalid", params)
    assert str(exc.value) == message


LOCMEM_FALLBACKS = [(300, 3), (300, 3), (-1, 3), (1, 3), (300, 3), (300, 3), (300, -2)]
LOCMEM_FALLBACKS += [(300, 0), (300, 3), (300, 3)]


@pytest.mark.parametrize(
    "params, expected",
    list(zip([p for p, _ in BAD_PARAMS[:10]], LOCMEM_FALLBACKS, strict=True)),
)
def test_locmem_silently_falls_back_on_the_same_options(make_ref, params, expected):
    # The documented difference: LocMemCache replaces what int() rejects by the
    # default and takes negative numbers and bools as they are.
    c = make_ref(**params)
    assert (c._max_entries, c._cull_frequency) == expected


@pytest.mark.parametrize(
    "params, expected",
    [
        ({"OPTIONS": {"MAX_ENTRIES": "7", "CULL_FREQUENCY": "2"}}, (7, 2)),
        ({"OPTIONS": {"MAX_ENTRIES": 7.0, "CULL_FREQUENCY": 0}}, (7, 0)),
        ({"OPTIONS": {"MAX_ENTRIES": 0}}, (0, 3)),
        ({"OPTIONS": None}, (300, 3)),
        ({"OPTIONS": {}}, (300, 3)),
        ({"max_entries": "12", "OPTIONS": {"MAX_ENTRIES": 9}}, (12, 3)),
    ],
)
def test_valid_options_accepted(make_fast, params, expected):
    if params.get("OPTIONS", {}) is None:
        # OPTIONS=None passes FastCache's validation but BaseCache.__init__
        # (options.get) fails on it, for LocMemCache too.
        with pytest.raises(AttributeError):
            make_fast(**params)
        with pytest.raises(AttributeError):
            LocMemCache("fastcache-only-none", params)
        return
    c = make_fast(**params)
    assert (c._max_entries, c._cull_frequency) == expected


def test_runtime_limits_accept_django_test_values(make_fast):
    # Django's test_cull_delete_when_store_empty assigns _max_entries = -1.
    c = make_fast()
    c._max_entries = -1
    c._cull_frequency = 0
    assert (c._max_entries, c._cull_frequency) == (-1, 0)
    c.set("k", 1)
    assert c.get("k") == 1


# --------------------------------------------------------------------------
# the compatibility views


def test_cache_view_is_read_only(make_fast):
    c = make_fast()
    c.set("k", 1)
    view = c._cache
    assert isinstance(view, Mapping)
    with pytest.raises(TypeError):
        view[":1:k"] = pickle.dumps(2)
    with pytest.raises(TypeError):
        del view[":1:k"]
    for name in ("clear", "pop", "popitem", "move_to_end", "setdefault", "update"):
        assert not hasattr(view, name), name
    with pytest.raises(TypeError):
        c._expire_info[":1:k"] = None
    with pytest.raises(TypeError):
        del c._expire_info[":1:k"]
    assert c.get("k") == 1
    assert c._expire_info[":1:k"] is not None


def test_views_mapping_protocol(make_fast, clock):
    c = make_fast()
    c.set("a", [1], None)
    c.set("b", 2, 10)
    view, expire = c._cache, c._expire_info
    assert 5 not in view and None not in view and b":1:a" not in view
    assert ":1:a" in view and ":1:a" in expire
    assert view.get(":1:zz") is None and expire.get(":1:zz", "d") == "d"
    assert dict(expire) == {":1:b": clock.now + 10, ":1:a": None}
    assert [pickle.loads(v) for v in view.values()] == [2, [1]]
    assert [k for k, _ in view.items()] == [":1:b", ":1:a"]
    assert "2 entries" in repr(view)
    with pytest.raises(KeyError):
        view[":1:zz"]


def test_views_can_only_be_replaced_by_fastcache_views(make_fast):
    c = make_fast()
    for attr in ("_cache", "_expire_info"):
        with pytest.raises(TypeError) as exc:
            setattr(c, attr, {})
        assert str(exc.value) == (
            f"{attr} of a fastcache backend can only be replaced by another fastcache "
            f"backend's {attr} (to share its store), not by dict"
        )
    other = make_fast()
    other.set("shared", 1)
    c._expire_info = other._expire_info
    assert c.get("shared") == 1


def test_lock_view(make_fast):
    c = make_fast()
    lock = c._lock
    assert lock.locked() is False
    with lock:
        assert lock.locked() is True
        assert c._lock.locked() is True  # every view shows the same lock
        # Another thread cannot take it.
        box = {}
        t = threading.Thread(target=lambda: box.update(got=c._lock.acquire(False)))
        t.start()
        t.join(10)
        assert box == {"got": False}
        got = run_with_deadline(lambda: c._lock.acquire(True, 0.05), timeout=10)
        assert got is False
    assert lock.locked() is False
    assert lock.acquire() is True
    lock.release()
    # While a thread holds it, a cache call from another thread waits.
    holder_has_it, release = threading.Event(), threading.Event()

    def holder():
        with c._lock:
            holder_has_it.set()
            release.wait(10)

    results = []
    t = threading.Thread(target=holder)
    t.start()
    assert holder_has_it.wait(10)
    setter = threading.Thread(target=lambda: results.append(c.set("k", 1)))
    setter.start()
    setter.join(0.2)
    assert setter.is_alive() and results == []
    release.set()
    t.join(10)
    setter.join(10)
    assert results == [None] and c.get("k") == 1


# --------------------------------------------------------------------------
# no user code under the lock, not even in incr


class Adder:
    """A value whose + calls the cache it lives in and records the lock state."""

    caches: dict[int, object] = {}

    def __init__(self, token, n):
        self.token = token
        self.n = n

    def __add__(self, other):
        cache = Adder.caches[self.token]
        locked = cache._lock.locked()
        cache.get("other")
        cache.set("touched-by-add", locked)
        return Adder(self.token, self.n + other)


def test_incr_runs_add_outside_the_lock(make_fast, make_ref):
    c = make_fast()
    Adder.caches[id(c)] = c
    try:
        c.set("a", Adder(id(c), 1))
        result = run_with_deadline(lambda: c.incr("a", 2), timeout=10)
        assert result.n == 3
        assert c.get("a").n == 3
        assert c.get("touched-by-add") is False
    finally:
        Adder.caches.pop(id(c), None)


def test_incr_pickles_outside_the_lock(make_fast, make_ref):
    # LocMemCache pickles incr's result while holding its lock (locked=True);
    # FastCache never does.
    token = "incr-probe"
    results = {}
    for name, cache in (("fast", make_fast()), ("locmem", make_ref())):
        PROBE_CACHES[token] = cache
        PROBE_LOG.clear()
        cache.set("l", [])
        cache.incr("l", [LockProbe(token)])
        results[name] = [locked for _, op, locked in PROBE_LOG if op == "dumps"]
    PROBE_CACHES.pop(token, None)
    assert results == {"fast": [False], "locmem": [True]}


# --------------------------------------------------------------------------
# the class


def test_fastcache_is_a_plain_basecache_subclass(FastCache):
    assert issubclass(FastCache, BaseCache)
    assert (
        FastCache.pickle_protocol
        == LocMemCache.pickle_protocol
        == pickle.HIGHEST_PROTOCOL
    )
    import django_fastcache

    assert django_fastcache.FastCache is FastCache
    assert isinstance(django_fastcache.__version__, str)


PUBLIC = (
    "add get set touch delete has_key incr decr get_many set_many delete_many clear "
    "get_or_set incr_version decr_version close make_key validate_key "
    "make_and_validate_key get_backend_timeout __contains__ __init__ "
    "aadd aget aset atouch adelete aclear aget_many aset_many adelete_many "
    "aget_or_set ahas_key aincr adecr aincr_version adecr_version aclose"
).split()


def _params(function):
    return [
        (p.name, p.kind, p.default)
        for p in inspect.signature(function).parameters.values()
    ]


@pytest.mark.parametrize("name", PUBLIC)
def test_methods_are_python_functions_with_locmem_signatures(FastCache, name):
    method = getattr(FastCache, name)
    assert inspect.isfunction(method), name  # patchable, introspectable
    # Same parameters (names, kinds, defaults); annotations may differ.  The
    # one addition is keyword-only, after them: get_or_set's serve-stale.
    ours, theirs = _params(method), _params(getattr(LocMemCache, name))
    if name in ("get_or_set", "aget_or_set"):
        assert ours[-1] == ("stale", inspect.Parameter.KEYWORD_ONLY, None)
        ours = ours[:-1]
    assert ours == theirs
    assert inspect.iscoroutinefunction(method) == inspect.iscoroutinefunction(
        getattr(LocMemCache, name)
    )


def test_instance_attributes_like_locmem(make_fast, make_ref):
    fast = make_fast(KEY_PREFIX="p", VERSION=3, TIMEOUT=60)
    ref = make_ref(KEY_PREFIX="p", VERSION=3, TIMEOUT=60)
    for attr in (
        "key_prefix",
        "version",
        "default_timeout",
        "_max_entries",
        "_cull_frequency",
        "key_func",
    ):
        assert getattr(fast, attr) == getattr(ref, attr), attr
    fast.key_prefix = "q"
    fast.version = 4
    fast.set("k", 1)
    assert list(fast._cache) == ["q:4:k"]
