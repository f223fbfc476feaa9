"""WSGI entry point: gunicorn mysite.wsgi (from the example/ directory)."""

import os

from django.core.wsgi import get_wsgi_application

from mysite import use_checkout

use_checkout()
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")

application = get_wsgi_application()

from django.conf import settings  # noqa: E402  (after the settings module is set)

if settings.FASTCACHE_PAGES == "front":
    # Page hits are answered here, before Django: with SharedMemoryCache, one
    # page cache for every gunicorn worker of the host.
    from django_fastcache.wsgi import serve_cached

    application = serve_cached(application)
