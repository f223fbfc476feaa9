"""The table lock around fork, across threads and across processes.

- Two processes, each with two SharedMemoryCaches used in opposite orders,
  forking at the same time while threads hammer the caches: no fork may hang
  (a fork must not lock shared segments at all), and every child gets
  working caches.
- A fork inside ``with cache._lock:`` neither hangs nor breaks the child: as
  with LocMemCache's threading.Lock, the child's lock is still held inside
  the block and released by leaving it.
- FastCache and SharedMemoryCache keep separate registries: a FastCache
  LOCATION that happens to equal a segment path never hands its private
  table to a SharedMemoryCache (or the reverse).

Scenarios that fork run in a subprocess (fork_lock_scenario.py) with a
deadline; the whole process group is killed when it passes, which fails the
test instead of hanging pytest.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest
from conftest import FASTCACHE_IMPORT_FAILURE, FASTCACHE_SKIP_REASON

if FASTCACHE_SKIP_REASON:
    pytest.skip(FASTCACHE_SKIP_REASON, allow_module_level=True)
if FASTCACHE_IMPORT_FAILURE:
    raise ImportError(FASTCACHE_IMPORT_FAILURE)

from fc_helpers import child_pythonpath  # noqa: E402

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


FORKS_IN_WITH = 200


@pytest.mark.parametrize("impl", ["locmem", "fastcache", "shared"])
def test_fork_inside_with_lock(impl, shm_dir):
    # locmem is the reference: its threading.Lock is copied held into the
    # child, and leaving the `with` block there releases it.
    location = unique(f"with-{impl}")
    if impl == "shared":
        shm_dir.append(location)
    proc = start_scenario(
        "with_lock",
        {
            "impl": impl,
            "location": location,
            "forks": FORKS_IN_WITH,
            "child_timeout": 20,
        },
    )
    (result,) = finish([proc], timeout=90)
    assert result["ok"] == FORKS_IN_WITH, result
    assert result["parent_ok"] == FORKS_IN_WITH, result
    assert result["locked_after"] is False, result
    assert result["thread_alive"] is False, result


def test_fork_settles_unregistered_stores_on_first_use(shm_dir):
    proc = start_scenario("lazy", {"forks": 50, "child_timeout": 20})
    (result,) = finish([proc], timeout=90)
    assert result["ok"] == 50, result
    assert result["locked_after"] == [False] * 4, result


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
