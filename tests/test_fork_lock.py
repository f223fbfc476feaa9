"""Stores, their locks and their registries.

- FastCache and SharedMemoryCache keep separate registries: a FastCache
  LOCATION that happens to equal a segment path never hands its private
  table to a SharedMemoryCache (or the reverse).
"""

from __future__ import annotations

import os
import subprocess
import sys
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
