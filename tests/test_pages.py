"""Cached pages: the drop-ins and the front answer exactly as Django does.

Each scenario is a sequence of requests against one site (a middleware stack
with the site-wide cache pair, views in tests/pages_views.py, some under
cache_page).  The reference is Django's own UpdateCacheMiddleware /
FetchFromCacheMiddleware / cache_page on LocMemCache; each system under test
answers the same sequence from a fresh cache, and every answer must equal the
reference's: status, headers in order, body (every view puts its render count
in the body, so a page stored or served where Django would not changes the
answers).  Only values computed from the clock are masked (Date, Expires, Age
and cookie expiry dates), and HEAD bodies are dropped as a server drops them.

Systems: our drop-ins on FastCache, SharedMemoryCache and LocMemCache; the
front (serve_cached) over our drop-ins on FastCache and SharedMemoryCache;
each through WSGIHandler and through ASGIHandler (driven with asyncio).
"""

from __future__ import annotations

import asyncio
import io
import itertools
import re
import sys
from typing import Any

import pages_views
import pytest
from django.core.cache import caches
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_started
from django.test import override_settings
from django.utils import timezone, translation

from django_fastcache import _pages, backend
from django_fastcache.asgi import serve_cached as asgi_front
from django_fastcache.wsgi import serve_cached as wsgi_front

# The streaming view's iterator is synchronous; under ASGI Django warns that it
# consumes it in a thread, which is what this test wants.
pytestmark = pytest.mark.filterwarnings(
    "ignore:StreamingHttpResponse must consume synchronous iterators"
)

DJANGO = "django.middleware.cache."
OURS = "django_fastcache.middleware."
_locations = itertools.count()

# --- requests and answers ------------------------------------------------------


def req(path: str, query: str = "", method: str = "GET", **headers: str) -> tuple:
    return (method, path, query, tuple(headers.items()))


def environ_for(request: tuple) -> dict[str, Any]:
    method, path, query, headers = request
    env = {
        "REQUEST_METHOD": method,
        # WSGI carries the raw bytes of the path decoded as latin-1.
        "PATH_INFO": path.encode("utf-8").decode("latin-1"),
        "QUERY_STRING": query,
        "SCRIPT_NAME": "",
        "SERVER_NAME": "testserver",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    for name, value in headers:
        env["HTTP_" + name.upper().replace("-", "_")] = value
    env.setdefault("HTTP_HOST", "testserver")
    return env


def scope_for(request: tuple) -> dict[str, Any]:
    method, path, query, headers = request
    pairs = [
        (n.lower().replace("_", "-").encode(), v.encode("latin-1")) for n, v in headers
    ]
    if not any(n == b"host" for n, _ in pairs):
        pairs.append((b"host", b"testserver"))
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": pairs,
        "client": ("127.0.0.1", 40000),
        "server": ("testserver", 80),
    }


_CLOCK_HEADERS = {"date", "expires"}
_COOKIE_DATE = re.compile(r"(expires=)[^;]+", re.IGNORECASE)
_SESSION_VALUE = re.compile(r"(sessionid=)[^;]+")


def normalise(method: str, status: int, headers: list, body: bytes) -> tuple:
    out = []
    for name, value in headers:
        lower = name.lower()
        if lower in _CLOCK_HEADERS:
            value = "<clock>"
        elif lower == "age":
            assert 0 <= int(value) < 60, value  # a slow machine: seconds
            value = "<age>"
        elif lower == "set-cookie":
            value = _SESSION_VALUE.sub(r"\1<s>", _COOKIE_DATE.sub(r"\1<clock>", value))
        out.append((name, value))
    return (status, out, b"" if method == "HEAD" else body)


def call_wsgi(app: Any, request: tuple) -> tuple:
    started: list[Any] = []
    result = app(environ_for(request), lambda s, h, *exc: started.extend([s, h]))
    try:
        body = b"".join(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    return normalise(request[0], int(started[0].split()[0]), started[1], body)


def call_asgi(app: Any, request: tuple) -> tuple:
    messages: list[dict] = []

    received: list[int] = []

    async def receive() -> dict:
        if not received:
            received.append(1)
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.Event().wait()  # no disconnect: the client waits
        raise AssertionError("unreachable")

    async def send(message: dict) -> None:
        messages.append(message)

    asyncio.run(app(scope_for(request), receive, send))
    start = next(m for m in messages if m["type"] == "http.response.start")
    body = b"".join(
        m.get("body", b"") for m in messages if m["type"] == "http.response.body"
    )
    headers = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in start["headers"]]
    return normalise(request[0], start["status"], headers, body)


# --- sites -----------------------------------------------------------------------


def stack(prefix: str, *inner: str) -> list[str]:
    return [
        prefix + "UpdateCacheMiddleware",
        "django.middleware.security.SecurityMiddleware",
        "django.contrib.sessions.middleware.SessionMiddleware",
        "django.middleware.common.CommonMiddleware",
        *inner,
        "django.middleware.csrf.CsrfViewMiddleware",
        "django.middleware.clickjacking.XFrameOptionsMiddleware",
        prefix + "FetchFromCacheMiddleware",
    ]


BASE_SETTINGS = {
    "CACHE_MIDDLEWARE_SECONDS": 60,
    "CACHE_MIDDLEWARE_KEY_PREFIX": "site",
    "CACHE_MIDDLEWARE_ALIAS": "default",
    "SESSION_ENGINE": "django.contrib.sessions.backends.signed_cookies",
    "ALLOWED_HOSTS": ["testserver", "example.com", ".example.org"],
    "USE_I18N": False,
    "USE_TZ": True,
    "TIME_ZONE": "UTC",
    "LANGUAGE_CODE": "en",
    "LANGUAGES": [("en", "English"), ("es", "Spanish")],
}

SESSION_A = "sessionid=A"  # replaced by real signed sessions in session_cookie()


def session_cookie(seen: int) -> str:
    from django.contrib.sessions.backends.signed_cookies import SessionStore

    store = SessionStore()
    store["seen"] = seen
    store.save()
    return f"sessionid={store.session_key}"


SCENARIOS: dict[str, tuple[dict[str, Any], list[tuple]]] = {
    "plain": (
        {},
        [
            req("/plain/"),
            req("/plain/"),
            req("/plain/", method="HEAD"),
            req("/plain/", "a=1&b=2"),
            req("/plain/", "a=1&b=2"),
            req("/plain/", "b=2&a=1"),
            req("/plain/", HOST="example.com"),
            req("/plain/", HOST="example.com"),
            req("/plain/", HOST="www.example.org:8000"),
            req("/plain/", HOST="www.example.org:8000"),
            req("/plain/", HOST="evil.com"),
            req("/plain/", HOST="evil.com"),
            req("/plain/€uro/"),
            req("/plain/€uro/"),
            req("/plain/", "q=%E2%82%AC"),
            req("/plain/", "q=%E2%82%AC"),
            req("/plain/", "q=a b&r=é"),
            req("/plain/", "q=a b&r=é"),
            req("/plain/", method="POST"),
            req("/plain/", method="PUT"),
            req("/plain/"),
            req("/plain/", method="get"),
            req("/plain/", method="OPTIONS"),
            req("/plain/", IF_NONE_MATCH='"x"'),
            req("/plain/", IF_MODIFIED_SINCE="Sun, 17 Jul 2016 10:00:00 GMT"),
        ],
    ),
    "head-first": (
        {},
        [
            req("/plain/", method="HEAD"),
            req("/plain/", method="HEAD"),
            req("/plain/"),
            req("/plain/"),
            req("/plain/", method="HEAD"),
        ],
    ),
    "vary-cookie": (
        {},
        [
            req("/vary/cookie/", COOKIE="who=a"),
            req("/vary/cookie/", COOKIE="who=a"),
            req("/vary/cookie/", COOKIE="who=b"),
            req("/vary/cookie/", COOKIE="who=b"),
            req("/vary/cookie/"),
            req("/vary/cookie/"),
            req("/vary/cookie/", COOKIE=""),
            req("/vary/cookie/", COOKIE=""),
            req("/vary/cookie/", COOKIE="who=a"),
        ],
    ),
    "vary-language": (
        {},
        [
            req("/vary/language/", ACCEPT_LANGUAGE="en"),
            req("/vary/language/", ACCEPT_LANGUAGE="en"),
            req("/vary/language/", ACCEPT_LANGUAGE="es"),
            req("/vary/language/", ACCEPT_LANGUAGE="es"),
            req("/vary/language/"),
            req("/vary/language/"),
        ],
    ),
    "authorization": (
        {},
        [
            req("/auth/", AUTHORIZATION="Bearer a"),
            req("/auth/", AUTHORIZATION="Bearer a"),
            req("/auth/", AUTHORIZATION="Bearer b"),
            req("/auth/", AUTHORIZATION="Bearer b"),
            req("/auth/"),
            req("/auth/"),
            req("/auth/", AUTHORIZATION="Bearer a"),
            req("/auth/public/", AUTHORIZATION="Bearer a"),
            req("/auth/public/", AUTHORIZATION="Bearer b"),
            req("/auth/public/"),
        ],
    ),
    "never-stored": (
        {},
        [
            req("/private/", COOKIE="who=a"),
            req("/private/", COOKIE="who=b"),
            req("/private/"),
            req("/no-cache/"),
            req("/no-cache/"),
            req("/no-store/"),
            req("/no-store/"),
            req("/max-age-0/"),
            req("/max-age-0/"),
            req("/vary/star/"),
            req("/vary/star/"),
            req("/status/404/"),
            req("/status/404/"),
            req("/status/201/"),
            req("/status/201/"),
            req("/status/302/"),
            req("/status/302/"),
            req("/status/500/"),
            req("/status/500/"),
            req("/streaming/"),
            req("/streaming/"),
            req("/set-cookie/vary/"),
            req("/set-cookie/vary/"),
            req("/session/"),
            req("/session/"),
            req("/cp/private/"),
            req("/cp/private/"),
        ],
    ),
    "stored-with-cookie": (
        {},
        [
            req("/set-cookie/"),
            req("/set-cookie/"),
            req("/set-cookie/", method="HEAD"),
            req("/max-age-30/"),
            req("/max-age-30/"),
        ],
    ),
    "session": (
        {},
        [
            req("/session/read/", COOKIE="<session 1>"),
            req("/session/read/", COOKIE="<session 1>"),
            req("/session/read/", COOKIE="<session 2>"),
            req("/session/read/", COOKIE="<session 2>"),
            req("/session/read/"),
            req("/session/read/"),
        ],
    ),
    "forwarded": (
        {
            "USE_X_FORWARDED_HOST": True,
            "SECURE_PROXY_SSL_HEADER": ("HTTP_X_FORWARDED_PROTO", "https"),
        },
        [
            req("/where/"),
            req("/where/"),
            req("/where/", X_FORWARDED_HOST="example.com"),
            req("/where/", X_FORWARDED_HOST="example.com"),
            req("/where/", X_FORWARDED_PROTO="https"),
            req("/where/", X_FORWARDED_PROTO="https"),
            req("/where/", X_FORWARDED_PROTO="https, http"),
            req("/where/", X_FORWARDED_PROTO="http"),
            req("/where/", X_FORWARDED_HOST="evil.com"),
            req("/where/", X_FORWARDED_HOST="evil.com"),
            req("/where/", X_FORWARDED_HOST="example.com", X_FORWARDED_PROTO="https"),
            req("/where/", X_FORWARDED_HOST="example.com", X_FORWARDED_PROTO="https"),
        ],
    ),
    "forwarded-off": (
        {},
        [
            req("/where/", X_FORWARDED_HOST="evil.com"),
            req("/where/", X_FORWARDED_HOST="evil.com"),
            req("/where/", X_FORWARDED_PROTO="https"),
            req("/where/"),
        ],
    ),
    "template-and-class": (
        {},
        [
            req("/template/"),
            req("/template/"),
            req("/template/", "x=1"),
            req("/custom/"),
            req("/custom/"),
        ],
    ),
    "cache-page": (
        {},
        [
            req("/cp/"),
            req("/cp/"),
            req("/cp/", method="HEAD"),
            req("/cp/prefixed/"),
            req("/cp/prefixed/"),
            req("/cp/vary/", COOKIE="who=a"),
            req("/cp/vary/", COOKIE="who=b"),
            req("/cp/vary/", COOKIE="who=a"),
        ],
    ),
    "i18n-locale": (
        {"USE_I18N": True},
        [
            req("/vary/language/", ACCEPT_LANGUAGE="es"),
            req("/vary/language/", ACCEPT_LANGUAGE="es"),
            req("/vary/language/", ACCEPT_LANGUAGE="en"),
            req("/vary/language/", ACCEPT_LANGUAGE="en"),
            req("/vary/language/", COOKIE="django_language=es"),
            req("/vary/language/", COOKIE="django_language=es"),
            req("/plain/"),
            req("/plain/"),
            req("/plain/", ACCEPT_LANGUAGE="es"),
        ],
    ),
    "i18n-default": (
        {"USE_I18N": True},
        [
            req("/plain/"),
            req("/plain/"),
            req("/vary/language/", ACCEPT_LANGUAGE="es"),
            req("/vary/language/", ACCEPT_LANGUAGE="es"),
            req("/vary/language/"),
        ],
    ),
    "no-tz": (
        {"USE_TZ": False},
        [req("/plain/"), req("/plain/"), req("/cp/"), req("/cp/")],
    ),
}
# CacheMiddleware first in MIDDLEWARE (the "early placement"): a hit skips the
# rest of the stack in Django too.
SCENARIOS["early-placement"] = (
    {},
    [
        req("/plain/"),
        req("/plain/"),
        req("/vary/cookie/", COOKIE="who=a"),
        req("/vary/cookie/", COOKIE="who=a"),
        req("/plain/", method="HEAD"),
        req("/private/"),
        req("/private/"),
    ],
)
EARLY_SCENARIOS = {"early-placement"}
# URLs prefixed by language (i18n_patterns, default language unprefixed).
SCENARIOS["i18n-patterns"] = (
    {"USE_I18N": True},
    [
        req("/plain/"),
        req("/plain/"),
        req("/es/plain/"),
        req("/es/plain/"),
        req("/plain/", COOKIE="django_language=es"),
        req("/plain/", ACCEPT_LANGUAGE="es"),
        req("/es/plain/", ACCEPT_LANGUAGE="en"),
        req("/es/vary/language/", ACCEPT_LANGUAGE="en"),
        req("/es/vary/language/", ACCEPT_LANGUAGE="en"),
        req("/en/plain/"),
        req("/fr/plain/"),
    ],
)
PREFIXED_SCENARIOS = {"i18n-patterns"}
LOCALE_SCENARIOS = {"i18n-locale", "i18n-patterns"}
TZ_SCENARIO = (
    {},
    [
        req("/tz/", X_TZ="Europe/Paris"),
        req("/tz/", X_TZ="Europe/Paris"),
        req("/tz/"),
        req("/tz/"),
        req("/tz/", X_TZ="Europe/Paris"),
    ],
)
SCENARIOS["tz-middleware"] = TZ_SCENARIO
TZ_SCENARIOS = {"tz-middleware"}
# Scenarios whose repeated requests the front must answer itself at least once.
FRONT_HITS = {
    "plain",
    "head-first",
    "vary-cookie",
    "vary-language",
    "authorization",
    "stored-with-cookie",
    "session",
    "forwarded",
    "template-and-class",
    "i18n-default",
    "no-tz",
    "early-placement",
    "i18n-locale",
    "i18n-patterns",
}
# Scenarios the front must pass to Django entirely: nothing shareable, a time
# zone chosen by a project middleware.  (In "cache-page" the site-wide pair
# also stores the final answers of the cache_page views, under its own prefix:
# those the front serves.)
FRONT_NEVER = {"never-stored", "tz-middleware"}


def _site_settings(scenario: str, ours: bool, cache: dict[str, Any]) -> dict[str, Any]:
    extra, _requests = SCENARIOS[scenario]
    prefix = OURS if ours else DJANGO
    inner = []
    if scenario in LOCALE_SCENARIOS:
        inner.append("django.middleware.locale.LocaleMiddleware")
    if scenario in TZ_SCENARIOS:
        inner.append("pages_views.activate_tz")
    middleware = stack(prefix, *inner)
    if scenario in EARLY_SCENARIOS:
        middleware = [prefix + "CacheMiddleware", *middleware[1:-1]]
    return {
        **BASE_SETTINGS,
        **extra,
        "ROOT_URLCONF": ("pages_views_ours" if ours else "pages_views_django")
        + ("_i18n" if scenario in PREFIXED_SCENARIOS else ""),
        "MIDDLEWARE": middleware,
        "CACHES": {"default": cache},
    }


def _requests(scenario: str) -> list[tuple]:
    out = []
    sessions: dict[str, str] = {}  # one cookie per session for the whole run
    for method, path, query, headers in SCENARIOS[scenario][1]:
        fixed = []
        for name, value in headers:
            if value.startswith("<session "):
                if value not in sessions:
                    sessions[value] = session_cookie(int(value[9:-1]))
                value = sessions[value]
            fixed.append((name, value))
        out.append((method, path, query, tuple(fixed)))
    return out


def run_site(scenario: str, system: str, protocol: str, cache: dict[str, Any]) -> tuple:
    """(answers, requests that reached Django) of one system on a fresh cache."""
    ours = system != "django"
    calls: list[int] = []

    def count(**kwargs: Any) -> None:
        calls.append(1)

    with override_settings(**_site_settings(scenario, ours, cache)):
        caches["default"].clear()
        pages_views.RENDERS.clear()
        # django.utils.translation binds its functions to trans_real or
        # trans_null at first use, by USE_I18N: these sites switch it.
        translation._trans.__dict__.clear()
        # A language or time zone activated by an earlier site stays active in
        # this thread (as it would in a server's worker thread): start clean.
        translation.deactivate()
        timezone.deactivate()
        _pages.LOCALE_SEEN.other = False
        requests = _requests(scenario)
        request_started.connect(count)
        try:
            if protocol == "wsgi":
                app: Any = WSGIHandler()
                if system.startswith("front"):
                    app = wsgi_front(app)
                answers = [call_wsgi(app, r) for r in requests]
            else:
                app = ASGIHandler()
                if system.startswith("front"):
                    app = asgi_front(app)
                answers = [call_asgi(app, r) for r in requests]
        finally:
            request_started.disconnect(count)
            caches["default"].clear()
            _pages.LOCALE_SEEN.other = False
    return answers, len(calls)


def cache_config(kind: str) -> dict[str, Any]:
    location = f"pages-{kind}-{next(_locations)}"
    if kind == "shared":
        return {
            "BACKEND": "django_fastcache.SharedMemoryCache",
            "LOCATION": location,
            "OPTIONS": {"MAX_BYTES": 2**20},
        }
    if kind == "fastcache":
        return {"BACKEND": "django_fastcache.FastCache", "LOCATION": location}
    return {
        "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
        "LOCATION": location,
    }


_reference: dict[tuple[str, str], tuple] = {}


def reference(scenario: str, protocol: str) -> tuple:
    key = (scenario, protocol)
    if key not in _reference:
        _reference[key] = run_site(scenario, "django", protocol, cache_config("locmem"))
    return _reference[key]


@pytest.fixture
def shm_dir(tmp_path, monkeypatch):
    monkeypatch.setenv(backend.SHM_DIR_ENV, str(tmp_path))
    return tmp_path


SYSTEMS = [
    "dropin-fastcache",
    "dropin-shared",
    "dropin-locmem",
    "front-fastcache",
    "front-shared",
]


@pytest.mark.parametrize("protocol", ["wsgi", "asgi"])
@pytest.mark.parametrize("system", SYSTEMS)
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_same_answers_as_django(scenario, system, protocol, shm_dir):
    expected, django_calls = reference(scenario, protocol)
    kind = system.split("-", 1)[1]
    answers, calls = run_site(scenario, system, protocol, cache_config(kind))
    for i, (want, got) in enumerate(zip(expected, answers, strict=True)):
        assert got == want, f"request {i}: {SCENARIOS[scenario][1][i]}"
    if system.startswith("dropin"):
        assert calls == django_calls == len(expected)
    elif scenario in FRONT_HITS:
        assert calls < django_calls, "the front answered nothing itself"
    elif scenario in FRONT_NEVER:
        assert calls == django_calls, "the front answered a request itself"
