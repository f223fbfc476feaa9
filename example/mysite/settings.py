"""Settings of the example shop.

One switch picks the cache: the environment variable FASTCACHE_BACKEND,
    fast    django_fastcache.FastCache (per process; the default)
    shared  django_fastcache.SharedMemoryCache (one table for every process
            of this user on the host, in /dev/shm)
    locmem  Django's LocMemCache, for comparison.
The same cache holds the @cache_page pages, the {% cache %} fragments, the
low-level API's values and the sessions (SESSION_ENGINE "cache"), so the
project needs no database.

A second switch, FASTCACHE_PAGES, adds the site-wide page cache (pageload.py
compares them; FASTCACHE_PAGE_SECONDS is its timeout, default 600):
    none    no site-wide page cache (the default)
    django  Django's UpdateCacheMiddleware ... FetchFromCacheMiddleware
    dropin  django_fastcache.middleware's drop-ins, same places
    front   the drop-ins, and mysite.wsgi wraps the application in
            django_fastcache.wsgi.serve_cached: hits never reach Django
"""

import os
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-shop-only-not-a-secret")
DEBUG = os.environ.get("DJANGO_DEBUG") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]", "testserver"]

INSTALLED_APPS = [
    "django_fastcache",  # system checks and manage.py fastcache_stats
    "shop",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
]

# The site-wide page cache: the update half first (outermost), the fetch half
# last, as Django documents it.
PAGE_MIDDLEWARE = {
    "none": None,
    "django": ("django.middleware.cache.UpdateCacheMiddleware",
               "django.middleware.cache.FetchFromCacheMiddleware"),
    "dropin": ("django_fastcache.middleware.UpdateCacheMiddleware",
               "django_fastcache.middleware.FetchFromCacheMiddleware"),
    "front": ("django_fastcache.middleware.UpdateCacheMiddleware",
              "django_fastcache.middleware.FetchFromCacheMiddleware"),
}
FASTCACHE_PAGES = os.environ.get("FASTCACHE_PAGES", "none").strip().lower()
if FASTCACHE_PAGES not in PAGE_MIDDLEWARE:
    raise ImproperlyConfigured(
        f"FASTCACHE_PAGES={FASTCACHE_PAGES!r} is not one of: "
        f"{', '.join(PAGE_MIDDLEWARE)}."
    )
if PAGE_MIDDLEWARE[FASTCACHE_PAGES]:
    _update, _fetch = PAGE_MIDDLEWARE[FASTCACHE_PAGES]
    MIDDLEWARE = [_update, *MIDDLEWARE, _fetch]
CACHE_MIDDLEWARE_SECONDS = int(os.environ.get("FASTCACHE_PAGE_SECONDS", "600"))
CACHE_MIDDLEWARE_KEY_PREFIX = ""

ROOT_URLCONF = "mysite.urls"
WSGI_APPLICATION = "mysite.wsgi.application"
DATABASES: dict = {}

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": ["django.template.context_processors.request"]
        },
    }
]

USE_TZ = True
TIME_ZONE = "UTC"

# The cache.
CACHE_BACKENDS = {
    "fast": "django_fastcache.FastCache",
    "shared": "django_fastcache.SharedMemoryCache",
    "locmem": "django.core.cache.backends.locmem.LocMemCache",
}
FASTCACHE_BACKEND = os.environ.get("FASTCACHE_BACKEND", "fast").strip().lower()


def _cache_backend(choice: str) -> str:
    if choice not in CACHE_BACKENDS:
        raise ImproperlyConfigured(
            f"FASTCACHE_BACKEND={choice!r} is not one of: {', '.join(CACHE_BACKENDS)}."
        )
    if choice == "shared":
        import django_fastcache

        if not hasattr(django_fastcache, "SharedMemoryCache"):
            raise ImproperlyConfigured(
                "FASTCACHE_BACKEND=shared needs django_fastcache.SharedMemoryCache, "
                "which this version of django-fastcache does not provide; use "
                "FASTCACHE_BACKEND=fast or FASTCACHE_BACKEND=locmem."
            )
    return CACHE_BACKENDS[choice]


CACHES = {
    "default": {
        "BACKEND": _cache_backend(FASTCACHE_BACKEND),
        "LOCATION": "example-shop",
        "TIMEOUT": 300,
        "OPTIONS": {"MAX_ENTRIES": 10_000},
    }
}

SESSION_ENGINE = "django.contrib.sessions.backends.cache"
SESSION_CACHE_ALIAS = "default"

# fastcache.W001 warns that sessions in a per-process FastCache are not shared
# between worker processes.  This example is served by one process (runserver
# or loadtest.py); a site with several workers should use FASTCACHE_BACKEND=
# shared (or a server cache) for sessions rather than silence the warning.
SILENCED_SYSTEM_CHECKS = ["fastcache.W001"]

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"django": {"handlers": ["console"], "level": "WARNING"}},
}
