"""Drop-in replacement for django.views.decorators.cache.cache_page.

    from django_fastcache.decorators import cache_page

    @cache_page(60 * 15, cache="default", key_prefix="site1")
    def my_view(request): ...

Django's decorator over django_fastcache.middleware.CacheMiddleware: same
arguments, same keys, same decisions (see middleware.py).
"""

from __future__ import annotations

from typing import Any

from django.utils.decorators import decorator_from_middleware_with_args

from .middleware import CacheMiddleware

__all__ = ["cache_page"]


def cache_page(
    timeout: Any, *, cache: str | None = None, key_prefix: str | None = None
) -> Any:
    """
    Decorator for views that tries getting the page from the cache and
    populates the cache if the page isn't in the cache yet.

    The cache is keyed by the URL and some data from the headers.
    Additionally there is the key prefix that is used to distinguish different
    cache areas in a multi-site setup. You could use the
    get_current_site().domain, for example, as that is unique across a Django
    project.

    Additionally, all headers from the response's Vary header will be taken
    into account on caching -- just like the middleware does.
    """
    return decorator_from_middleware_with_args(CacheMiddleware)(
        page_timeout=timeout,
        cache_alias=cache,
        key_prefix=key_prefix,
    )
