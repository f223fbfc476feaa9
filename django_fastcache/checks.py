"""System checks for CACHES entries that use a django_fastcache backend.

fastcache.E001  the OPTIONS (or LOCATION) of a fastcache alias are invalid:
                the backend would raise ImproperlyConfigured when first used.
fastcache.E002  BACKEND names a django_fastcache class that does not exist.
fastcache.W001  sessions are stored in a per-process FastCache: with several
                worker processes each has its own sessions.

Registered by FastCacheConfig.ready(), i.e. when "django_fastcache" is in
INSTALLED_APPS, with the tags "caches" and "fastcache".  Django's own caches
checks instantiate every alias, so a plain ``manage.py check`` stops at the
first invalid fastcache entry with the backend's ImproperlyConfigured
traceback; ``manage.py check --tag fastcache`` runs only these checks and
lists every invalid entry as fastcache.E001 instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

TAG = "fastcache"
BACKEND_PREFIX = "django_fastcache."
CACHE_SESSION_ENGINES = frozenset(
    {
        "django.contrib.sessions.backends.cache",
        "django.contrib.sessions.backends.cached_db",
    }
)


def backend_class(backend: object) -> type | None:
    """The class a CACHES BACKEND path names, or None if it cannot be imported."""
    if not isinstance(backend, str):
        return None
    try:
        cls = import_string(backend)
    except ImportError:
        return None
    return cls if isinstance(cls, type) else None


def is_fastcache_backend(backend: object) -> bool:
    """Whether a BACKEND path is a django_fastcache backend.

    True for any path under ``django_fastcache.`` and for project classes that
    subclass FastCache (so a custom subclass is validated and reported too).
    """
    if not isinstance(backend, str):
        return False
    if backend.startswith(BACKEND_PREFIX):
        return True
    from .backend import FastCache

    try:
        cls = backend_class(backend)
    except Exception:  # another backend's broken import is not ours to report
        return False
    return cls is not None and issubclass(cls, FastCache)


def is_process_local(cls: type) -> bool:
    """Whether instances of a fastcache class keep their table in this process."""
    from . import backend

    shared = getattr(backend, "SharedMemoryCache", None)
    if isinstance(shared, type) and issubclass(cls, shared):
        return False
    return issubclass(cls, backend.FastCache)


def _validate(cls: type, params: Mapping[str, Any]) -> None:
    from . import backend

    known = getattr(cls, "_known_options", None)
    if known is None:
        backend.validate_params(params)
    else:
        backend.validate_params(params, known)
    shared = getattr(backend, "SharedMemoryCache", None)
    if isinstance(shared, type) and issubclass(cls, shared):
        backend.segment_path(params.get("LOCATION", ""))


def check_cache_params(
    app_configs: Any = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """fastcache.E001 / E002 for each fastcache alias in CACHES."""
    errors: list[checks.CheckMessage] = []
    for alias, params in getattr(settings, "CACHES", {}).items():
        if not isinstance(params, Mapping):
            continue
        path = params.get("BACKEND")
        if not is_fastcache_backend(path):
            continue
        cls = backend_class(path)
        if cls is None:
            errors.append(
                checks.Error(
                    f"CACHES[{alias!r}] BACKEND {path!r} does not exist.",
                    hint="Use 'django_fastcache.FastCache' (per process) or "
                    "'django_fastcache.SharedMemoryCache' (shared by the processes "
                    "of a host), if your version provides it.",
                    id="fastcache.E002",
                )
            )
            continue
        try:
            _validate(cls, params)
        except ImproperlyConfigured as exc:
            errors.append(
                checks.Error(
                    f"CACHES[{alias!r}] ({path}) is invalid: {exc}",
                    hint="Fix the entry in settings.CACHES; the backend raises "
                    "ImproperlyConfigured with this message when it is first used.",
                    id="fastcache.E001",
                )
            )
    return errors


def check_session_cache(
    app_configs: Any = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """fastcache.W001 when sessions live in a per-process FastCache."""
    engine = getattr(settings, "SESSION_ENGINE", "")
    if engine not in CACHE_SESSION_ENGINES:
        return []
    alias = getattr(settings, "SESSION_CACHE_ALIAS", "default")
    params = getattr(settings, "CACHES", {}).get(alias)
    if not isinstance(params, Mapping):
        return []
    path = params.get("BACKEND")
    if not is_fastcache_backend(path):
        return []
    cls = backend_class(path)
    if cls is None or not is_process_local(cls):
        return []
    if engine.endswith(".cached_db"):
        effect = (
            "each worker process keeps its own copy, so a process can serve a "
            "session that another process has since changed or deleted "
            "(stale logins, carts, messages)"
        )
    else:
        effect = (
            "each worker process has its own sessions, so with several workers "
            "users are randomly logged out and session data goes missing; every "
            "session is also lost when a process restarts"
        )
    return [
        checks.Warning(
            f"SESSION_ENGINE {engine!r} stores sessions in CACHES[{alias!r}] "
            f"({path}), a per-process cache: {effect}.",
            hint="Use 'django_fastcache.SharedMemoryCache' (one cache for all the "
            "processes of a host) or a server cache (Redis, Memcached) for "
            "sessions, e.g. through SESSION_CACHE_ALIAS; if the site runs in a "
            "single process, add 'fastcache.W001' to SILENCED_SYSTEM_CHECKS.",
            id="fastcache.W001",
        )
    ]


def register_checks() -> None:
    """Register the checks (idempotent: the registry is a set)."""
    checks.register(check_cache_params, checks.Tags.caches, TAG)
    checks.register(check_session_cache, checks.Tags.caches, TAG)
