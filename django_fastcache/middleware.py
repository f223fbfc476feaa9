"""Drop-in replacements for django.middleware.cache.

    MIDDLEWARE = [
        "django_fastcache.middleware.UpdateCacheMiddleware",
        ...
        "django_fastcache.middleware.FetchFromCacheMiddleware",
    ]

Same constructor arguments, settings (CACHE_MIDDLEWARE_ALIAS,
CACHE_MIDDLEWARE_SECONDS, CACHE_MIDDLEWARE_KEY_PREFIX), decisions and keys as
Django's classes, which these subclass.  process_response makes Django's
decisions line for line; only how a page is stored and read back differs, and
only on a FastCache or SharedMemoryCache alias: the page is stored as a
compact entry (_pages.CachedPage) instead of a pickled HttpResponse, the
absolute URI is hashed once per lookup (Django builds it for each key), and a
hit is rebuilt from the entry without unpickling a response.  On any other
backend every method is Django's own.

Purging is Django's: ``cache.delete(get_cache_key(request, key_prefix))``
removes a page, deleting its ``cache_header`` key makes every variant of the
URL a miss, and ``cache.clear()`` removes all.
"""

from __future__ import annotations

import time
import weakref
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.middleware import cache as dj
from django.utils.cache import (
    get_max_age,
    has_vary_header,
    patch_response_headers,
    patch_vary_headers,
)
from django.utils.http import parse_http_date_safe

from . import _flight, _pages
from .backend import FastCache

__all__ = ["CacheMiddleware", "FetchFromCacheMiddleware", "UpdateCacheMiddleware"]


def _is_fast(cache: Any) -> bool:
    return isinstance(cache, FastCache)


def learn_cache_key(
    request: HttpRequest,
    response: HttpResponse,
    cache_timeout: Any,
    key_prefix: str,
    cache: Any,
) -> str:
    """django.utils.cache.learn_cache_key for a known prefix and cache, with
    the URI hashed once for both keys."""
    url = _pages.request_url_digest(request)
    suffix = _pages.request_suffix(request)
    _pages.record_suffix(request, suffix)
    headerlist = _pages.headerlist_of(response)
    cache.set(_pages.header_key(key_prefix, url, suffix), headerlist, cache_timeout)
    return _pages.page_key(
        key_prefix,
        request.method,
        url,
        _pages.values_digest(request.META, headerlist),
        suffix,
    )


PAGE_CLAIM = "_fastcache_page_claim"


def _release_claim(request: HttpRequest) -> None:
    claim = request.__dict__.pop(PAGE_CLAIM, None)
    if claim is not None:
        claim.release()


class UpdateCacheMiddleware(dj.UpdateCacheMiddleware):
    """Response phase: store a cacheable response (Django's decisions)."""

    def process_response(
        self, request: HttpRequest, response: HttpResponse
    ) -> HttpResponse:
        claim = request.__dict__.get(PAGE_CLAIM)
        if claim is None:
            return self._update(request, response)
        # This request renders a page other requests wait for: the claim goes
        # when the page is stored (here, after a deferred render, or by the
        # front), or else now (and when the request is freed, in any case).
        try:
            response = self._update(request, response)
        finally:
            slot = _pages.slot_of(request)
            deferred = request.__dict__.get("_fastcache_store_deferred")
            if slot is not None and slot.pending:
                claim = request.__dict__.pop(PAGE_CLAIM, None)
                if claim is not None:  # (a post-render store may have moved it)
                    slot.claims.append(claim)
            elif not deferred:
                _release_claim(request)
        return response

    def _update(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        # Django's UpdateCacheMiddleware.process_response, decision for decision.
        if not self._should_update_cache(request, response):
            return response
        cache = self.cache
        if not _is_fast(cache):
            return super().process_response(request, response)
        if response.streaming or response.status_code not in (200, 304):
            return response
        if response.cookies and has_vary_header(response, "Cookie"):
            return response
        cache_control = response.get("Cache-Control", "").lower()
        if cache_control and any(
            directive in cache_control
            for directive in ("private", "no-cache", "no-store")
        ):
            return response
        if has_vary_header(response, "*"):
            return response
        timeout = self.page_timeout
        if timeout is None:
            timeout = get_max_age(response)
            if timeout is None:
                timeout = self.cache_timeout
            elif timeout == 0:
                return response
        patch_response_headers(response, timeout)
        if request.headers.get("Authorization") and "public" not in cache_control:
            patch_vary_headers(response, ("Authorization",))
        if timeout and response.status_code == 200:
            cache_key = learn_cache_key(
                request, response, timeout, self.key_prefix, cache
            )
            if hasattr(response, "render") and callable(response.render):
                if not getattr(response, "is_rendered", True):
                    request._fastcache_store_deferred = True

                def store_rendered(r: HttpResponse) -> None:
                    try:
                        self._store(request, cache, cache_key, r, timeout)
                    finally:
                        slot = _pages.slot_of(request)
                        if slot is not None and slot.pending:
                            claim = request.__dict__.pop(PAGE_CLAIM, None)
                            if claim is not None:
                                slot.claims.append(claim)
                        else:
                            _release_claim(request)

                response.add_post_render_callback(store_rendered)
            else:
                self._store(request, cache, cache_key, response, timeout)
        return response

    def _store(
        self,
        request: HttpRequest,
        cache: Any,
        key: str,
        response: HttpResponse,
        timeout: Any,
    ) -> None:
        claim = request.__dict__.get(PAGE_CLAIM)
        if claim is not None:
            claim.stored = True
        entry = _pages.entry_from_response(response)
        slot = _pages.slot_of(request)
        if slot is None:
            cache.set(key, _pages._load_page(entry), timeout)
        else:
            # A front passed this request to Django: it stores the page when
            # the answer has left Django, marked servable by the front if that
            # answer is exactly this entry (wsgi.py, asgi.py).
            slot.pending.append(
                (cache, self.cache_alias, key, entry, timeout, response)
            )


class FetchFromCacheMiddleware(dj.FetchFromCacheMiddleware):
    """Request phase: answer from the cache (Django's lookups and headers)."""

    def process_request(self, request: HttpRequest) -> HttpResponse | None:
        if request.method not in ("GET", "HEAD"):
            request._cache_update_cache = False
            return None
        cache = self.cache
        if not _is_fast(cache):
            return super().process_request(request)
        key_prefix = self.key_prefix
        url = _pages.request_url_digest(request)
        suffix = _pages.request_suffix(request)
        _pages.record_suffix(request, suffix)
        header_key = _pages.header_key(key_prefix, url, suffix)

        def lookup() -> Any:
            headerlist = cache.get(header_key)
            if headerlist is None:
                return None
            values = _pages.values_digest(request.META, headerlist)
            found = cache.get(_pages.page_key(key_prefix, "GET", url, values, suffix))
            if found is None and request.method == "HEAD":
                found = cache.get(
                    _pages.page_key(key_prefix, "HEAD", url, values, suffix)
                )
            return found

        response = lookup()
        if response is None and cache._lock_timeout:
            # Render once: the first request to miss renders the page, the
            # others wait for it to be stored (at most LOCK_TIMEOUT).
            response, claim = _flight.page_claim_or_wait(cache, header_key, lookup)
            if claim is not None:
                request.__dict__[PAGE_CLAIM] = claim
                # A request dropped without its response phase (a test, an
                # exception no middleware turned into a response) still
                # releases it when it is freed.
                weakref.finalize(request, claim.release)
        if response is None:
            request._cache_update_cache = True
            return None
        if type(response) is _pages.CachedPage:
            entry = response.entry
            response = response.to_response()
            age = _pages.age_of(entry)
            if age is not None:
                response.headers["Age"] = age
        else:
            # Stored by Django's own classes (or anything else): Django's code.
            if (max_age_seconds := get_max_age(response)) is not None and (
                expires_timestamp := parse_http_date_safe(response["Expires"])
            ) is not None:
                remaining_seconds = expires_timestamp - int(time.time())
                response["Age"] = max(0, max_age_seconds - remaining_seconds)
        request._cache_update_cache = False
        return response


class CacheMiddleware(
    UpdateCacheMiddleware, FetchFromCacheMiddleware, dj.CacheMiddleware
):
    """Both phases in one class; what cache_page wraps a view with.

    The constructor is Django's (cache_timeout, page_timeout, key_prefix=,
    cache_alias=); Django's CacheMiddleware is a base, after ours, so that
    isinstance checks against it hold and ours run first.
    """
