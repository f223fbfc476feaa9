"""Cached pages render once: when a page is missing, the first request renders
it and the requests that miss it meanwhile wait for it to be stored, then are
answered from it (the drop-in FetchFromCacheMiddleware on FastCache and
SharedMemoryCache, behind the front or not).  Pages that are not cached
(private, errors) are never serialised: their waiters render for themselves
once the first render ends without a page, and later requests do not wait.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import threading
import time
import types
from collections import Counter

import pytest
import test_pages as tp
from django.core.cache import caches
from django.core.handlers.wsgi import WSGIHandler
from django.http import HttpResponse
from django.test import override_settings
from django.urls import path
from django.utils import translation
from django.utils.cache import patch_cache_control

from django_fastcache import _flight, _pages
from django_fastcache.wsgi import serve_cached as wsgi_front

RENDER_SECONDS = 0.3
RENDERS: Counter[str] = Counter()
_lock = threading.Lock()


def _render(name: str) -> int:
    with _lock:
        RENDERS[name] += 1
        n = RENDERS[name]
    time.sleep(RENDER_SECONDS)
    return n


def slow(request):
    return HttpResponse(f"slow {_render('slow')} by {os.getpid()}")


def slow_private(request):
    response = HttpResponse(f"private {_render('private')}")
    patch_cache_control(response, private=True)
    return response


def failing(request):
    _render("failing")
    raise RuntimeError("the view failed")


_urls = types.ModuleType("page_flight_urls")
_urls.urlpatterns = [  # type: ignore[attr-defined]
    path("slow/", slow),
    path("private/", slow_private),
    path("failing/", failing),
]
sys.modules["page_flight_urls"] = _urls


@pytest.fixture(params=["fastcache", "shared"])
def site(request, tmp_path, monkeypatch):
    monkeypatch.setenv("DJANGO_FASTCACHE_SHM_DIR", str(tmp_path))
    settings = tp._site_settings("plain", True, tp.cache_config(request.param))
    settings["ROOT_URLCONF"] = "page_flight_urls"
    settings["DEBUG_PROPAGATE_EXCEPTIONS"] = False
    with override_settings(**settings):
        translation._trans.__dict__.clear()
        caches["default"].clear()
        caches["default"].reset_stats()
        RENDERS.clear()
        _flight._nostore.clear()
        _pages.LOCALE_SEEN.other = False
        try:
            yield request.param
        finally:
            caches["default"].clear()


def _herd(app, path_, n=16):
    """n threads request path_ at once; [(status, body, seconds)]."""
    out = []
    lock = threading.Lock()
    start = threading.Barrier(n)

    def one():
        start.wait(10)
        t0 = time.monotonic()
        status, _headers, body = tp.call_wsgi(app, tp.req(path_))
        with lock:
            out.append((status, body, time.monotonic() - t0))

    threads = [threading.Thread(target=one, daemon=True) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads)
    return out


@pytest.mark.parametrize("front", [False, True], ids=["drop-ins", "front"])
def test_a_missing_page_renders_once_for_a_herd(site, front):
    app = WSGIHandler()
    if front:
        app = wsgi_front(app)
    got = _herd(app, "/slow/")
    assert RENDERS["slow"] == 1
    mine = f"slow 1 by {os.getpid()}".encode()
    assert {(status, body) for status, body, _ in got} == {(200, mine)}
    stats = caches["default"].stats()
    assert stats["single_flight_computations"] == 1
    assert stats["single_flight_waits"] >= 1
    assert not _flight._flights  # nothing left claimed
    # The next requests are hits (from the front, or the drop-ins).
    assert tp.call_wsgi(app, tp.req("/slow/"))[2] == mine


def test_a_page_not_cached_is_not_serialised(site):
    app = WSGIHandler()
    t0 = time.monotonic()
    got = _herd(app, "/private/", n=8)
    took = time.monotonic() - t0
    # The first render ends without a page: the waiters render at once, all
    # together (not one after another: 8 x 0.3 s), and the URL is then
    # remembered as not stored.
    assert RENDERS["private"] == 8
    assert all(status == 200 for status, _, _ in got)
    assert took < 8 * RENDER_SECONDS - 0.5, took
    stats = caches["default"].stats()
    waits = stats["single_flight_waits"]
    got = _herd(app, "/private/", n=8)
    assert RENDERS["private"] == 16
    assert caches["default"].stats()["single_flight_waits"] == waits  # no new wait
    assert not _flight._flights


def test_a_failing_render_lets_the_waiters_render(site):
    app = WSGIHandler()
    got = _herd(app, "/failing/", n=6)
    assert all(status == 500 for status, _, _ in got)
    assert RENDERS["failing"] == 6  # no page: each renders (after the first)
    assert not _flight._flights


def test_a_request_dropped_before_its_response_phase_releases_the_claim(site):
    from django.test import RequestFactory

    from django_fastcache.middleware import FetchFromCacheMiddleware

    middleware = FetchFromCacheMiddleware(lambda r: HttpResponse("x"))
    request = RequestFactory().get("/slow/")
    assert middleware.process_request(request) is None  # a miss: it claims
    assert _flight._flights
    # The same thread asks again without finishing: it does not wait for itself.
    t0 = time.monotonic()
    assert middleware.process_request(RequestFactory().get("/slow/")) is None
    assert time.monotonic() - t0 < 1.0
    del request  # never reaches process_response
    assert not _flight._flights


def _child(path_, out):
    from django_fastcache import _flight as child_flight

    child_flight._flights.clear()
    status, _headers, body = tp.call_wsgi(WSGIHandler(), tp.req(path_))
    out.put((status, body))


@pytest.mark.skipif(sys.platform != "linux", reason="SharedMemoryCache needs Linux")
@pytest.mark.parametrize("site", ["shared"], indirect=True)
def test_processes_share_one_render(site):
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    procs = [ctx.Process(target=_child, args=("/slow/", out)) for _ in range(4)]
    for p in procs:
        p.start()
    got = [out.get(timeout=30) for _ in procs]
    for p in procs:
        p.join(10)
    bodies = {body for _, body in got}
    # One render, by one of the processes, answered to all of them.
    assert len(bodies) == 1, bodies
    assert bodies.pop().startswith(b"slow 1 by ")
    assert all(status == 200 for status, _ in got)
