"""Free-threaded CPython (PEP 703): the GIL stays off, and a storm of every
operation with the settings reassigned meanwhile leaves the cache consistent.

The storm runs on every build (with the GIL it still interleaves at every
switch interval); scripts/test.sh runs it on a free-threaded CPython, where
threads really run at once, and scripts/tsan.sh under ThreadSanitizer.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import threading

import pytest
from fc_helpers import run_threads

FREE_THREADED = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
only_free_threaded = pytest.mark.skipif(
    not FREE_THREADED,
    reason="a property of free-threaded builds (scripts/test.sh runs one)",
)


@only_free_threaded
def test_the_gil_stays_disabled_after_import():
    # Disabled by the module's own declaration (Py_MOD_GIL_NOT_USED), not forced.
    assert "PYTHON_GIL" not in os.environ
    import django_fastcache._fastcache  # noqa: F401

    assert sys._is_gil_enabled() is False


@only_free_threaded
def test_a_fresh_interpreter_imports_without_enabling_the_gil():
    # Importing a module that does not declare Py_mod_gil would enable the GIL
    # with a RuntimeWarning: -W error makes that an error here.
    env = {k: v for k, v in os.environ.items() if k != "PYTHON_GIL"}
    code = (
        "import sys, django_fastcache, django_fastcache._fastcache; "
        "print(sys._is_gil_enabled())"
    )
    r = subprocess.run(
        [sys.executable, "-P", "-W", "error", "-c", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"


THREADS = 4
ROUNDS = 1500


def _storm_worker(cache, seed: int, barrier: threading.Barrier, counted: list[int]):
    import random

    rnd = random.Random(seed)
    keys = [f"k{i}" for i in range(16)]
    barrier.wait()
    n = 0
    for i in range(ROUNDS):
        k = rnd.choice(keys)
        op = rnd.randrange(16)
        try:
            if op == 0:
                cache.set(k, {"i": i, "l": [seed, i]})
            elif op == 1:
                cache.get(k)
            elif op == 2:
                cache.add(k, [i, "x" * rnd.randrange(300)])
            elif op == 3:
                cache.delete(k)
            elif op == 4:
                cache.get_many(keys[:6])
            elif op == 5:
                cache.set_many({k: i, "k0": (seed, i)})
            elif op == 6:
                cache.touch(k, rnd.choice([None, 300]))
            elif op == 7:
                cache.has_key(k)
            elif op == 8:
                cache.incr("counter")
                n += 1
            elif op == 9:
                cache.delete_many(keys[:3])
            elif op == 10 and rnd.random() < 0.05:
                cache.clear()
            elif op == 11:  # settings reassigned at run time
                cache._max_entries = rnd.choice([8, 30, 300])
                cache._cull_frequency = rnd.choice([0, 2, 3])
            elif op == 12:
                cache.key_prefix = rnd.choice(["", "p", "prefix"])
                cache.version = rnd.choice([1, 2])
                cache.default_timeout = rnd.choice([None, 300])
            elif op == 13:
                cache.get_or_set(k, i)
            elif op == 14:
                cache.set(k, i, 0.001)
            else:
                cache.get(k, version=2)
        except ValueError as exc:  # incr of a key another thread culled
            assert "not found" in str(exc), exc
    counted.append(n)


def test_storm_with_settings_reassigned_meanwhile(make_cache, impl, request):
    if impl == "locmem" and not getattr(sys, "_is_gil_enabled", lambda: True)():
        request.applymarker(
            pytest.mark.xfail(
                reason="LocMemCache is not thread-safe without the GIL", strict=False
            )
        )
    c = make_cache(OPTIONS={"MAX_ENTRIES": 30})
    counts: list[int] = []
    barrier = threading.Barrier(THREADS)
    errors = run_threads(
        [
            lambda seed=seed: _storm_worker(c, seed, barrier, counts)
            for seed in range(THREADS)
        ],
        timeout=120,
    )
    assert errors == []
    assert not c._lock.locked()
    entries = list(c._cache)
    assert len(entries) == len(set(entries)) == len(c._expire_info)
    c.clear()
    c.key_prefix, c.version = "", 1
    c.set("after", 1)
    assert c.get("after") == 1


def test_concurrent_incr_while_settings_change(make_cache, impl, request):
    # Reassigning options, timeout and the cache's other keys' prefix never
    # loses an increment of a counter under a fixed prefix and version.
    c = make_cache()
    c.set("counter", 0, None, version=7)
    barrier = threading.Barrier(THREADS + 1)
    n = 500

    def incr():
        barrier.wait()
        for _ in range(n):
            c.incr("counter", version=7)

    def churn():
        barrier.wait()
        for i in range(n):
            c._max_entries = 300 + i % 3
            c.default_timeout = None if i % 2 else 300
            c.set(f"other{i % 5}", i)

    errors = run_threads([incr] * THREADS + [churn], timeout=120)
    assert errors == []
    assert c.get("counter", version=7) == THREADS * n
