"""The page front for WSGI: answer cached pages before Django runs.

    # wsgi.py
    from django.core.wsgi import get_wsgi_application
    from django_fastcache.wsgi import serve_cached

    application = serve_cached(get_wsgi_application())

A GET or HEAD request whose page was stored by django_fastcache's
UpdateCacheMiddleware/CacheMiddleware (or cache_page) in a FastCache or
SharedMemoryCache, and whose stored answer is exactly what Django sent when it
was stored, is answered from the cache: no request object, no middleware, no
signals.  Everything else goes to ``application`` untouched.  See _front.py
for what is computed and when a request falls through.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from . import _front, _pages

__all__ = ["serve_cached"]

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def serve_cached(
    application: WSGIApp, alias: str = "default", *, key_prefix: str | None = None
) -> WSGIApp:
    """A WSGI application answering page-cache hits of ``alias`` itself and
    passing everything else to ``application``.

    ``key_prefix`` is the prefix the pages were stored with (default:
    settings.CACHE_MIDDLEWARE_KEY_PREFIX, what the site-wide middleware uses).
    Settings are read once, here (call it after Django is set up, as
    get_wsgi_application() does).
    """
    front = _front.Front(application, alias, key_prefix)
    serve = _serve

    def fastcache_front(environ: dict[str, Any], start_response: StartResponse) -> Any:
        method = environ.get("REQUEST_METHOD")
        if method != "GET" and method != "HEAD":
            return application(environ, start_response)
        url = (
            front.url_for(
                environ,
                environ.get("wsgi.url_scheme"),
                environ.get("PATH_INFO") or "/",
                environ.get("QUERY_STRING", ""),
                (environ.get("SERVER_NAME", ""), environ.get("SERVER_PORT", "")),
            )
            if not (
                environ.get("SCRIPT_NAME")
                or environ.get("SCRIPT_URL")
                or environ.get("REDIRECT_URL")
                or front.force_script_name is not None
            )
            else None
        )
        if url is None:
            return application(environ, start_response)
        if front.locale:
            suffix = front.suffix_for(
                environ,
                environ.get("PATH_INFO") or "/",
                # WSGIRequest.COOKIES: the header's bytes read as UTF-8.
                environ.get("HTTP_COOKIE", "")
                .encode("iso-8859-1")
                .decode(errors="replace"),
            )
        else:
            suffix = front.suffix
        entry = front.lookup(environ, method, url, suffix)
        if entry is not None:
            return serve(entry, method, start_response)
        return _pass(front, application, environ, start_response, method, url, suffix)

    fastcache_front.front = front  # type: ignore[attr-defined]
    return fastcache_front


def _serve(entry: tuple, method: str, start_response: StartResponse) -> list[bytes]:
    start_response(
        entry[_pages.E_STATUS_LINE], _front.wsgi_headers(entry, _pages.age_of(entry))
    )
    return [entry[_pages.E_BODY]] if method == "GET" else []


def serve_entry(
    entry: tuple, method: str, start_response: StartResponse
) -> list[bytes]:
    """Answer a request from a stored entry (what a front hit does)."""
    return _serve(entry, method, start_response)


def _pass(
    front: _front.Front,
    application: WSGIApp,
    environ: dict[str, Any],
    start_response: StartResponse,
    method: str,
    url: str,
    suffix: str,
) -> Any:
    slot = _pages.Slot()
    environ[_pages.FRONT_SLOT] = slot
    sent: list[Any] = []

    def capture(status: str, headers: list[tuple[str, str]], *exc_info: Any) -> Any:
        sent[:] = [status, headers]
        return start_response(status, headers, *exc_info)

    result: Any = None
    try:
        result = application(environ, capture)
    finally:
        if slot.pending or slot.suffixes:

            def same_answer(entry: tuple, response: Any) -> bool:
                return (
                    result is response
                    and len(sent) == 2
                    and sent[0] == entry[_pages.E_STATUS_LINE]
                    and list(sent[1]) == _front.wsgi_headers(entry, None)
                    and response.content == entry[_pages.E_BODY]
                )

            front.finish(slot, method, url, suffix, same_answer)
    return result
