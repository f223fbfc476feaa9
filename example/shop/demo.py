"""Views for gunicorn_demo.py: which worker answered, and what its cache holds.

demo_counter  cache.incr() of one counter key; {"pid": ..., "count": n}
demo_state    read-only: this worker's view of the counter, of the list
              page's render count and of the key the gunicorn master wrote
              before forking (--preload); also used as the readiness probe
demo_list     the shop's list page (the same view body and template as
              ``/``) under its own @cache_page, with two additions: every
              render bumps a counter kept in the cache and stamps the
              response with X-Rendered-By (so the cached copy carries the
              PID of the worker that rendered it), and every response leaves
              with X-Served-By (the PID of the worker that sent it)

With SharedMemoryCache every worker reads and writes the same table, so the
counter never loses an increment and the list page is rendered once in all;
with FastCache each worker has its own table, counter and cached page.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import cache_page

from . import views

COUNTER_KEY = "demo:counter"
RENDERS_KEY = "demo:list-renders"
MASTER_KEY = "demo:master-pid"  # written by gunicorn_demo.when_ready (--preload)


def demo_counter(request: HttpRequest) -> JsonResponse:
    cache.add(COUNTER_KEY, 0, timeout=None)
    count = cache.incr(COUNTER_KEY)
    return JsonResponse({"pid": os.getpid(), "count": count})


def demo_state(request: HttpRequest) -> JsonResponse:
    return JsonResponse(
        {
            "pid": os.getpid(),
            "backend": settings.FASTCACHE_BACKEND,
            "count": cache.get(COUNTER_KEY, 0),
            "list_renders": cache.get(RENDERS_KEY, 0),
            "master_pid": cache.get(MASTER_KEY),
        }
    )


View = Callable[..., HttpResponse]


def _rendered_by(view: View) -> View:
    """Inside @cache_page: runs only when the page is rendered."""

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args: object, **kwargs: object) -> HttpResponse:
        cache.add(RENDERS_KEY, 0, timeout=None)
        cache.incr(RENDERS_KEY)
        response = view(request, *args, **kwargs)
        response["X-Rendered-By"] = str(os.getpid())
        return response

    return wrapper


def _served_by(view: View) -> View:
    """Outside @cache_page: runs for every response, cached or not."""

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args: object, **kwargs: object) -> HttpResponse:
        response = view(request, *args, **kwargs)
        response["X-Served-By"] = str(os.getpid())
        return response

    return wrapper


# views.product_list is @cache_page(...)(body); __wrapped__ is the body.
demo_list = _served_by(
    cache_page(views.PAGE_TIMEOUT)(_rendered_by(views.product_list.__wrapped__))
)
