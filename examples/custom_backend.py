"""A user-written memcluster backend: every record in a plain dict, searched by the query engine.

This is the whole of what a backend needs. The edge has already validated keys, values and
TTLs and built ops (`memcluster.ops`), so the backend only stores and finds:

- `StoreOp.record_after(current, now)` applies the version and compare-and-set rules,
- `memcluster.query.run` answers every query (text, pattern, filter, order, limit),
- the optional operations (update, count, clear, the *_many forms) come from the base
  class; `replicate` and `export` let the cluster replicate and rebalance it.

Values are kept msgpack-encoded, so a caller mutating what it stored or got back cannot
change the store. The tests run this file through `memcluster.testing.BackendConformance`;
the README shows how to use it with `MemoryManager`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, NamedTuple

from memcluster import MemoryBackend, Record, codec, query
from memcluster.backends.base import Capabilities, check_options
from memcluster.model import Page
from memcluster.ops import DeleteOp, ListKeysOp, ReplicateOp, RetrieveOp, SearchOp, StoreOp


class _Stored(NamedTuple):
    blob: bytes          # the value, msgpack-encoded
    meta: bytes          # the metadata, msgpack-encoded
    version: int
    created_at: float
    updated_at: float
    expires_at: float | None


def _pack(rec: Record) -> _Stored:
    return _Stored(codec.encode(rec.value), codec.encode(rec.metadata), rec.version,
                   rec.created_at, rec.updated_at, rec.expires_at)


class DictBackend(MemoryBackend):
    """Records in a dict keyed by (namespace, key); one instance per source or shard."""

    name = "dict-example"
    capabilities = Capabilities(text="substring", ttl="lazy")

    def open(self, opts: Mapping[str, Any]) -> None:
        check_options(self.name, opts, known=())     # it takes no options
        self._data: dict[tuple[str, str], _Stored] = {}

    # -- helpers

    def _live(self, namespace: str, key: str) -> Record | None:
        """The record if present and not expired (an expired one is dropped on the way)."""
        s = self._data.get((namespace, key))
        if s is None:
            return None
        if s.expires_at is not None and s.expires_at <= self.clock():
            del self._data[namespace, key]
            return None
        return Record(key, codec.decode(s.blob), namespace, codec.decode(s.meta), s.version,
                      s.created_at, s.updated_at, s.expires_at)

    def _records(self, namespace: str | None) -> list[Record]:
        """Every live record of one namespace (None: of all), in (namespace, key) order."""
        found = (self._live(ns, key) for ns, key in sorted(self._data)
                 if namespace is None or ns == namespace)
        return [r for r in found if r is not None]

    # -- the required operations

    def store(self, op: StoreOp) -> Record:
        rec = op.record_after(self._live(op.namespace, op.key), self.clock())
        self._data[op.namespace, op.key] = _pack(rec)
        return rec

    def retrieve(self, op: RetrieveOp) -> Record | None:
        return self._live(op.namespace, op.key)

    def search(self, op: SearchOp) -> list[Record]:
        return query.run(self._records(op.namespace), op.query)

    def delete(self, op: DeleteOp) -> bool:
        existed = self._live(op.namespace, op.key) is not None
        self._data.pop((op.namespace, op.key), None)
        return existed

    def list_keys(self, op: ListKeysOp) -> Page:
        keys = [r.key for r in self._records(op.namespace)
                if (op.cursor is None or r.key > op.cursor) and query.match_pattern(r.key,
                                                                                   op.pattern)]
        page = keys[:op.limit]
        return Page(page, page[-1] if len(keys) > op.limit else None)

    # -- handoff, so the cluster can replicate and rebalance this backend

    def replicate(self, op: ReplicateOp) -> bool:
        current = self._live(op.namespace, op.key)
        if current is not None and current.version >= op.record.version:
            return False
        self._data[op.namespace, op.key] = _pack(op.record)
        return True

    def export(self, *, cursor: str | None = None, limit: int = 1000
               ) -> tuple[list[Record], str | None]:
        after = None if cursor is None else tuple(json.loads(cursor))
        records = [r for r in self._records(None)
                   if after is None or (r.namespace, r.key) > after]
        page = records[:limit]
        more = len(records) > limit
        return page, json.dumps([page[-1].namespace, page[-1].key]) if more else None


if __name__ == "__main__":
    import memcluster as mc

    with mc.MemoryManager([mc.memory_source("notes", DictBackend, default=True)]) as mem:
        mem.store("greeting", "hello from a custom backend", ttl=60)
        print(mem.retrieve("greeting").value)
