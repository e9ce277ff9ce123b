"""memcluster: a shared, fault-tolerant memory layer for fleets of LLM agents.

The public API. `start_cluster`, `connect` and `start_metrics_server` load
`memcluster.cluster` (and so Ray, for the first two) only when first used, so a purely
local `MemoryManager` never imports Ray.
"""

from typing import Any

from memcluster import errors
from memcluster.backends.base import Capabilities, MemoryBackend
from memcluster.errors import MemclusterError
from memcluster.manager import Config, MemoryManager, MemorySurface, load_config, memory_source
from memcluster.model import Page, Query, Ranking, Record, SourceSpec

__version__ = "0.1.0"

_LAZY = {"start_cluster": "memcluster.cluster", "connect": "memcluster.cluster",
         "start_metrics_server": "memcluster.metrics"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
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
    "Ranking",
    "Record",
    "SourceSpec",
    "connect",
    "errors",
    "load_config",
    "memory_source",
    "start_cluster",
    "start_metrics_server",
]
