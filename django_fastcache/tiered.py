"""TieredCache: a FastCache/SharedMemoryCache (L1) in front of another cache alias (L2).

This module owns the two-tier read/write paths, the per-process coherence
state (the lock, the fill generations, the counters) and the Redis
invalidation channel (one listener thread and one publisher thread per
process and channel).  It must not reach into the L1 table beyond the public
backend API, and it never hides an L2 error: an L2 that is down raises its own
exceptions (redis.exceptions.ConnectionError, pymemcache's errors...).

Keys.  TieredCache makes the final key once, with its own KEY_PREFIX, VERSION
and KEY_FUNCTION (the L1 handle does it, in C with the default key function).
That made key is used verbatim in L1, in L2 (TieredCache keeps a private
instance of the L2 alias whose key function is the identity) and in the
invalidation messages, so the three always agree.  With equal KEY_PREFIX and
VERSION, the L2 alias used directly (``caches["redis"]``) sees the same keys.

Coherence.  L2 is the source of truth; an L1 entry is a copy that lives at
most L1_TIMEOUT (less when L2's remaining lifetime is known).  Writes go to
L2, then to this process's L1, then to a queue that a publisher thread sends
to the channel, so a write never waits for the broadcast.  Every process's
listener deletes the keys other processes changed from its L1.  A copy read
from L2 is stored in L1 only if no write or invalidation of that key (a
generation per hash slot) and no flush happened since the L2 read started:
the check and the store are done under the same lock the listener applies
invalidations with, so a fill can never resurrect a value an invalidation
already removed.  When the channel is lost, L1 is flushed and bypassed until
the listener is subscribed again.

Why pub/sub and not RESP3 CLIENT TRACKING (BCAST, prefixes): Debian's
redis-server 7.0 has both, but tracking sends only key names of writes made
through Redis itself, so it cannot carry a flush from a Memcached L2 nor a
sender to skip; it needs RESP3 (or a REDIRECT connection) in the client; and
a write through another client that does not match the prefixes goes unseen.
Pub/sub messages are ours: JSON [sender token, [made keys] or null for
clear], published by any process that writes through TieredCache.

Values.  L2 serialises with its own serializer, L1 with fastcache's codec
(pickle only for what the codec declines); an L1 hit decodes once, with no
L2 bytes involved.  A fill re-encodes the object L2 decoded: L1 cannot store
another backend's bytes, whose format (Redis's int/pickle mix, pymemcache
flags) it does not own.
"""

from __future__ import annotations

import json
import math
import os
import queue
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from asgiref.sync import sync_to_async
from django.core.cache.backends.base import DEFAULT_TIMEOUT, BaseCache
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from . import _flight
from .backend import FastCache, _lock_timeout

__all__ = ["TieredCache"]

KNOWN_OPTIONS = frozenset(
    {"L2", "L1", "L1_TIMEOUT", "INVALIDATION", "CHANNEL", "LOCK_TIMEOUT"}
)
DEFAULT_L1_TIMEOUT = 5.0
DEFAULT_L1_MAX_ENTRIES = 10000
CHANNEL_PREFIX = "django_fastcache:invalidate:"
# Seconds the first cache of a channel waits at startup for its listener to
# be subscribed (L1 is bypassed until then).
STARTUP_WAIT = 1.0
# The listener pings Redis every PING_INTERVAL seconds and declares the
# connection lost when nothing (message or pong) came for PING_INTERVAL +
# PING_TIMEOUT; reconnects back off from RECONNECT_MIN to RECONNECT_MAX.
PING_INTERVAL = 1.0
PING_TIMEOUT = 1.0
RECONNECT_MIN = 0.05
RECONNECT_MAX = 2.0
SLOTS = 4096
_SLOT_MASK = SLOTS - 1
_MISSING = object()


def _options(params: Mapping[str, Any]) -> Mapping[str, Any]:
    options = params.get("OPTIONS") or {}
    if not isinstance(options, Mapping):
        raise ImproperlyConfigured(f"OPTIONS must be a dict, got {options!r}")
    return options


def validate_tiered_params(params: Mapping[str, Any]) -> None:
    """ImproperlyConfigured for TieredCache OPTIONS that cannot work."""
    options = _options(params)
    unknown = sorted(set(options) - KNOWN_OPTIONS, key=str)
    if unknown:
        raise ImproperlyConfigured(
            f"Unknown OPTIONS for TieredCache: {', '.join(map(repr, unknown))} "
            f"(known: {', '.join(sorted(KNOWN_OPTIONS))})"
        )
    l2 = options.get("L2")
    if not isinstance(l2, str) or not l2:
        raise ImproperlyConfigured(
            "TieredCache needs OPTIONS['L2'], the alias of a cache in CACHES, "
            f"got {l2!r}"
        )
    l1_timeout(params)
    l1_params(params)
    _lock_timeout(params)
    url = options.get("INVALIDATION")
    if url is not None and not (
        isinstance(url, str) and url.startswith(("redis://", "rediss://", "unix://"))
    ):
        raise ImproperlyConfigured(
            "OPTIONS['INVALIDATION'] must be a redis://, rediss:// or unix:// URL, "
            f"or None (no invalidation: staleness bounded by L1_TIMEOUT), got {url!r}"
        )
    channel = options.get("CHANNEL")
    if channel is not None and not (isinstance(channel, str) and channel):
        raise ImproperlyConfigured(
            f"OPTIONS['CHANNEL'] must be a non-empty string, got {channel!r}"
        )


def l1_timeout(params: Mapping[str, Any]) -> float:
    value = _options(params).get("L1_TIMEOUT", DEFAULT_L1_TIMEOUT)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok:
        ok = math.isfinite(value) and value > 0
    if not ok:
        raise ImproperlyConfigured(
            f"OPTIONS['L1_TIMEOUT'] must be a positive number of seconds, got {value!r}"
        )
    return float(value)


def l1_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """The L1 cache's CACHES-style entry (OPTIONS['L1']: a dict or an alias)."""
    options = _options(params)
    spec = options.get("L1")
    if spec is None:
        # One L1 for every TieredCache alias over the same L2 (with their
        # prefixes and versions they may name the same keys).
        spec = {
            "BACKEND": "django_fastcache.FastCache",
            "LOCATION": f"tiered-{options.get('L2')}",
            "OPTIONS": {"MAX_ENTRIES": DEFAULT_L1_MAX_ENTRIES},
        }
    elif isinstance(spec, str):
        from django.conf import settings

        caches = getattr(settings, "CACHES", {})
        if spec not in caches:
            raise ImproperlyConfigured(
                f"OPTIONS['L1'] names the cache alias {spec!r}, which is not in CACHES"
            )
        spec = caches[spec]
    if not isinstance(spec, Mapping):
        raise ImproperlyConfigured(
            f"OPTIONS['L1'] must be a CACHES entry (dict) or an alias, got {spec!r}"
        )
    backend = spec.get("BACKEND")
    try:
        cls = import_string(backend) if isinstance(backend, str) else None
    except ImportError:
        cls = None
    if not (isinstance(cls, type) and issubclass(cls, FastCache)):
        raise ImproperlyConfigured(
            "The L1 of a TieredCache must be a django_fastcache.FastCache or "
            f"SharedMemoryCache, got BACKEND {backend!r}"
        )
    if issubclass(cls, TieredCache):  # pragma: no cover - not a FastCache
        raise ImproperlyConfigured("The L1 of a TieredCache cannot be a TieredCache")
    return dict(spec)


def _l1_class(params: Mapping[str, Any]) -> type[FastCache]:
    return import_string(params["BACKEND"])


def _raw_class(cls: type[FastCache]) -> type[FastCache]:
    """cls with made keys used as they are (for the listener and the fills)."""

    class Raw(cls):  # type: ignore[valid-type, misc]
        def make_key(self, key: Any, version: Any = None) -> str:
            return key

        def validate_key(self, key: Any) -> None:
            pass

    Raw.__name__ = Raw.__qualname__ = f"Raw{cls.__name__}"
    return Raw


def _identity_key(key: Any, key_prefix: Any, version: Any) -> Any:
    return key


def _no_validation(key: Any) -> None:
    pass


def _redis_ttl_capable(l2: BaseCache) -> bool:
    """Whether l2 is Django's own RedisCache, whose client TieredCache may use
    to read values with their remaining lifetime (GET + PTTL, one round trip)."""
    try:
        from django.core.cache.backends.redis import RedisCache
    except ImportError:  # pragma: no cover - Django < 4.0
        return False
    cls = type(l2)
    return (
        isinstance(l2, RedisCache)
        and cls.get is RedisCache.get
        and cls.get_many is RedisCache.get_many
    )


class _State:
    """What the TieredCache instances of one process share for one channel and L1:
    the lock fills and invalidations are applied under, the generations, the
    counters, and the listener and publisher threads."""

    def __init__(self, url: str | None, channel: str, raw_l1: FastCache) -> None:
        self.url = url
        self.channel = channel
        self.raw = raw_l1
        # Reentrant: storing a value pickles it, and a value's __reduce__
        # may itself use the cache from the same thread.
        self.lock = threading.RLock()
        self.gens = [0] * SLOTS
        self.epoch = 0
        self.token = uuid.uuid4().hex
        # L1 is used only while this is True: always without a channel,
        # while subscribed with one.
        self.usable = url is None
        self.connected = threading.Event()
        self.stopped = False
        self.counters = dict.fromkeys(
            (
                "l1_hits",
                "l2_hits",
                "misses",
                "invalidations",
                "resyncs",
                "published",
                "publish_errors",
                "bypassed",
            ),
            0,
        )
        self.queue: queue.SimpleQueue[list[str] | None] = queue.SimpleQueue()
        if url is not None:
            threads = ((self._listen, "listener"), (self._publish, "publisher"))
            for target, name in threads:
                threading.Thread(
                    target=target, name=f"fastcache-tiered-{name}", daemon=True
                ).start()
            self.connected.wait(STARTUP_WAIT)

    # Generations: a fill stores only if its snapshot is still current.
    # A snapshot is taken before the L2 operation: (epoch, the key's slot
    # generation, monotonic time).  The time is taken off the copy's L1 life,
    # so that a copy never outlives L1_TIMEOUT counted from the L2 operation
    # (a thread descheduled between L2 and L1 cannot stretch it).
    def snapshot(self, made: str) -> tuple[int, int, float]:
        return self.epoch, self.gens[hash(made) & _SLOT_MASK], time.monotonic()

    def store_fill(self, made: str, snap: tuple[int, int, float], value: Any,
                   timeout: float) -> None:
        timeout -= time.monotonic() - snap[2]
        with self.lock:
            if (
                timeout > 0
                and self.usable
                and self.epoch == snap[0]
                and self.gens[hash(made) & _SLOT_MASK] == snap[1]
            ):
                self._l1_set(made, value, timeout)

    def store_write(self, made: str, snap: tuple[int, int, float], value: Any,
                    timeout: float | None) -> None:
        """After this process wrote made to L2: L1 gets the value if nothing else
        touched the key meanwhile, else loses it; timeout None deletes."""
        if timeout is not None:
            timeout -= time.monotonic() - snap[2]
            if timeout <= 0:
                timeout = None
        with self.lock:
            slot = hash(made) & _SLOT_MASK
            current = self.gens[slot]
            self.gens[slot] = current + 1
            if (
                timeout is not None
                and self.usable
                and self.epoch == snap[0]
                and current == snap[1]
            ):
                self._l1_set(made, value, timeout)
            else:
                self.raw.delete(made)

    def _l1_set(self, made: str, value: Any, timeout: float) -> None:
        """Store a copy in L1; a copy L1 cannot take (a value larger than the
        segment, an L1 error) is dropped, never an error of the caller's
        read or write: L2 has the value."""
        try:
            self.raw.set(made, value, timeout)
        except Exception:
            self.raw.delete(made)

    def drop_keys(self, keys: Iterable[str]) -> None:
        with self.lock:
            for made in keys:
                self.gens[hash(made) & _SLOT_MASK] += 1
                self.raw.delete(made)

    def flush(self, *, usable: bool | None = None) -> None:
        with self.lock:
            self.epoch += 1
            if usable is not None:
                self.usable = usable
            self.raw.clear()

    def broadcast(self, keys: list[str] | None) -> None:
        """Queue an invalidation of keys (None: everything) for the other processes."""
        if self.url is not None:
            self.queue.put(keys)

    # The channel.
    def _publish(self) -> None:
        import redis

        client = redis.Redis.from_url(
            self.url, socket_timeout=PING_INTERVAL + PING_TIMEOUT,
            socket_connect_timeout=PING_TIMEOUT,
        )
        while not self.stopped:
            batch = [self.queue.get()]
            while True:
                try:
                    batch.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            if any(item is None for item in batch):
                payload: list[Any] = [self.token, None]
            else:
                payload = [self.token, [k for item in batch for k in item or ()]]
            try:
                client.publish(self.channel, json.dumps(payload))
                self.counters["published"] += 1
            except Exception:
                # Lost: the other processes' copies expire within L1_TIMEOUT,
                # and a Redis that is down has cut their listeners too.
                self.counters["publish_errors"] += 1

    def _listen(self) -> None:
        import redis

        # RESP2: subscribed-mode replies are plain arrays read in order
        # (RESP3 would route them to push handlers).
        pool = redis.ConnectionPool.from_url(
            self.url, socket_timeout=PING_INTERVAL + PING_TIMEOUT,
            socket_connect_timeout=PING_TIMEOUT, protocol=2,
        )
        delay = RECONNECT_MIN
        while not self.stopped:
            conn = pool.make_connection()
            try:
                conn.connect()
                conn.send_command("SUBSCRIBE", self.channel)
                if not conn.can_read(PING_TIMEOUT):
                    raise TimeoutError("no reply to SUBSCRIBE")
                reply = conn.read_response()
                if not (isinstance(reply, list) and reply[:1] == [b"subscribe"]):
                    raise ConnectionError(f"unexpected reply to SUBSCRIBE: {reply!r}")
                with self.lock:
                    self.epoch += 1
                    self.usable = True
                self.connected.set()
                delay = RECONNECT_MIN
                self._receive(conn)
            except Exception:
                pass
            finally:
                conn.disconnect()
            if self.stopped:
                break
            self.connected.clear()
            if self.usable:
                # Invalidations may have been missed: L1 is flushed and
                # bypassed until the listener is subscribed again.
                self.flush(usable=False)
                self.counters["resyncs"] += 1
            time.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX)

    def _receive(self, conn: Any) -> None:
        last_heard = last_ping = time.monotonic()
        while not self.stopped:
            if conn.can_read(PING_INTERVAL / 4):
                message = conn.read_response()
                last_heard = time.monotonic()
                if (
                    isinstance(message, list)
                    and len(message) == 3
                    and message[0] == b"message"
                ):
                    self._apply(message[2])
            now = time.monotonic()
            if now - last_heard > PING_INTERVAL + PING_TIMEOUT:
                raise TimeoutError("invalidation channel silent")
            if now - last_ping >= PING_INTERVAL:
                conn.send_command("PING")
                last_ping = now

    def _apply(self, data: bytes) -> None:
        try:
            token, keys = json.loads(data)
        except (ValueError, TypeError):
            return
        if token == self.token:
            return  # this process applied its own write already
        if keys is None:
            self.flush()
            self.counters["invalidations"] += 1
        elif isinstance(keys, list):
            self.drop_keys(k for k in keys if isinstance(k, str))
            self.counters["invalidations"] += len(keys)


_states: dict[tuple[Any, ...], _State] = {}
_states_lock = threading.Lock()


def _state_for(url: str | None, channel: str, l1_cls: type[FastCache],
               l1: Mapping[str, Any]) -> _State:
    key = (url, channel, l1_cls, l1.get("LOCATION", ""))
    with _states_lock:
        state = _states.get(key)
        if state is None:
            raw = _raw_class(l1_cls)(l1.get("LOCATION", ""), dict(l1))
            state = _states[key] = _State(url, channel, raw)
        return state


def _after_fork_child() -> None:
    # The threads did not survive the fork: the child starts its own (with a
    # new token) when it first uses the cache.
    global _states_lock
    _states_lock = threading.Lock()
    for state in _states.values():
        state.stopped = True
        state.usable = False
    _states.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_child)


def _l1_life(timeout: Any, cap: float) -> float | None:
    """L1 lifetime of a value written to L2 with timeout (None: do not keep)."""
    if timeout is None:
        return cap
    if timeout <= 0:
        return None
    return min(float(timeout), cap)


class TieredCache(BaseCache):
    """A django_fastcache table (L1) in front of another cache alias (L2).

    OPTIONS: L2 (alias, required), L1 (CACHES entry or alias of a FastCache /
    SharedMemoryCache; default a per-process FastCache of 10,000 entries),
    L1_TIMEOUT (seconds an L1 copy may live, default 5), INVALIDATION (Redis
    URL of the invalidation channel, or None), CHANNEL (channel name; default
    derived from the L1 LOCATION).  Every TieredCache of a process with the
    same L1 and channel shares one L1 table, one listener and one publisher.
    """

    def __init__(self, location: str, params: dict[str, Any]) -> None:
        validate_tiered_params(params)
        options = _options(params)
        self._l1_timeout = l1_timeout(params)
        self._l2_alias = options["L2"]
        l1 = l1_params(params)
        l1_cls = _l1_class(l1)
        self._l1 = l1_cls(l1.get("LOCATION", ""), dict(l1))
        # The L1 handle's get: key made and validated in C, as FastCache.get
        # does (the handle follows key_func/key_prefix/version changes).
        self._l1_get = self._l1._fc.get
        super().__init__(params)
        channel = options.get("CHANNEL") or CHANNEL_PREFIX + str(
            l1.get("LOCATION") or "default"
        )
        self._state_args = (options.get("INVALIDATION"), channel, l1_cls, l1)
        self._state_obj = _state_for(*self._state_args)
        self._l2_instance: BaseCache | None = None
        self._lock_timeout = _lock_timeout(params)

    @property
    def _state(self) -> _State:
        state = self._state_obj
        if state.stopped:  # made before a fork: this process needs its own
            state = self._state_obj = _state_for(*self._state_args)
        return state

    # Key settings live in the L1 handle, so that an L1 get makes the key in C.
    @property
    def key_prefix(self) -> Any:
        return self._l1.key_prefix

    @key_prefix.setter
    def key_prefix(self, value: Any) -> None:
        self._l1.key_prefix = value

    @property
    def version(self) -> Any:
        return self._l1.version

    @version.setter
    def version(self, value: Any) -> None:
        self._l1.version = value

    @property
    def key_func(self) -> Any:
        return self._l1.key_func

    @key_func.setter
    def key_func(self, value: Any) -> None:
        self._l1.key_func = value

    @property
    def _l2(self) -> BaseCache:
        """This instance's own copy of the L2 alias, taking made keys verbatim."""
        l2 = self._l2_instance
        if l2 is None:
            from django.core.cache import InvalidCacheBackendError, caches

            if self._l2_alias not in caches.settings:
                raise ImproperlyConfigured(
                    f"TieredCache OPTIONS['L2'] names the cache alias "
                    f"{self._l2_alias!r}, which is not in CACHES"
                )
            try:
                l2 = caches.create_connection(self._l2_alias)
            except InvalidCacheBackendError as exc:
                raise ImproperlyConfigured(
                    f"TieredCache OPTIONS['L2'] {self._l2_alias!r}: {exc}"
                ) from exc
            if isinstance(l2, TieredCache):
                raise ImproperlyConfigured(
                    f"TieredCache OPTIONS['L2'] {self._l2_alias!r} is itself a "
                    "TieredCache"
                )
            l2.key_func = _identity_key
            if type(l2).validate_key is BaseCache.validate_key:
                # Only warnings, already given for the same made key.
                l2.validate_key = _no_validation  # type: ignore[method-assign]
            self._l2_instance = l2
            self._l2_ttl = _redis_ttl_capable(l2)
        return l2

    def _timeout(self, timeout: Any) -> Any:
        return self.default_timeout if timeout is DEFAULT_TIMEOUT else timeout

    def _fast(self) -> bool:
        return self._state.usable and type(self)._uses_l1_fast_path

    _uses_l1_fast_path = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._uses_l1_fast_path = (
            cls.make_key is BaseCache.make_key
            and cls.validate_key is BaseCache.validate_key
            and cls.make_and_validate_key is BaseCache.make_and_validate_key
        )

    def _made(self, key: Any, version: Any) -> str:
        return self.make_and_validate_key(key, version=version)

    # Reads from L2, with the remaining lifetime when L2 can tell it.
    def _fetch(self, made_keys: list[str]) -> dict[str, tuple[Any, float | None]]:
        l2 = self._l2
        if self._l2_ttl:
            client_owner = l2._cache  # type: ignore[attr-defined]
            pipe = client_owner.get_client(made_keys[0]).pipeline(transaction=False)
            pipe.mget(made_keys)
            for made in made_keys:
                pipe.pttl(made)
            values, *ttls = pipe.execute()
            loads = client_owner._serializer.loads
            return {
                made: (loads(value), None if ttl < 0 else ttl / 1000.0)
                for made, value, ttl in zip(made_keys, values, ttls, strict=True)
                if value is not None
            }
        if len(made_keys) == 1:
            value = l2.get(made_keys[0], _MISSING)
            if value is _MISSING:
                return {}
            return {made_keys[0]: (value, None)}
        return {made: (value, None) for made, value in l2.get_many(made_keys).items()}

    def _fill_life(self, ttl: float | None) -> float | None:
        if ttl is None:
            return self._l1_timeout
        if ttl <= 0:
            return None
        return min(ttl, self._l1_timeout)

    # The API.
    def get(self, key: Any, default: Any = None, version: Any = None) -> Any:
        state = self._state_obj
        # usable is False in a state inherited through fork (see _state).
        if state.usable and self._uses_l1_fast_path:
            value = self._l1_get(key, _MISSING, version)
            if value is not _MISSING:
                state.counters["l1_hits"] += 1
                return value
            made = self._l1.make_key(key, version)
        else:
            state = self._state
            made = self._made(key, version)
            if not state.usable:
                state.counters["bypassed"] += 1
        counters = state.counters
        snap = state.snapshot(made)
        found = self._fetch([made]).get(made)
        if found is None:
            counters["misses"] += 1
            return default
        counters["l2_hits"] += 1
        value, ttl = found
        life = self._fill_life(ttl)
        if life is not None and state.usable:
            state.store_fill(made, snap, value, life)
        return value

    def get_many(self, keys: Iterable[Any], version: Any = None) -> dict[Any, Any]:
        keys = list(keys)
        state = self._state
        counters = state.counters
        result: dict[Any, Any] = {}
        if self._fast():
            result = self._l1.get_many(keys, version)
            counters["l1_hits"] += len(result)
            made_of = {
                self._l1.make_key(key, version): key
                for key in keys
                if key not in result
            }
        else:
            made_of = {self._made(key, version): key for key in keys}
        if not made_of:
            return result
        snaps = {made: state.snapshot(made) for made in made_of}
        found = self._fetch(list(made_of))
        counters["l2_hits"] += len(found)
        counters["misses"] += len(made_of) - len(found)
        for made, key in made_of.items():
            hit = found.get(made)
            if hit is None:
                continue
            value, ttl = hit
            result[key] = value
            life = self._fill_life(ttl)
            if life is not None and state.usable:
                state.store_fill(made, snaps[made], value, life)
        # The order of the keys asked, as BaseCache.get_many gives it.
        return {key: result[key] for key in keys if key in result}

    def has_key(self, key: Any, version: Any = None) -> bool:
        if self._fast() and self._l1.has_key(key, version):
            self._state.counters["l1_hits"] += 1
            return True
        return self._l2.has_key(self._made(key, version))

    def set(self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT,
            version: Any = None) -> None:
        made = self._made(key, version)
        timeout = self._timeout(timeout)
        state = self._state
        snap = state.snapshot(made)
        try:
            self._l2.set(made, value, timeout)
        except BaseException:
            # L2 may or may not have it (a timeout after the write): no copy
            # of this key may outlive the doubt.
            self._invalidate([made])
            raise
        state.store_write(made, snap, value, _l1_life(timeout, self._l1_timeout))
        state.broadcast([made])

    def add(self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT,
            version: Any = None) -> bool:
        made = self._made(key, version)
        timeout = self._timeout(timeout)
        state = self._state
        snap = state.snapshot(made)
        try:
            added = self._l2.add(made, value, timeout)
        except BaseException:
            self._invalidate([made])
            raise
        if added:
            state.store_write(made, snap, value, _l1_life(timeout, self._l1_timeout))
            state.broadcast([made])
        return added

    def set_many(self, data: Mapping[Any, Any], timeout: Any = DEFAULT_TIMEOUT,
                 version: Any = None) -> list[Any]:
        made_of = {self._made(key, version): key for key in data}
        if not made_of:
            return []
        timeout = self._timeout(timeout)
        state = self._state
        snaps = {made: state.snapshot(made) for made in made_of}
        try:
            failed = set(
                self._l2.set_many(
                    {made: data[key] for made, key in made_of.items()}, timeout
                )
                or ()
            )
        except BaseException:
            self._invalidate(list(made_of))
            raise
        life = _l1_life(timeout, self._l1_timeout)
        for made, key in made_of.items():
            ok = made not in failed
            state.store_write(made, snaps[made], data[key], life if ok else None)
        state.broadcast(list(made_of))
        return [made_of[made] for made in made_of if made in failed]

    def _invalidate(self, made_keys: list[str]) -> None:
        state = self._state
        state.drop_keys(made_keys)
        state.broadcast(made_keys)

    def delete(self, key: Any, version: Any = None) -> bool:
        made = self._made(key, version)
        try:
            return bool(self._l2.delete(made))
        finally:
            self._invalidate([made])

    def delete_many(self, keys: Iterable[Any], version: Any = None) -> None:
        made = [self._made(key, version) for key in keys]
        if not made:
            return
        try:
            self._l2.delete_many(made)
        finally:
            self._invalidate(made)

    def touch(self, key: Any, timeout: Any = DEFAULT_TIMEOUT,
              version: Any = None) -> bool:
        made = self._made(key, version)
        try:
            return bool(self._l2.touch(made, self._timeout(timeout)))
        finally:
            self._invalidate([made])

    def incr(self, key: Any, delta: Any = 1, version: Any = None) -> Any:
        made = self._made(key, version)
        try:
            return self._l2.incr(made, delta)
        finally:
            self._invalidate([made])

    def decr(self, key: Any, delta: Any = 1, version: Any = None) -> Any:
        made = self._made(key, version)
        try:
            return self._l2.decr(made, delta)
        finally:
            self._invalidate([made])

    def clear(self) -> None:
        try:
            self._l2.clear()
        finally:
            self._state.flush()
            self._state.broadcast(None)

    # get_or_set computes a missing value once for the whole cluster: one
    # caller per process (the in-process claim), and across hosts the one
    # that adds a lock key to L2 (atomic there); see _flight.tiered_get_or_set.
    def get_or_set(self, key: Any, default: Any, timeout: Any = DEFAULT_TIMEOUT,
                   version: Any = None) -> Any:
        val = self.get(key, _MISSING, version=version)
        if val is not _MISSING:
            return val
        if (
            not callable(default)
            or not self._lock_timeout
            or type(self).get is not TieredCache.get
            or type(self).add is not TieredCache.add
            or "get" in self.__dict__
            or "add" in self.__dict__
        ):
            return super().get_or_set(key, default, timeout=timeout, version=version)
        return _flight.tiered_get_or_set(self, key, default, timeout, version)

    async def aget_or_set(self, key: Any, default: Any,
                          timeout: Any = DEFAULT_TIMEOUT, version: Any = None) -> Any:
        val = await self.aget(key, _MISSING, version=version)
        if val is not _MISSING:
            return val
        return await sync_to_async(self.get_or_set)(key, default, timeout, version)

    def close(self, **kwargs: Any) -> None:
        if self._l2_instance is not None:
            self._l2_instance.close(**kwargs)

    def stats(self) -> dict[str, Any]:
        """This process's counters: hits (l1_hits + l2_hits), misses (in
        neither tier), invalidations received (keys), resyncs (L1 flushed
        after the channel was lost), published messages, publish_errors,
        bypassed reads (L1 skipped while the channel was down), and the L1
        table's size (l1_entries, l1_bytes); connected is 1 while the
        invalidation listener is subscribed (always 1 without a channel)."""
        state = self._state
        counters = dict(state.counters)
        l1 = self._l1.stats()
        return {
            "hits": counters["l1_hits"] + counters["l2_hits"],
            "misses": counters["misses"],
            **counters,
            **_flight.stats(state),
            "l1_entries": l1.get("entries", 0),
            "l1_bytes": l1.get("bytes", 0),
            "connected": int(state.usable),
        }

    def reset_stats(self) -> None:
        counters = self._state.counters
        for name in counters:
            counters[name] = 0
        _flight.reset_stats(self._state)

    # Native coroutines: an L1 hit answers without leaving the event loop;
    # everything that talks to L2 runs the sync method in a thread, as
    # Django's own Redis and Memcached backends do.
    async def aget(self, key: Any, default: Any = None, version: Any = None) -> Any:
        if self._fast():
            value = self._l1.get(key, _MISSING, version)
            if value is not _MISSING:
                self._state.counters["l1_hits"] += 1
                return value
        return await sync_to_async(self.get)(key, default, version)

    async def aget_many(
        self, keys: Iterable[Any], version: Any = None
    ) -> dict[Any, Any]:
        keys = list(keys)
        if self._fast():
            found = self._l1.get_many(keys, version)
            if len(found) == len(keys):
                self._state.counters["l1_hits"] += len(found)
                return found
        return await sync_to_async(self.get_many)(keys, version)

    async def ahas_key(self, key: Any, version: Any = None) -> bool:
        if self._fast() and self._l1.has_key(key, version):
            self._state.counters["l1_hits"] += 1
            return True
        return await sync_to_async(self.has_key)(key, version)

    async def aset(self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT,
                   version: Any = None) -> None:
        await sync_to_async(self.set)(key, value, timeout, version)

    async def aadd(self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT,
                   version: Any = None) -> bool:
        return await sync_to_async(self.add)(key, value, timeout, version)

    async def aset_many(self, data: Mapping[Any, Any], timeout: Any = DEFAULT_TIMEOUT,
                        version: Any = None) -> list[Any]:
        return await sync_to_async(self.set_many)(data, timeout, version)

    async def adelete(self, key: Any, version: Any = None) -> bool:
        return await sync_to_async(self.delete)(key, version)

    async def adelete_many(self, keys: Iterable[Any], version: Any = None) -> None:
        await sync_to_async(self.delete_many)(list(keys), version)

    async def atouch(self, key: Any, timeout: Any = DEFAULT_TIMEOUT,
                     version: Any = None) -> bool:
        return await sync_to_async(self.touch)(key, timeout, version)

    async def aincr(self, key: Any, delta: Any = 1, version: Any = None) -> Any:
        return await sync_to_async(self.incr)(key, delta, version)

    async def adecr(self, key: Any, delta: Any = 1, version: Any = None) -> Any:
        return await sync_to_async(self.decr)(key, delta, version)

    async def aclear(self) -> None:
        await sync_to_async(self.clear)()

    async def aclose(self, **kwargs: Any) -> None:
        await sync_to_async(self.close)(**kwargs)
