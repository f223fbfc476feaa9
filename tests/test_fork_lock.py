"""The table lock around fork, across threads and across processes.

- Two processes, each with two SharedMemoryCaches used in opposite orders,
  forking at the same time while threads hammer the caches: no fork may hang
  (a fork must not lock shared segments at all), and every child gets
  working caches.
- A fork inside ``with cache._lock:`` neither hangs nor breaks the child: as
  with LocMemCache's threading.Lock, the child's lock is still held inside
  the block and released by leaving it.
- ``cache._lock`` behaves like threading.Lock where it can (arguments,
  errors, release from another thread); where a SharedMemoryCache cannot
  (its mutex belongs to the thread that took it), release from another
  thread raises instead of silently leaving the lock held.
- FastCache and SharedMemoryCache keep separate registries: a FastCache
  LOCATION that happens to equal a segment path never hands its private
  table to a SharedMemoryCache (or the reverse).

Scenarios that fork run in a subprocess (fork_lock_scenario.py) with a
deadline; the whole process group is killed when it passes, which fails the
test instead of hanging pytest.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
import uuid

import pytest
from conftest import FASTCACHE_IMPORT_FAILURE, FASTCACHE_SKIP_REASON
from django.core.cache.backends import locmem
from django.core.cache.backends.locmem import LocMemCache

if FASTCACHE_SKIP_REASON:
    pytest.skip(FASTCACHE_SKIP_REASON, allow_module_level=True)
if FASTCACHE_IMPORT_FAILURE:
    raise ImportError(FASTCACHE_IMPORT_FAILURE)

from fc_helpers import child_pythonpath, outcome, run_with_deadline  # noqa: E402

import django_fastcache.backend as backend  # noqa: E402
from django_fastcache import (  # noqa: E402
    FastCache,
    SharedMemoryCache,
    remove_segment,
    segment_path,
)

HERE = os.path.dirname(os.path.abspath(__file__))
SCENARIO = os.path.join(HERE, "fork_lock_scenario.py")
MiB = 2**20

pytestmark = pytest.mark.skipif(
    not hasattr(os, "fork") or sys.platform != "linux",
    reason="needs os.fork and Linux (robust process-shared mutexes)",
)


@pytest.fixture
def shm_dir(tmp_path, monkeypatch):
    """A private segment directory for this test (and its subprocesses)."""
    monkeypatch.setenv(backend.SHM_DIR_ENV, str(tmp_path))
    made = []
    yield made
    for location in made:
        remove_segment(location)


def unique(tag: str) -> str:
    return f"{tag}-{uuid.uuid4().hex[:10]}"


def scenario_env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=child_pythonpath())


def start_scenario(mode: str, cfg: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, SCENARIO, mode, json.dumps(cfg)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=scenario_env(),
        start_new_session=True,  # its forked children are in its process group
    )


def finish(procs: list[subprocess.Popen], timeout: float) -> list[dict]:
    """Each scenario's JSON summary; fails (killing every process group) when
    one is still running at the deadline: a fork that hung."""
    deadline = time.monotonic() + timeout
    outputs = []
    try:
        for proc in procs:
            try:
                out, err = proc.communicate(
                    timeout=max(0.1, deadline - time.monotonic())
                )
            except subprocess.TimeoutExpired:
                pytest.fail(
                    f"a forking process hung (still running after {timeout} s): "
                    "deadlock at fork"
                )
            outputs.append((proc.returncode, out, err))
    finally:
        for proc in procs:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(10)
    results = []
    for code, out, err in outputs:
        lines = out.strip().splitlines()
        assert lines, (code, out, err[-4000:])
        result = json.loads(lines[-1])
        assert code == 0, (result, err[-4000:])
        results.append(result)
    return results


# --------------------------------------------------------------------------
# Two processes, two segments, opposite orders


FORKS_PER_PROCESS = 200


def test_two_processes_forking_with_two_segments_in_opposite_orders(
    shm_dir, tmp_path
):
    a, b = unique("opp-a"), unique("opp-b")
    shm_dir.extend([a, b])
    sync = tmp_path / "sync"
    sync.mkdir()
    common = {"forks": FORKS_PER_PROCESS, "child_timeout": 20, "sync_dir": str(sync)}
    procs = [
        start_scenario("opposite", {**common, "order": [a, b], "tag": "ab"}),
        start_scenario("opposite", {**common, "order": [b, a], "tag": "ba"}),
    ]
    results = finish(procs, timeout=90)
    for result in results:
        assert result["forks"] == FORKS_PER_PROCESS, result
        assert result["ok"] == FORKS_PER_PROCESS, result
        assert result["last"] == FORKS_PER_PROCESS - 1, result  # a child's write
        assert result["hammered"] > 0, result
        assert result["threads_alive"] == 0, result
    # Both segments are consistent and usable here as well.
    for location in (a, b):
        cache = SharedMemoryCache(location, {"OPTIONS": {"MAX_BYTES": MiB}})
        assert cache._fc.store.check() == 0
        assert not cache._lock.locked()
        cache.set("after", 1)
        assert cache.get("after") == 1
    shared_b = SharedMemoryCache(b, {"OPTIONS": {"MAX_BYTES": MiB}})
    assert shared_b.get("ab-last") == FORKS_PER_PROCESS - 1
    assert shared_b.get("ba-child") is not None


# --------------------------------------------------------------------------
# fork inside `with cache._lock:`


FORKS_IN_WITH = {"locmem": 50, "fastcache": 200, "shared": 200}


@pytest.mark.parametrize("impl", ["locmem", "fastcache", "shared"])
def test_fork_inside_with_lock(impl, shm_dir):
    # locmem is the reference (fewer forks: it only shows the semantics): its
    # threading.Lock is copied held into the child, and leaving the `with`
    # block there releases it.
    forks = FORKS_IN_WITH[impl]
    location = unique(f"with-{impl}")
    if impl == "shared":
        shm_dir.append(location)
    proc = start_scenario(
        "with_lock",
        {
            "impl": impl,
            "location": location,
            "forks": forks,
            "child_timeout": 20,
        },
    )
    (result,) = finish([proc], timeout=90)
    assert result["ok"] == forks, result
    assert result["parent_ok"] == forks, result
    assert result["locked_after"] is False, result
    assert result["thread_alive"] is False, result


def test_fork_settles_unregistered_stores_on_first_use(shm_dir):
    proc = start_scenario("lazy", {"forks": 50, "child_timeout": 20})
    (result,) = finish([proc], timeout=90)
    assert result["ok"] == 50, result
    assert result["locked_after"] == [False] * 4, result


def test_fork_holds_never_pass_to_a_new_thread_with_the_holders_ident(shm_dir):
    proc = start_scenario("reuse", {"child_timeout": 30})
    (result,) = finish([proc], timeout=90)
    assert result["ok"] == 1, result
    if not result["reused"]:
        pytest.skip("this libc gave the child's thread a new ident: nothing to check")


# --------------------------------------------------------------------------
# cache._lock against threading.Lock


@pytest.fixture(params=["locmem", "fastcache", "shared"])
def lock_cache(request, shm_dir):
    location = unique(f"lock-{request.param}")
    if request.param == "locmem":
        cache = LocMemCache(location, {})
    elif request.param == "fastcache":
        cache = FastCache(location, {})
    else:
        shm_dir.append(location)
        cache = SharedMemoryCache(location, {"OPTIONS": {"MAX_BYTES": MiB}})
    cache.kind = request.param
    yield cache
    if request.param == "locmem":
        for d in (locmem._caches, locmem._expire_info, locmem._locks):
            d.pop(location, None)
    elif request.param == "fastcache":
        with backend._stores_lock:
            backend._stores.pop(location, None)


class Holder:
    """A thread that holds some locks until told to let go."""

    def __init__(self, *locks) -> None:
        self.locks = locks
        self.took = threading.Event()
        self.go = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        for lock in self.locks:
            lock.acquire()
        self.took.set()
        self.go.wait(30)
        for lock in self.locks:
            try:
                lock.release()
            except RuntimeError:
                pass

    def __enter__(self) -> Holder:
        self.thread.start()
        assert self.took.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.go.set()
        self.thread.join(10)
        assert not self.thread.is_alive()


INF, NAN = math.inf, math.nan
ACQUIRE_ARGS = [
    ((), {"timeout": INF}),
    ((True, INF), {}),
    ((True, -INF), {}),
    ((True, NAN), {}),
    ((True, 1e300), {}),
    ((True, threading.TIMEOUT_MAX * 2), {}),
    ((True, 2**70), {}),
    ((False, 1), {}),
    ((), {"blocking": False, "timeout": 0.01}),
    ((True, -2), {}),
    ((True, -0.5), {}),
    ((True, "1"), {}),
    ((True, None), {}),
    ((False,), {}),
    ((False, -1), {}),
    ((True, 0), {}),
    ((True, 0.01), {}),
    ((), {"timeout": 0.02}),
]


def _ids(case) -> str:
    args, kwargs = case
    return ",".join([*map(repr, args), *(f"{k}={v!r}" for k, v in kwargs.items())])


@pytest.mark.parametrize("case", ACQUIRE_ARGS, ids=list(map(_ids, ACQUIRE_ARGS)))
def test_acquire_arguments_match_threading_lock_when_held(lock_cache, case):
    args, kwargs = case
    ref = threading.Lock()
    with Holder(ref, lock_cache._lock):
        expected = outcome(lambda: ref.acquire(*args, **kwargs))
        got = run_with_deadline(
            lambda: outcome(lambda: lock_cache._lock.acquire(*args, **kwargs)), 10
        )
    assert got == expected


@pytest.mark.parametrize("case", ACQUIRE_ARGS, ids=list(map(_ids, ACQUIRE_ARGS)))
def test_acquire_arguments_match_threading_lock_when_free(lock_cache, case):
    args, kwargs = case
    ref = threading.Lock()
    expected = outcome(lambda: ref.acquire(*args, **kwargs))

    def attempt():  # in one thread: a SharedMemoryCache lock is its taker's
        got = outcome(lambda: lock_cache._lock.acquire(*args, **kwargs))
        held = lock_cache._lock.locked()
        if ref.locked():
            lock_cache._lock.release()
        return got, held

    got, held = run_with_deadline(attempt, 10)
    assert got == expected
    assert held == ref.locked()
    assert not lock_cache._lock.locked()


def test_release_of_an_unlocked_lock(lock_cache):
    expected = outcome(threading.Lock().release)
    assert expected[:3] == ("raise", RuntimeError, "release unlocked lock")
    assert outcome(lock_cache._lock.release) == expected


def test_release_from_another_thread(lock_cache):
    lock = lock_cache._lock
    assert lock.acquire()
    box: dict[str, object] = {}

    def other():
        box["release"] = outcome(lock.release)

    run_with_deadline(other, 10)
    if lock_cache.kind != "shared":
        # threading.Lock: any thread may release it.
        assert box["release"][:2] == ("return", type(None)), box
        assert not lock.locked()
    else:
        # The segment's mutex belongs to the thread that took it: another
        # thread's release raises, and the lock stays held (by its owner).
        kind, exc_type, message, _ = box["release"]
        assert (kind, exc_type) == ("raise", RuntimeError), box
        assert "another thread" in message, message
        assert lock.locked()
        assert run_with_deadline(lambda: lock.acquire(False), 10) is False
        lock.release()
        assert not lock.locked()
    # Writes from other threads (and so from other processes) go on.
    run_with_deadline(lambda: lock_cache.set("after", 1), 10)
    assert lock_cache.get("after") == 1


def test_shared_lock_released_by_its_owner_after_a_refused_release(shm_dir):
    location = unique("lock-owner")
    shm_dir.append(location)
    cache = SharedMemoryCache(location, {"OPTIONS": {"MAX_BYTES": MiB}})
    cache.set("k", 1)
    errors = []
    with Holder(cache._lock):
        try:
            cache._lock.release()
        except RuntimeError as exc:
            errors.append(str(exc))
        assert cache._lock.locked()
    # The holder released it normally on leaving.
    assert len(errors) == 1, errors
    assert not cache._lock.locked()
    assert run_with_deadline(lambda: cache.get("k"), 10) == 1


# --------------------------------------------------------------------------
# Registries


def test_fastcache_location_equal_to_a_segment_path_is_not_a_segment(shm_dir):
    location = unique("reg")
    shm_dir.append(location)
    path = segment_path(location)
    private = FastCache(path, {})
    private.set("private", 1)
    shared = SharedMemoryCache(location, {"OPTIONS": {"MAX_BYTES": MiB}})
    assert os.path.isfile(path)
    assert shared.stats()["segment_bytes"] == os.path.getsize(path)
    assert shared.get("private") is None
    shared.set("shared", 2)
    assert private.get("shared") is None
    assert private.get("private") == 1
    # The segment is the one other processes open.
    code = (
        "import os, sys\n"
        "from django.conf import settings\n"
        "settings.configure()\n"
        "from django_fastcache import SharedMemoryCache\n"
        f"c = SharedMemoryCache({location!r}, {{'OPTIONS': {{'MAX_BYTES': {MiB}}}}})\n"
        "assert c.get('shared') == 2, c.get('shared')\n"
        "assert c.get('private') is None\n"
        "c.set('from-peer', os.getpid())\n"
        "print(os.getpid())\n"
    )
    proc = subprocess.run(
        [sys.executable, "-P", "-c", code],
        capture_output=True,
        text=True,
        env=scenario_env(),
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert shared.get("from-peer") == int(proc.stdout)
    assert private.get("from-peer") is None
    # remove_segment forgets the segment, not the FastCache of that name.
    assert remove_segment(location)
    assert FastCache(path, {}).get("private") == 1
    with backend._stores_lock:
        backend._stores.pop(path, None)


def test_segment_first_then_fastcache_of_its_path(shm_dir):
    location = unique("reg2")
    shm_dir.append(location)
    path = segment_path(location)
    shared = SharedMemoryCache(location, {"OPTIONS": {"MAX_BYTES": MiB}})
    shared.set("shared", 2)
    private = FastCache(path, {})
    assert private.stats()["segment_bytes"] == 0
    assert private.get("shared") is None
    private.set("private", 1)
    assert shared.get("private") is None
    assert SharedMemoryCache(location, {}).get("shared") == 2
    with backend._stores_lock:
        backend._stores.pop(path, None)
