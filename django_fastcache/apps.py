"""Optional Django app: system checks and the ``fastcache_stats`` command.

The cache backends work without it; add ``"django_fastcache"`` to
INSTALLED_APPS to have ``manage.py check`` validate the fastcache CACHES
entries and to get ``manage.py fastcache_stats``.
"""

from __future__ import annotations

from django.apps import AppConfig


class FastCacheConfig(AppConfig):
    name = "django_fastcache"
    label = "django_fastcache"
    verbose_name = "django-fastcache"

    def ready(self) -> None:
        from . import checks

        checks.register_checks()
