"""Find a backend class by name: built-ins, the `memcluster.backends` entry points, dotted paths.

Built-ins are imported lazily, so using the memory backend never imports psycopg or numpy.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import Any

from memcluster.backends.base import Clock, MemoryBackend
from memcluster.errors import ConfigError

ENTRY_POINT_GROUP = "memcluster.backends"
BUILTIN: dict[str, str] = {
    "memory": "memcluster.backends.memory:MemoryStoreBackend",
    "files": "memcluster.backends.files:FilesBackend",
    "sqlite": "memcluster.backends.sqlite:SQLiteBackend",
    "redis": "memcluster.backends.redis:RedisBackend",
    "postgres": "memcluster.backends.postgres:PostgresBackend",
    "mysql": "memcluster.backends.mysql:MySQLBackend",
    "vector": "memcluster.backends.vector:VectorBackend",
    "qdrant": "memcluster.backends.qdrant:QdrantBackend",
}


def _load(target: str) -> Any:
    module, _, attr = target.partition(":")
    if not attr:  # "package.module.Class"
        module, _, attr = target.rpartition(".")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"backend {target!r} cannot be imported: {exc}") from exc


def resolve_backend(backend: str | type[MemoryBackend]) -> type[MemoryBackend]:
    """Return the backend class for a registered name, a dotted path or a class."""
    if isinstance(backend, type):
        cls: Any = backend
    elif not isinstance(backend, str) or not backend:
        raise ConfigError(f"backend must be a name, a dotted path or a class, got {backend!r}")
    elif backend in BUILTIN:
        cls = _load(BUILTIN[backend])
    else:
        found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == backend]
        if found:
            cls = found[0].load()
        elif "." in backend or ":" in backend:
            cls = _load(backend)
        else:
            known = sorted(set(BUILTIN) | {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)})
            raise ConfigError(f"unknown backend {backend!r}; known: {', '.join(known)}")
    if not (isinstance(cls, type) and issubclass(cls, MemoryBackend)):
        raise ConfigError(f"backend {backend!r} is not a MemoryBackend subclass")
    return cls


def backend_name(backend: str | type[MemoryBackend]) -> str:
    """A display name for a backend given by name or class."""
    return backend if isinstance(backend, str) else getattr(backend, "name", backend.__name__)


def create_backend(backend: str | type[MemoryBackend], opts: Mapping[str, Any] | None = None,
                   *, prefix: str = "", clock: Clock | None = None) -> MemoryBackend:
    """Instantiate and open a backend; the caller owns it and must `close()` it."""
    cls = resolve_backend(backend)
    instance = cls(prefix=prefix) if clock is None else cls(prefix=prefix, clock=clock)
    instance.open(dict(opts or {}))
    return instance
