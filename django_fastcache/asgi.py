"""The page front for ASGI: answer cached pages before Django runs.

    # asgi.py
    from django.core.asgi import get_asgi_application
    from django_fastcache.asgi import serve_cached

    application = serve_cached(get_asgi_application())

The ASGI twin of django_fastcache.wsgi.serve_cached: same keys, same rules
(see _front.py).  Non-HTTP scopes (lifespan, websocket) go to the application
untouched.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from . import _front, _pages

__all__ = ["serve_cached"]

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def _meta(scope: Scope) -> dict[str, str]:
    """The request headers as ASGIRequest puts them into META."""
    meta: dict[str, str] = {}
    for name, value in scope.get("headers", ()):
        name = name.decode("latin1")
        if "_" in name:
            continue
        if name == "content-length":
            key = "CONTENT_LENGTH"
        elif name == "content-type":
            key = "CONTENT_TYPE"
        else:
            key = "HTTP_" + name.upper().replace("-", "_")
        text = value.decode("latin1")
        if key in meta:
            meta[key] = meta[key] + "," + text
        else:
            meta[key] = text
    return meta


def serve_cached(
    application: ASGIApp, alias: str = "default", *, key_prefix: str | None = None
) -> ASGIApp:
    """An ASGI application answering page-cache hits of ``alias`` itself and
    passing everything else to ``application`` (see wsgi.serve_cached)."""
    front = _front.Front(application, alias, key_prefix)

    async def fastcache_front(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await application(scope, receive, send)
        method = scope.get("method", "").upper()
        if method != "GET" and method != "HEAD":
            return await application(scope, receive, send)
        meta = _meta(scope)
        query = scope.get("query_string", b"")
        if isinstance(query, bytes):
            try:
                query = query.decode()
            except UnicodeDecodeError:
                return await application(scope, receive, send)
        server = scope.get("server")
        url = front.url_for(
            meta,
            scope.get("scheme") or "http",
            scope.get("path", ""),
            query,
            (server[0], str(server[1])) if server else ("unknown", "0"),
        )
        if url is None:
            return await application(scope, receive, send)
        if front.locale:
            # ASGIRequest.path_info: the path without the script prefix.
            path = scope.get("path", "")
            script = front.force_script_name or scope.get("root_path", "") or ""
            suffix = front.suffix_for(
                meta,
                path.removeprefix(script) if script else path,
                meta.get("HTTP_COOKIE", ""),
            )
        else:
            suffix = front.suffix
        entry = front.lookup(meta, method, url, suffix)
        if entry is not None:
            return await serve_entry(entry, method, send)
        return await _pass(
            front, application, scope, receive, send, method, url, suffix
        )

    fastcache_front.front = front  # type: ignore[attr-defined]
    return fastcache_front


async def serve_entry(entry: tuple, method: str, send: Send) -> None:
    """Answer a request from a stored entry (what a front hit does)."""
    await send(
        {
            "type": "http.response.start",
            "status": entry[_pages.E_STATUS],
            "headers": _front.asgi_headers(entry, _pages.age_of(entry)),
        }
    )
    await send(
        {
            "type": "http.response.body",
            "body": entry[_pages.E_BODY] if method == "GET" else b"",
        }
    )


async def _pass(
    front: _front.Front,
    application: ASGIApp,
    scope: Scope,
    receive: Receive,
    send: Send,
    method: str,
    url: str,
    suffix: str,
) -> None:
    slot = _pages.Slot()
    scope = dict(scope)
    scope[_pages.FRONT_SLOT] = slot
    start: list[dict[str, Any]] = []
    body: list[bytes] = []

    async def capture(message: dict[str, Any]) -> None:
        # The drop-ins store before the answer starts: only an answer with a
        # page to compare is kept (a long streamed one never is).
        kind = message.get("type")
        if kind == "http.response.start":
            if slot.pending:
                start.append(message)
        elif kind == "http.response.body" and start:
            body.append(message.get("body", b""))
        await send(message)

    try:
        await application(scope, receive, capture)
    finally:
        if slot.pending or slot.suffixes:

            def same_answer(entry: tuple, response: Any) -> bool:
                return (
                    len(start) == 1
                    and start[0].get("status") == entry[_pages.E_STATUS]
                    and [tuple(h) for h in start[0].get("headers", ())]
                    == _front.asgi_headers(entry, None)
                    and b"".join(body) == entry[_pages.E_BODY]
                )

            front.finish(slot, method, url, suffix, same_answer)
