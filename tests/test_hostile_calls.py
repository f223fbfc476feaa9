"""Hostile callers: code that runs in the middle of a cache call and changes
the cache, patches made at any time, clocks patched before import, and odd
inputs to the batch calls.

Each test runs the same scenario on LocMemCache (the reference), FastCache and
SharedMemoryCache and asserts LocMemCache's observable results: what a call
returns or raises, and what the cache holds afterwards.  These are the
regression tests of the robustness review's items 1, 4, 5, 7, 8 and 9.
"""

from __future__ import annotations

import itertools
import sys
import threading
import time
import uuid
import warnings
from unittest import mock

import pytest
from conftest import FASTCACHE_IMPORT_FAILURE, FASTCACHE_SKIP_REASON
from django.core.cache.backends.base import BaseCache
from django.core.cache.backends.locmem import LocMemCache
from fc_helpers import child_pythonpath, run_threads, run_with_deadline

if FASTCACHE_SKIP_REASON:
    pytest.skip(FASTCACHE_SKIP_REASON, allow_module_level=True)
if FASTCACHE_IMPORT_FAILURE:
    raise ImportError(FASTCACHE_IMPORT_FAILURE)

import django_fastcache.backend as backend  # noqa: E402
from django_fastcache import FastCache, SharedMemoryCache  # noqa: E402

KINDS = ["locmem", "fast", "shared"]
_ids = itertools.count()


@pytest.fixture(params=KINDS)
def kind(request) -> str:
    return request.param


@pytest.fixture
def new_cache(kind, tmp_path, monkeypatch):
    """new_cache(**params) -> a fresh backend of this test's kind."""
    monkeypatch.setenv(backend.SHM_DIR_ENV, str(tmp_path))
    cls = {"locmem": LocMemCache, "fast": FastCache, "shared": SharedMemoryCache}[kind]
    made = []

    def factory(**params):
        location = params.pop("LOCATION", None) or f"hostile-{next(_ids)}"
        cache = cls(location, params)
        made.append(cache)
        return cache

    yield factory
    for cache in made:
        if cache._lock.acquire(False):
            cache._lock.release()
            cache.clear()


# Objects whose __str__ / __reduce__ run code against a cache, found by token.
TARGETS: dict[str, object] = {}
LOG: list[object] = []


def _token(cache) -> str:
    token = uuid.uuid4().hex
    TARGETS[token] = cache
    return token


# --------------------------------------------------------------------------
# Item 1: the key's parts are read before str(key) runs


class SwapsOnStr:
    """A key whose str() reassigns cache.<attr>, as another thread might."""

    def __init__(self, cache, attr: str, new: object) -> None:
        self.cache, self.attr, self.new = cache, attr, new

    def __str__(self) -> str:
        setattr(self.cache, self.attr, self.new)
        return "k"


@pytest.mark.parametrize("attr", ["version", "key_prefix"])
def test_key_parts_reassigned_by_str_of_key(new_cache, attr):
    # 200,000 characters: the old text is a block of its own that is returned
    # to the system when freed, so reading it afterwards faults at once.
    big = "v" * 200_000
    params = {"VERSION": big} if attr == "version" else {"KEY_PREFIX": big}
    cache = new_cache(**params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a key over 250 characters warns
        cache.set(SwapsOnStr(cache, attr, "x"), "value", timeout=None)
    expected = f"{big}:1:k" if attr == "key_prefix" else f":{big}:k"
    assert list(cache._cache) == [expected]
    assert getattr(cache, attr) == "x"


def test_key_prefix_reassigned_by_str_of_version(new_cache):
    cache = new_cache(KEY_PREFIX="p" * 200_000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cache.set("k", 1, version=SwapsOnStr(cache, "key_prefix", "q"))
    assert list(cache._cache) == ["p" * 200_000 + ":k:k"]


class YieldingKey:
    """A key whose str() lets other threads run (as uuid.UUID's may), after
    noting the cache's version."""

    def __init__(self, cache) -> None:
        self.cache = cache
        self.seen = None

    def __str__(self) -> str:
        self.seen = self.cache.version
        time.sleep(0)
        return "k"


@pytest.mark.parametrize("kind", ["fast", "shared"])  # our stores only
def test_version_reassigned_by_another_thread(kind, new_cache):
    """One thread builds keys (in C) whose str() yields the GIL while another
    reassigns cache.version, each time to a new large text."""
    cache = new_cache()
    stop = threading.Event()

    def flip():
        for i in itertools.count():
            if stop.is_set():
                return
            cache.version = f"{i:06d}" * 25_000
            time.sleep(0)

    def use():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                for _ in range(300):
                    key = YieldingKey(cache)
                    made = cache._fc.make_key(key, None)  # built in C
                    prefix, version, name = made.split(":")
                    assert (prefix, name) == ("", "k")
                    assert version == version[:6] * 25_000  # one whole text
                    # Made with the version of the call's start, at the latest
                    # the one str() saw (a switch may come before it looks),
                    # never one assigned while str() was running.
                    assert int(version[:6]) <= int(key.seen[:6])
        finally:
            stop.set()

    assert run_threads([flip, use], timeout=60) == []


# --------------------------------------------------------------------------
# Item 4: a clock patched before the backend is imported

CLOCK_SCRIPT = """
import time
REAL = time.time
FROZEN = []

def fake_time():                 # like freezegun: one fake for every freeze
    return FROZEN[-1] if FROZEN else REAL()

time.time = fake_time            # patched before the backend is imported
import django
from django.conf import settings
settings.configure()
django.setup()
from django_fastcache import FastCache, SharedMemoryCache

for cls in (FastCache, SharedMemoryCache):
    cache = cls("clock-at-import", {})
    cache.clear()
    FROZEN.append(1_000_000.0)
    cache.set("k", "v", timeout=10)
    assert cache._expire_info[cache.make_key("k")] == 1_000_010.0, cls
    FROZEN[-1] = 1_000_009.0
    assert cache.get("k") == "v", cls
    FROZEN[-1] = 1_000_011.0
    assert cache.get("k") is None, cls       # expired by the frozen clock
    FROZEN.clear()
    time.time = REAL                 # the real clock again
    cache.set("k", "v", timeout=10)
    assert abs(cache._expire_info[cache.make_key("k")] - REAL() - 10) < 5, cls
    time.time = fake_time
print("ok")
"""


def test_clock_patched_before_import(tmp_path):
    import os
    import subprocess

    env = dict(
        os.environ,
        PYTHONPATH=child_pythonpath(),
        **{backend.SHM_DIR_ENV: str(tmp_path)},
    )
    proc = subprocess.run(
        [sys.executable, "-P", "-c", CLOCK_SCRIPT],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=str(tmp_path),
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_clock_patched_with_another_time_builtin(new_cache):
    """A patch with a builtin of the time module other than time() is a patch."""
    cache = new_cache()
    with mock.patch("time.time", time.monotonic):
        cache.set("k", 1, timeout=100)
        expiry = cache._expire_info[cache.make_key("k")]
    assert abs(expiry - (time.monotonic() + 100)) < 5


# --------------------------------------------------------------------------
# Item 5: patches made after the cache exists


def _custom_make_key(key, version=None):
    return f"custom:{key}"


@pytest.mark.parametrize("where", ["instance", "class"])
def test_make_key_patched_after_creation(new_cache, where):
    cache = new_cache()
    cache.set("a", 1)  # the fast path has been decided and used
    target = cache if where == "instance" else type(cache)
    with mock.patch.object(target, "make_key", side_effect=_custom_make_key):
        cache.set("b", 2)
        assert cache.get("b") == 2
        assert cache.get_many(["b"]) == {"b": 2}
    assert "custom:b" in list(cache._cache)
    cache.set("c", 3)  # patch gone: the default key function again
    assert cache.make_key("c") in list(cache._cache)
    assert cache.get("custom:b") is None


def test_basecache_validate_key_patched_after_creation(new_cache):
    cache = new_cache()
    cache.get("warm")
    with mock.patch.object(BaseCache, "validate_key") as validate:
        cache.set("k", 1)
        cache.get("k")
        cache.has_key("k")
    made = cache.make_key("k")
    assert [c.args[-1] for c in validate.call_args_list] == [made, made, made]
    with mock.patch.object(BaseCache, "validate_key", side_effect=ValueError("no")):
        with pytest.raises(ValueError, match="no"):
            cache.get("k")
    assert cache.get("k") == 1


def test_get_backend_timeout_patched_after_creation(new_cache):
    cache = new_cache()
    cache.set("warm", 1)
    with mock.patch.object(cache, "get_backend_timeout", return_value=12345.0):
        cache.set("k", 1)
    assert cache._expire_info[cache.make_key("k")] == 12345.0
    with mock.patch.object(type(cache), "get_backend_timeout", return_value=None):
        cache.set("k2", 1)
    assert cache._expire_info[cache.make_key("k2")] is None


def test_get_patched_on_instance_is_used_by_get_many(new_cache):
    cache = new_cache()
    cache.set_many({"a": 1, "b": 2})
    with mock.patch.object(cache, "get", wraps=cache.get) as get:
        assert cache.get_many(["a", "b"]) == {"a": 1, "b": 2}
    assert [c.args[0] for c in get.call_args_list] == ["a", "b"]
    with mock.patch.object(cache, "set", wraps=cache.set) as set_:
        cache.set_many({"c": 3})
    assert [c.args[:2] for c in set_.call_args_list] == [("c", 3)]
    with mock.patch.object(cache, "delete", wraps=cache.delete) as delete:
        cache.delete_many(["c"])
    assert [c.args[0] for c in delete.call_args_list] == ["c"]


# --------------------------------------------------------------------------
# Item 7: batch calls are LocMemCache's per-key loops


def _set_on_load(token, key, value, result):
    TARGETS[token].set(key, value)
    return result


class SetsOnUnpickle:
    """Unpickles to `result`, setting key=value in the cache as it does."""

    def __init__(self, token, key, value, result="loaded") -> None:
        self.args = (token, key, value, result)

    def __reduce__(self):
        return (_set_on_load, self.args)


class ReadsOnPickle:
    """Records cache.get(key) when pickled."""

    def __init__(self, token, key) -> None:
        self.token, self.key = token, key

    def __reduce__(self):
        LOG.append(TARGETS[self.token].get(self.key))
        return (str, ("pickled",))


def _boom():
    raise RuntimeError("cannot unpickle")


class FailsToUnpickle:
    def __reduce__(self):
        return (_boom, ())


def test_get_many_sees_writes_made_while_unpickling(new_cache):
    cache = new_cache()
    cache.set("b", "old")
    cache.set("a", SetsOnUnpickle(_token(cache), "b", "new"))
    assert cache.get_many(["a", "b"]) == {"a": "loaded", "b": "new"}


def test_set_many_pickling_sees_earlier_items(new_cache):
    cache = new_cache()
    cache.set("k1", "old")
    LOG.clear()
    cache.set_many({"k1": "new", "k2": ReadsOnPickle(_token(cache), "k1")})
    assert LOG == ["new"]
    assert cache.get_many(["k1", "k2"]) == {"k1": "new", "k2": "pickled"}


def test_get_many_stops_at_a_value_that_fails_to_unpickle(new_cache, clock):
    cache = new_cache()
    cache.set("x", "first")
    cache.set("bad", FailsToUnpickle())
    cache.set("soon", "expires", timeout=5)
    cache.set("later", "stays")
    clock.advance(10)  # "soon" has expired but is still stored
    with pytest.raises(RuntimeError, match="cannot unpickle"):
        cache.get_many(["x", "bad", "soon", "later"])
    made = cache.make_key
    # "x" and "bad" were used (most recent first); the keys after the
    # failure were never looked at: "soon" is not yet removed, "later" not moved.
    assert list(cache._cache) == [made("bad"), made("x"), made("later"), made("soon")]


def test_key_str_runs_between_lookups(new_cache):
    """get_many takes each key from the iterable only after the previous one
    was looked up, as BaseCache's loop does."""
    cache = new_cache()
    cache.set("a", 1)

    class DeletesA:
        def __str__(self):
            cache.delete("a")
            return "z"

    def keys():
        yield "a"
        yield DeletesA()
        yield "a"

    assert cache.get_many(keys()) == {"a": 1}


# --------------------------------------------------------------------------
# Item 8: set_many items that are not tuples


class ListItems(dict):
    """A mapping whose items() yields lists (any 2-item iterable unpacks)."""

    def __init__(self, pairs) -> None:
        super().__init__()
        self.pairs = pairs

    def items(self):
        return iter(self.pairs)


def test_set_many_items_as_lists(new_cache):
    cache = new_cache()
    assert cache.set_many(ListItems([["a", 1], iter(["b", 2]), "cd"])) == []
    assert cache.get_many(["a", "b", "c"]) == {"a": 1, "b": 2, "c": "d"}


@pytest.mark.parametrize(
    ("bad", "exc"),
    [
        (["x", 1, 2], ValueError),
        (["x"], ValueError),
        (7, TypeError),
        ("xyz", ValueError),
    ],
)
def test_set_many_bad_items(new_cache, bad, exc):
    cache = new_cache()
    with pytest.raises(exc) as info:
        cache.set_many(ListItems([["a", 1], bad, ["b", 2]]))
    ref = LocMemCache(f"ref-{next(_ids)}", {})
    with pytest.raises(exc) as ref_info:
        ref.set_many(ListItems([["a", 1], bad, ["b", 2]]))
    assert str(info.value) == str(ref_info.value)
    assert cache.get_many(["a", "b"]) == {"a": 1}  # items before the bad one stored


# --------------------------------------------------------------------------
# Item 9: a call uses the store it started with


def _swap_store(token, other_token):
    TARGETS[token]._cache = TARGETS[other_token]._cache
    return "swapped"


class SwapsStoreOnPickle:
    def __init__(self, token, other_token) -> None:
        self.args = (token, other_token)

    def __reduce__(self):
        _swap_store(*self.args)
        return (str, ("v",))


@pytest.mark.parametrize("kind", ["fast", "shared"])  # our stores only
def test_store_swapped_while_pickling_leaves_no_duplicate(kind, new_cache):
    cache, other = new_cache(), new_cache()
    other.set("k", "other's")
    token, other_token = _token(cache), _token(other)
    for op in ("set", "add", "set_many"):
        cache._cache = cache._cache  # its own store again (a no-op swap)
        mine = new_cache()
        cache._cache = mine._cache
        value = SwapsStoreOnPickle(token, other_token)
        if op == "set_many":
            cache.set_many({"k": value})
        else:
            getattr(cache, op)("k", value)
        assert mine.get("k") == "v", op  # stored where the call started
        assert list(other._cache).count(other.make_key("k")) == 1, op
        assert other.get("k") == "other's", op
        assert other._fc.store.check() == 0
        assert mine._fc.store.check() == 0
    assert other.delete("k") is True
    assert "k" not in [key.split(":")[-1] for key in other._cache]


@pytest.mark.parametrize("kind", ["fast", "shared"])  # our stores only
def test_store_swapped_while_waiting_for_the_lock(kind, new_cache):
    cache, other = new_cache(), new_cache()
    lock = cache._lock  # the first store's lock, kept across the swap
    store = cache._fc.store
    assert lock.acquire()
    done = threading.Event()

    def writer():
        cache.set("x", 1)
        done.set()

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    time.sleep(0.2)  # the writer now waits for the first store's lock
    cache._cache = other._cache
    lock.release()
    thread.join(10)
    assert done.is_set()
    # the first store's lock is free again, the second's was never touched
    def take_and_release() -> bool:
        took = lock.acquire(timeout=5)
        if took:
            lock.release()
        return took

    assert run_with_deadline(take_and_release, timeout=10)
    assert not other._lock.locked()
    assert [k.split(":")[-1] for k in store.keys()] == ["x"]
    assert list(other._cache) == []
