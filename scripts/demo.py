"""django-fastcache demo: configure Django with FastCache, use it the ways a
project does (low-level API, @cache_page, {% cache %}), show SharedMemoryCache
shared between processes, and time a few calls against LocMemCache.

Run by `bash scripts/demo.sh` (which sets up its own virtualenv), or directly
with Django and django-fastcache installed: `python scripts/demo.py`.
"""

from __future__ import annotations

import multiprocessing
import os
import statistics
import sys
import tempfile
import time

import django
from django.conf import settings

SHM_DIR = tempfile.mkdtemp(prefix="fastcache-demo-")
os.environ["DJANGO_FASTCACHE_SHM_DIR"] = SHM_DIR

settings.configure(
    DEBUG=False,
    ALLOWED_HOSTS=["*"],
    ROOT_URLCONF=__name__,
    SECRET_KEY="demo",
    CACHES={
        "default": {
            "BACKEND": "django_fastcache.FastCache",
            "LOCATION": "demo",
            "TIMEOUT": 300,
            "OPTIONS": {"MAX_ENTRIES": 1000, "CULL_FREQUENCY": 3},
        },
        "shared": {
            "BACKEND": "django_fastcache.SharedMemoryCache",
            "LOCATION": "demo",
            "OPTIONS": {"MAX_BYTES": 8 * 2**20},
        },
        "locmem": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    },
    TEMPLATES=[{"BACKEND": "django.template.backends.django.DjangoTemplates"}],
    INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth"],
    MIDDLEWARE=[],
)
django.setup()

from django.core.cache import cache, caches  # noqa: E402
from django.http import HttpResponse  # noqa: E402
from django.template import Context, Template  # noqa: E402
from django.test import Client  # noqa: E402
from django.urls import path  # noqa: E402
from django.views.decorators.cache import cache_page  # noqa: E402

import django_fastcache  # noqa: E402

RENDERS = {"page": 0, "fragment": 0}


@cache_page(60)
def product_list(request):
    RENDERS["page"] += 1
    return HttpResponse(f"products rendered {RENDERS['page']} time(s)")


urlpatterns = [path("products/", product_list)]


def heading(text: str) -> None:
    print(f"\n== {text} " + "=" * max(0, 60 - len(text)))


def low_level_api() -> None:
    heading("low-level API on " + type(caches["default"]).__name__)
    cache.set("greeting", "hello", timeout=30)
    print("get('greeting')           ->", cache.get("greeting"))
    print("add('greeting', 'x')      ->", cache.add("greeting", "x"))
    cache.set("hits", 0)
    print("incr('hits') x3           ->", [cache.incr("hits") for _ in range(3)])
    cache.set_many({"a": 1, "b": [1, 2, 3]})
    print("get_many(['a','b','zz'])  ->", cache.get_many(["a", "b", "zz"]))
    print("get_or_set('lazy', f)     ->", cache.get_or_set("lazy", lambda: "computed"))
    print("incr_version('a')         ->", cache.incr_version("a"))
    print("get('a', version=2)       ->", cache.get("a", version=2))
    print("touch/has_key/delete      ->", cache.touch("b", 10), cache.has_key("b"),
          cache.delete("b"), cache.has_key("b"))
    cache.set("gone", 1, timeout=0)
    print("timeout=0 expires at once ->", cache.get("gone", "expired"))
    print("stats()                   ->", cache.stats())


def views_and_templates() -> None:
    heading("@cache_page and {% cache %}")
    client = Client()
    for _ in range(3):
        body = client.get("/products/").content.decode()
    print("3 GETs of a @cache_page view ->", body)
    tpl = Template("{% load cache %}{% cache 60 sidebar user %}[sidebar for {{ user }} "
                   "built {{ n }}]{% endcache %}")
    out = [tpl.render(Context({"user": "ann", "n": i})) for i in range(3)]
    print("3 renders of a {% cache %} fragment ->", out[-1],
          "(built once:", out[0] == out[2], ")")


def _child_incr(n: int) -> None:
    from django.core.cache import caches as child_caches

    shared = child_caches["shared"]
    for _ in range(n):
        shared.incr("visits")


def shared_memory() -> None:
    heading("SharedMemoryCache: one cache for all processes")
    shared = caches["shared"]
    shared.set("visits", 0)
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_child_incr, args=(1000,)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    print("4 worker processes x 1000 incr ->", shared.get("visits"), "(exactly 4000)")
    print("segment:", django_fastcache.segment_path("demo"),
          f"({shared.stats()['segment_bytes'] // 2**20} MiB, mode 0600)")


def _ns_per_call(fn, n: int) -> float:
    t0 = time.perf_counter_ns()
    for _ in range(n):
        fn()
    return (time.perf_counter_ns() - t0) / n


def speed() -> None:
    heading("speed against LocMemCache (median of 7 interleaved rounds)")
    lm, fc, sh = caches["locmem"], caches["default"], caches["shared"]
    value = {f"field{i}": i for i in range(10)}
    for c in (lm, fc, sh):
        c.set("int", 42)
        c.set("dict", value)
    cases = [
        ("get hit (int)", lambda c: (lambda: c.get("int"))),
        ("get hit (10-key dict)", lambda c: (lambda: c.get("dict"))),
        ("get miss", lambda c: (lambda: c.get("missing"))),
        ("set (10-key dict)", lambda c: (lambda: c.set("dict2", value))),
        ("incr", lambda c: (lambda: c.incr("int"))),
    ]
    print(f"{'case':24s}{'LocMem ns':>11s}{'FastCache ns':>14s}{'ratio':>7s}"
          f"{'Shared ns':>11s}{'ratio':>7s}")
    for name, make in cases:
        rounds: dict[str, list[float]] = {"lm": [], "fc": [], "sh": []}
        for _ in range(7):
            for key, c in (("lm", lm), ("fc", fc), ("sh", sh)):
                rounds[key].append(_ns_per_call(make(c), 20000))
        m = {k: statistics.median(v) for k, v in rounds.items()}
        print(f"{name:24s}{m['lm']:11.0f}{m['fc']:14.0f}{m['lm'] / m['fc']:7.1f}"
              f"{m['sh']:11.0f}{m['lm'] / m['sh']:7.1f}")
    print("\nFull benchmark suite: python bench/bench.py (see bench/README.md)")


def main() -> int:
    print(f"django-fastcache {django_fastcache.__version__}, "
          f"Django {django.get_version()}, Python {sys.version.split()[0]}")
    try:
        low_level_api()
        views_and_templates()
        shared_memory()
        speed()
    finally:
        django_fastcache.remove_segment("demo")
        os.rmdir(SHM_DIR)
    return 0


if __name__ == "__main__":
    sys.exit(main())
