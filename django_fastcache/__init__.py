"""django-fastcache: C-core Django cache backends.

    CACHES = {"default": {"BACKEND": "django_fastcache.FastCache"}}
"""

from .backend import FastCache

__version__ = "0.1.0"

__all__ = ["FastCache", "__version__"]
