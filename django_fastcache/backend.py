"""Django cache backends over the _fastcache C table.

The classes stay Python subclasses of BaseCache with plain ``def`` methods, so
Django (and projects) can patch and introspect them exactly as they do
LocMemCache.  Each hot method is one call into the C handle, which builds and
validates the key, takes the table lock once, and encodes/decodes the value
outside the lock.  A project that customises KEY_FUNCTION, or a subclass that
overrides make_key/validate_key/get_backend_timeout, or a test that patches
any of them (on the instance, the class or BaseCache, at any time), still gets
its own code: the handle notices at the next call and calls back into Python.
"""

from __future__ import annotations

import math
import os
import pickle
import re
import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from django.core.cache.backends.base import (
    DEFAULT_TIMEOUT,
    BaseCache,
    CacheKeyWarning,
    default_key_func,
)
from django.core.exceptions import ImproperlyConfigured

from . import _fastcache, _flight

__all__ = ["FastCache", "SharedMemoryCache", "remove_segment", "segment_path"]

_fastcache.configure(
    default_timeout=DEFAULT_TIMEOUT,
    validate_key=BaseCache.validate_key,
    key_warning=CacheKeyWarning,
    pickle_dumps=pickle.dumps,
    pickle_loads=pickle.loads,
)

# Stores are keyed by LOCATION, like LocMemCache's module-level dicts: every
# backend instance with the same LOCATION in this process shares one table.
# FastCache's private tables (by LOCATION) and SharedMemoryCache's segments
# (by segment path) have separate registries, so that a LOCATION spelt like
# a segment path never hands one kind's table to the other.  One lock guards
# both.
_stores: dict[str, _fastcache.Store] = {}
_segments: dict[str, _fastcache.Store] = {}
_stores_lock = threading.Lock()

KNOWN_OPTIONS = frozenset(
    {"MAX_ENTRIES", "CULL_FREQUENCY", "LOCK_TIMEOUT", "STALE_SECONDS"}
)
SHARED_OPTIONS = KNOWN_OPTIONS | {"MAX_BYTES"}
DEFAULT_MAX_BYTES = 64 * 2**20
MIN_MAX_BYTES = 2**20
MAX_MAX_BYTES = 2**46
# Seconds a get_or_set waits for another caller computing the same key before
# computing itself (and a SharedMemoryCache lease's life).  Long enough for
# the expensive computations single-flight is for, and well under the 30 s
# worker timeout of gunicorn (and uWSGI harakiri settings of that order), so
# that a waiter whose owner hangs still has time to compute and answer.
DEFAULT_LOCK_TIMEOUT = 10.0
MAX_LOCK_TIMEOUT = 86400.0
# Seconds an expired value of get_or_set is kept and served to the callers
# that do not recompute it (serve-stale); 0: never.
DEFAULT_STALE_SECONDS = 0.0
MAX_STALE_SECONDS = 366 * 86400.0
LEASE_SUFFIX = ".leases"
SHM_DIR_ENV = "DJANGO_FASTCACHE_SHM_DIR"
_LOCATION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def _store_for(name: str) -> _fastcache.Store:
    with _stores_lock:
        store = _stores.get(name)
        if store is None:
            store = _stores[name] = _fastcache.Store()
        return store


# fork takes no table lock: tables are only touched with the GIL held, so
# none is ever forked half-written, and a fork that waited for table locks
# could deadlock (two processes forking, each holding one of two segments'
# locks; a fork inside `with cache._lock:`).  The child settles who holds
# each lock on its first use of the store (_fork_reinit, done here at once
# for the registered ones; see store_after_fork in fc_store.c).  The
# registry lock is held across fork, so that no registry change or segment
# creation is half done (holders never wait for a table lock).
def _before_fork() -> None:
    _stores_lock.acquire()


def _after_fork_parent() -> None:
    _stores_lock.release()


def _after_fork_child() -> None:
    global _stores_lock
    _stores_lock = threading.Lock()
    for store in [*_stores.values(), *_segments.values()]:
        store._fork_reinit()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before_fork,
        after_in_parent=_after_fork_parent,
        after_in_child=_after_fork_child,
    )


def segment_path(location: str) -> str:
    """The file of a SharedMemoryCache LOCATION (a name, not a path).

    Segments live in /dev/shm (or $DJANGO_FASTCACHE_SHM_DIR) and are named
    after the user, so two users of a host never share or clash.
    """
    name = location or "default"
    if not isinstance(name, str) or not _LOCATION_RE.fullmatch(name):
        raise ImproperlyConfigured(
            "SharedMemoryCache LOCATION must be a name of 1-100 letters, digits, "
            f"'.', '_' or '-' starting with a letter or digit, got {location!r}"
        )
    directory = os.environ.get(SHM_DIR_ENV) or "/dev/shm"
    return os.path.join(directory, f"django_fastcache.{os.geteuid()}.{name}")


def remove_segment(location: str) -> bool:
    """Delete a SharedMemoryCache segment; True if there was one.

    Processes that have it mapped keep using their (now nameless) copy until
    they restart; new processes create a fresh segment.
    """
    path = segment_path(location)
    with _stores_lock:
        _segments.pop(path, None)
        _segments.pop(path + LEASE_SUFFIX, None)
        _lease_caches.pop(path + LEASE_SUFFIX, None)
    try:
        os.unlink(path + LEASE_SUFFIX)
    except FileNotFoundError:
        pass
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True


def _shared_store_for(path: str, max_bytes: int) -> _fastcache.Store:
    with _stores_lock:
        store = _segments.get(path)
        if store is None:
            try:
                store = _fastcache.Store.shared(path, max_bytes)
            except OSError as exc:
                raise ImproperlyConfigured(
                    f"SharedMemoryCache cannot use {path}: {exc}"
                ) from exc
            _segments[path] = store
        return store


def _int_option(params: Mapping[str, Any], name: str, default: int) -> None:
    options = params.get("OPTIONS") or {}
    lower = name.lower()
    if lower in params:
        value, where = params[lower], lower
    elif name in options:
        value, where = options[name], f"OPTIONS['{name}']"
    else:
        return
    if isinstance(value, bool):
        ok = False
    else:
        try:
            number = int(value)
            ok = number >= 0
        except (TypeError, ValueError):
            ok = False
    if not ok:
        raise ImproperlyConfigured(
            f"{where} must be a non-negative integer, got {value!r}"
        )


def _seconds(value: Any, maximum: float) -> float | None:
    """value as seconds in [0, maximum], or None when it is not one."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    number = float(value)
    return number if math.isfinite(number) and 0 <= number <= maximum else None


def _seconds_option(params: Mapping[str, Any], name: str, default: float,
                    maximum: float, zero: str) -> float:
    """OPTIONS[name] as seconds in [0, maximum]; ImproperlyConfigured if not."""
    options = params.get("OPTIONS") or {}
    value = options.get(name, default)
    number = _seconds(value, maximum)
    if number is None:
        raise ImproperlyConfigured(
            f"OPTIONS['{name}'] must be a number of seconds between 0 "
            f"({zero}) and {maximum:g}, got {value!r}"
        )
    return number


def _lock_timeout(params: Mapping[str, Any]) -> float:
    """OPTIONS["LOCK_TIMEOUT"]: seconds, 0 turns single-flight off."""
    return _seconds_option(params, "LOCK_TIMEOUT", DEFAULT_LOCK_TIMEOUT,
                           MAX_LOCK_TIMEOUT, "single-flight off")


def _stale_seconds(params: Mapping[str, Any]) -> float:
    """OPTIONS["STALE_SECONDS"]: get_or_set's default serve-stale grace."""
    return _seconds_option(params, "STALE_SECONDS", DEFAULT_STALE_SECONDS,
                           MAX_STALE_SECONDS, "no serve-stale")


def validate_params(
    params: Mapping[str, Any], known: frozenset[str] = KNOWN_OPTIONS
) -> None:
    """Reject settings that LocMemCache would silently replace by defaults."""
    options = params.get("OPTIONS") or {}
    if not isinstance(options, Mapping):
        raise ImproperlyConfigured(f"OPTIONS must be a dict, got {options!r}")
    unknown = sorted(set(options) - known, key=str)
    if unknown:
        names = ", ".join(map(repr, unknown))
        raise ImproperlyConfigured(
            f"Unknown OPTIONS for django_fastcache: {names} "
            f"(known: {', '.join(sorted(known))})"
        )
    _int_option(params, "MAX_ENTRIES", 300)
    _int_option(params, "CULL_FREQUENCY", 3)
    _lock_timeout(params)
    _stale_seconds(params)
    if "MAX_BYTES" in known:
        _int_option(params, "MAX_BYTES", DEFAULT_MAX_BYTES)
        max_bytes = _max_bytes(params)
        if not MIN_MAX_BYTES <= max_bytes <= MAX_MAX_BYTES:
            raise ImproperlyConfigured(
                f"OPTIONS['MAX_BYTES'] must be between {MIN_MAX_BYTES} and "
                f"{MAX_MAX_BYTES}, got {max_bytes!r}"
            )
    elif "max_bytes" in params:
        raise ImproperlyConfigured(f"{cls_name(known)} has no max_bytes setting")


def cls_name(known: frozenset[str]) -> str:
    return "SharedMemoryCache" if "MAX_BYTES" in known else "FastCache"


def _max_bytes(params: Mapping[str, Any]) -> int:
    """MAX_BYTES as BaseCache reads MAX_ENTRIES: a top-level max_bytes, else
    OPTIONS["MAX_BYTES"], else the default."""
    options = params.get("OPTIONS") or {}
    return int(params.get("max_bytes", options.get("MAX_BYTES", DEFAULT_MAX_BYTES)))


class _CacheView(Mapping[str, bytes]):
    """Read-only view of a store: made key -> pickled value, most recent first.

    Mirrors LocMemCache's ``_cache`` OrderedDict for code that lists keys or
    inspects raw values.  Reading it neither expires entries nor moves them.
    """

    __slots__ = ("_store",)

    def __init__(self, store: _fastcache.Store) -> None:
        self._store = store

    def __getitem__(self, key: str) -> bytes:
        return self._store.raw(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._store.keys())

    def __len__(self) -> int:
        return len(self._store)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self._store.contains(key)

    def __repr__(self) -> str:
        return f"<fastcache view of {len(self)} entries>"


class _ExpireInfoView(_CacheView):
    """Read-only view: made key -> expiry timestamp (float) or None."""

    __slots__ = ()

    def __getitem__(self, key: str) -> float | None:  # type: ignore[override]
        return self._store.expiry(key)


class _LockView:
    """The table lock, with threading.Lock's interface (LocMemCache._lock).

    A SharedMemoryCache's lock can only be released by the thread that
    acquired it (RuntimeError otherwise; see Store.release).
    """

    __slots__ = ("_store",)

    def __init__(self, store: _fastcache.Store) -> None:
        self._store = store

    def locked(self) -> bool:
        return self._store.locked()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        if timeout != -1:
            # A fresh threading.Lock checks the arguments (and, being free,
            # never waits), so that bad ones raise exactly its errors, whose
            # texts differ between Python versions.
            threading.Lock().acquire(blocking, timeout)
        return self._store.acquire(blocking, timeout)

    def release(self) -> None:
        self._store.release()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _store_of(value: object, attr: str) -> _fastcache.Store:
    if isinstance(value, _CacheView):
        return value._store
    raise TypeError(
        f"{attr} of a fastcache backend can only be replaced by another fastcache "
        f"backend's {attr} (to share its store), not by {type(value).__name__}"
    )


class FastCache(BaseCache):
    """Drop-in replacement for django.core.cache.backends.locmem.LocMemCache."""

    pickle_protocol = pickle.HIGHEST_PROTOCOL
    _known_options = KNOWN_OPTIONS

    @staticmethod
    def _open_store(name: str, params: Mapping[str, Any]) -> _fastcache.Store:
        return _store_for(name)

    def __init__(self, name: str, params: dict[str, Any]) -> None:
        validate_params(params, self._known_options)
        self._fc = _fastcache.Handle(self._open_store(name, params), self)
        self._lock_timeout = _lock_timeout(params)
        self._stale_seconds = _stale_seconds(params)
        self._key_function = default_key_func
        super().__init__(params)
        self._fc.pickle_protocol = self.pickle_protocol
        self._refresh_fast_paths()

    def _refresh_fast_paths(self) -> None:
        # Called by the C handle whenever this class or a base class has
        # changed since it last decided (a patch of BaseCache.validate_key,
        # of FastCache.make_key...), and by __setattr__/__delattr__ below for
        # instance patches: keys and expiry are computed in C only while
        # every method they stand for is Django's own.
        cls = type(self)
        patched = _FAST_PATH_METHODS.intersection(self.__dict__)
        self._fc.fast_key = (
            self._key_function is default_key_func
            and not patched - {"get_backend_timeout"}
            and cls.make_key is _BASE_MAKE_KEY
            and cls.validate_key is _BASE_VALIDATE_KEY
            and cls.make_and_validate_key is _BASE_MAKE_AND_VALIDATE_KEY
        )
        self._fc.fast_timeout = (
            "get_backend_timeout" not in patched
            and cls.get_backend_timeout is _BASE_GET_BACKEND_TIMEOUT
        )

    def __setattr__(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)
        if name in _WATCHED_ATTRIBUTES and "_fc" in self.__dict__:
            self._fc.recheck()

    def __delattr__(self, name: str) -> None:
        object.__delattr__(self, name)
        if name in _WATCHED_ATTRIBUTES and "_fc" in self.__dict__:
            self._fc.recheck()

    # Attributes that BaseCache.__init__ assigns and that Django's tests and
    # projects read or reassign at run time live in the C handle.
    @property
    def default_timeout(self) -> int | None:
        return self._fc.default_timeout

    @default_timeout.setter
    def default_timeout(self, value: int | None) -> None:
        self._fc.default_timeout = value

    @property
    def _max_entries(self) -> int:
        return self._fc.max_entries

    @_max_entries.setter
    def _max_entries(self, value: int) -> None:
        self._fc.max_entries = value

    @property
    def _cull_frequency(self) -> int:
        return self._fc.cull_frequency

    @_cull_frequency.setter
    def _cull_frequency(self, value: int) -> None:
        self._fc.cull_frequency = value

    @property
    def key_prefix(self) -> Any:
        return self._fc.key_prefix

    @key_prefix.setter
    def key_prefix(self, value: Any) -> None:
        self._fc.key_prefix = value

    @property
    def version(self) -> Any:
        return self._fc.version

    @version.setter
    def version(self, value: Any) -> None:
        self._fc.version = value

    @property
    def key_func(self) -> Any:
        return self._key_function

    @key_func.setter
    def key_func(self, value: Any) -> None:
        self._key_function = value
        if "_fc" in self.__dict__:
            self._refresh_fast_paths()

    # LocMemCache compatibility views.
    @property
    def _cache(self) -> Mapping[str, bytes]:
        return _CacheView(self._fc.store)

    @_cache.setter
    def _cache(self, value: object) -> None:
        self._fc.store = _store_of(value, "_cache")

    @property
    def _expire_info(self) -> Mapping[str, float | None]:
        return _ExpireInfoView(self._fc.store)

    @_expire_info.setter
    def _expire_info(self, value: object) -> None:
        self._fc.store = _store_of(value, "_expire_info")

    @property
    def _lock(self) -> _LockView:
        return _LockView(self._fc.store)

    # The API.  Each is one call into C on the fast path.
    def add(self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT,
            version: Any = None) -> bool:
        return self._fc.add(key, value, timeout, version)

    def get(self, key: Any, default: Any = None, version: Any = None) -> Any:
        return self._fc.get(key, default, version)

    def set(self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT,
            version: Any = None) -> None:
        self._fc.set(key, value, timeout, version)

    def touch(self, key: Any, timeout: Any = DEFAULT_TIMEOUT,
              version: Any = None) -> bool:
        return self._fc.touch(key, timeout, version)

    def incr(self, key: Any, delta: Any = 1, version: Any = None) -> Any:
        return self._fc.incr(key, delta, version)

    def has_key(self, key: Any, version: Any = None) -> bool:
        return self._fc.has_key(key, version)

    def delete(self, key: Any, version: Any = None) -> bool:
        return self._fc.delete(key, version)

    def clear(self) -> None:
        self._fc.clear()

    def stats(self) -> dict[str, int]:
        """Counters of this LOCATION's table since creation or reset_stats().

        hits/misses count lookups (get, get_many, has_key, incr); evictions
        count entries removed by culling; expirations count expired entries
        removed when found; repairs count the times a damaged shared segment
        was found and reset (always 0 for FastCache).  entries and bytes
        (keys + values) are current.
        """
        store = self._fc.store
        return {**store.stats(), **_flight.stats(store)}

    def reset_stats(self) -> None:
        """Zero the counters (entries and bytes are not counters)."""
        store = self._fc.store
        store.reset_stats()
        _flight.reset_stats(store)

    # get_or_set is Django's sequence (get; on a miss default(), add, get);
    # on a miss with a callable default, one caller per key runs default()
    # while the others wait for its result (see _flight).  Hits return after
    # the first get, as in BaseCache.
    _shared = False

    def _stale_for(self, stale: Any) -> float:
        if stale is None:
            return self._stale_seconds
        number = _seconds(stale, MAX_STALE_SECONDS)
        if number is None:
            raise ValueError(
                "stale must be a number of seconds between 0 and "
                f"{MAX_STALE_SECONDS:g}, got {stale!r}"
            )
        return number

    def get_or_set(self, key: Any, default: Any, timeout: Any = DEFAULT_TIMEOUT,
                   version: Any = None, *, stale: float | None = None) -> Any:
        val = self.get(key, self._missing_key, version=version)
        if val is not self._missing_key:
            return val
        grace = self._stale_for(stale)
        if (
            not callable(default)
            or not self._lock_timeout
            or type(self).get is not _GET
            or type(self).add is not _ADD
            or "get" in self.__dict__
            or "add" in self.__dict__
        ):
            if callable(default):
                default = default()
            self.add(key, default, timeout=timeout, version=version)
            return self.get(key, default, version=version)
        return _flight.get_or_set(self, key, default, timeout, version, grace)

    async def aget_or_set(self, key: Any, default: Any,
                          timeout: Any = DEFAULT_TIMEOUT,
                          version: Any = None, *, stale: float | None = None) -> Any:
        val = await self.aget(key, self._missing_key, version=version)
        if val is not self._missing_key:
            return val
        grace = self._stale_for(stale)
        if (
            not callable(default)
            or not self._lock_timeout
            or type(self).aget is not _AGET
            or type(self).aadd is not _AADD
            or type(self).get is not _GET
            or type(self).add is not _ADD
            or not _NO_INSTANCE_PATCH.isdisjoint(self.__dict__)
        ):
            if callable(default):
                default = default()
            await self.aadd(key, default, timeout=timeout, version=version)
            return await self.aget(key, default, version=version)
        return await _flight.aget_or_set(self, key, default, timeout, version, grace)

    # Batches are BaseCache's loops over get/set/delete, run in C one key at a
    # time; a subclass or a patch (on the class or the instance) of the
    # single-key method sends them through BaseCache's own loop instead.
    def get_many(self, keys: Iterable[Any], version: Any = None) -> dict[Any, Any]:
        if type(self).get is not _GET or "get" in self.__dict__:
            return BaseCache.get_many(self, keys, version=version)
        return self._fc.get_many(keys, version)

    def set_many(self, data: Mapping[Any, Any], timeout: Any = DEFAULT_TIMEOUT,
                 version: Any = None) -> list[Any]:
        if type(self).set is not _SET or "set" in self.__dict__:
            return BaseCache.set_many(self, data, timeout=timeout, version=version)
        self._fc.set_many(data, timeout, version)
        return []

    def delete_many(self, keys: Iterable[Any], version: Any = None) -> None:
        if type(self).delete is not _DELETE or "delete" in self.__dict__:
            return BaseCache.delete_many(self, keys, version=version)
        self._fc.delete_many(keys, version)

    # Native coroutines: an in-memory table never blocks, so there is no thread
    # hop.  They call the sync methods, as LocMemCache's do (through
    # sync_to_async), so subclass overrides are honoured the same way.  The
    # composite ones (aget_many, ahas_key, aincr, aget_or_set...) are
    # BaseCache's, built on these, exactly as for LocMemCache.
    async def aadd(self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT,
                   version: Any = None) -> bool:
        return self.add(key, value, timeout, version)

    async def aget(self, key: Any, default: Any = None, version: Any = None) -> Any:
        return self.get(key, default, version)

    async def aset(self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT,
                   version: Any = None) -> None:
        self.set(key, value, timeout, version)

    async def atouch(self, key: Any, timeout: Any = DEFAULT_TIMEOUT,
                     version: Any = None) -> bool:
        return self.touch(key, timeout, version)

    async def adelete(self, key: Any, version: Any = None) -> bool:
        return self.delete(key, version)

    async def aclear(self) -> None:
        self.clear()

    # Since Django 6.1, BaseCache's composite async methods call the sync
    # method (through a thread) when a backend overrides it, as LocMemCache
    # does for has_key and incr; before, they are built on aget/aset.  These
    # keep whichever semantics the installed Django gives LocMemCache, minus
    # the thread hop.
    async def aget_many(
        self, keys: Iterable[Any], version: Any = None
    ) -> dict[Any, Any]:
        if _ASYNC_DELEGATES["get_many"]:
            return self.get_many(keys, version=version)
        return await BaseCache.aget_many(self, keys, version=version)

    async def aset_many(self, data: Mapping[Any, Any], timeout: Any = DEFAULT_TIMEOUT,
                        version: Any = None) -> list[Any]:
        if _ASYNC_DELEGATES["set_many"]:
            return self.set_many(data, timeout=timeout, version=version)
        return await BaseCache.aset_many(self, data, timeout=timeout, version=version)

    async def adelete_many(self, keys: Iterable[Any], version: Any = None) -> None:
        if _ASYNC_DELEGATES["delete_many"]:
            return self.delete_many(keys, version=version)
        return await BaseCache.adelete_many(self, keys, version=version)

    async def ahas_key(self, key: Any, version: Any = None) -> bool:
        if _ASYNC_DELEGATES["has_key"]:
            return self.has_key(key, version=version)
        return await BaseCache.ahas_key(self, key, version=version)

    async def aincr(self, key: Any, delta: Any = 1, version: Any = None) -> Any:
        if _ASYNC_DELEGATES["incr"]:
            return self.incr(key, delta=delta, version=version)
        return await BaseCache.aincr(self, key, delta=delta, version=version)

    async def aclose(self, **kwargs: Any) -> None:
        if _ASYNC_DELEGATES["close"]:
            self.close(**kwargs)


def _async_delegates(name: str) -> bool:
    """Whether the installed BaseCache's a<name> calls the sync <name>."""
    code = getattr(BaseCache, "a" + name).__code__
    return "sync_to_async" in code.co_names


_ASYNC_DELEGATES = {
    name: _async_delegates(name)
    for name in ("get_many", "set_many", "delete_many", "has_key", "incr", "close")
}
_GET = FastCache.get
_ADD = FastCache.add
_AGET = FastCache.aget
_AADD = FastCache.aadd
_NO_INSTANCE_PATCH = frozenset({"get", "add", "aget", "aadd"})
_BASE_MAKE_KEY = BaseCache.make_key
_BASE_VALIDATE_KEY = BaseCache.validate_key
_BASE_MAKE_AND_VALIDATE_KEY = BaseCache.make_and_validate_key
_BASE_GET_BACKEND_TIMEOUT = BaseCache.get_backend_timeout
_FAST_PATH_METHODS = frozenset(
    {"make_key", "validate_key", "make_and_validate_key", "get_backend_timeout"}
)
_WATCHED_ATTRIBUTES = _FAST_PATH_METHODS | {"__class__"}
_SET = FastCache.set
_DELETE = FastCache.delete


class SharedMemoryCache(FastCache):
    """FastCache's table in a shared memory segment: one cache for every
    process of this user on the host that uses the same LOCATION.

    OPTIONS: MAX_BYTES (segment size, fixed when the segment is created;
    default 64 MiB), MAX_ENTRIES and CULL_FREQUENCY as for LocMemCache.  When
    MAX_BYTES is exhausted before MAX_ENTRIES, least recently used entries are
    evicted to make room; a single value that can never fit raises ValueError.
    """

    _known_options = SHARED_OPTIONS
    _shared = True

    @staticmethod
    def _open_store(name: str, params: Mapping[str, Any]) -> _fastcache.Store:
        return _shared_store_for(segment_path(name), _max_bytes(params))

    def __init__(self, name: str, params: dict[str, Any]) -> None:
        super().__init__(name, params)
        self._segment_path = segment_path(name)

    def _lease_cache(self) -> FastCache:
        """The companion segment of get_or_set's cross-process leases."""
        path = self._segment_path + LEASE_SUFFIX
        leases = _lease_caches.get(path)
        if leases is None:
            leases = _lease_caches.setdefault(
                path,
                _LeaseCache(path, {"OPTIONS": {"MAX_ENTRIES": 4096}}),
            )
        return leases


class _LeaseCache(FastCache):
    """get_or_set leases of one SharedMemoryCache segment ("<path>.leases",
    1 MiB): kept apart so that the cache's entries, counts and culls are
    unchanged by them."""

    _known_options = SHARED_OPTIONS

    @staticmethod
    def _open_store(name: str, params: Mapping[str, Any]) -> _fastcache.Store:
        return _shared_store_for(name, MIN_MAX_BYTES)


_lease_caches: dict[str, FastCache] = {}
