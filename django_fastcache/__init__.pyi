from .backend import FastCache as FastCache
from .backend import SharedMemoryCache as SharedMemoryCache
from .backend import remove_segment as remove_segment
from .backend import segment_path as segment_path
from .tiered import TieredCache as TieredCache

__version__: str

__all__ = [
    "FastCache",
    "SharedMemoryCache",
    "TieredCache",
    "__version__",
    "remove_segment",
    "segment_path",
]
