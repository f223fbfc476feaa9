"""Single-flight get_or_set (FastCache and SharedMemoryCache): on a miss with
a callable default one caller computes, the others wait for its result.

Every test has a hard deadline (threads joined with timeouts, processes
killed when late).  SharedMemoryCache segments live in tmp_path
(DJANGO_FASTCACHE_SHM_DIR), under a LOCATION unique to the test.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from unittest import mock

import pytest
from conftest import FASTCACHE_IMPORT_FAILURE, FASTCACHE_SKIP_REASON
from django.core.exceptions import ImproperlyConfigured

if FASTCACHE_SKIP_REASON:
    pytest.skip(FASTCACHE_SKIP_REASON, allow_module_level=True)
if FASTCACHE_IMPORT_FAILURE:
    raise ImportError(FASTCACHE_IMPORT_FAILURE)

from django.core.cache.backends.locmem import LocMemCache  # noqa: E402

import django_fastcache.backend as backend  # noqa: E402
from django_fastcache import (  # noqa: E402
    FastCache,
    SharedMemoryCache,
    _flight,  # noqa: E402
    remove_segment,
    segment_path,
)

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "single_flight_worker.py")
from fc_helpers import child_pythonpath  # noqa: E402

LINUX = sys.platform == "linux" and hasattr(os, "fork")
needs_linux = pytest.mark.skipif(not LINUX, reason="SharedMemoryCache needs Linux")
_ids = itertools.count()
DEADLINE = 10.0


@pytest.fixture
def shm_dir(tmp_path, monkeypatch):
    monkeypatch.setenv(backend.SHM_DIR_ENV, str(tmp_path))
    locations: list[str] = []
    yield tmp_path, locations
    for loc in locations:
        remove_segment(loc)


@pytest.fixture(params=["fast", "shared"])
def make(request, shm_dir):
    """make(**options) -> a new cache of the kind under test (same LOCATION
    for every call within a test)."""
    if request.param == "shared" and not LINUX:
        pytest.skip("SharedMemoryCache needs Linux")
    cls = FastCache if request.param == "fast" else SharedMemoryCache
    loc = f"sf-{os.getpid()}-{next(_ids)}"
    shm_dir[1].append(loc)

    def factory(**options):
        return cls(loc, {"OPTIONS": options} if options else {})

    return factory


def run_threads(targets, deadline=DEADLINE):
    errors: list[BaseException] = []

    def wrap(fn):
        def run():
            try:
                fn()
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        return run

    threads = [threading.Thread(target=wrap(fn), daemon=True) for fn in targets]
    for t in threads:
        t.start()
    end = time.monotonic() + deadline
    for t in threads:
        t.join(max(0.0, end - time.monotonic()))
    assert not any(t.is_alive() for t in threads), "threads missed the deadline"
    return errors


class Counter:
    """A callable default that counts its runs."""

    def __init__(self, sleep=0.2, fail_first=False, unique=False):
        self.sleep = sleep
        self.fail_first = fail_first
        self.unique = unique
        self.runs = 0
        self.lock = threading.Lock()

    def __call__(self):
        with self.lock:
            self.runs += 1
            run = self.runs
        time.sleep(self.sleep)
        if self.fail_first and run == 1:
            raise RuntimeError("first run fails")
        return f"value-{run}" if self.unique else "value"


# --------------------------------------------------------------------------
# Threads


def test_32_threads_compute_once(make):
    cache = make()
    compute = Counter(sleep=0.2)
    results = []
    start = time.monotonic()
    errors = run_threads(
        [lambda: results.append(cache.get_or_set("k", compute))] * 32
    )
    assert not errors
    assert compute.runs == 1
    assert results == ["value"] * 32
    assert time.monotonic() - start < 2.0
    stats = cache.stats()
    assert stats["single_flight_computations"] == 1
    assert stats["single_flight_waits"] >= 1
    assert stats["single_flight_lock_timeouts"] == 0
    # The claim is gone: a later miss computes again.
    cache.delete("k")
    assert cache.get_or_set("k", compute) == "value" and compute.runs == 2
    assert not _flight._flights


def test_hits_do_not_claim(make):
    cache = make()
    cache.set("k", 1)
    with mock.patch.object(_flight, "get_or_set") as flight:
        assert cache.get_or_set("k", lambda: 2) == 1
        assert cache.get_or_set("other", 3) == 3  # non-callable: no claim
    flight.assert_not_called()


def test_exception_reaches_caller_and_one_waiter_takes_over(make):
    cache = make()
    compute = Counter(sleep=0.2, fail_first=True)
    results, raised = [], []

    def call():
        try:
            results.append(cache.get_or_set("k", compute))
        except RuntimeError as exc:
            raised.append(exc)

    first = threading.Thread(target=call, daemon=True)
    first.start()
    time.sleep(0.05)  # the first caller owns the claim
    errors = run_threads([call] * 8)
    first.join(DEADLINE)
    assert not errors and not first.is_alive()
    assert len(raised) == 1
    assert compute.runs == 2  # the owner's failed run and one takeover
    assert results == ["value"] * 8
    assert cache.stats()["single_flight_takeovers"] >= 1
    assert not _flight._flights


def test_callable_longer_than_lock_timeout(make):
    cache = make(LOCK_TIMEOUT=0.3)
    compute = Counter(sleep=0.8, unique=True)
    results = []
    start = time.monotonic()
    first = threading.Thread(
        target=lambda: results.append(cache.get_or_set("k", compute)), daemon=True
    )
    first.start()
    time.sleep(0.05)
    errors = run_threads(
        [lambda: results.append(cache.get_or_set("k", compute))] * 3
    )
    first.join(DEADLINE)
    assert not errors
    # The waiters gave up after 0.3 s and computed themselves; the owner's
    # value was added first, and everyone returns what the cache holds.
    assert compute.runs == 4
    assert len(set(results)) == 1 and results[0] == cache.get("k")
    assert time.monotonic() - start < 2.5
    assert cache.stats()["single_flight_lock_timeouts"] == 3


def test_lock_timeout_zero_turns_it_off(make):
    cache = make(LOCK_TIMEOUT=0)
    # Each run waits for the others (at most 5 s): all 4 callers are inside
    # the callable at once, which only a cache without single-flight allows
    # (whatever the machine's load does to the threads' start).
    together = threading.Barrier(4)
    runs = []

    def compute():
        runs.append(1)
        try:
            together.wait(5)
        except threading.BrokenBarrierError:
            pass
        return "value"

    run_threads([lambda: cache.get_or_set("k", compute)] * 4)
    assert len(runs) == 4 and not together.broken


@pytest.mark.parametrize(
    "value", [-1, "10", True, float("nan"), float("inf"), None, 10**6]
)
def test_lock_timeout_is_validated(value):
    with pytest.raises(ImproperlyConfigured, match="LOCK_TIMEOUT"):
        FastCache("sf-bad", {"OPTIONS": {"LOCK_TIMEOUT": value}})


def test_lock_timeout_is_a_known_option(shm_dir):
    assert "LOCK_TIMEOUT" in backend.KNOWN_OPTIONS
    assert "LOCK_TIMEOUT" in backend.SHARED_OPTIONS
    assert FastCache("sf-ok", {"OPTIONS": {"LOCK_TIMEOUT": 2.5}})._lock_timeout == 2.5
    assert FastCache("sf-ok", {})._lock_timeout == backend.DEFAULT_LOCK_TIMEOUT


def test_reset_stats_zeroes_the_counters(make):
    cache = make()
    cache.get_or_set("k", lambda: 1)
    assert cache.stats()["single_flight_computations"] == 1
    cache.reset_stats()
    assert {k: v for k, v in cache.stats().items() if k.startswith("single")} == (
        dict.fromkeys(_flight.STAT_NAMES, 0)
    )


# --------------------------------------------------------------------------
# Single callers: exactly LocMemCache's get_or_set


def _sequence(cache):
    out = []
    calls = []

    def compute(value):
        def f():
            calls.append(value)
            return value

        return f

    out.append(cache.get_or_set("a", compute(1)))
    out.append(cache.get_or_set("a", compute(2)))
    out.append(cache.get_or_set("v", compute("v2"), version=2))
    out.append(cache.get("v"))
    out.append(cache.get("v", version=2))
    out.append(cache.get_or_set("z", compute("zero"), timeout=0))
    out.append(cache.get("z", "gone"))
    out.append(cache.get_or_set("n", compute(None)))
    out.append(cache.has_key("n"))
    out.append(cache.get_or_set("p", compute("p"), timeout=None))
    out.append(cache._expire_info.get(cache.make_key("p")))
    out.append(cache.get_or_set("d", "plain"))
    out.append(cache.get_or_set("d", "other"))
    out.append(cache.get_or_set("neg", compute("neg"), timeout=-5))
    out.append(cache.get_or_set(7, compute([1, 2])))
    out.append(sorted(cache._cache))
    out.append(calls)
    return out


def test_single_caller_matches_locmem(make):
    assert _sequence(make()) == _sequence(LocMemCache(f"sf-ref-{next(_ids)}", {}))


def test_single_caller_async_matches_locmem(make):
    async def seq(cache):
        calls = []

        def f():
            calls.append(1)
            return "x"

        return [
            await cache.aget_or_set("a", f),
            await cache.aget_or_set("a", f),
            await cache.aget_or_set("b", f, version=3),
            await cache.aget_or_set("z", f, timeout=0),
            await cache.aget_or_set("c", "plain"),
            sorted(cache._cache),
            calls,
        ]

    ours = asyncio.run(asyncio.wait_for(seq(make()), DEADLINE))
    ref = asyncio.run(seq(LocMemCache(f"sf-ref-{next(_ids)}", {})))
    assert ours == ref


def test_overridden_get_or_add_are_honoured(make, shm_dir):
    base = type(make())

    class Sub(base):
        def get(self, key, default=None, version=None):
            seen.append(("get", key))
            return super().get(key, default, version)

    seen: list = []
    loc = f"sf-sub-{next(_ids)}"
    shm_dir[1].append(loc)
    sub = Sub(loc, {})
    with mock.patch.object(_flight, "get_or_set") as flight:
        assert sub.get_or_set("k", lambda: 5) == 5
    flight.assert_not_called()
    assert seen == [("get", "k"), ("get", "k")]

    cache = make()
    with mock.patch.object(cache, "add", return_value=False) as add:
        assert cache.get_or_set("r", lambda: "default") == "default"
    add.assert_called_once()
    assert cache.get("r") is None


# --------------------------------------------------------------------------
# Async


def test_async_waiters_do_not_block_the_loop(make):
    cache = make()
    compute = Counter(sleep=0.3)
    owner = threading.Thread(target=lambda: cache.get_or_set("k", compute), daemon=True)
    owner.start()
    time.sleep(0.05)

    async def main():
        ticks = 0
        done = asyncio.Event()

        async def heartbeat():
            nonlocal ticks
            while not done.is_set():
                ticks += 1
                await asyncio.sleep(0.01)

        beat = asyncio.create_task(heartbeat())
        results = await asyncio.gather(
            *(cache.aget_or_set("k", compute) for _ in range(8))
        )
        done.set()
        await beat
        return results, ticks

    results, ticks = asyncio.run(asyncio.wait_for(main(), DEADLINE))
    owner.join(DEADLINE)
    assert results == ["value"] * 8
    assert compute.runs == 1
    assert ticks >= 5  # the loop kept running while the tasks waited


def test_async_exception_and_takeover(make):
    cache = make()
    compute = Counter(sleep=0.2, fail_first=True)
    raised = []

    def first():
        try:
            cache.get_or_set("k", compute)
        except RuntimeError as exc:
            raised.append(exc)

    owner = threading.Thread(target=first, daemon=True)
    owner.start()
    time.sleep(0.05)

    async def main():
        return await asyncio.gather(
            *(cache.aget_or_set("k", compute) for _ in range(4)),
            return_exceptions=True,
        )

    results = asyncio.run(asyncio.wait_for(main(), DEADLINE))
    owner.join(DEADLINE)
    assert len(raised) == 1
    assert results == ["value"] * 4
    assert compute.runs == 2


# --------------------------------------------------------------------------
# fork


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_claims_are_not_inherited_by_a_forked_child():
    cache = FastCache(f"sf-fork-{next(_ids)}", {})
    release = threading.Event()

    def slow():
        release.wait(DEADLINE)
        return "parent"

    owner = threading.Thread(target=lambda: cache.get_or_set("k", slow), daemon=True)
    owner.start()
    end = time.monotonic() + DEADLINE
    while not _flight._flights and time.monotonic() < end:
        time.sleep(0.005)
    assert _flight._flights
    pid = os.fork()
    if pid == 0:  # child: the parent's claim is not held here
        code = 1
        try:
            start = time.monotonic()
            ok = cache.get_or_set("k", lambda: "child") == "child"
            code = 0 if ok and time.monotonic() - start < 1.0 else 2
        finally:
            os._exit(code)
    try:
        deadline = time.monotonic() + DEADLINE
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                pytest.fail("forked child hung on an inherited claim")
            time.sleep(0.01)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        release.set()
        owner.join(DEADLINE)
    assert cache.get("k") == "parent"


# --------------------------------------------------------------------------
# Processes (SharedMemoryCache)


def _spawn(tmp_path, loc, lock_timeout, start_at, sleep, hang=False):
    env = dict(os.environ, PYTHONPATH=child_pythonpath())
    env[backend.SHM_DIR_ENV] = str(tmp_path)
    args = [sys.executable, WORKER, loc, str(lock_timeout),
            str(tmp_path / "runs"), str(start_at), str(sleep)]
    if hang:
        args.append("hang")
    return subprocess.Popen(
        args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        start_new_session=True, text=True,
    )


def _finish(procs, deadline=DEADLINE):
    end = time.monotonic() + deadline
    outs = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=max(0.1, end - time.monotonic()))
            assert p.returncode == 0, err
            outs.append(json.loads(out))
    finally:
        for p in procs:
            if p.poll() is None:
                _kill(p)
    return outs


def _kill(proc):
    """SIGKILL a worker (its session) and reap it, closing its pipes."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=DEADLINE)


def _runs(tmp_path):
    try:
        return (tmp_path / "runs").read_text().split()
    except FileNotFoundError:
        return []


@needs_linux
def test_8_processes_compute_once(shm_dir):
    tmp_path, locations = shm_dir
    loc = f"sf-procs-{os.getpid()}-{next(_ids)}"
    locations.append(loc)
    start_at = time.time() + 2.0
    procs = [_spawn(tmp_path, loc, 10, start_at, 0.3) for _ in range(8)]
    outs = _finish(procs)
    runs = _runs(tmp_path)
    assert len(runs) == 1
    assert {o["result"] for o in outs} == {f"value-{runs[0]}"}
    # The leases live beside the segment, not in it.
    cache = SharedMemoryCache(loc, {})
    assert list(cache._cache) == [":1:k"]
    assert os.path.exists(segment_path(loc) + backend.LEASE_SUFFIX)
    assert remove_segment(loc)
    assert not os.path.exists(segment_path(loc) + backend.LEASE_SUFFIX)


@needs_linux
def test_sigkilled_owner_is_taken_over(shm_dir):
    tmp_path, locations = shm_dir
    loc = f"sf-kill-{os.getpid()}-{next(_ids)}"
    locations.append(loc)
    owner = _spawn(tmp_path, loc, 2, 0, 0, hang=True)
    try:
        end = time.monotonic() + DEADLINE
        while not _runs(tmp_path):
            assert time.monotonic() < end and owner.poll() is None, owner.stderr
            time.sleep(0.01)
        cache = SharedMemoryCache(loc, {"OPTIONS": {"LOCK_TIMEOUT": 2}})
        results = []
        waiter = threading.Thread(
            target=lambda: results.append(cache.get_or_set("k", lambda: "mine")),
            daemon=True,
        )
        waiter.start()
        time.sleep(0.3)
        assert waiter.is_alive()  # waiting for the live owner
        killed = time.monotonic()
        _kill(owner)  # reaped: its pid is gone
        waiter.join(DEADLINE)
        assert results == ["mine"]
        assert time.monotonic() - killed < 1.5  # well within LOCK_TIMEOUT
        assert cache.stats()["single_flight_takeovers"] == 1
    finally:
        _kill(owner)


@needs_linux
def test_hung_owner_process_bounded_by_lock_timeout(shm_dir):
    tmp_path, locations = shm_dir
    loc = f"sf-hung-{os.getpid()}-{next(_ids)}"
    locations.append(loc)
    owner = _spawn(tmp_path, loc, 1, 0, 0, hang=True)
    try:
        end = time.monotonic() + DEADLINE
        while not _runs(tmp_path):
            assert time.monotonic() < end and owner.poll() is None, owner.stderr
            time.sleep(0.01)
        cache = SharedMemoryCache(loc, {"OPTIONS": {"LOCK_TIMEOUT": 1}})
        start = time.monotonic()
        assert cache.get_or_set("k", lambda: "mine") == "mine"
        assert 0.9 < time.monotonic() - start < 3.0
        # Its lease expired after LOCK_TIMEOUT: taken over, as from a dead one.
        assert cache.stats()["single_flight_takeovers"] == 1
    finally:
        _kill(owner)


@needs_linux
def test_cancelled_coroutine_polling_a_lease_releases_its_claim(shm_dir):
    # The coroutine owns this process's claim and polls another process's
    # lease; cancelling it must release the claim (the core's finally runs
    # when the driver closes it), so a later caller is not left waiting.
    tmp_path, locations = shm_dir
    loc = f"sf-cancel-{os.getpid()}-{next(_ids)}"
    locations.append(loc)
    owner = _spawn(tmp_path, loc, 5, 0, 0, hang=True)
    try:
        end = time.monotonic() + DEADLINE
        while not _runs(tmp_path):
            assert time.monotonic() < end and owner.poll() is None, owner.stderr
            time.sleep(0.01)
        cache = SharedMemoryCache(loc, {"OPTIONS": {"LOCK_TIMEOUT": 5}})

        async def main():
            task = asyncio.ensure_future(cache.aget_or_set("k", lambda: "mine"))
            await asyncio.sleep(0.2)
            assert not task.done() and _flight._flights  # polling the lease
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        asyncio.run(main())
        assert not _flight._flights
    finally:
        _kill(owner)
    # The dead owner's lease is taken over at once.
    assert cache.get_or_set("k", lambda: "mine") == "mine"
