"""Types of django_fastcache.decorators (keep in sync with decorators.py)."""

from collections.abc import Callable
from typing import Any, TypeVar

_V = TypeVar("_V", bound=Callable[..., Any])

__all__ = ["cache_page"]

def cache_page(
    timeout: float | None, *, cache: str | None = None, key_prefix: str | None = None
) -> Callable[[_V], _V]: ...
