"""Types of django_fastcache.backend (keep in sync with backend.py).

Signatures follow django-stubs' BaseCache so that a FastCache can stand
wherever a BaseCache is expected; keys may be any object whose str() is the
key (Django's default key function formats them with %s).
"""

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, ClassVar

from django.core.cache.backends.base import BaseCache

from . import _fastcache

__all__ = ["FastCache", "SharedMemoryCache", "remove_segment", "segment_path"]

KNOWN_OPTIONS: frozenset[str]
SHARED_OPTIONS: frozenset[str]
DEFAULT_MAX_BYTES: int
MIN_MAX_BYTES: int
MAX_MAX_BYTES: int
DEFAULT_LOCK_TIMEOUT: float
MAX_LOCK_TIMEOUT: float
LEASE_SUFFIX: str
SHM_DIR_ENV: str

def segment_path(location: str) -> str: ...
def remove_segment(location: str) -> bool: ...
def validate_params(params: Mapping[str, Any], known: frozenset[str] = ...) -> None: ...

class _CacheView(Mapping[str, bytes]):
    def __init__(self, store: _fastcache.Store) -> None: ...
    def __getitem__(self, key: str) -> bytes: ...
    def __iter__(self) -> Iterator[str]: ...
    def __len__(self) -> int: ...

class _ExpireInfoView(_CacheView):
    def __getitem__(self, key: str) -> float | None: ...  # type: ignore[override]

class _LockView:
    def __init__(self, store: _fastcache.Store) -> None: ...
    def locked(self) -> bool: ...
    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool: ...
    def release(self) -> None: ...
    def __enter__(self) -> bool: ...
    def __exit__(self, *exc: object) -> None: ...

class FastCache(BaseCache):
    """Drop-in replacement for django.core.cache.backends.locmem.LocMemCache."""

    pickle_protocol: ClassVar[int]
    _known_options: ClassVar[frozenset[str]]
    _fc: _fastcache.Handle
    _lock_timeout: float  # OPTIONS["LOCK_TIMEOUT"], seconds; 0 = single-flight off
    _shared: ClassVar[bool]

    def __init__(self, name: str, params: dict[str, Any]) -> None: ...
    @staticmethod
    def _open_store(name: str, params: Mapping[str, Any]) -> _fastcache.Store: ...

    # Settings read per call (properties over the C handle).
    default_timeout: float | None
    _max_entries: int
    _cull_frequency: int
    key_prefix: str
    version: int
    key_func: Callable[..., Any]

    # LocMemCache's internals, as read-only views of the table.
    @property
    def _cache(self) -> Mapping[str, bytes]: ...
    @_cache.setter
    def _cache(self, value: object) -> None: ...
    @property
    def _expire_info(self) -> Mapping[str, float | None]: ...
    @_expire_info.setter
    def _expire_info(self, value: object) -> None: ...
    @property
    def _lock(self) -> _LockView: ...

    # Counters of this LOCATION's table.
    def stats(self) -> dict[str, int]:
        """hits, misses, sets, deletes, evictions, expirations, entries, bytes (and
        segment_bytes: the shared segment's size, 0 for a per-process table; repairs:
        times a damaged shared segment was found and reset), and this process's
        single-flight get_or_set counters: single_flight_computations, _waits,
        _lock_timeouts, _takeovers, _stale_serves."""
    def reset_stats(self) -> None:
        """Zero the counters (entries and bytes are not counters)."""

    # The BaseCache API.
    def get_backend_timeout(self, timeout: float | None = ...) -> float | None: ...
    def make_key(self, key: Any, version: int | None = None) -> str: ...
    def validate_key(self, key: Any) -> None: ...
    def make_and_validate_key(self, key: Any, version: int | None = None) -> str: ...
    def add(
        self,
        key: Any,
        value: Any,
        timeout: float | None = ...,
        version: int | None = None,
    ) -> bool: ...
    async def aadd(
        self,
        key: Any,
        value: Any,
        timeout: float | None = ...,
        version: int | None = None,
    ) -> bool: ...
    def get(
        self, key: Any, default: Any | None = None, version: int | None = None
    ) -> Any: ...
    async def aget(
        self, key: Any, default: Any | None = None, version: int | None = None
    ) -> Any: ...
    def set(
        self,
        key: Any,
        value: Any,
        timeout: float | None = ...,
        version: int | None = None,
    ) -> None: ...
    async def aset(
        self,
        key: Any,
        value: Any,
        timeout: float | None = ...,
        version: int | None = None,
    ) -> None: ...
    def touch(
        self, key: Any, timeout: float | None = ..., version: int | None = None
    ) -> bool: ...
    async def atouch(
        self, key: Any, timeout: float | None = ..., version: int | None = None
    ) -> bool: ...
    def delete(self, key: Any, version: int | None = None) -> bool: ...
    async def adelete(self, key: Any, version: int | None = None) -> bool: ...
    def get_many(
        self, keys: Iterable[Any], version: int | None = None
    ) -> dict[Any, Any]: ...
    async def aget_many(
        self, keys: Iterable[Any], version: int | None = None
    ) -> dict[Any, Any]: ...
    def get_or_set(
        self,
        key: Any,
        default: Any | None,
        timeout: float | None = ...,
        version: int | None = None,
        *,
        stale: float | None = None,
    ) -> Any | None: ...
    async def aget_or_set(
        self,
        key: Any,
        default: Any | None,
        timeout: float | None = ...,
        version: int | None = None,
        *,
        stale: float | None = None,
    ) -> Any | None: ...
    def has_key(self, key: Any, version: int | None = None) -> bool: ...
    async def ahas_key(self, key: Any, version: int | None = None) -> bool: ...
    def incr(self, key: Any, delta: int = 1, version: int | None = None) -> int: ...
    async def aincr(
        self, key: Any, delta: int = 1, version: int | None = None
    ) -> int: ...
    def decr(self, key: Any, delta: int = 1, version: int | None = None) -> int: ...
    async def adecr(
        self, key: Any, delta: int = 1, version: int | None = None
    ) -> int: ...
    def __contains__(self, key: Any) -> bool: ...
    def set_many(
        self,
        data: Mapping[Any, Any],
        timeout: float | None = ...,
        version: int | None = None,
    ) -> list[Any]: ...
    async def aset_many(
        self,
        data: Mapping[Any, Any],
        timeout: float | None = ...,
        version: int | None = None,
    ) -> list[Any]: ...
    def delete_many(self, keys: Iterable[Any], version: int | None = None) -> None: ...
    async def adelete_many(
        self, keys: Iterable[Any], version: int | None = None
    ) -> None: ...
    def clear(self) -> None: ...
    async def aclear(self) -> None: ...
    def incr_version(
        self, key: Any, delta: int = 1, version: int | None = None
    ) -> int: ...
    async def aincr_version(
        self, key: Any, delta: int = 1, version: int | None = None
    ) -> int: ...
    def decr_version(
        self, key: Any, delta: int = 1, version: int | None = None
    ) -> int: ...
    async def adecr_version(
        self, key: Any, delta: int = 1, version: int | None = None
    ) -> int: ...
    def close(self, **kwargs: Any) -> None: ...
    async def aclose(self, **kwargs: Any) -> None: ...

class SharedMemoryCache(FastCache):
    """FastCache's table in a shared memory segment (OPTIONS: MAX_BYTES,
    MAX_ENTRIES, CULL_FREQUENCY, LOCK_TIMEOUT); LOCATION is a name, see
    segment_path()."""

    _segment_path: str
    def __init__(self, name: str, params: dict[str, Any]) -> None: ...
    def _lease_cache(self) -> FastCache: ...
