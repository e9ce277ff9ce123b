"""MemoryManager: named memory sources served in-process, one backend instance per source.

Core type: `MemoryManager`, a `MemorySurface` whose execution is a direct call to the
source's backend (`apply_batch`), under one lock per source because a backend is
single-caller. Everything else (argument checks, ops, result shapes, async twins, LLM
tools) comes from the surface, shared with the cluster client.

Decisions: the lock is per source, not global, so a slow persistent store does not stall
the cache; it is re-entrant so an `update` function may read memory itself. Each backend
gets the source name as its storage prefix, so two sources pointed at one database never
see each other's keys. Rejected alternative: a thread per source with a queue (the
shard's mailbox, locally) — more moving parts for no gain in one process.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from memcluster import codec
from memcluster.backends.base import Clock, MemoryBackend
from memcluster.backends.registry import backend_name, create_backend
from memcluster.config import Config, check_sources, load_config
from memcluster.errors import ConfigError, SourceUnavailable, UnknownSource
from memcluster.manager.surface import MemorySurface
from memcluster.model import Record, SourceSpec
from memcluster.ops import Op


@dataclass
class _Source:
    """One open source: its spec, its backend and the lock that serialises calls to it."""

    spec: SourceSpec
    backend: MemoryBackend
    lock: threading.RLock = field(default_factory=threading.RLock)
    closed: bool = False


class MemoryManager(MemorySurface):
    """Named memory sources in this process.

    >>> mem = MemoryManager([mc.memory_source("cache", "memory", default=True)])
    >>> mem.store("k", 1).version
    1

    The default source is the one marked `default=True`, else the first. `clock` (default
    `time.time`) is handed to every backend, so tests can use a FakeClock for TTLs.
    """

    def __init__(self, sources: Iterable[SourceSpec], *, clock: Clock | None = None,
                 max_value_bytes: int = codec.DEFAULT_MAX_VALUE_BYTES) -> None:
        specs = check_sources(list(sources))
        if isinstance(max_value_bytes, bool) or not isinstance(max_value_bytes, int) \
                or max_value_bytes < 1:
            raise ConfigError("max_value_bytes: must be an integer >= 1")
        self.max_value_bytes = max_value_bytes
        self._clock = clock
        self._registry = threading.Lock()
        self._sources: dict[str, _Source] = {}
        self._default: str | None = None
        self._closed = False
        try:
            for spec in specs:
                self._open(spec)
        except BaseException:
            self.close()
            raise

    @classmethod
    def from_config(cls, config: str | Path | Mapping[str, Any] | Config, *,
                    clock: Clock | None = None) -> MemoryManager:
        """A manager for the sources of a YAML file or dict (`load_config`'s format)."""
        cfg = load_config(config)
        return cls(cfg.sources, clock=clock,
                   max_value_bytes=cfg.max_value_bytes or codec.DEFAULT_MAX_VALUE_BYTES)

    # ---- managing sources ---------------------------------------------------------------

    def _open(self, spec: SourceSpec) -> None:
        try:
            backend = create_backend(spec.backend, spec.opts, prefix=spec.name,
                                     clock=self._clock)
        except ConfigError as exc:  # say which source: two may share a backend
            raise ConfigError(f"source {spec.name!r}: {exc}") from exc
        with self._registry:
            self._sources[spec.name] = _Source(spec, backend)
            if spec.default or self._default is None:
                self._default = spec.name
        if spec.consolidation:  # the text field defaults to the one the source embeds
            self.set_consolidation(spec.name, {"text_field": spec.opts.get("text_field", "text"),
                                               **spec.consolidation})

    def add_source(self, spec: SourceSpec) -> None:
        """Open and add a source; with `default=True` it becomes the default."""
        if self._closed:
            raise SourceUnavailable("the memory manager is closed")
        check_sources([spec])
        if spec.name in self._sources:
            raise ConfigError(f"sources: a source named {spec.name!r} already exists")
        self._open(spec)

    def remove_source(self, name: str) -> None:
        """Close and remove a source (its stored data stays in its store)."""
        with self._registry:
            entry = self._sources.pop(name, None)
            if entry is None:
                raise UnknownSource(f"unknown source {name!r}")
            if self._default == name:
                self._default = next(iter(self._sources), None)
        self._shut(entry)

    def set_default(self, name: str) -> None:
        """Make `name` the source used when a call gives no `source=`."""
        with self._registry:
            if name not in self._sources:
                raise UnknownSource(f"unknown source {name!r}")
            self._default = name

    # ---- MemorySurface -----------------------------------------------------------------

    def _source_names(self) -> list[str]:
        self._check_open()
        return list(self._sources)

    def _default_source_name(self) -> str | None:
        self._check_open()
        return self._default

    def _check_open(self) -> None:
        if self._closed:
            raise SourceUnavailable("the memory manager is closed")

    def _entry(self, source: str) -> _Source:
        entry = self._sources.get(source)
        if entry is None:
            if self._closed:
                raise SourceUnavailable("the memory manager is closed")
            raise UnknownSource(f"unknown source {source!r}")
        return entry

    def _execute(self, source: str, ops: list[Op]) -> list[Any]:
        entry = self._entry(source)
        with entry.lock:
            if entry.closed:
                raise SourceUnavailable(f"source {source!r} is closed")
            return entry.backend.apply_batch(ops, return_exceptions=True)

    def _export(self, source: str, cursor: str | None, limit: int
                ) -> tuple[list[Record], str | None]:
        entry = self._entry(source)
        with entry.lock:
            if entry.closed:
                raise SourceUnavailable(f"source {source!r} is closed")
            return entry.backend.export(cursor=cursor, limit=limit)

    def _describe(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for name, entry in list(self._sources.items()):
            with entry.lock:
                details = dict(entry.backend.info())
            details.setdefault("backend", backend_name(entry.spec.backend))
            details["description"] = entry.spec.description
            details["default"] = name == self._default
            out[name] = details
        return out

    # ---- lifecycle ----------------------------------------------------------------------

    @staticmethod
    def _shut(entry: _Source) -> None:
        with entry.lock:
            if not entry.closed:
                entry.closed = True
                entry.backend.close()

    def close(self) -> None:
        """Close every backend (idempotent); the first close error is raised after all ran."""
        self._closed = True
        with self._registry:
            entries = list(self._sources.values())
            self._sources.clear()
            self._default = None
        first: BaseException | None = None
        for entry in entries:
            try:
                self._shut(entry)
            except Exception as exc:  # close the rest, then report
                first = first or exc
        if first is not None:
            raise first

    def __enter__(self) -> MemoryManager:
        return self

    def __repr__(self) -> str:
        return f"MemoryManager(sources={self._source_names()}, default={self._default!r})"
