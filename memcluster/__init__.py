"""memcluster: a shared, fault-tolerant memory layer for fleets of LLM agents.

The public API. `start_cluster` and `connect` load `memcluster.cluster` (and so Ray) only
when first used, so a purely local `MemoryManager` never imports Ray.
"""

from typing import Any

from memcluster import errors
from memcluster.backends.base import Capabilities, MemoryBackend
from memcluster.errors import MemclusterError
from memcluster.manager import Config, MemoryManager, MemorySurface, load_config, memory_source
from memcluster.model import Page, Query, Record, SourceSpec

__version__ = "0.1.0"

_CLUSTER_NAMES = ("start_cluster", "connect")


def __getattr__(name: str) -> Any:
    if name in _CLUSTER_NAMES:
        import memcluster.cluster as cluster

        return getattr(cluster, name)
    raise AttributeError(f"module 'memcluster' has no attribute {name!r}")


__all__ = [
    "Capabilities",
    "Config",
    "MemclusterError",
    "MemoryBackend",
    "MemoryManager",
    "MemorySurface",
    "Page",
    "Query",
    "Record",
    "SourceSpec",
    "connect",
    "errors",
    "load_config",
    "memory_source",
    "start_cluster",
]
