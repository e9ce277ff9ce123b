"""Shim: LangGraph's store classes replaced by MemclusterStore over a chosen memcluster source.

MC_PARITY_SOURCE = memory | sqlite | vector. Only how a store is built is replaced: the
test bodies call the same names (InMemoryStore(index=...), SqliteStore.from_conn_string(...),
store.setup(), store.MIGRATIONS in the postgres fixture).
"""
from __future__ import annotations

import contextlib
import inspect
import os
import tempfile

import memcluster as mc
from memcluster.integrations import langgraph as lgmod
from memcluster.integrations.langgraph import MemclusterStore

SOURCE = os.environ.get("MC_PARITY_SOURCE", "memory")
AsyncBase = getattr(lgmod, "AsyncMemclusterStore", MemclusterStore)
_SUPPORTED = set(inspect.signature(MemclusterStore.__init__).parameters)


def manager():
    if SOURCE == "memory":
        spec = mc.memory_source("lg", "memory", default=True)
    elif SOURCE == "sqlite":
        path = os.path.join(tempfile.mkdtemp(prefix="mcparity"), "lg.db")
        spec = mc.memory_source("lg", "sqlite", default=True, opts={"path": path})
    elif SOURCE == "vector":
        spec = mc.memory_source("lg", "vector", default=True, opts={"embedder": "hashing"})
    else:
        raise SystemExit(f"bad MC_PARITY_SOURCE {SOURCE}")
    return mc.MemoryManager([spec])


def _kwargs(index, ttl):
    kwargs = {}
    if index is not None and "index" in _SUPPORTED:   # the old store had no index=
        kwargs["index"] = index
    if ttl is not None:
        kwargs["ttl"] = ttl
    return kwargs


class SyncParity(MemclusterStore):
    MIGRATIONS: list = []          # the postgres fixture rewrites this list

    def __init__(self, *, index=None, ttl=None):
        super().__init__(manager(), **_kwargs(index, ttl))

    if not hasattr(MemclusterStore, "setup"):
        def setup(self):
            return None


class AsyncParity(AsyncBase):
    MIGRATIONS: list = []

    def __init__(self, *, index=None, ttl=None):
        super().__init__(manager(), **_kwargs(index, ttl))

    if AsyncBase is MemclusterStore:  # before: no async store class
        async def setup(self):
            return None


class InMemoryStore(SyncParity):
    pass


def make_store(cls=SyncParity, **kw):
    return cls(**kw)


def _stop(store):
    stop = getattr(store, "stop_ttl_sweeper", None)
    if stop is not None and not inspect.iscoroutinefunction(stop):
        stop()


class SqliteStore(SyncParity):
    @classmethod
    @contextlib.contextmanager
    def from_conn_string(cls, conn_string, *, index=None, ttl=None, **ignored):
        store = cls(index=index, ttl=ttl)
        try:
            yield store
        finally:
            _stop(store)
            store.memory.close()


class PostgresStore(SqliteStore):
    pass


class AsyncSqliteStore(AsyncParity):
    @classmethod
    @contextlib.asynccontextmanager
    async def from_conn_string(cls, conn_string, *, index=None, ttl=None, **ignored):
        store = cls(index=index, ttl=ttl)
        try:
            yield store
        finally:
            stop = getattr(store, "stop_ttl_sweeper", None)
            if stop is not None and inspect.iscoroutinefunction(stop):
                await stop()
            else:
                _stop(store)
            store.memory.close()


class AsyncPostgresStore(AsyncSqliteStore):
    pass
