"""Cached pages: purging, readers of the stored entry, and the front's limits.

test_pages.py compares whole request sequences with Django; these tests check
what a sequence cannot show: that purging through the normal cache API works
on the front, that the stored entry reads back as the response the view
returned (class, attributes) and as an HttpResponse for code expecting
Django's pickled one, that a page whose answer outer middleware changed is
never served by the front, the Age header over time, and the front's refusals.
"""

from __future__ import annotations

import asyncio
from unittest import mock

import pages_views
import pytest
import test_pages as tp
from django.core.cache import caches
from django.core.exceptions import ImproperlyConfigured
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_started
from django.middleware.cache import FetchFromCacheMiddleware as DjangoFetch
from django.template.response import TemplateResponse
from django.test import RequestFactory, override_settings
from django.utils import translation
from django.utils.cache import get_cache_key

from django_fastcache import _pages
from django_fastcache.asgi import serve_cached as asgi_front
from django_fastcache.middleware import (
    CacheMiddleware,
    FetchFromCacheMiddleware,
    UpdateCacheMiddleware,
)
from django_fastcache.wsgi import serve_cached as wsgi_front

pytestmark = pytest.mark.filterwarnings(
    "ignore:StreamingHttpResponse must consume synchronous iterators"
)


@pytest.fixture(params=["fastcache", "shared"])
def site(request, tmp_path, monkeypatch):
    """Our site-wide pair on a fastcache backend; yields a counter of the
    requests that reached Django."""
    monkeypatch.setenv("DJANGO_FASTCACHE_SHM_DIR", str(tmp_path))
    settings = tp._site_settings("plain", True, tp.cache_config(request.param))
    calls: list[int] = []

    def count(**kwargs):
        calls.append(1)

    with override_settings(**settings):
        translation._trans.__dict__.clear()  # bound by USE_I18N at first use
        caches["default"].clear()
        pages_views.RENDERS.clear()
        _pages.LOCALE_SEEN.other = False
        request_started.connect(count)
        try:
            yield calls
        finally:
            request_started.disconnect(count)
            caches["default"].clear()


def test_purge_with_get_cache_key_reaches_the_front(site):
    app = wsgi_front(WSGIHandler())
    first = tp.call_wsgi(app, tp.req("/plain/"))
    assert tp.call_wsgi(app, tp.req("/plain/"))[2] == first[2]
    assert len(site) == 1  # the second answer came from the front
    # Django's documented way: the key of a request, deleted from the cache.
    request = RequestFactory().get("/plain/")
    key = get_cache_key(request, key_prefix="site", cache=caches["default"])
    assert key is not None
    assert type(caches["default"].get(key)) is _pages.CachedPage
    assert caches["default"].delete(key) is True
    again = tp.call_wsgi(app, tp.req("/plain/"))
    assert again[2] == b"plain 2 " and len(site) == 2
    tp.call_wsgi(app, tp.req("/plain/"))
    assert len(site) == 2  # stored again, served by the front again
    caches["default"].clear()
    assert tp.call_wsgi(app, tp.req("/plain/"))[2] == b"plain 3 "
    assert len(site) == 3


def test_stored_entry_reads_as_the_views_response(site):
    factory = RequestFactory()
    update = UpdateCacheMiddleware(lambda r: pages_views.custom_class(r))
    update(_updating(factory.get("/custom/")))
    hit = FetchFromCacheMiddleware(lambda r: None).process_request(
        factory.get("/custom/")
    )
    assert type(hit) is pages_views.JSONish
    assert hit.extra_attribute == "kept"
    assert hit["Content-Type"] == "application/json"
    assert hit.content == b'{"n": 1}'
    assert hit["Age"] == "0"
    # A TemplateResponse comes back as one, rendered, as unpickling gives it.
    update = UpdateCacheMiddleware(lambda r: pages_views.template(r))
    response = update(_updating(factory.get("/template/")))
    response.render()
    hit = FetchFromCacheMiddleware(lambda r: None).process_request(
        factory.get("/template/")
    )
    assert type(hit) is TemplateResponse and hit.is_rendered
    assert hit.content == b"template 1 "


def _updating(request):
    request._cache_update_cache = True
    return request


def test_djangos_own_readers_get_an_http_response(site):
    """A page stored by our middleware, read by Django's FetchFromCacheMiddleware
    (a project mixing both, or Django's cache_page over the same keys)."""
    factory = RequestFactory()
    UpdateCacheMiddleware(pages_views.set_cookie)(
        _updating(factory.get("/set-cookie/"))
    )
    with mock.patch("time.time", return_value=__import__("time").time() + 7):
        hit = DjangoFetch(lambda r: None).process_request(factory.get("/set-cookie/"))
    assert hit is not None and hit.status_code == 200
    assert hit.content == b"set-cookie 1"
    assert hit["Cache-Control"] == "max-age=60"
    assert hit["Age"] == "7"
    assert hit.cookies["flavour"].value == "oat"
    assert hit.cookies["flavour"]["httponly"] is True
    # And it pickles back to the same entry.
    import pickle

    again = pickle.loads(pickle.dumps(hit))
    assert type(again) is _pages.CachedPage
    assert again.content == b"set-cookie 1" and again["Age"] == hit["Age"]


def test_front_never_serves_a_cache_page_entry_outer_middleware_changed(
    tmp_path, monkeypatch
):
    """No site-wide pair: only cache_page stores.  With middleware around the
    view that add headers (Security, XFrameOptions), the stored answer is not
    what Django sends, so the front leaves those pages to Django; with none,
    the stored answer is the answer and the front serves it."""
    monkeypatch.setenv("DJANGO_FASTCACHE_SHM_DIR", str(tmp_path))
    for middleware, front_serves in (
        (
            [
                "django.middleware.security.SecurityMiddleware",
                "django.middleware.clickjacking.XFrameOptionsMiddleware",
            ],
            False,
        ),
        ([], True),
    ):
        settings = {
            **tp.BASE_SETTINGS,
            "ROOT_URLCONF": "pages_views_ours",
            "MIDDLEWARE": middleware,
            "CACHES": {"default": tp.cache_config("fastcache")},
        }
        calls: list[int] = []

        def count(calls=calls, **kwargs):
            calls.append(1)

        with override_settings(**settings):
            pages_views.RENDERS.clear()
            _pages.LOCALE_SEEN.other = False
            request_started.connect(count)
            try:
                app = wsgi_front(WSGIHandler(), key_prefix="")
                answers = [tp.call_wsgi(app, tp.req("/cp/")) for _ in range(3)]
            finally:
                request_started.disconnect(count)
        assert [a[2] for a in answers] == [b"cache_page 1 /cp/"] * 3
        assert answers[1] == answers[2]
        assert len(calls) == (1 if front_serves else 3)
        if not front_serves:
            assert ("X-Frame-Options", "DENY") in answers[1][1]


def test_age_counts_from_storing(site):
    import time

    app = wsgi_front(WSGIHandler())
    now = time.time()
    with mock.patch("time.time", return_value=now):
        tp.call_wsgi(app, tp.req("/max-age-30/"))
    started = []
    with mock.patch("time.time", return_value=now + 12):
        app(tp.environ_for(tp.req("/max-age-30/")), lambda s, h: started.extend(h))
    assert len(site) == 1
    assert ("Age", "12") in started
    with mock.patch("time.time", return_value=now + 31):
        tp.call_wsgi(app, tp.req("/max-age-30/"))  # expired: Django renders
    assert len(site) == 2


def test_time_zone_seen_by_the_drop_ins_stops_the_front(site):
    """A project middleware activating a time zone keys pages by it; once one
    such page reaches the drop-ins, the front of this process passes every
    page to Django (it cannot know which requests the middleware changes)."""
    app = wsgi_front(WSGIHandler())
    tp.call_wsgi(app, tp.req("/plain/"))
    tp.call_wsgi(app, tp.req("/plain/"))
    assert len(site) == 1
    from django.utils import timezone

    request = RequestFactory().get("/plain/")
    timezone.activate("Europe/Paris")
    try:
        _pages.request_suffix(request)
    finally:
        timezone.deactivate()
    assert _pages.LOCALE_SEEN.other is True
    tp.call_wsgi(app, tp.req("/plain/"))
    assert len(site) == 2
    _pages.LOCALE_SEEN.other = False


def test_front_needs_a_fastcache_alias():
    with override_settings(
        CACHES={"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    ):
        with pytest.raises(ImproperlyConfigured, match="LocMemCache"):
            wsgi_front(WSGIHandler())
        with pytest.raises(ImproperlyConfigured, match="LocMemCache"):
            asgi_front(lambda scope, receive, send: None)


def test_asgi_front_passes_other_scopes(site):
    seen = []

    async def app(scope, receive, send):
        seen.append(scope)

    front = asgi_front(app)
    scope = {"type": "lifespan"}
    asyncio.run(front(scope, None, None))
    assert seen == [scope] and seen[0] is scope


def test_cache_middleware_keeps_djangos_constructor(site):
    import django.middleware.cache as dj

    middleware = CacheMiddleware(lambda r: None, cache_timeout=5, key_prefix=None)
    assert isinstance(middleware, dj.CacheMiddleware)
    assert isinstance(middleware, dj.UpdateCacheMiddleware)
    assert middleware.cache_timeout == 5 and middleware.key_prefix == ""
    assert middleware.cache_alias == "default" and middleware.page_timeout is None


def test_front_checks_the_language_the_drop_ins_keyed_with(tmp_path, monkeypatch):
    """A project middleware setting request.LANGUAGE_CODE itself: a request
    the front passes on whose key has another language than the front
    computed turns the front off in this process.  (Before such a request has
    reached Django, the front cannot know: README, Cached pages.)"""
    monkeypatch.setenv("DJANGO_FASTCACHE_SHM_DIR", str(tmp_path))
    settings = tp._site_settings("i18n-default", True, tp.cache_config("fastcache"))
    middleware = settings["MIDDLEWARE"]
    settings["MIDDLEWARE"] = [
        *middleware[:-1],
        "pages_views.language_from_header",
        middleware[-1],
    ]
    calls: list[int] = []

    def count(**kwargs):
        calls.append(1)

    with override_settings(**settings):
        translation._trans.__dict__.clear()  # bound by USE_I18N at first use
        pages_views.RENDERS.clear()
        _pages.LOCALE_SEEN.other = False
        request_started.connect(count)
        try:
            app = wsgi_front(WSGIHandler())
            english = [tp.call_wsgi(app, tp.req("/plain/")) for _ in range(2)]
            assert len(calls) == 1 and english[0][2] == english[1][2]  # a front hit
            assert _pages.LOCALE_SEEN.other is False
            spanish = tp.call_wsgi(app, tp.req("/plain/", "x=1", X_LANG="es"))
            assert spanish[2] == b"plain 2 x=1" and len(calls) == 2
            assert _pages.LOCALE_SEEN.other is True
            assert tp.call_wsgi(app, tp.req("/plain/"))[2] == b"plain 1 "
            assert len(calls) == 3  # Django answers (from the cache) from now on
        finally:
            request_started.disconnect(count)
            _pages.LOCALE_SEEN.other = False
            caches["default"].clear()
