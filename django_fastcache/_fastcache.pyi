"""The C core of django-fastcache (csrc/fc_module.c): LocMemCache-like tables.

Arguments are positional only and every one is required: the Python backend
(django_fastcache.backend) supplies Django's defaults.
"""

from collections.abc import Callable, Iterable, Mapping
from os import PathLike
from typing import Any, final

MEMCACHE_MAX_KEY_LENGTH: int

def configure(
    *,
    default_timeout: object,
    validate_key: Callable[[Any, str], None],
    key_warning: type[Warning],
    pickle_dumps: Callable[..., bytes],
    pickle_loads: Callable[[bytes], Any],
) -> None:
    """Hand the module Django's objects; called once by django_fastcache.backend."""

def configured() -> bool:
    """Whether configure() was called."""

def _codec_encode(value: object, protocol: int = 5, /) -> bytes | None:
    """Test hook: the payload csrc/fc_codec.c stores for value, or None when the
    value would be pickled instead."""

def _codec_decode(payload: bytes, /) -> Any:
    """Test hook: a payload decoded as a get would (ValueError when damaged)."""

@final
class Store:
    """A fastcache table: in this process's heap (Store()) or a shared segment."""

    def __new__(cls) -> Store: ...
    @classmethod
    def shared(
        cls, path: str | bytes | PathLike[str] | PathLike[bytes], max_bytes: int, /
    ) -> Store:
        """The table in the segment at path, created (mode 0600) if missing."""
    def __len__(self) -> int: ...
    def keys(self) -> list[str]:
        """Made keys, most recently used first."""
    def raw(self, key: str, /) -> bytes:
        """Pickled value of a made key (KeyError if absent; no side effects)."""
    def expiry(self, key: str, /) -> float | None:
        """Expiry timestamp of a made key, or None (KeyError if absent)."""
    def contains(self, key: str, /) -> bool: ...
    def locked(self) -> bool: ...
    def acquire(self, blocking: bool, timeout: float, /) -> bool: ...
    def release(self) -> None: ...
    def stats(self) -> dict[str, int]:
        """hits, misses, sets, deletes, evictions, expirations, entries, bytes,
        segment_bytes (0 for a heap table), repairs (of a damaged segment)."""
    def reset_stats(self) -> None: ...
    def check(self) -> int:
        """Run the table invariant checker; 0 when consistent."""
    def _count(self, flag: bool, /) -> None:
        """Switch this process's counters on or off (for measuring their cost)."""
    def _ring(self) -> int:
        """This process's ring for gets without the lock (shared), or -1."""
    def _fork_reinit(self) -> None:
        """In a forked child: make the lock state this process's."""

@final
class Handle:
    """One cache backend's access to a store, with its key and timeout settings."""

    store: Store
    key_prefix: Any
    version: Any
    default_timeout: Any
    max_entries: int
    cull_frequency: int
    fast_key: bool
    fast_timeout: bool
    pickle_protocol: int

    def __new__(cls, store: Store, owner: object, /) -> Handle: ...
    def get(self, key: Any, default: Any, version: Any, /) -> Any: ...
    def set(self, key: Any, value: Any, timeout: Any, version: Any, /) -> None: ...
    def add(self, key: Any, value: Any, timeout: Any, version: Any, /) -> bool: ...
    def touch(self, key: Any, timeout: Any, version: Any, /) -> bool: ...
    def has_key(self, key: Any, version: Any, /) -> bool: ...
    def delete(self, key: Any, version: Any, /) -> bool: ...
    def incr(self, key: Any, delta: Any, version: Any, /) -> Any: ...
    def get_many(self, keys: Iterable[Any], version: Any, /) -> dict[Any, Any]: ...
    def set_many(
        self, data: Mapping[Any, Any], timeout: Any, version: Any, /
    ) -> None: ...
    def delete_many(self, keys: Iterable[Any], version: Any, /) -> None: ...
    def get_stale(self, key: Any, default: Any, version: Any, /) -> Any:
        """(value, stale): live, or expired within its grace; else default."""
    def add_stale(
        self, key: Any, value: Any, timeout: Any, version: Any, stale: float, /
    ) -> bool: ...
    def make_key(self, key: Any, version: Any, /) -> str: ...
    def clear(self) -> None: ...
    def recheck(self) -> None: ...
