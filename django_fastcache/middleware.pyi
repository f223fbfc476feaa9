"""Types of django_fastcache.middleware (keep in sync with middleware.py)."""

from typing import Any

from django.http import HttpRequest, HttpResponse
from django.middleware import cache as dj

__all__ = ["CacheMiddleware", "FetchFromCacheMiddleware", "UpdateCacheMiddleware"]

def learn_cache_key(
    request: HttpRequest,
    response: HttpResponse,
    cache_timeout: Any,
    key_prefix: str,
    cache: Any,
) -> str: ...

class UpdateCacheMiddleware(dj.UpdateCacheMiddleware):
    def process_response(
        self, request: HttpRequest, response: HttpResponse
    ) -> HttpResponse: ...

class FetchFromCacheMiddleware(dj.FetchFromCacheMiddleware):
    def process_request(self, request: HttpRequest) -> HttpResponse | None: ...

class CacheMiddleware(
    UpdateCacheMiddleware, FetchFromCacheMiddleware, dj.CacheMiddleware
): ...
