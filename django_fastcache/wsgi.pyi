"""Types of django_fastcache.wsgi (keep in sync with wsgi.py)."""

from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["serve_cached"]

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

def serve_cached(
    application: WSGIApp, alias: str = "default", *, key_prefix: str | None = None
) -> WSGIApp: ...
def serve_entry(
    entry: tuple[Any, ...], method: str, start_response: StartResponse
) -> list[bytes]: ...
