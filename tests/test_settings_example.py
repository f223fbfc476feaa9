"""The settings.py-level example from the README, end to end through Django:

    CACHES = {"default": {"BACKEND": "django_fastcache.FastCache", ...}}

A @cache_page view through the test client and a {% cache %} template fragment
are served from the cache on the second request.
"""

from __future__ import annotations

import itertools
import threading

import pytest
from django.core.cache import cache, caches
from django.http import HttpResponse
from django.template import Context, Template
from django.test import Client
from django.test.utils import override_settings
from django.urls import path
from django.views.decorators.cache import cache_page

BACKENDS = {
    "locmem": "django.core.cache.backends.locmem.LocMemCache",
    "fastcache": "django_fastcache.FastCache",
}
_unique = itertools.count()
CALLS = {"view": 0}


@cache_page(60)
def cached_view(request):
    CALLS["view"] += 1
    return HttpResponse(f"rendered {CALLS['view']} for {request.GET.get('q', '')}")


urlpatterns = [path("cached/", cached_view)]


@pytest.fixture
def cache_settings(impl):
    n = next(_unique)
    settings_caches = {
        "default": {
            "BACKEND": BACKENDS[impl],
            "LOCATION": f"settings-example-{n}",
            "TIMEOUT": 300,
            "OPTIONS": {"MAX_ENTRIES": 1000, "CULL_FREQUENCY": 3},
        },
        "other": {"BACKEND": BACKENDS[impl], "LOCATION": f"settings-example-other-{n}"},
    }
    with override_settings(CACHES=settings_caches, ROOT_URLCONF=__name__):
        yield settings_caches
        caches["default"].clear()
        caches["other"].clear()


def test_caches_handler_builds_the_backend(impl, cache_cls, cache_settings):
    assert type(caches["default"]) is cache_cls
    assert caches["default"]._max_entries == 1000
    assert caches["default"].default_timeout == 300
    caches["default"].set("k", "v")
    assert cache.get("k") == "v"
    assert caches["other"].get("k") is None
    # CacheHandler gives each thread its own instance; they share the store.
    box = {}
    thread = threading.Thread(target=lambda: box.update(c=caches["default"]))
    thread.start()
    thread.join(10)
    assert box["c"] is not caches["default"]
    assert box["c"].get("k") == "v"


def test_cache_page_view(cache_settings):
    CALLS["view"] = 0
    client = Client()
    first = client.get("/cached/", {"q": "x"})
    second = client.get("/cached/", {"q": "x"})
    other = client.get("/cached/", {"q": "y"})
    assert first.status_code == second.status_code == 200
    assert first.content == second.content == b"rendered 1 for x"
    assert other.content == b"rendered 2 for y"
    assert CALLS["view"] == 2
    assert "max-age=60" in second["Cache-Control"]
    # The page is really stored in the configured backend.
    stored = list(caches["default"]._cache)
    assert any("views.decorators.cache.cache_page" in k for k in stored), stored
    caches["default"].clear()
    third = client.get("/cached/", {"q": "x"})
    assert third.content == b"rendered 3 for x"


def test_cache_template_fragment(cache_settings):
    template = Template(
        "{% load cache %}{% cache 500 sidebar user %}[{{ value }}]{% endcache %}"
    )
    first = template.render(Context({"value": "one", "user": "u1"}))
    second = template.render(Context({"value": "two", "user": "u1"}))
    third = template.render(Context({"value": "three", "user": "u2"}))
    assert (first, second, third) == ("[one]", "[one]", "[three]")
    keys = list(caches["default"]._cache)
    assert len(keys) == 2 and all("template.cache.sidebar" in k for k in keys)
    from django.core.cache.utils import make_template_fragment_key

    caches["default"].delete(make_template_fragment_key("sidebar", ["u1"]))
    assert template.render(Context({"value": "four", "user": "u1"})) == "[four]"
