"""django-fastcache: C-core Django cache backends.

    CACHES = {"default": {"BACKEND": "django_fastcache.FastCache"}}
"""

from .backend import FastCache, SharedMemoryCache, remove_segment, segment_path
from .tiered import TieredCache

__version__ = "0.1.0"

__all__ = [
    "FastCache",
    "SharedMemoryCache",
    "TieredCache",
    "__version__",
    "remove_segment",
    "segment_path",
]
