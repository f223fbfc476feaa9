#!/usr/bin/env python
"""Request-level benchmark: what a cached page, a fragment-cached page and a
cache-backed session cost per request, through Django's WSGIHandler (and
through the page front), in one process.

    python bench/bench_pages.py [--quick] [--json out.json] [--markdown]
                                [--scenarios page,pair,early,fragments,session]

Every request is a full WSGI call: a fresh environ, the handler (or the
front), the body iterated and closed (request_finished fires), with the
typical middleware stack (Security, Session, Common, Csrf, Auth, Messages)
around a 10 KB page.  A scenario compares variants of the same request:

    A  Django's classes on LocMemCache          (the reference)
    B  Django's classes on FastCache
    C  django_fastcache's drop-ins on FastCache
    D  the front (serve_cached) on FastCache
    E  the front on SharedMemoryCache

(fragments compare Django's {% cache %} tag with the drop-in tag of
django_fastcache.templatetags.fastcache; sessions compare the backends behind
Django's own code.)  As in bench.py, variants run in interleaved
rounds (A, B, C, ... each a calibrated loop of a few tens of milliseconds, GC
off) and a row reports each variant's median µs per request and the median
of the per-round ratios A / variant.  Exit status 0: it measures, it does not
gate; the last line is "targets met: X/Y".
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import os
import statistics
import sys
import tempfile
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from time import perf_counter_ns
from typing import Any

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.append(REPO_ROOT)

LOCMEM = "django.core.cache.backends.locmem.LocMemCache"
TYPICAL = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
ALIASES = {"locmem": LOCMEM, "fast": "django_fastcache.FastCache",
           "shared": "django_fastcache.SharedMemoryCache"}
PAGE_BODY = ("<p>" + "A line of a cached product page. " * 9 + "</p>\n") * 30  # ~10 KB
FRAGMENTS = 20


# --------------------------------------------------------------------------
# Django, configured once for every variant


def setup_django() -> None:
    import django
    from django.conf import settings

    if settings.configured:
        return
    settings.configure(
        DEBUG=False,
        SECRET_KEY="bench-pages-" + "x" * 40,
        ALLOWED_HOSTS=["bench.example.com"],
        ROOT_URLCONF=__name__,
        USE_I18N=True,
        USE_TZ=True,
        INSTALLED_APPS=[
            "django.contrib.auth",
            "django.contrib.contenttypes",
            "django.contrib.sessions",
            "django.contrib.messages",
        ],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3",
                               "NAME": ":memory:"}},
        CACHES={alias: {"BACKEND": backend, "LOCATION": f"bench-pages-{alias}",
                        "OPTIONS": {"MAX_ENTRIES": 100_000}}
                for alias, backend in ALIASES.items()}
        | {"default": {"BACKEND": LOCMEM, "LOCATION": "bench-pages-default"}},
        MIDDLEWARE=TYPICAL,
        SESSION_ENGINE="django.contrib.sessions.backends.cache",
        TEMPLATES=[
            {"BACKEND": "django.template.backends.django.DjangoTemplates",
             "NAME": "django", "DIRS": [], "APP_DIRS": False, "OPTIONS": {}},
            # The drop-in tag, enabled as the README says: the "cache" library.
            {"BACKEND": "django.template.backends.django.DjangoTemplates",
             "NAME": "fastcache", "DIRS": [], "APP_DIRS": False,
             "OPTIONS": {"libraries": {
                 "cache": "django_fastcache.templatetags.fastcache"}}},
        ],
        CACHE_MIDDLEWARE_SECONDS=600,
        CACHE_MIDDLEWARE_KEY_PREFIX="",
    )
    django.setup()


# --------------------------------------------------------------------------
# Views and URLs: one URL per (scenario, variant), so that every variant has
# its own pages and decorators bound to its own alias.


def _page(request: Any) -> Any:
    from django.http import HttpResponse

    return HttpResponse(PAGE_BODY)


def _fragment_template(engine: str) -> Any:
    """A page of FRAGMENTS {% cache %} blocks in their most common form (the
    default cache, no using=); every other one varies on a context value."""
    from django.template import engines

    parts = ["{% load cache %}"]
    for i in range(FRAGMENTS):
        vary = " user_id" if i % 2 else ""
        parts.append(
            "{% cache 600 frag" + str(i) + vary + " %}<div>"
            + f"fragment {i} of the page, rendered once. " * 12 + "</div>{% endcache %}"
        )
    return engines[engine].from_string("\n".join(parts))


def _make_fragments_view(engine: str) -> Callable[[Any], Any]:
    template = _fragment_template(engine)

    def view(request: Any) -> Any:
        from django.http import HttpResponse

        return HttpResponse(template.render({"user_id": 42}, request))

    return view


def _session_view(request: Any) -> Any:
    from django.http import HttpResponse

    request.session["visits"] = request.session.get("visits", 0) + 1
    request.session["cart"] = {"items": [1, 2, 3], "total": "12.50"}
    return HttpResponse(PAGE_BODY)


urlpatterns: list[Any] = []


def _build_urls() -> None:
    from django.urls import path
    from django.views.decorators.cache import cache_page as dj_cache_page

    from django_fastcache.decorators import cache_page as fc_cache_page

    urlpatterns[:] = [
        path("page/dj/locmem/", dj_cache_page(600, cache="locmem")(_page)),
        path("page/dj/fast/", dj_cache_page(600, cache="fast")(_page)),
        path("page/fc/fast/", fc_cache_page(600, cache="fast")(_page)),
        path("plain/", _page),
        path("session/", _session_view),
        path("fragments/dj/", _make_fragments_view("django")),
        path("fragments/fc/", _make_fragments_view("fastcache")),
    ]


def _session_engine(alias: str) -> str:
    """A SESSION_ENGINE module whose SessionStore uses alias (the cache
    session backend reads SESSION_CACHE_ALIAS per request; this binds it)."""
    from django.contrib.sessions.backends import cache as cache_sessions
    from django.core.cache import caches

    name = f"_bench_sessions_{alias}"
    if name not in sys.modules:
        module = types.ModuleType(name)

        class SessionStore(cache_sessions.SessionStore):
            def __init__(self, session_key: str | None = None) -> None:
                super().__init__(session_key)
                self._cache = caches[alias]

        module.SessionStore = SessionStore  # type: ignore[attr-defined]
        sys.modules[name] = module
    return name


# --------------------------------------------------------------------------
# Handlers and requests


def _handler(middleware: list[str], **overrides: Any) -> Any:
    """A WSGIHandler whose middleware chain was built under these settings
    (middleware read their settings when they are made)."""
    from django.core.handlers.wsgi import WSGIHandler
    from django.test.utils import override_settings

    with override_settings(MIDDLEWARE=middleware, **overrides):
        return WSGIHandler()


def _front(app: Any, alias: str, key_prefix: str) -> Any:
    from django_fastcache.wsgi import serve_cached

    return serve_cached(app, alias, key_prefix=key_prefix)


ENVIRON = {
    "REQUEST_METHOD": "GET",
    "SCRIPT_NAME": "",
    "QUERY_STRING": "",
    "SERVER_NAME": "bench.example.com",
    "SERVER_PORT": "80",
    "SERVER_PROTOCOL": "HTTP/1.1",
    "HTTP_HOST": "bench.example.com",
    "HTTP_ACCEPT": "text/html",
    "HTTP_ACCEPT_ENCODING": "gzip, deflate",
    "HTTP_USER_AGENT": "bench_pages/1.0",
    "wsgi.version": (1, 0),
    "wsgi.url_scheme": "http",
    "wsgi.errors": sys.stderr,
    "wsgi.multithread": False,
    "wsgi.multiprocess": False,
    "wsgi.run_once": False,
}


def _start_response(status: str, headers: list[Any], exc_info: Any = None) -> Any:
    _start_response.status = status  # type: ignore[attr-defined]
    return None


def request(app: Any, path: str, cookie: str = "") -> tuple[str, bytes]:
    """One WSGI request as a server makes it; (status, body)."""
    environ = dict(ENVIRON)
    environ["PATH_INFO"] = path
    environ["wsgi.input"] = io.BytesIO(b"")
    if cookie:
        environ["HTTP_COOKIE"] = cookie
    result = app(environ, _start_response)
    try:
        body = b"".join(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    return _start_response.status, body  # type: ignore[attr-defined]


# --------------------------------------------------------------------------
# Scenarios


@dataclass
class Variant:
    label: str
    call: Callable[[], Any]
    before: Callable[[], Any] | None = None  # untimed, before each of its loops


@dataclass
class Scenario:
    id: str
    title: str
    variants: list[Variant]
    targets: dict[str, float] = field(default_factory=dict)  # label -> ratio vs A


def _checked(app: Any, path: str, cookie: str = "") -> Callable[[], Any]:
    """The request, made twice untimed (store, then a hit that must answer
    200 with the page), then returned for timing."""
    for _ in range(2):
        status, body = request(app, path, cookie)
        assert status.startswith("200"), (path, status)
        assert len(body) > 1000, (path, len(body))

    def call() -> Any:
        return request(app, path, cookie)

    return call


def scenarios(selected: set[str]) -> list[Scenario]:
    dj_pair = ["django.middleware.cache.UpdateCacheMiddleware", *TYPICAL,
               "django.middleware.cache.FetchFromCacheMiddleware"]
    fc_pair = ["django_fastcache.middleware.UpdateCacheMiddleware", *TYPICAL,
               "django_fastcache.middleware.FetchFromCacheMiddleware"]
    dj_early = ["django.middleware.cache.CacheMiddleware", *TYPICAL]
    fc_early = ["django_fastcache.middleware.CacheMiddleware", *TYPICAL]
    out = []
    if "page" in selected:
        typical = _handler(TYPICAL)
        out.append(Scenario("page", "@cache_page hit, typical stack", [
            Variant("A Django + LocMemCache", _checked(typical, "/page/dj/locmem/")),
            Variant("B Django + FastCache", _checked(typical, "/page/dj/fast/")),
            Variant("C drop-in + FastCache", _checked(typical, "/page/fc/fast/")),
        ], {"C drop-in + FastCache": 1.3}))
    for sid, title, dj_stack, fc_stack, target_front in (
        ("pair", "site-wide Update/FetchFromCacheMiddleware hit", dj_pair, fc_pair,
         10.0),
        ("early", "CacheMiddleware first in MIDDLEWARE, hit", dj_early, fc_early,
         5.0),
    ):
        if sid not in selected:
            continue
        variants = []
        for label, stack, alias, front in (
            ("A Django + LocMemCache", dj_stack, "locmem", False),
            ("B Django + FastCache", dj_stack, "fast", False),
            ("C drop-in + FastCache", fc_stack, "fast", False),
            ("D front + FastCache", fc_stack, "fast", True),
            ("E front + SharedMemoryCache", fc_stack, "shared", True),
        ):
            app = _handler(stack, CACHE_MIDDLEWARE_ALIAS=alias,
                           CACHE_MIDDLEWARE_KEY_PREFIX=f"{sid}-{label[0]}")
            if front:
                app = _front(app, alias, f"{sid}-{label[0]}")
            variants.append(Variant(label, _checked(app, "/plain/")))
        out.append(Scenario(sid, title, variants, {
            "C drop-in + FastCache": 1.3,
            "D front + FastCache": target_front,
            "E front + SharedMemoryCache": target_front,
        }))
    if "fragments" in selected:
        typical = _handler(TYPICAL)
        variants = []
        for label, engine, alias in (
            ("A Django + LocMemCache", "dj", "locmem"),
            ("B Django + FastCache", "dj", "fast"),
            ("C drop-in + FastCache", "fc", "fast"),
            ("E drop-in + SharedMemoryCache", "fc", "shared"),
        ):
            before = _default_cache_is(alias)
            before()
            variants.append(Variant(label, _checked(typical, f"/fragments/{engine}/"),
                                    before))
        title = f"page of {FRAGMENTS} {{% cache %}} fragments"
        out.append(Scenario("fragments", title, variants,
                            {"C drop-in + FastCache": 1.6}))
    if "session" in selected:
        variants = []
        for label, alias in (("A Django + LocMemCache", "locmem"),
                             ("B Django + FastCache", "fast"),
                             ("E Django + SharedMemoryCache", "shared")):
            app = _handler(TYPICAL, SESSION_ENGINE=_session_engine(alias))
            cookie = _session_cookie(app)
            variants.append(Variant(label, _checked(app, "/session/", cookie)))
        out.append(Scenario("session", "session load + save (cache sessions)",
                            variants))
    return out


def _default_cache_is(alias: str) -> Callable[[], None]:
    """Makes caches["default"] of this thread the alias's cache: the cache a
    {% cache %} without using= renders with (this bench's one thread)."""
    from django.core.cache import caches

    def before() -> None:
        setattr(caches._connections, "default", caches[alias])  # noqa: B010

    return before


def _session_cookie(app: Any) -> str:
    """A session cookie from a first request (its session then exists)."""
    from django.conf import settings

    environ = dict(ENVIRON, PATH_INFO="/session/", **{"wsgi.input": io.BytesIO(b"")})
    got: dict[str, Any] = {}

    def start(status: str, headers: list[Any], exc_info: Any = None) -> None:
        got["headers"] = headers

    result = app(environ, start)
    b"".join(result)
    result.close()
    for name, value in got["headers"]:
        value = value.strip()
        if (name.lower() == "set-cookie"
                and value.startswith(settings.SESSION_COOKIE_NAME + "=")):
            return value.split(";", 1)[0]
    raise AssertionError("no session cookie")


# --------------------------------------------------------------------------
# Measuring


def _calibrate(call: Callable[[], Any], target_ns: float) -> int:
    n = 1
    while True:
        t0 = perf_counter_ns()
        for _ in range(n):
            call()
        elapsed = perf_counter_ns() - t0
        if elapsed >= target_ns / 4 or n >= 1 << 16:
            return max(1, int(n * target_ns / max(elapsed, 1)))
        n *= 4


def measure(scenario: Scenario, rounds: int, target_ns: float) -> dict[str, Any]:
    counts = []
    for v in scenario.variants:
        if v.before is not None:
            v.before()
        counts.append(_calibrate(v.call, target_ns))
    per: list[list[float]] = [[] for _ in scenario.variants]
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for _ in range(rounds):
            for i, v in enumerate(scenario.variants):
                call, n = v.call, counts[i]
                if v.before is not None:
                    v.before()
                t0 = perf_counter_ns()
                for _ in range(n):
                    call()
                per[i].append((perf_counter_ns() - t0) / n / 1000)
            gc.collect()
    finally:
        if gc_was:
            gc.enable()
    ref = per[0]
    rows = []
    for i, v in enumerate(scenario.variants):
        ratios = [a / b for a, b in zip(ref, per[i], strict=True)]
        target = scenario.targets.get(v.label)
        ratio = statistics.median(ratios)
        rows.append({"variant": v.label, "us": statistics.median(per[i]),
                     "ratio": ratio, "target": target,
                     "met": None if target is None else ratio >= target})
    return {"id": scenario.id, "title": scenario.title, "rows": rows}


def render(results: list[dict[str, Any]], markdown: bool) -> str:
    lines = []
    if markdown:
        lines += ["| request | variant | µs/request | vs A | target |",
                  "|---|---|---|---|---|"]
    for res in results:
        for row in res["rows"]:
            target = "" if row["target"] is None else (
                f">= {row['target']:g}x " + ("PASS" if row["met"] else "FAIL"))
            if markdown:
                lines.append(f"| {res['title']} | {row['variant']} | {row['us']:.1f} "
                             f"| {row['ratio']:.2f}x | {target} |")
            else:
                lines.append(f"{res['title'][:44]:44s}  {row['variant']:30s} "
                             f"{row['us']:9.1f} us  {row['ratio']:6.2f}x  {target}")
    met = [r["met"] for res in results for r in res["rows"] if r["met"] is not None]
    lines.append("")
    lines.append(f"targets met: {sum(met)}/{len(met)}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter rounds")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--scenarios", default="page,pair,early,fragments,session")
    parser.add_argument("--json", help="write the results to this file")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    if "DJANGO_FASTCACHE_SHM_DIR" not in os.environ:
        # The segment in a private directory, removed at exit: never the site's.
        tmp = tempfile.TemporaryDirectory(prefix="fastcache-pages-")
        os.environ["DJANGO_FASTCACHE_SHM_DIR"] = tmp.name
    setup_django()
    _build_urls()
    rounds = args.rounds or (5 if args.quick else 21)
    target_ns = 10e6 if args.quick else 30e6
    selected = set(args.scenarios.split(","))
    import django

    import django_fastcache

    print(f"bench_pages: Django {django.get_version()}, django_fastcache from "
          f"{os.path.dirname(django_fastcache.__file__)}; {rounds} interleaved rounds "
          f"of ~{target_ns / 1e6:.0f} ms per variant; ratio = median over rounds of "
          "A µs / variant µs", flush=True)
    results = [measure(s, rounds, target_ns) for s in scenarios(selected)]
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)
    print(render(results, args.markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
