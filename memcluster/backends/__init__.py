"""Backends: the memory behaviour (`base`), the registry, and one module per backend."""

from memcluster.backends.base import Capabilities, MemoryBackend
from memcluster.backends.registry import create_backend, resolve_backend

__all__ = ["Capabilities", "MemoryBackend", "create_backend", "resolve_backend"]
