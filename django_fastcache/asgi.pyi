"""Types of django_fastcache.asgi (keep in sync with asgi.py)."""

from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["serve_cached"]

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

def serve_cached(
    application: ASGIApp, alias: str = "default", *, key_prefix: str | None = None
) -> ASGIApp: ...
async def serve_entry(entry: tuple[Any, ...], method: str, send: Send) -> None: ...
