"""Shared fixtures: every test runs against LocMemCache (the reference) and FastCache.

``impl``        "locmem" or "fastcache"; the fastcache variant is skipped only when
                ``import django_fastcache._fastcache`` raises ImportError (the C
                module is not built).  Any other import failure is an error.
``cache_cls``   the backend class under test.
``make_cache``  factory: ``make_cache(**params)`` -> fresh instance of the class
                under test with a LOCATION unique to the test (pass ``LOCATION=``
                to share a store between instances within one test).
``make_ref``    the same factory, always building a LocMemCache; tests compare
                the implementation under test with it where the exact value is
                subtle (in the locmem run the comparison is with itself).
``clock``       a fake ``time.time`` both backends read (unittest.mock.patch).
"""

from __future__ import annotations

import itertools
import os
import sys
import traceback
from unittest import mock

import django
import pytest
from django.conf import settings

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:  # helpers module, also under --import-mode=importlib
    sys.path.insert(0, HERE)

if not settings.configured:
    settings.configure(
        DEBUG=False,
        USE_TZ=True,
        TIME_ZONE="UTC",
        SECRET_KEY="django-fastcache-tests",
        ALLOWED_HOSTS=["testserver"],
        INSTALLED_APPS=[],
        MIDDLEWARE=[],
        ROOT_URLCONF=None,
        DATABASES={},
        CACHES={
            "default": {
                "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
                "LOCATION": "tests-default",
            }
        },
        TEMPLATES=[
            {
                "BACKEND": "django.template.backends.django.DjangoTemplates",
                "DIRS": [],
                "APP_DIRS": False,
                "OPTIONS": {},
            }
        ],
    )
    django.setup()

from django.core.cache.backends import locmem  # noqa: E402
from django.core.cache.backends.locmem import LocMemCache  # noqa: E402

FASTCACHE_SKIP_REASON = None
FASTCACHE_IMPORT_FAILURE = None
try:
    import django_fastcache._fastcache  # noqa: F401
except ImportError as exc:
    FASTCACHE_SKIP_REASON = (
        f"FastCache not tested: import django_fastcache._fastcache failed ({exc}); "
        "build it: python setup.py build_ext --inplace"
    )
except Exception:  # a broken build must fail the fastcache tests, not skip them
    FASTCACHE_IMPORT_FAILURE = traceback.format_exc()

IMPLS = ["locmem", "fastcache"]


def pytest_report_header(config):
    if FASTCACHE_SKIP_REASON:
        return f"FastCache tests SKIPPED: {FASTCACHE_SKIP_REASON}"
    if FASTCACHE_IMPORT_FAILURE:
        return "FastCache import FAILED (fastcache tests will error)"
    return "FastCache: C module importable"


def backend_class(impl: str) -> type:
    if impl == "locmem":
        return LocMemCache
    if FASTCACHE_SKIP_REASON:
        pytest.skip(FASTCACHE_SKIP_REASON)
    if FASTCACHE_IMPORT_FAILURE:
        pytest.fail(
            "importing django_fastcache._fastcache failed:\n" + FASTCACHE_IMPORT_FAILURE
        )
    from django_fastcache import FastCache

    return FastCache


@pytest.fixture(params=IMPLS)
def impl(request) -> str:
    backend_class(request.param)  # skips or fails the fastcache variant early
    return request.param


@pytest.fixture
def cache_cls(impl) -> type:
    return backend_class(impl)


_counter = itertools.count()


class _Factory:
    """Builds backends with LOCATIONs unique to one test and cleans them up."""

    def __init__(self, cls: type, tag: str) -> None:
        self.cls = cls
        self.tag = tag
        self.made: list = []
        self.names: set[str] = set()

    def location(self, name: str | None = None) -> str:
        if name is None:
            name = f"anon{next(_counter)}"
        return f"{self.tag}:{name}"

    def __call__(self, cls: type | None = None, **params):
        location = self.location(params.pop("LOCATION", None))
        cls = cls or self.cls
        cache = cls(location, params)
        self.made.append(cache)
        self.names.add(location)
        return cache

    def cleanup(self) -> None:
        for cache in self.made:
            # Free the entries, unless a thread left behind by a failed
            # (deadlocked) test still holds the lock: never hang in teardown.
            try:
                if cache._lock.acquire(False):
                    cache._lock.release()
                    cache.clear()
            except Exception:  # a test may have broken a subclass on purpose
                pass
        for name in self.names:
            locmem._caches.pop(name, None)
            locmem._expire_info.pop(name, None)
            locmem._locks.pop(name, None)


@pytest.fixture
def make_cache(cache_cls, request):
    factory = _Factory(cache_cls, f"{request.node.nodeid}#{next(_counter)}")
    yield factory
    factory.cleanup()


@pytest.fixture
def make_ref(request):
    factory = _Factory(LocMemCache, f"ref:{request.node.nodeid}#{next(_counter)}")
    yield factory
    factory.cleanup()


class FakeClock:
    """A controllable ``time.time``."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock():
    fake = FakeClock()
    with mock.patch("time.time", fake):
        yield fake
