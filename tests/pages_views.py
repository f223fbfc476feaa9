"""Views and URLconfs for tests/test_pages.py (importable by name: ROOT_URLCONF).

Every view counts its renders and puts the count in the body, so two stacks
that cache differently give different answers.  ``pages_views_django`` wraps
the cache_page views with Django's decorator, ``pages_views_ours`` with
django_fastcache's; the other views are shared.
"""

from __future__ import annotations

import sys
import types
from collections import Counter

from django.conf.urls.i18n import i18n_patterns
from django.http import HttpResponse, StreamingHttpResponse
from django.template import engines
from django.template.response import TemplateResponse
from django.urls import path
from django.utils import timezone, translation
from django.utils.cache import patch_cache_control, patch_vary_headers
from django.views.decorators.cache import cache_page as django_cache_page

from django_fastcache.decorators import cache_page as our_cache_page

RENDERS: Counter[str] = Counter()


def _count(name: str) -> int:
    RENDERS[name] += 1
    return RENDERS[name]


def plain(request):
    return HttpResponse(f"plain {_count('plain')} {request.GET.urlencode()}")


def vary_cookie(request):
    n = _count("vary_cookie")
    response = HttpResponse(f"cookie {n} {request.COOKIES.get('who', '-')}")
    patch_vary_headers(response, ["Cookie"])
    return response


def vary_language(request):
    n = _count("vary_language")
    lang = request.headers.get("Accept-Language", "-")
    response = HttpResponse(f"lang {n} {lang} {translation.get_language()}")
    patch_vary_headers(response, ["Accept-Language"])
    return response


def authorization(request):
    n = _count("authorization")
    return HttpResponse(f"auth {n} {request.headers.get('Authorization', '-')}")


def public_authorization(request):
    n = _count("public_authorization")
    response = HttpResponse(f"public {n} {request.headers.get('Authorization', '-')}")
    patch_cache_control(response, public=True)
    return response


def private(request):
    response = HttpResponse(f"private {_count('private')} {request.COOKIES}")
    patch_cache_control(response, private=True)
    return response


def no_cache(request):
    response = HttpResponse(f"no-cache {_count('no_cache')}")
    patch_cache_control(response, no_cache=True)
    return response


def no_store(request):
    response = HttpResponse(f"no-store {_count('no_store')}")
    patch_cache_control(response, no_store=True)
    return response


def max_age_0(request):
    response = HttpResponse(f"max-age-0 {_count('max_age_0')}")
    patch_cache_control(response, max_age=0)
    return response


def max_age_30(request):
    response = HttpResponse(f"max-age-30 {_count('max_age_30')}")
    patch_cache_control(response, max_age=30)
    return response


def vary_star(request):
    response = HttpResponse(f"star {_count('vary_star')}")
    response["Vary"] = "*"
    return response


def status(request, code):
    return HttpResponse(f"status {_count(f'status{code}')}", status=code)


def streaming(request):
    n = _count("streaming")
    return StreamingHttpResponse(iter([b"stream ", str(n).encode()]))


def set_cookie(request):
    response = HttpResponse(f"set-cookie {_count('set_cookie')}")
    response.set_cookie("flavour", "oat", max_age=60, httponly=True)
    return response


def set_cookie_vary(request):
    response = HttpResponse(f"set-cookie-vary {_count('set_cookie_vary')}")
    response.set_cookie("user", "secret")
    patch_vary_headers(response, ["Cookie"])
    return response


def session(request):
    n = _count("session")
    request.session["seen"] = request.session.get("seen", 0) + 1
    return HttpResponse(f"session {n} {request.session['seen']}")


def session_read(request):
    n = _count("session_read")
    return HttpResponse(f"session-read {n} {request.session.get('seen', 0)}")


def where(request):
    n = _count("where")
    return HttpResponse(f"where {n} {request.build_absolute_uri()} {request.scheme}")


def template(request):
    tpl = engines["django"].from_string("template {{ n }} {{ request.path }}")
    return TemplateResponse(request, tpl, {"n": _count("template")})


def custom_class(request):
    response = JSONish(f'{{"n": {_count("custom_class")}}}', status=200)
    response.extra_attribute = "kept"
    return response


class JSONish(HttpResponse):
    """A response subclass with its own attribute: a hit must give it back."""

    def __init__(self, content, **kwargs):
        super().__init__(content, content_type="application/json", **kwargs)


def activate_tz(get_response):
    """A project middleware choosing the time zone from a header."""

    def middleware(request):
        name = request.headers.get("X-Tz")
        if name:
            timezone.activate(name)
        else:
            timezone.deactivate()
        return get_response(request)

    return middleware


def locale_tz(request):
    n = _count("locale_tz")
    return HttpResponse(f"tz {n} {timezone.get_current_timezone_name()}")


def _decorated(decorator):
    def cached_view(request):
        return HttpResponse(f"cache_page {_count('cached_view')} {request.path}")

    def cached_vary(request):
        n = _count("cached_vary")
        response = HttpResponse(
            f"cache_page vary {n} {request.COOKIES.get('who', '-')}"
        )
        patch_vary_headers(response, ["Cookie"])
        return response

    def cached_private(request):
        response = HttpResponse(f"cache_page private {_count('cached_private')}")
        patch_cache_control(response, private=True)
        return response

    return [
        path("cp/", decorator(60)(cached_view)),
        path("cp/prefixed/", decorator(60, key_prefix="pre")(cached_view)),
        path("cp/vary/", decorator(60)(cached_vary)),
        path("cp/private/", decorator(60)(cached_private)),
    ]


_common = [
    path("plain/", plain),
    path("plain/€uro/", plain),
    path("vary/cookie/", vary_cookie),
    path("vary/language/", vary_language),
    path("auth/", authorization),
    path("auth/public/", public_authorization),
    path("private/", private),
    path("no-cache/", no_cache),
    path("no-store/", no_store),
    path("max-age-0/", max_age_0),
    path("max-age-30/", max_age_30),
    path("vary/star/", vary_star),
    path("status/<int:code>/", status),
    path("streaming/", streaming),
    path("set-cookie/", set_cookie),
    path("set-cookie/vary/", set_cookie_vary),
    path("session/", session),
    path("session/read/", session_read),
    path("where/", where),
    path("template/", template),
    path("custom/", custom_class),
    path("tz/", locale_tz),
]


def _module(name: str, decorator, prefixed: bool = False) -> None:
    module = types.ModuleType(name)
    patterns = _common + _decorated(decorator)
    if prefixed:  # /plain/ in the default language, /es/plain/ in Spanish
        patterns = i18n_patterns(*patterns, prefix_default_language=False)
    module.urlpatterns = patterns  # type: ignore[attr-defined]
    sys.modules[name] = module


_module("pages_views_django", django_cache_page)
_module("pages_views_ours", our_cache_page)
_module("pages_views_django_i18n", django_cache_page, prefixed=True)
_module("pages_views_ours_i18n", our_cache_page, prefixed=True)


def language_from_header(get_response):
    """A project middleware choosing the language its own way (not LocaleMiddleware)."""

    def middleware(request):
        request.LANGUAGE_CODE = request.headers.get("X-Lang", "en")
        translation.activate(request.LANGUAGE_CODE)
        try:
            return get_response(request)
        finally:
            translation.deactivate()

    return middleware
