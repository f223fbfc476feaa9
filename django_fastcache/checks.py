"""System checks for CACHES entries that use a django_fastcache backend.

fastcache.E001  the OPTIONS (or LOCATION) of a fastcache alias are invalid:
                the backend would raise ImproperlyConfigured when first used.
fastcache.E002  BACKEND names a django_fastcache class that does not exist.
fastcache.W001  sessions are stored in a per-process FastCache: with several
                worker processes each has its own sessions.
fastcache.E003  a TieredCache's OPTIONS['L2'] alias is missing from CACHES.
fastcache.E004  a TieredCache's L2 is itself a TieredCache.
fastcache.E005  a TieredCache's L1 is not a FastCache or SharedMemoryCache (E001
                also reports it, with the backend's message).
fastcache.W002  a TieredCache's INVALIDATION Redis does not answer at startup: L1
                is bypassed until it does.

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
    from . import backend, tiered

    if issubclass(cls, tiered.TieredCache):
        tiered.validate_tiered_params(params)
        return

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


def _redis_answers(url: str) -> str | None:
    """None if the Redis at url answers PING within a second, else why not."""
    try:
        import redis
    except ImportError:
        return "the redis package is not installed"
    try:
        with redis.Redis.from_url(
            url, socket_timeout=1, socket_connect_timeout=1
        ) as client:
            client.ping()
    except Exception as exc:  # any failure to reach it is the answer
        return f"{type(exc).__name__}: {exc}"
    return None


def check_tiered(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """fastcache.E003/E004/E005/W002 for each TieredCache alias."""
    from .backend import FastCache
    from .tiered import TieredCache

    messages: list[checks.CheckMessage] = []
    caches = getattr(settings, "CACHES", {})
    for alias, params in caches.items():
        if not isinstance(params, Mapping):
            continue
        cls = backend_class(params.get("BACKEND"))
        if cls is None or not issubclass(cls, TieredCache):
            continue
        options = params.get("OPTIONS") or {}
        if not isinstance(options, Mapping):
            continue
        l2 = options.get("L2")
        if isinstance(l2, str) and l2 not in caches:
            messages.append(checks.Error(
                f"CACHES[{alias!r}] (TieredCache) names L2 alias {l2!r}, which is "
                "not in CACHES.",
                hint="Add the Redis or Memcached cache as its own CACHES entry and "
                "name its alias in OPTIONS['L2'].",
                id="fastcache.E003",
            ))
        elif isinstance(l2, str):
            l2_cls = backend_class(caches[l2].get("BACKEND"))
            if l2_cls is not None and issubclass(l2_cls, TieredCache):
                messages.append(checks.Error(
                    f"CACHES[{alias!r}] (TieredCache) has L2 {l2!r}, itself a "
                    "TieredCache.",
                    hint="L2 must be the shared cache (RedisCache, django-redis, "
                    "PyMemcacheCache...), not another tiered one.",
                    id="fastcache.E004",
                ))
        l1 = options.get("L1")
        if isinstance(l1, str):
            l1 = caches.get(l1)
        if isinstance(l1, Mapping):
            l1_cls = backend_class(l1.get("BACKEND"))
            if l1_cls is None or not issubclass(l1_cls, FastCache):
                messages.append(checks.Error(
                    f"CACHES[{alias!r}] (TieredCache) has L1 BACKEND "
                    f"{l1.get('BACKEND')!r}, not a django_fastcache table.",
                    hint="Use django_fastcache.FastCache (per process) or "
                    "django_fastcache.SharedMemoryCache (per host) as L1.",
                    id="fastcache.E005",
                ))
        url = options.get("INVALIDATION")
        if isinstance(url, str):
            why = _redis_answers(url)
            if why is not None:
                messages.append(checks.Warning(
                    f"CACHES[{alias!r}] (TieredCache): the invalidation Redis "
                    f"{url} does not answer ({why}).",
                    hint="Until it does, every read goes to L2 (L1 is bypassed); "
                    "check OPTIONS['INVALIDATION'].",
                    id="fastcache.W002",
                ))
    return messages


def register_checks() -> None:
    """Register the checks (idempotent: the registry is a set)."""
    checks.register(check_cache_params, checks.Tags.caches, TAG)
    checks.register(check_session_cache, checks.Tags.caches, TAG)
    checks.register(check_tiered, checks.Tags.caches, TAG)
