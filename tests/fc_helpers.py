"""Helpers shared by the test modules (importable by name, so pickle finds them)."""

from __future__ import annotations

import enum
import os
import pickle
import threading
import time
import warnings
from collections.abc import Callable
from typing import Any


def child_pythonpath() -> str:
    """PYTHONPATH for a test's child interpreter: the directory this process
    imported django_fastcache from (the built package, which in a fresh
    checkout is not the unbuilt source tree), then tests/, then whatever
    PYTHONPATH already held."""
    import django_fastcache

    pkg_dir = os.path.dirname(os.path.abspath(django_fastcache.__file__))
    pkg_parent = os.path.dirname(pkg_dir)
    here = os.path.dirname(os.path.abspath(__file__))
    extra = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return os.pathsep.join(dict.fromkeys([pkg_parent, here, *extra]))


def run_child(code: str, *args: str, timeout: float = 60, **env: str) -> Any:
    """Run code in a fresh interpreter (-P, from the temp directory, with this
    process's django_fastcache importable and env added); the completed
    process, its output captured as text."""
    import subprocess
    import sys
    import tempfile

    return subprocess.run(
        [sys.executable, "-P", "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ, PYTHONPATH=child_pythonpath(), **env),
        cwd=tempfile.gettempdir(),
    )


def async_delegates(name: str) -> bool:
    """Whether the installed Django's BaseCache.a<name> calls the sync <name>
    when a backend overrides it (Django >= 6.1), instead of being built on
    aget/aset.  LocMemCache overrides has_key and incr, so on those Django
    versions ahas_key and aincr behave like has_key and incr."""
    from django.core.cache.backends.base import BaseCache

    return "sync_to_async" in getattr(BaseCache, "a" + name).__code__.co_names


def custom_key_func(key, key_prefix, version):
    """A KEY_FUNCTION, also referenced by dotted path "fc_helpers.custom_key_func"."""
    return "CUSTOM_" + "-".join([str(key_prefix), str(version), str(key)])


class Point:
    """A plain picklable user class with value equality."""

    def __init__(self, x, y):
        self.x = x
        self.y = y

    def __eq__(self, other):
        return type(other) is Point and (self.x, self.y) == (other.x, other.y)

    def __repr__(self):
        return f"Point({self.x!r}, {self.y!r})"


class Money(int):
    """An int subclass with its own __add__ (incr must keep the subclass)."""

    def __add__(self, other):
        return Money(int(self) + int(other))

    def __repr__(self):
        return f"Money({int(self)})"


class RMoney(int):
    """An int subclass with __radd__: int + RMoney is RMoney."""

    def __radd__(self, other):
        return RMoney(int(other) + int(self))

    def __repr__(self):
        return f"RMoney({int(self)})"


class Ratio(float):
    pass


class SlowFloat(float):
    """A float whose + lets other threads run in the middle of an incr."""

    def __add__(self, other):
        time.sleep(0.0001)
        return SlowFloat(float(self) + other)


class Name(str):
    pass


class Color(enum.IntEnum):
    RED = 1


class StrKey:
    """A key object made into a cache key through its __str__."""

    def __init__(self, text):
        self.text = text

    def __str__(self):
        return self.text


class PickleBoom(Exception):
    pass


class RaisesOnPickle:
    def __reduce__(self):
        raise PickleBoom("refusing to be pickled")


def _explode(message):
    raise PickleBoom(message)


class RaisesOnUnpickle:
    """Pickles fine; unpickling it raises PickleBoom."""

    def __reduce__(self):
        return (_explode, ("refusing to be unpickled",))


# Lock probes: record cache._lock.locked() while being pickled / unpickled.
PROBE_CACHES: dict[str, Any] = {}
PROBE_LOG: list[tuple[str, str, bool]] = []


class LockProbe:
    def __init__(self, token):
        self.token = token

    def __getstate__(self):
        cache = PROBE_CACHES[self.token]
        PROBE_LOG.append((self.token, "dumps", cache._lock.locked()))
        return {"token": self.token}

    def __setstate__(self, state):
        self.token = state["token"]
        cache = PROBE_CACHES[self.token]
        PROBE_LOG.append((self.token, "loads", cache._lock.locked()))


def outcome(fn: Callable[[], Any]) -> tuple:
    """Run fn and describe everything observable: result or exception, warnings."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = fn()
        except Exception as exc:  # noqa: BLE001 - compared, not swallowed
            described = ("raise", type(exc), str(exc))
        else:
            described = ("return", type(result), describe(result))
    return described + (tuple((w.category, str(w.message)) for w in caught),)


def describe(value: Any) -> str:
    """repr, but with float NaN made comparable and types made explicit."""
    if isinstance(value, dict):
        return (
            "{"
            + ", ".join(f"{describe(k)}: {describe(v)}" for k, v in value.items())
            + "}"
        )
    if isinstance(value, (list, tuple)):
        return type(value).__name__ + "[" + ", ".join(describe(v) for v in value) + "]"
    return f"{type(value).__name__}:{value!r}"


def snapshot(cache) -> list[tuple[str, Any, str]]:
    """(made key, expiry, value) for every entry, most recently used first.

    Reads only the LocMemCache-compatible attributes ``_cache`` and
    ``_expire_info``; neither reading expires nor reorders entries.
    """
    return [
        (key, cache._expire_info[key], describe(pickle.loads(cache._cache[key])))
        for key in list(cache._cache)
    ]


def run_threads(
    targets: list[Callable[[], None]], timeout: float = 30.0
) -> list[BaseException]:
    """Start one daemon thread per target, join with a deadline.

    Returns the exceptions the targets raised.  Fails (AssertionError) if a
    thread is still running at the deadline: a deadlock or a livelock.
    """
    errors: list[BaseException] = []
    lock = threading.Lock()

    def wrap(target):
        def run():
            try:
                target()
            except BaseException as exc:  # noqa: BLE001
                with lock:
                    errors.append(exc)

        return run

    threads = [threading.Thread(target=wrap(t), daemon=True) for t in targets]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    alive = [t.name for t in threads if t.is_alive()]
    assert not alive, f"threads still running after {timeout}s (deadlock?): {alive}"
    return errors


def run_with_deadline(fn: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Run fn in a daemon thread; fail instead of hanging if it deadlocks."""
    box: dict[str, Any] = {}

    def target():
        box["result"] = fn()

    errors = run_threads([target], timeout)
    if errors:
        raise errors[0]
    return box.get("result")
