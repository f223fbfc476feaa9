"""Leak and module life-cycle tests.

Each check runs as an isolated script in a fresh interpreter (as multidict's
leak tests do), so nothing else the suite allocates blurs the measurement:

- RSS stays flat over hundreds of thousands of calls of every operation,
  including the error paths (memory allocated in C is invisible to Python's
  own accounting, so RSS is the honest measure);
- no Python object leaks: reference counts of keys, values and defaults are
  unchanged after many calls, and gc sees no growth in live objects;
- the extension module can be imported again (multi-phase init) and in a
  subinterpreter, and the fresh module works on its own.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap

import pytest
from fc_helpers import child_pythonpath

PRELUDE = """
import gc, os, sys, warnings
import django
from django.conf import settings
settings.configure()
django.setup()
from django_fastcache import FastCache, SharedMemoryCache, _fastcache

def rss_kib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024
"""


def run_script(body: str, timeout: float = 240, env: dict | None = None) -> str:
    """Runs body in a fresh interpreter that imports django_fastcache the way
    this one does (the built package, never the unbuilt checkout: -P and a
    neutral working directory)."""
    code = PRELUDE + textwrap.dedent(body)
    full_env = dict(os.environ, PYTHONPATH=child_pythonpath())
    full_env.update(env or {})
    proc = subprocess.run(
        [sys.executable, "-P", "-c", code],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        cwd=tempfile.gettempdir(),
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc.stdout


WORKLOAD = """
class Unpicklable:
    def __reduce__(self):
        raise TypeError("no pickling")

def workload(c, n):
    big = "x" * 3000
    lst = list(range(50))
    nested = {"id": 1, "tags": ("a", b"b"), "s": {1.5, None}, "f": frozenset({"x"}),
              "deep": [[{"é": "😀" * 20}]], "big": 2**40, "long": "k" * 40}
    shared = [lst, lst]   # declined by the codec: pickled whole
    import datetime as dt, zoneinfo
    paris = zoneinfo.ZoneInfo("Europe/Paris")
    when = [dt.datetime(2021, 10, 31, 2, 30, fold=1, tzinfo=paris),
            dt.time(1, tzinfo=dt.timezone(dt.timedelta(hours=-5), "EST")),
            dt.date(2020, 2, 29), dt.timedelta(-1, 2, 3),
            dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc),
            zoneinfo.ZoneInfo.no_cache("UTC")]
    from decimal import Decimal as D
    import uuid
    money = {"price": D("19.99"), "nan": D("-sNaN7"), "big": D("1." + "3" * 200),
             "exp": D("-1E-1999999999999999997"), "inf": D("Infinity"),
             "ids": [uuid.uuid4(),
                     uuid.UUID(int=2**128 - 1, is_safe=uuid.SafeUUID.safe),
                     uuid.UUID(int=0, is_safe=uuid.SafeUUID.unsafe)]}
    for i in range(n):
        k = i % 500
        c.set(k, lst)
        c.set(("t", k), big)
        c.get(k)
        c.get("missing", None)
        c.add(k, 1)
        c.set("n%d" % k, i)
        c.incr("n%d" % k)
        c.set("f%d" % k, 1.5)
        c.incr("f%d" % k, 2)
        c.has_key(k)
        c.touch(k, 100)
        c.get_many([k, "missing", ("t", k)])
        c.set(("n", k), nested)
        c.get(("n", k))
        c.set(("w", k), when)
        c.get(("w", k))
        c.set(("d", k), money)
        c.get(("d", k))
        c.set(("s", k), shared)
        c.get(("s", k))
        try:
            # a damaged payload: a dict whose key is a list (unhashable)
            _fastcache._codec_decode(b"\\x01\\x0d\\x01\\x09\\x00\\x01")
        except TypeError:
            pass
        try:
            # a damaged datetime payload: month 13
            _fastcache._codec_decode(b"\\x01\\x0f\\xe4\\x07\\x0d\\x01")
        except ValueError:
            pass
        try:
            # a damaged Decimal: an exponent no Decimal holds
            _fastcache._codec_decode(b"\\x01\\x13\\x171E+99999999999999999999")
        except ValueError:
            pass
        try:
            # a damaged UUID: is_safe 3
            _fastcache._codec_decode(b"\\x01\\x14" + bytes(16) + b"\\x03")
        except ValueError:
            pass
        c.set_many({"a%d" % k: i, "b%d" % k: lst}, 50)
        c.delete_many(["a%d" % k, "zz"])
        c.delete(("t", k))
        try:
            c.incr("missing")
        except ValueError:
            pass
        try:
            c.set("bad", Unpicklable())
        except TypeError:
            pass
        try:
            c.set("bad", 1, timeout="x")
        except TypeError:
            pass
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            c.get("key with spaces")
        if i % 2000 == 0:
            c.clear()
"""


@pytest.mark.parametrize("backend", ["FastCache", "SharedMemoryCache"])
def test_rss_is_flat_over_many_calls(backend, tmp_path):
    env = {"DJANGO_FASTCACHE_SHM_DIR": str(tmp_path)}
    if "ASAN_OPTIONS" in os.environ:
        # Under ASan (test.sh's sanitize stage) freed blocks sit in a
        # quarantine of up to 256 MiB, which RSS counts as growth (9 MiB was
        # seen once codec values joined the workload): keep it small here.
        env["ASAN_OPTIONS"] = os.environ["ASAN_OPTIONS"] + ":quarantine_size_mb=1"
    out = run_script(
        WORKLOAD
        + f"""
c = {backend}("leaks", {{"OPTIONS": {{"MAX_ENTRIES": 400}}}})
workload(c, 20000)          # warm up: table, free lists and caches reach size
gc.collect()
before = rss_kib()
workload(c, 60000)          # ~1.3 million cache calls
gc.collect()
after = rss_kib()
print("rss_growth_kib", after - before)
""",
        env=env,
    )
    growth = int(out.split("rss_growth_kib")[1].split()[0])
    # A leak of even 8 bytes per call would be over 10 MiB here.  The bound
    # leaves room for allocator noise.
    assert growth < 4096, out


def test_no_python_object_leaks():
    out = run_script(
        WORKLOAD
        + """
c = FastCache("refs", {"OPTIONS": {"MAX_ENTRIES": 400}})
key, value, default = "some-key", ["a", "value"], object()
c.set(key, value)
workload(c, 2000)
gc.collect()
refs = [sys.getrefcount(o) for o in (key, value, default)]
objects = len(gc.get_objects())
for _ in range(20000):
    c.set(key, value)
    c.get(key, default)
    c.get("nope", default)
    c.get_many([key, "nope"])
    c.set_many({key: value})
workload(c, 2000)
gc.collect()
print("refs", refs, [sys.getrefcount(o) for o in (key, value, default)])
print("objects", objects, len(gc.get_objects()))
assert refs == [sys.getrefcount(o) for o in (key, value, default)], "refcount drift"
assert len(gc.get_objects()) - objects < 200, "gc-tracked objects grew"
"""
    )
    assert "refs" in out


def test_module_reimport_gives_a_fresh_working_module():
    run_script(
        """
import importlib
from django_fastcache import _fastcache as first
del sys.modules["django_fastcache._fastcache"]
second = importlib.import_module("django_fastcache._fastcache")
assert second is not first
assert second.Store is not first.Store
assert not second.configured()        # per-module state, not process globals
try:
    second.Handle(second.Store(), object())
except RuntimeError as exc:
    assert "not configured" in str(exc)
else:
    raise AssertionError("an unconfigured module made a Handle")
import pickle
from django.core.cache.backends.base import DEFAULT_TIMEOUT, BaseCache, CacheKeyWarning
second.configure(default_timeout=DEFAULT_TIMEOUT, validate_key=BaseCache.validate_key,
                 key_warning=CacheKeyWarning, pickle_dumps=pickle.dumps,
                 pickle_loads=pickle.loads)
class Owner:
    pass
owner = Owner()
h = second.Handle(second.Store(), owner)
h.set("k", {"v": 1}, DEFAULT_TIMEOUT, None)
assert h.get("k", None, None) == {"v": 1}
# the first module keeps working too
c = FastCache("reimport", {})
c.set("a", 1)
assert c.get("a") == 1
"""
    )


def test_module_imports_in_a_subinterpreter():
    pytest.importorskip("_testcapi")
    run_script(
        """
import _testcapi
code = '''
from django.conf import settings
settings.configure()
from django_fastcache import FastCache, _fastcache
assert _fastcache.configured()        # configured by this interpreter's import
c = FastCache("subinterp", {})
c.set("k", [1, 2])
assert c.get("k") == [1, 2]
assert c.incr_version("k") == 2
'''
rc = _testcapi.run_in_subinterp(code)
assert rc == 0, rc
"""
    )
