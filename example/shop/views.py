"""Views using the cache in four ways.

product_list    the whole response cached by @cache_page (per URL, so per
                ?category=); the sidebar is a {% cache %} fragment
product_detail  not page-cached (it shows the visitor's session), but its
                description block is a {% cache %} fragment; it records the
                product in the session and counts views with cache.incr()
popular         the low-level API: get_or_set() of a computed summary,
                get_many() of the view counters, incr() of a request counter
stats           JSON: the cache's stats() (fastcache backends) and how often
                each view actually ran, for loadtest.py
hot_page        the page pageload.py hammers: cached by the site-wide
                middleware (FASTCACHE_PAGES), each render logged
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter

from django.conf import settings
from django.core.cache import cache
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import cache_page
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from . import catalog

PAGE_TIMEOUT = 30
RECENT = 5

# How many times each view body ran (a page served by @cache_page does not
# run the view).  Per process, like a FastCache table.
_runs: Counter[str] = Counter()
_runs_lock = threading.Lock()


def _ran(view: str) -> None:
    with _runs_lock:
        _runs[view] += 1


def view_runs() -> dict[str, int]:
    with _runs_lock:
        return dict(_runs)


def _views_key(pk: int) -> str:
    return f"shop:views:{pk}"


@cache_page(PAGE_TIMEOUT)
def product_list(request: HttpRequest) -> HttpResponse:
    _ran("product_list")
    category = request.GET.get("category") or ""
    if category and category not in catalog.CATEGORIES:
        raise Http404("No such category")
    context = {
        "products": catalog.products(category or None),
        "categories": catalog.CATEGORIES,
        "category": category,
    }
    return render(request, "shop/product_list.html", context)


def product_detail(request: HttpRequest, pk: int) -> HttpResponse:
    _ran("product_detail")
    product = catalog.get(pk)
    if product is None:
        raise Http404("No such product")
    # Count views: add() creates the counter without a timeout, incr() bumps it.
    cache.add(_views_key(pk), 0, timeout=None)
    views = cache.incr(_views_key(pk))
    # Recently viewed, kept in the (cache-backed) session.
    recent = [p for p in request.session.get("recent", []) if p != pk]
    request.session["recent"] = [pk, *recent][:RECENT]
    context = {
        "product": product,
        "views": views,
        "recent": [catalog.get(p) for p in recent[: RECENT - 1]],
        "categories": catalog.CATEGORIES,
        "category": product.category,
    }
    return render(request, "shop/product_detail.html", context)


def popular(request: HttpRequest) -> JsonResponse:
    _ran("popular")
    summary = cache.get_or_set("shop:summary", catalog.summary, timeout=60)
    cache.add("shop:api-requests", 0, timeout=None)
    requests_served = cache.incr("shop:api-requests")
    counters = cache.get_many([_views_key(pk) for pk in catalog.PRODUCTS])
    top = sorted(
        ((int(key.rsplit(":", 1)[1]), count) for key, count in counters.items()),
        key=lambda item: (-item[1], item[0]),
    )[:5]
    return JsonResponse(
        {
            "summary": summary,
            "most_viewed": [{"pk": pk, "views": count} for pk, count in top],
            "api_requests": requests_served,
        }
    )


HOT_RENDER_SECONDS = 0.05  # what a render costs (queries, templates)


def hot_page(request: HttpRequest) -> HttpResponse:
    """A ~10 KB page that takes HOT_RENDER_SECONDS to make.  Every render is
    appended to FASTCACHE_RENDER_LOG (one line: the pid), so that pageload.py
    counts renders across all the workers of the host."""
    _ran("hot_page")
    log = os.environ.get("FASTCACHE_RENDER_LOG")
    if log:
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, f"{os.getpid()} {time.time():.3f}\n".encode())
        finally:
            os.close(fd)
    time.sleep(HOT_RENDER_SECONDS)
    rows = "".join(
        f"<tr><td>{p.pk}</td><td>{p.name}</td><td>{p.price}</td></tr>"
        for p in catalog.products(None)
    )
    body = f"<html><body><h1>Today's offers</h1><table>{rows}</table>"
    body += "<p>" + "A line of the page that every visitor sees. " * 200 + "</p>"
    return HttpResponse(body + "</body></html>")


def _cache_stats() -> dict[str, int] | None:
    stats = getattr(cache, "stats", None)
    return dict(stats()) if callable(stats) else None


def stats(request: HttpRequest) -> JsonResponse:
    """Demo only: a real site would not publish its cache counters."""
    counters = _cache_stats()
    hit_rate = None
    if counters is not None:
        lookups = counters["hits"] + counters["misses"]
        hit_rate = counters["hits"] / lookups if lookups else None
    return JsonResponse(
        {
            "choice": settings.FASTCACHE_BACKEND,
            "backend": settings.CACHES["default"]["BACKEND"],
            "stats": counters,
            "hit_rate": hit_rate,
            "view_runs": view_runs(),
        }
    )


@csrf_exempt
@require_POST
def reset_stats(request: HttpRequest) -> JsonResponse:
    """Demo only: zero the cache counters and the view-run counts."""
    reset = getattr(cache, "reset_stats", None)
    if callable(reset):
        reset()
    with _runs_lock:
        _runs.clear()
    return JsonResponse({"reset": True})
