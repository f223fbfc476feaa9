"""Single-flight get_or_set: on a miss with a callable default, one caller
computes and the others wait for its result, then read it with get.

The sequence a caller runs is Django's BaseCache.get_or_set (get; on a miss
default(), add, get), only the call of default() is arbitrated:

- In one process, a claim is a _Flight in ``_flights`` keyed by (store
  identity, made key).  The first caller creates it and computes; the others
  wait on its Event (threads) or poll it with asyncio.sleep (coroutines), at
  most LOCK_TIMEOUT, then get.  A claim is removed before its Event is set, so
  a waiter that finds no value (the owner raised) claims afresh.
- Across processes (SharedMemoryCache), the process's owner also takes a
  lease: ``add(lease key, (pid, token), timeout=LOCK_TIMEOUT)`` in a companion
  segment ("<segment>.leases"), so the cache's own entries, counts and culls
  stay LocMemCache's.  Others poll (1 ms doubling to 20 ms) for the value or
  the lease's disappearance.  A lease whose pid is dead is taken over by the
  one waiter that adds the takeover marker ("t" + its token); a lease is only
  deleted by its owner while it cannot have expired, so a successor's lease
  is never deleted.

Serve-stale (``stale`` seconds > 0): the value the computing caller stores
gets a grace of ``stale`` seconds past its expiry in the table (add_stale),
during which plain gets still miss but get_stale serves it.  A caller that
misses and finds such a value tries to claim the key without waiting (the
in-process claim, then the lease): the one that gets it recomputes; every
other caller returns the stale value at once.

Hits never get here: get_or_set returns on the first get.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import os
import threading
import time
import uuid
from collections.abc import Generator
from typing import Any

_POLL_FIRST = 0.001
_POLL_MAX = 0.02
STAT_NAMES = (
    "single_flight_computations",
    "single_flight_waits",
    "single_flight_lock_timeouts",
    "single_flight_takeovers",
    "single_flight_stale_serves",
)


class _Flight:
    """One in-process claim: set when the owner is done; failed if it raised.
    owner: the thread that took it."""

    __slots__ = ("event", "failed", "owner")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.failed = False
        self.owner = threading.get_ident()


_flights: dict[tuple[int, str], _Flight] = {}
_flights_lock = threading.Lock()
# Per-process counters, per store: id(store) -> (store, counts).  The store is
# kept so that its id is never reused for another while counted.
_counters: dict[int, tuple[object, dict[str, int]]] = {}


def _after_fork_child() -> None:
    # Claims held by other threads of the parent are not held in the child:
    # those threads do not exist here and would never release them.
    global _flights_lock
    _flights_lock = threading.Lock()
    _flights.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_child)


def stats(store: object) -> dict[str, int]:
    with _flights_lock:
        entry = _counters.get(id(store))
        return dict(entry[1]) if entry else dict.fromkeys(STAT_NAMES, 0)


def reset_stats(store: object) -> None:
    with _flights_lock:
        _counters.pop(id(store), None)


def _count(store: object, name: str) -> None:
    with _flights_lock:
        entry = _counters.get(id(store))
        if entry is None:
            entry = _counters[id(store)] = (store, dict.fromkeys(STAT_NAMES, 0))
        entry[1][name] += 1


def _enter(ident: tuple[int, str]) -> tuple[_Flight, bool]:
    """The claim for ident, and whether this caller now owns it."""
    with _flights_lock:
        flight = _flights.get(ident)
        if flight is not None:
            return flight, False
        flight = _flights[ident] = _Flight()
        return flight, True


def _leave(ident: tuple[int, str], flight: _Flight, failed: bool) -> None:
    with _flights_lock:
        if _flights.get(ident) is flight:
            del _flights[ident]
    flight.failed = failed
    flight.event.set()


def _alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists
        return True
    return True


class _Lease:
    """A cross-process claim held by this process (SharedMemoryCache)."""

    __slots__ = ("leases", "key", "value", "start", "limit")

    def __init__(self, leases: Any, key: str, value: tuple[int, str],
                 limit: float) -> None:
        self.leases = leases
        self.key = key
        self.value = value
        self.start = time.monotonic()
        self.limit = limit

    def release(self) -> None:
        # Only while it cannot have expired: then no one else can hold it.
        # Later, it expires by itself within the margin.
        margin = min(0.5, self.limit / 4)
        if time.monotonic() - self.start < self.limit - margin:
            if self.leases.get(self.key) == self.value:
                self.leases.delete(self.key)


class _LeaseAttempt:
    """State of a process's owner thread polling for another process's lease."""

    __slots__ = ("cache", "store", "leases", "key", "value", "limit", "deadline",
                 "delay", "waited")

    def __init__(self, cache: Any, made: str) -> None:
        self.cache = cache
        self.store = cache._fc.store
        self.leases = cache._lease_cache()
        digest = hashlib.blake2b(made.encode("utf-8", "surrogatepass"), digest_size=20)
        self.key = "l" + digest.hexdigest()
        self.value = (os.getpid(), uuid.uuid4().hex)
        self.limit = cache._lock_timeout
        self.deadline = 0.0
        self.delay = _POLL_FIRST
        self.waited = False

    def try_claim(self) -> _Lease | None:
        """The lease if this process now holds it; else None, after arranging
        a takeover if its holder is dead."""
        if self.leases.add(self.key, self.value, timeout=self.limit):
            return _Lease(self.leases, self.key, self.value, self.limit)
        if not self.waited:
            self.waited = True
            self.deadline = time.monotonic() + self.limit
            _count(self.store, "single_flight_waits")
        return self.take_over()

    def claim_once(self) -> _Lease | None:
        """The lease if this process now holds it, taken over from a dead
        holder if need be; never waits, counts nothing (serve-stale)."""
        if self.leases.add(self.key, self.value, timeout=self.limit):
            return _Lease(self.leases, self.key, self.value, self.limit)
        return self.take_over()

    def take_over(self) -> _Lease | None:
        holder = self.leases.get(self.key)
        if (
            isinstance(holder, tuple)
            and len(holder) == 2
            and not _alive(holder[0])
            and self.leases.add("t" + str(holder[1]), 1, timeout=self.limit)
        ):
            # This waiter alone takes over the dead holder's lease.
            if self.leases.get(self.key) == holder:
                self.leases.delete(self.key)
            if self.leases.add(self.key, self.value, timeout=self.limit):
                return _Lease(self.leases, self.key, self.value, self.limit)
        return None

    def timed_out(self) -> bool:
        if time.monotonic() >= self.deadline:
            _count(self.store, "single_flight_lock_timeouts")
            return True
        return False

    def next_delay(self) -> float:
        delay = self.delay
        self.delay = min(delay * 2, _POLL_MAX)
        return delay


def _compute(cache: Any, key: Any, default: Any, timeout: Any, version: Any,
             stale: float) -> Any:
    """Django's miss sequence: default(), add, get (add_stale for a grace).

    The async driver runs it too: it is only reached when get and add (and
    aget and aadd) are the backend's own, whose coroutines call them."""
    _count(cache._fc.store, "single_flight_computations")
    value = default()
    if stale:
        cache._fc.add_stale(key, value, timeout, version, stale)
    else:
        cache.add(key, value, timeout=timeout, version=version)
    return cache.get(key, value, version=version)


def _claim_without_waiting(cache: Any, ident: tuple[int, str],
                           name: str) -> tuple[_Flight, _Lease | None] | None:
    """The in-process claim of ident and, for SharedMemoryCache, the lease of
    name (taken over from a dead holder), if this caller gets both now;
    else None (another thread or process holds them), holding nothing."""
    flight, owner = _enter(ident)
    if not owner:
        return None
    lease = None
    if cache._shared:
        try:
            lease = _LeaseAttempt(cache, name).claim_once()
        except BaseException:
            _leave(ident, flight, True)
            raise
        if lease is None:  # another process holds it
            _leave(ident, flight, False)
            return None
    return flight, lease


class _StaleClaim:
    """Serve-stale: the claim of a caller that found an expired value within
    its grace, taken without waiting, or None when another caller holds it
    (then this caller serves the stale value)."""

    __slots__ = ("ident", "flight", "lease")

    def __init__(self, ident: tuple[int, str], flight: _Flight,
                 lease: _Lease | None) -> None:
        self.ident = ident
        self.flight = flight
        self.lease = lease

    @staticmethod
    def take(cache: Any, ident: tuple[int, str], made: str) -> _StaleClaim | None:
        got = _claim_without_waiting(cache, ident, made)
        return None if got is None else _StaleClaim(ident, *got)

    def release(self, failed: bool) -> None:
        if self.lease is not None:
            self.lease.release()
        _leave(self.ident, self.flight, failed)


_NOTHING = object()

# What the core asks its driver for: ("wait", event, seconds) -> whether the
# event was set in time; ("sleep", seconds) -> None.
_WAIT = "wait"
_SLEEP = "sleep"
Step = tuple[Any, ...]


def _core(cache: Any, key: Any, default: Any, timeout: Any, version: Any,
          stale: float) -> Generator[Step, Any, Any]:
    """The miss path of get_or_set with a callable default, for both drivers:
    it yields where a caller waits (for another thread's claim, between polls
    of a lease) and returns the result.  A driver that stops early (a
    cancelled coroutine) closes it, which releases whatever it holds."""
    missing = cache._missing_key
    store = cache._fc.store
    made = cache.make_key(key, version=version)
    ident = (id(store), made)
    if stale:
        got = cache._fc.get_stale(key, _NOTHING, version)
        if got is not _NOTHING:
            value, is_stale = got
            if not is_stale:  # stored meanwhile
                return value
            claim = _StaleClaim.take(cache, ident, made)
            if claim is None:
                _count(store, "single_flight_stale_serves")
                return value
            failed = True
            try:
                result = _compute(cache, key, default, timeout, version, stale)
                failed = False
                return result
            finally:
                claim.release(failed)
    while True:
        flight, owner = _enter(ident)
        if not owner:
            _count(store, "single_flight_waits")
            if not (yield (_WAIT, flight.event, cache._lock_timeout)):
                _count(store, "single_flight_lock_timeouts")
                return _compute(cache, key, default, timeout, version, stale)
            value = cache.get(key, missing, version=version)
            if value is not missing:
                return value
            if flight.failed:
                _count(store, "single_flight_takeovers")
                continue
            # Stored already expired (timeout <= 0), or evicted: as Django.
            return _compute(cache, key, default, timeout, version, stale)
        failed = True
        lease = None
        try:
            if cache._shared:
                attempt = _LeaseAttempt(cache, made)
                while True:
                    lease = attempt.try_claim()
                    if lease is not None:
                        if attempt.waited:
                            # The holder may have stored it and released.
                            value = cache.get(key, missing, version=version)
                            if value is not missing:
                                failed = False
                                return value
                            # Its holder raised, died or outlived LOCK_TIMEOUT.
                            _count(store, "single_flight_takeovers")
                        break
                    value = cache.get(key, missing, version=version)
                    if value is not missing:
                        failed = False
                        return value
                    if attempt.timed_out():
                        break
                    yield (_SLEEP, attempt.next_delay())
            result = _compute(cache, key, default, timeout, version, stale)
            failed = False
            return result
        finally:
            if lease is not None:
                lease.release()
            _leave(ident, flight, failed)


def get_or_set(cache: Any, key: Any, default: Any, timeout: Any, version: Any,
               stale: float = 0.0) -> Any:
    """The miss path of FastCache.get_or_set: threads block on events and
    sleep between polls."""
    steps = _core(cache, key, default, timeout, version, stale)
    try:
        step = next(steps)
        while True:
            if step[0] is _WAIT:
                reply = step[1].wait(step[2])
            else:
                time.sleep(step[1])
                reply = None
            step = steps.send(reply)
    except StopIteration as done:
        return done.value
    finally:
        steps.close()


async def _wait_event(event: threading.Event, seconds: float) -> bool:
    """Whether event is set within seconds, polling without blocking the loop
    (the owner may be a thread of this process, which asyncio cannot await)."""
    deadline = time.monotonic() + seconds
    delay = _POLL_FIRST
    while not event.is_set():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(delay)
        delay = min(delay * 2, _POLL_MAX)
    return True


async def aget_or_set(cache: Any, key: Any, default: Any, timeout: Any,
                      version: Any, stale: float = 0.0) -> Any:
    """The miss path of FastCache.aget_or_set: the same core, waiting with
    asyncio.sleep so that the event loop keeps running."""
    steps = _core(cache, key, default, timeout, version, stale)
    try:
        step = next(steps)
        while True:
            if step[0] is _WAIT:
                reply = await _wait_event(step[1], step[2])
            else:
                await asyncio.sleep(step[1])
                reply = None
            step = steps.send(reply)
    except StopIteration as done:
        return done.value
    finally:
        steps.close()


# --------------------------------------------------------------------------
# Pages: one render per missing page (middleware.FetchFromCacheMiddleware)
#
# The first request to miss a page claims it and renders; requests that miss
# it meanwhile wait (polling the cache) until the page is stored, then answer
# from it.  When the claim ends without a page (a response not to be cached:
# private, an error, a cookie with Vary: Cookie), the waiters render for
# themselves, and the URL is remembered as not stored for NOSTORE_SECONDS, so
# that its requests neither wait nor claim: pages never cached are never
# serialised.

NOSTORE_SECONDS = 60.0
_NOSTORE_MAX = 10_000
_nostore: dict[tuple[int, str], float] = {}  # FastCache: ident -> until


class PageClaim:
    """The right to render one missing page (a URL's variants, per key
    prefix, language and time zone), held from the lookup that missed until
    the page is stored or found not cacheable.  The drop-ins set `stored`
    when they store it (or leave the store to the front) and release() it
    once stored; release() is idempotent (a finalizer on the request calls
    it again)."""

    __slots__ = ("cache", "name", "ident", "flight", "lease", "released", "stored")

    def __init__(self, cache: Any, name: str, ident: tuple[int, str],
                 flight: _Flight, lease: _Lease | None) -> None:
        self.cache = cache
        self.name = name
        self.ident = ident
        self.flight = flight
        self.lease = lease
        self.released = False
        self.stored = False

    def release(self) -> None:
        if self.released:
            return
        self.released = True
        try:
            if not self.stored:
                _mark_nostore(self.cache, self.ident, self.name)
        finally:
            if self.lease is not None:
                self.lease.release()
            _leave(self.ident, self.flight, not self.stored)


def _nostore_key(name: str) -> str:
    digest = hashlib.blake2b(name.encode("utf-8", "surrogatepass"), digest_size=20)
    return "n" + digest.hexdigest()


def _mark_nostore(cache: Any, ident: tuple[int, str], name: str) -> None:
    if cache._shared:
        cache._lease_cache().set(_nostore_key(name), 1, timeout=NOSTORE_SECONDS)
        return
    with _flights_lock:
        if len(_nostore) >= _NOSTORE_MAX:
            _nostore.clear()
        _nostore[ident] = time.monotonic() + NOSTORE_SECONDS


def _is_nostore(cache: Any, ident: tuple[int, str], name: str) -> bool:
    if cache._shared:
        return cache._lease_cache().get(_nostore_key(name)) is not None
    until = _nostore.get(ident)
    return until is not None and until > time.monotonic()


def _claim_page(cache: Any, ident: tuple[int, str], name: str) -> PageClaim | None:
    """The page's claim if this caller gets it now; else None."""
    got = _claim_without_waiting(cache, ident, name)
    return None if got is None else PageClaim(cache, name, ident, *got)


def _claim_held(cache: Any, ident: tuple[int, str], attempt: Any) -> bool:
    """Whether a render of the page is still in progress somewhere."""
    with _flights_lock:
        if ident in _flights:
            return True
    if attempt is None:
        return False
    holder = attempt.leases.get(attempt.key)
    return isinstance(holder, tuple) and len(holder) == 2 and _alive(holder[0])


def page_claim_or_wait(cache: Any, name: str,
                       lookup: Any) -> tuple[Any, PageClaim | None]:
    """After a page lookup missed: (None, claim) when this request is to
    render it (and release the claim once it is stored), (response, None)
    when another request's render landed while this one waited (lookup()
    found it), (None, None) when this request renders without a claim (the
    URL is not cached, the render ended without a page, or waiting reached
    LOCK_TIMEOUT).

    Waiters poll lookup() (1 ms, doubling to 20 ms), so a page stored by any
    thread or process ends the wait at its next poll."""
    store = cache._fc.store
    ident = (id(store), "page:" + name)
    if _is_nostore(cache, ident, name):
        return None, None
    claim = _claim_page(cache, ident, name)
    if claim is not None:
        # The previous holder may have stored it between this request's
        # lookup and its claim: look once more.
        try:
            response = lookup()
        except BaseException:
            claim.release()
            raise
        if response is not None:
            claim.stored = True  # (not a page that is never stored)
            claim.release()
            return response, None
        _count(store, "single_flight_computations")
        return None, claim
    with _flights_lock:
        flight = _flights.get(ident)
    if flight is not None and flight.owner == threading.get_ident():
        # This thread holds it (a request not finished yet, such as a test
        # calling process_request twice): waiting would wait for itself.
        return None, None
    _count(store, "single_flight_waits")
    attempt = _LeaseAttempt(cache, name) if cache._shared else None
    deadline = time.monotonic() + cache._lock_timeout
    delay = _POLL_FIRST
    while True:
        with _flights_lock:
            flight = _flights.get(ident)
        if flight is not None:
            flight.event.wait(delay)  # an in-process render: woken when it ends
        else:
            time.sleep(delay)
        delay = min(delay * 2, _POLL_MAX)
        # Whether the render is still going, then the lookup: a holder
        # releases only after storing, so a page stored by a render that has
        # ended is seen here.
        held = _claim_held(cache, ident, attempt)
        response = lookup()
        if response is not None:
            return response, None
        if not held:
            return None, None  # ended without a page (or its holder died)
        if time.monotonic() >= deadline:
            _count(store, "single_flight_lock_timeouts")
            return None, None


# --------------------------------------------------------------------------
# TieredCache: one computation per missing key for the whole cluster


def _l2_lock_timeout(seconds: float) -> int:
    # Memcached takes whole seconds (and 0 would mean "never expires").
    return max(1, math.ceil(seconds))


def tiered_get_or_set(cache: Any, key: Any, default: Any, timeout: Any,
                      version: Any) -> Any:
    """The miss path of TieredCache.get_or_set with a callable default.

    In a process, one caller per key goes on (the in-process claim), the
    others wait for it as in get_or_set above.  Across hosts, that caller
    adds a lock key to L2 ("fastcache-lock:" + the made key, value a token,
    expiring after LOCK_TIMEOUT): add is atomic in Redis and Memcached, so
    one caller in the cluster computes; the others poll the cache (L1 then
    L2: 1 ms doubling to 20 ms) for its value, and compute themselves when
    the lock is gone without a value (the holder raised, or died and its
    lock expired) or LOCK_TIMEOUT passed.  The holder deletes its lock only
    while it cannot have expired (it cannot be someone else's)."""
    missing = _NOTHING
    state = cache._state
    made = cache._made(key, version)
    ident = (id(state), "tiered:" + made)
    while True:
        flight, owner = _enter(ident)
        if not owner:
            _count(state, "single_flight_waits")
            if not flight.event.wait(cache._lock_timeout):
                _count(state, "single_flight_lock_timeouts")
                return _tiered_compute(cache, key, default, timeout, version)
            value = cache.get(key, missing, version=version)
            if value is not missing:
                return value
            if flight.failed:
                _count(state, "single_flight_takeovers")
                continue
            return _tiered_compute(cache, key, default, timeout, version)
        failed = True
        try:
            result = _tiered_owner(cache, key, default, timeout, version, made, state)
            failed = False
            return result
        finally:
            _leave(ident, flight, failed)


def _tiered_compute(cache: Any, key: Any, default: Any, timeout: Any,
                    version: Any) -> Any:
    _count(cache._state, "single_flight_computations")
    value = default()
    cache.add(key, value, timeout=timeout, version=version)
    return cache.get(key, value, version=version)


def _tiered_owner(cache: Any, key: Any, default: Any, timeout: Any, version: Any,
                  made: str, state: Any) -> Any:
    missing = _NOTHING
    l2 = cache._l2
    lock_key = "fastcache-lock:" + made
    token = f"{os.getpid()}:{uuid.uuid4().hex}"
    limit = cache._lock_timeout
    deadline = 0.0
    delay = _POLL_FIRST
    waited = False
    while True:
        start = time.monotonic()
        if l2.add(lock_key, token, timeout=_l2_lock_timeout(limit)):
            try:
                if waited:
                    # The previous holder may have stored it.
                    value = cache.get(key, missing, version=version)
                    if value is not missing:
                        return value
                    _count(state, "single_flight_takeovers")
                return _tiered_compute(cache, key, default, timeout, version)
            finally:
                margin = min(0.5, limit / 4)
                alive = time.monotonic() - start < limit - margin
                if alive and l2.get(lock_key) == token:
                    l2.delete(lock_key)
        if not waited:
            waited = True
            deadline = time.monotonic() + limit
            _count(state, "single_flight_waits")
        time.sleep(delay)
        delay = min(delay * 2, _POLL_MAX)
        value = cache.get(key, missing, version=version)
        if value is not missing:
            return value
        if time.monotonic() >= deadline:
            _count(state, "single_flight_lock_timeouts")
            return _tiered_compute(cache, key, default, timeout, version)
