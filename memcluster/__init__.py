"""memcluster: a shared, fault-tolerant memory layer for fleets of LLM agents."""

from memcluster import errors
from memcluster.backends.base import Capabilities, MemoryBackend
from memcluster.model import Page, Query, Record, SourceSpec

__version__ = "0.1.0"

__all__ = ["Capabilities", "MemoryBackend", "Page", "Query", "Record", "SourceSpec", "errors"]
