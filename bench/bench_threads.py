#!/usr/bin/env python
"""Threads: how gets and sets scale with threads in one process.

Meant for a free-threaded CPython (PEP 703), where threads really run at once;
with the GIL it shows the GIL.  For each backend (LocMemCache, FastCache,
SharedMemoryCache), each mix (pure get hits; 90% get hits / 10% sets) and each
thread count (1, 2, 4), every thread works on its own backend instance with
the same LOCATION, as Django's per-thread ``caches[...]`` give them, for a fixed
time, and the row reports the total operations per second and its ratio to
one thread's.  The counts are run in interleaved rounds (1, 2, 4, 1, 2, 4...)
and each figure is the median over the rounds, so a burst of noise from a
neighbour hits one round, not a whole column.  Errors a backend raises (such
as LocMemCache's "OrderedDict mutated during iteration" without the GIL) are
counted and shown, not hidden.

    python bench/bench_threads.py [--rounds 5] [--seconds 0.5] [--markdown]

On the free-threaded build of scripts/interpreters.sh:
    bash scripts/interpreters.sh run .venv-test-ft/bin/python -P bench/bench_threads.py

The exit status is 0 whether or not the scaling target (2 threads >= 1.7x one
thread, FastCache and SharedMemoryCache) is met: this measures, it does not
gate.  The last line says which rows met it.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import sysconfig
import tempfile
import threading
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.append(REPO_ROOT)

import django  # noqa: E402
from django.conf import settings  # noqa: E402

if not settings.configured:
    settings.configure(USE_TZ=True)
    django.setup()

from django.core.cache.backends.locmem import LocMemCache  # noqa: E402

import django_fastcache  # noqa: E402


class DictBaseline:
    """Not a cache: a dict of the thread's own behind the same calls, the ceiling
    the machine gives a pure-Python loop at that moment (how many cores are
    really free on a shared host).  Its values are small ints (immortal), so
    threads share nothing, not even a reference count."""

    def __init__(self, location: str, params: dict) -> None:
        self._d = dict.fromkeys(KEYS, 1)

    def get(self, key, default=None):
        return self._d.get(key, default)

    def set(self, key, value, timeout=None) -> None:
        self._d[key] = value

    def clear(self) -> None:
        self._d.clear()


BACKENDS = {
    "dict (baseline)": DictBaseline,
    "LocMemCache": LocMemCache,
    "FastCache": django_fastcache.FastCache,
    "SharedMemoryCache": django_fastcache.SharedMemoryCache,
}
THREADS = (1, 2, 4)
KEYS = [f"key:{i}" for i in range(1000)]
TARGET = 1.7


def worker(cache, mix: str, seconds: float, start: threading.Barrier, out: list):
    get, set_ = cache.get, cache.set
    keys = KEYS
    n = errors = 0
    first_error = None
    start.wait()
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        try:
            if mix == "get":
                for k in keys[:200]:
                    get(k)
            else:
                for i, k in enumerate(keys[:200]):
                    if i % 10 == 0:
                        set_(k, i)
                    else:
                        get(k)
        except Exception as exc:  # noqa: BLE001 - counted and reported
            errors += 1
            first_error = first_error or f"{type(exc).__name__}: {exc}"
            continue
        n += 200
    out.append((n, errors, first_error))


def run(cls, location: str, mix: str, nthreads: int, seconds: float):
    caches = [
        cls(location, {"OPTIONS": {"MAX_ENTRIES": 100_000}}) for _ in range(nthreads)
    ]
    start = threading.Barrier(nthreads)
    out: list = []
    threads = [
        threading.Thread(target=worker, args=(c, mix, seconds, start, out))
        for c in caches
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ops = sum(n for n, _, _ in out) / seconds
    errors = sum(e for _, e, _ in out)
    first = next((f for _, _, f in out if f), None)
    return ops, errors, first


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=0.5)
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    os.environ.setdefault("DJANGO_FASTCACHE_SHM_DIR", tempfile.mkdtemp())

    gil = getattr(sys, "_is_gil_enabled", lambda: True)()
    print(
        f"# {platform.python_implementation()} {platform.python_version()}"
        f" free-threaded={bool(sysconfig.get_config_var('Py_GIL_DISABLED'))}"
        f" GIL enabled={gil}, {os.cpu_count()} CPUs;"
        f" django_fastcache from {os.path.dirname(django_fastcache.__file__)}"
    )
    rows = []
    for name, cls in BACKENDS.items():
        location = f"bench-threads-{name}-{os.getpid()}"
        fill = cls(location, {"OPTIONS": {"MAX_ENTRIES": 100_000}})
        for i, k in enumerate(KEYS):
            fill.set(k, i, None)
        for mix in ("get", "90/10"):
            samples = {n: [] for n in THREADS}
            errors = {n: 0 for n in THREADS}
            first_error = None
            for _ in range(args.rounds):
                for n in THREADS:
                    ops, err, first = run(cls, location, mix, n, args.seconds)
                    samples[n].append(ops)
                    errors[n] += err
                    first_error = first_error or first
            med = {n: statistics.median(samples[n]) for n in THREADS}
            rows.append((name, mix, med, errors, first_error))
        fill.clear()
        if name == "SharedMemoryCache":
            fill.close()
            django_fastcache.remove_segment(location)

    met = []
    if args.markdown:
        print("| backend | mix | 1 thread | 2 threads | 4 threads | errors |")
        print("| --- | --- | ---: | ---: | ---: | --- |")
    for name, mix, med, errors, first in rows:
        one = med[1] or 1
        cells = [f"{med[n] / 1e3:,.0f}k/s ({med[n] / one:.2f}x)" for n in THREADS]
        err = sum(errors.values())
        err_text = f"{err} ({first})" if err else "0"
        if args.markdown:
            print(f"| {name} | {mix} | " + " | ".join(cells) + f" | {err_text} |")
        else:
            print(
                f"{name:18} {mix:6} "
                + "  ".join(f"{c:>22}" for c in cells)
                + f"  errors {err_text}"
            )
        if name in ("FastCache", "SharedMemoryCache"):
            met.append((f"{name} {mix}", med[2] / one >= TARGET and err == 0))
    print(
        f"2 threads >= {TARGET}x one thread: "
        + ", ".join(f"{label}: {'yes' if ok else 'no'}" for label, ok in met)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
