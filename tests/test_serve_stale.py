"""Serve-stale get_or_set (FastCache and SharedMemoryCache): during the grace
period after a value's expiry, one caller recomputes it while every other
caller gets the expired value at once; plain get/has_key/incr keep
LocMemCache's answers (an expired value is a miss).

Timeouts here are real seconds (the callers of several processes share the
clock), kept short; every wait has a deadline.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
import sys
import threading
import time

import pytest
from conftest import FASTCACHE_IMPORT_FAILURE, FASTCACHE_SKIP_REASON
from django.core.exceptions import ImproperlyConfigured

if FASTCACHE_SKIP_REASON:
    pytest.skip(FASTCACHE_SKIP_REASON, allow_module_level=True)
if FASTCACHE_IMPORT_FAILURE:
    raise ImportError(FASTCACHE_IMPORT_FAILURE)

from test_single_flight import (  # noqa: E402
    WORKER,
    Counter,
    _finish,
    _kill,
    _runs,
    child_pythonpath,
    needs_linux,
    run_threads,
)

import django_fastcache.backend as backend  # noqa: E402
from django_fastcache import (  # noqa: E402
    FastCache,
    SharedMemoryCache,
    _flight,
    remove_segment,  # noqa: E402
)

_ids = itertools.count()
TTL = 0.3  # the value's timeout in these tests: it expires quickly


@pytest.fixture
def make(request, tmp_path, monkeypatch):
    monkeypatch.setenv(backend.SHM_DIR_ENV, str(tmp_path))
    kind = getattr(request, "param", "fast")
    cls = FastCache if kind == "fast" else SharedMemoryCache
    loc = f"stale-{os.getpid()}-{next(_ids)}"

    def factory(**options):
        return cls(loc, {"OPTIONS": options} if options else {})

    factory.location = loc  # type: ignore[attr-defined]
    yield factory
    if kind == "shared":
        remove_segment(loc)


both = pytest.mark.parametrize("make", ["fast", "shared"], indirect=True)


def expire(cache, key="k", value="old", stale=60):
    """Store value through get_or_set with a grace, and let it expire."""
    assert cache.get_or_set(key, lambda: value, timeout=TTL, stale=stale) == value
    time.sleep(TTL + 0.05)
    assert cache.get(key) is None


@both
def test_plain_calls_keep_locmem_answers_during_the_grace(make):
    cache = make()
    cache.set("n", 1)
    expire(cache)
    assert cache.get("k", "default") == "default"
    assert cache.has_key("k") is False
    assert cache.touch("k", 100) is False
    with pytest.raises(ValueError, match="not found"):
        cache.incr("k")
    assert cache.get_many(["k", "n"]) == {"n": 1}
    # add treats it as expired: stores, and the stale copy is gone with it.
    assert cache.add("k", "added") is True
    assert cache.get("k") == "added"


@both
def test_a_single_caller_recomputes_at_once(make):
    cache = make()
    expire(cache)
    compute = Counter(sleep=0)
    assert cache.get_or_set("k", compute, timeout=TTL, stale=60) == "value"
    assert compute.runs == 1
    assert cache.get("k") == "value"
    assert cache.stats()["single_flight_stale_serves"] == 0


@both
def test_32_threads_one_recomputes_others_get_the_stale_value_at_once(make):
    cache = make()
    expire(cache)
    compute = Counter(sleep=0.5)
    results: list[tuple[str, float]] = []
    lock = threading.Lock()

    def call():
        t0 = time.monotonic()
        value = cache.get_or_set("k", compute, timeout=300, stale=60)
        with lock:
            results.append((value, time.monotonic() - t0))

    assert not run_threads([call] * 32)
    assert compute.runs == 1
    values = [v for v, _ in results]
    assert values.count("value") == 1 and values.count("old") == 31
    stale_waits = sorted(t for v, t in results if v == "old")
    # The computation takes 0.5 s; the others never wait for it.  (The bound
    # is loose for a loaded machine; bench_herd.py measures the real figure.)
    assert stale_waits[-1] < 0.3, stale_waits
    stats = cache.stats()
    assert stats["single_flight_stale_serves"] == 31
    assert stats["single_flight_computations"] == 2  # the seed, the refresh
    assert cache.get("k") == "value"
    assert not _flight._flights


@both
def test_async_callers_get_the_stale_value_without_waiting(make):
    cache = make()
    expire(cache)
    runs = []

    def compute():
        runs.append(1)
        time.sleep(0.3)
        return "new"

    async def main():
        async def call():
            return await cache.aget_or_set("k", compute, timeout=300, stale=60)

        # One thread recomputes; the loop's callers all get the stale value.
        owner = threading.Thread(
            target=lambda: cache.get_or_set("k", compute, timeout=300, stale=60)
        )
        owner.start()
        while not _flight._flights:
            await asyncio.sleep(0.001)
        t0 = time.monotonic()
        got = await asyncio.gather(*[call() for _ in range(20)])
        took = time.monotonic() - t0
        owner.join(5)
        return got, took

    got, took = asyncio.run(main())
    assert got == ["old"] * 20
    assert took < 0.25
    assert len(runs) == 1
    assert cache.get("k") == "new"


@both
def test_exception_in_the_refresh_reaches_its_caller_and_keeps_the_stale_value(make):
    cache = make()
    expire(cache)

    def boom():
        raise RuntimeError("refresh failed")

    with pytest.raises(RuntimeError, match="refresh failed"):
        cache.get_or_set("k", boom, timeout=300, stale=60)
    assert not _flight._flights
    # The stale value is still there to serve; the next caller refreshes.
    got = cache._fc.get_stale("k", None, None)
    assert got == ("old", True)
    assert cache.get_or_set("k", lambda: "fresh", timeout=300, stale=60) == "fresh"


@both
def test_a_plain_set_or_delete_ends_the_grace(make):
    cache = make()
    expire(cache)
    cache.set("k", "set plainly", TTL)
    time.sleep(TTL + 0.05)
    assert cache._fc.get_stale("k", None, None) is None  # gone, as LocMemCache
    expire(cache)
    assert cache.delete("k") is True
    assert cache._fc.get_stale("k", None, None) is None


@both
def test_past_the_grace_callers_wait_as_without_it(make):
    cache = make()
    expire(cache, stale=0.2)
    time.sleep(0.25)
    assert cache._fc.get_stale("k", None, None) is None
    compute = Counter(sleep=0.2)
    results: list[str] = []
    assert not run_threads(
        [lambda: results.append(cache.get_or_set("k", compute, 300, stale=60))] * 8
    )
    assert compute.runs == 1 and results == ["value"] * 8


@both
def test_stale_seconds_option_is_the_default_and_a_call_overrides_it(make):
    cache = make(STALE_SECONDS=60)
    assert cache.get_or_set("k", lambda: "old", timeout=TTL) == "old"
    time.sleep(TTL + 0.05)
    assert cache._fc.get_stale("k", None, None) == ("old", True)
    cache.get_or_set("j", lambda: "x", timeout=TTL, stale=0)
    time.sleep(TTL + 0.05)
    assert cache._fc.get_stale("j", None, None) is None


def test_never_expiring_values_have_no_grace(make):
    cache = make()
    assert cache.get_or_set("k", lambda: "v", timeout=None, stale=60) == "v"
    assert cache._fc.get_stale("k", None, None) == ("v", False)
    assert cache._expire_info[":1:k"] is None


@pytest.mark.parametrize("value", [-1, float("nan"), float("inf"), "5", True, 10**9])
def test_stale_seconds_option_is_validated(make, value):
    with pytest.raises(ImproperlyConfigured, match="STALE_SECONDS"):
        make(STALE_SECONDS=value)


@pytest.mark.parametrize("value", [-1, float("nan"), "5", True])
def test_stale_argument_is_validated(make, value):
    cache = make()
    with pytest.raises(ValueError, match="stale must be"):
        cache.get_or_set("k", lambda: 1, stale=value)
    assert cache.get("k") is None  # nothing stored


def test_lock_timeout_zero_means_no_serve_stale(make):
    cache = make(LOCK_TIMEOUT=0, STALE_SECONDS=60)
    cache.get_or_set("k", lambda: "old", timeout=TTL)
    time.sleep(TTL + 0.05)
    assert cache._fc.get_stale("k", None, None) is None  # stored without a grace


# --------------------------------------------------------------------------
# Processes (SharedMemoryCache): one refresh per host


def _spawn_stale(tmp_path, loc, start_at, sleep, hang=False):
    env = dict(os.environ, PYTHONPATH=child_pythonpath(), SF_STALE="60",
               SF_TIMEOUT="300")
    env[backend.SHM_DIR_ENV] = str(tmp_path)
    args = [sys.executable, WORKER, loc, "10", str(tmp_path / "runs"),
            str(start_at), str(sleep)] + (["hang"] if hang else [])
    return subprocess.Popen(args, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True, text=True)


@needs_linux
@pytest.mark.parametrize("make", ["shared"], indirect=True)
def test_8_processes_one_refresh_others_served_stale(make, tmp_path):
    cache = make()
    loc = make.location
    expire(cache)
    start_at = time.time() + 3.0
    procs = [_spawn_stale(tmp_path, loc, start_at, 2.0) for _ in range(8)]
    outs = _finish(procs, deadline=40)
    runs = _runs(tmp_path)
    assert len(runs) == 1
    new = f"value-{runs[0]}"
    refresher = next(o for o in outs if o["pid"] == int(runs[0]))
    assert refresher["result"] == new
    refreshed_at = refresher["started"] + refresher["took"]
    # A process that started (a loaded machine may start some late) while the
    # refresh ran was served the stale value, at once; later ones the new one.
    during = [o for o in outs
              if o is not refresher and o["started"] < refreshed_at - 0.1]
    assert during, "no process overlapped the refresh"
    assert all(o["result"] == "old" for o in during), during
    assert max(o["took"] for o in during) < 0.5
    after = [o for o in outs if o is not refresher and o not in during]
    assert all(o["result"] in ("old", new) for o in after)
    assert cache.get("k") == new


@needs_linux
@pytest.mark.parametrize("make", ["shared"], indirect=True)
def test_sigkilled_refresher_is_taken_over(make, tmp_path):
    cache = make()
    loc = make.location
    expire(cache)
    owner = _spawn_stale(tmp_path, loc, 0, 0, hang=True)
    try:
        deadline = time.monotonic() + 10
        while not _runs(tmp_path):
            assert time.monotonic() < deadline, "the refresher never started"
            time.sleep(0.01)
        # While it lives, callers are served the stale value.
        assert cache.get_or_set("k", lambda: "mine", timeout=300, stale=60) == "old"
    finally:
        _kill(owner)
    # Its lease names a dead pid: the next caller takes over and refreshes.
    assert cache.get_or_set("k", lambda: "mine", timeout=300, stale=60) == "mine"
    assert cache.get("k") == "mine"
