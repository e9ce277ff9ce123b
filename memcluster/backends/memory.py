"""The in-process memory backend: dicts per namespace, an expiry heap and a sweeper thread.

Core types: `MemoryStoreBackend` (registered as "memory") and `_Entry`, one small tuple
per record holding the value still msgpack-encoded (the `StoreOp.blob` as it arrived), the
metadata encoded the same way, the version and the three times. Keeping the encoded bytes
costs one decode per read but makes each record small and isolates the store from callers
who mutate what they passed in or got back; keeping decoded objects was rejected for both
reasons.

Expiry is lazy (an expired entry is invisible at once and removed when touched) plus a
daemon sweeper that wakes every `cleanup_interval` seconds and pops due entries from a heap
in bounded slices, releasing the lock between slices so writers never wait for a long
sweep (cachetools' `TTLCache.expire` and diskcache's `_cull` do the same). Heap entries are
not removed on overwrite; a popped entry is checked against the current one instead.

One re-entrant lock guards everything, so the backend is thread-safe even though the
behaviour only promises one caller at a time: the sweeper runs concurrently, and `update`
runs the caller's function under the lock, which makes it atomic without a retry loop.

Options: `cleanup_interval` (seconds between sweeps, default 30; 0 or None: no sweeper)
and `max_items` (a bound on stored records; a write of a new key beyond it raises
`CapacityExceeded`, a write to an existing key still succeeds).
"""

from __future__ import annotations

import bisect
import heapq
import json
import threading
import weakref
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, NamedTuple

from memcluster import codec
from memcluster.backends.base import Capabilities, MemoryBackend
from memcluster.errors import CapacityExceeded, ConfigError, InvalidValue, VersionConflict
from memcluster.model import Page, Query, Record, new_record
from memcluster.ops import (
    ClearOp,
    CountOp,
    DeleteOp,
    ExistsOp,
    ListKeysOp,
    ReplicateOp,
    RetrieveOp,
    SearchOp,
    StoreOp,
    UpdateOp,
)
from memcluster.query import check_filter, match_filter, match_pattern, run, searchable_text

SWEEP_SLICE = 1000  # entries removed per lock hold by the sweeper
_OPTIONS = ("cleanup_interval", "max_items")


class _Entry(NamedTuple):
    """One stored record, encoded. Replaced, never mutated, so snapshots stay consistent.

    A NamedTuple of bytes, numbers and None: the smallest per-record footprint that still
    reads by name (about 245 bytes a record with its dict slot, below a plain dict of the
    same data). Known cost: unlike a plain tuple, a NamedTuple instance stays tracked by
    the garbage collector, so full collections in a shard scale with its record count;
    storing plain tuples would avoid that at the price of positional access everywhere.
    """

    blob: bytes
    meta: bytes | None
    version: int
    created: float
    updated: float
    expires: float | None

    def live(self, now: float) -> bool:
        return self.expires is None or self.expires > now


def _encode_meta(metadata: Mapping[str, Any] | None) -> bytes | None:
    return codec.encode(dict(metadata)) if metadata else None


def _decode_meta(meta: bytes | None) -> dict[str, Any]:
    return codec.decode(meta) if meta is not None else {}


def _record(namespace: str, key: str, entry: _Entry, *, value: bool = True) -> Record:
    return Record(key, codec.decode(entry.blob) if value else None, namespace,
                  _decode_meta(entry.meta), entry.version, entry.created, entry.updated,
                  entry.expires)


def _check_options(opts: Mapping[str, Any]) -> tuple[float | None, int | None]:
    unknown = sorted(set(opts) - set(_OPTIONS))
    if unknown:
        raise ConfigError(f"memory backend: unknown option {unknown[0]!r} "
                          f"(known: {', '.join(_OPTIONS)})")
    interval = opts.get("cleanup_interval", 30)
    if interval is not None and (isinstance(interval, bool)
                                 or not isinstance(interval, (int, float)) or interval < 0):
        raise ConfigError(f"cleanup_interval: must be a number of seconds >= 0, got {interval!r}")
    max_items = opts.get("max_items")
    if max_items is not None and (isinstance(max_items, bool) or not isinstance(max_items, int)
                                  or max_items < 1):
        raise ConfigError(f"max_items: must be an int >= 1, got {max_items!r}")
    return (float(interval) if interval else None), max_items


class MemoryStoreBackend(MemoryBackend):
    """Records in process memory; lost when the process ends (run with replicas >= 2)."""

    name: ClassVar[str] = "memory"
    capabilities: ClassVar[Capabilities] = Capabilities(
        text="substring", pattern=True, filter=True, order_by=True, ttl="sweeper",
        cas=True, native_batch=True, durable=False, handoff=True)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._lock = threading.RLock()
        self._data: dict[str, dict[str, _Entry]] = {}
        self._sorted: dict[str, list[str]] = {}  # namespace -> sorted keys, rebuilt on demand
        self._heap: list[tuple[float, str, str]] = []  # (expires, namespace, key)
        self._size = 0
        self.cleanup_interval: float | None = None
        self.max_items: int | None = None
        self._stop = threading.Event()
        self._sweeper: threading.Thread | None = None

    # ---- lifecycle ------------------------------------------------------------------------

    def open(self, opts: Mapping[str, Any]) -> None:
        self.cleanup_interval, self.max_items = _check_options(opts)
        if self.cleanup_interval:
            self._sweeper = threading.Thread(
                target=_sweep_loop, args=(weakref.ref(self), self._stop, self.cleanup_interval),
                name=f"memcluster-sweeper-{self.prefix}", daemon=True)
            self._sweeper.start()

    def close(self) -> None:
        """Stop the sweeper and drop every record (idempotent)."""
        self._stop.set()
        if self._sweeper is not None and self._sweeper is not threading.current_thread():
            self._sweeper.join(timeout=5)
        self._sweeper = None
        with self._lock:
            self._data.clear()
            self._sorted.clear()
            self._heap.clear()
            self._size = 0

    def held(self) -> int:
        """Entries held in memory, including expired ones not yet removed."""
        return self._size

    def info(self) -> dict[str, Any]:
        now = self.clock()
        with self._lock:
            self._purge(now, limit=None)
            return {**super().info(), "records": self._size,
                    "namespaces": sum(1 for d in self._data.values() if d),
                    "max_items": self.max_items, "cleanup_interval": self.cleanup_interval}

    # ---- internals (call with the lock held) ---------------------------------------------

    def _live(self, namespace: str, key: str, now: float) -> _Entry | None:
        """The live entry, removing an expired one on the way (lazy expiry)."""
        table = self._data.get(namespace)
        entry = table.get(key) if table else None
        if entry is not None and not entry.live(now):
            self._remove(namespace, key)
            return None
        return entry

    def _remove(self, namespace: str, key: str) -> _Entry | None:
        table = self._data.get(namespace)
        entry = table.pop(key, None) if table else None
        if entry is not None:
            self._size -= 1
            self._sorted.pop(namespace, None)
            if not table:
                del self._data[namespace]
        return entry

    def _put(self, namespace: str, key: str, entry: _Entry) -> None:
        table = self._data.get(namespace)
        if table is None:
            table = self._data[namespace] = {}
        if key not in table:
            self._size += 1
            self._sorted.pop(namespace, None)
        table[key] = entry
        if entry.expires is not None:
            heapq.heappush(self._heap, (entry.expires, namespace, key))
            if len(self._heap) > 2 * self._size + 1024:  # overwrites left stale heap entries
                self._compact_heap()

    def _compact_heap(self) -> None:
        self._heap = [(e.expires, ns, k) for ns, t in self._data.items()
                      for k, e in t.items() if e.expires is not None]
        heapq.heapify(self._heap)

    def _purge(self, now: float, *, limit: int | None) -> int:
        """Remove due entries from the heap; at most `limit` heap pops. Returns pops done."""
        heap, pops = self._heap, 0
        while heap and heap[0][0] <= now and (limit is None or pops < limit):
            _, namespace, key = heapq.heappop(heap)
            pops += 1
            table = self._data.get(namespace)
            entry = table.get(key) if table else None
            if entry is not None and not entry.live(now):
                self._remove(namespace, key)
        return pops

    def _make_room(self, new_keys: int, now: float) -> None:
        if self.max_items is None or self._size + new_keys <= self.max_items:
            return
        self._purge(now, limit=None)
        if self._size + new_keys > self.max_items:
            raise CapacityExceeded(f"memory backend is full: {self._size} of max_items="
                                   f"{self.max_items} records held, {new_keys} more needed")

    def _sorted_keys(self, namespace: str) -> list[str]:
        keys = self._sorted.get(namespace)
        if keys is None:
            keys = self._sorted[namespace] = sorted(self._data.get(namespace, ()))
        return keys

    def _write(self, op: StoreOp, current: _Entry | None, now: float,
               expires: float | None) -> Record:
        version = current.version + 1 if current is not None else 1
        created = current.created if current is not None else now
        entry = _Entry(op.blob, _encode_meta(op.metadata), version, created, now, expires)
        self._put(op.namespace, op.key, entry)
        return Record(op.key, op.value, op.namespace, dict(op.metadata), version, created, now,
                      expires)

    # ---- the behaviour ----------------------------------------------------------------------

    def store(self, op: StoreOp) -> Record:
        return self.store_many([op])[0]

    def store_many(self, ops: Sequence[StoreOp]) -> list[Record]:
        """All or nothing: every CAS condition and the capacity are checked before any write.

        The hot path of a shard: one pass checks the CAS conditions, one pass writes, with
        the per-entry work inlined (no `_live`/`_put` calls, no expired-entry removal: an
        expired entry is simply replaced). A bounded store takes the plain path below.
        """
        if self.max_items is not None:
            return self._store_many_bounded(ops)
        data = self._data
        with self._lock:  # "now" read under the lock: updated_at follows the version order
            now = self.clock()
            if any(op.if_version is not None or not op.overwrite for op in ops):
                seen: dict[tuple[str, str], int] = {}
                for op in ops:
                    slot = (op.namespace, op.key)
                    version = seen.get(slot)
                    if version is None:
                        table = data.get(op.namespace)
                        entry = table.get(op.key) if table else None
                        version = 0 if entry is None or not entry.live(now) else entry.version
                    expected = op.expected_version
                    if expected is not None and version != expected:
                        raise VersionConflict(
                            f"key {op.key!r} is at version {version}, expected {expected}",
                            key=op.key, expected=expected, actual=version)
                    seen[slot] = version + 1
            out: list[Record] = []
            append = out.append
            heap = self._heap
            encode, decode, record = codec.encode, codec.decode, new_record
            namespace, table = None, None
            for op in ops:
                key = op.key
                if op.namespace != namespace or table is None:
                    namespace = op.namespace
                    table = data.get(namespace)
                    if table is None:
                        table = data[namespace] = {}
                prev = table.get(key)
                if prev is None:
                    self._size += 1
                    self._sorted.pop(namespace, None)
                    version, created = 1, now
                elif prev.expires is not None and prev.expires <= now:
                    version, created = 1, now
                else:
                    version, created = prev.version + 1, prev.created
                ttl = op.ttl
                expires = None if ttl is None else now + ttl
                meta = op.metadata
                table[key] = _Entry(op.blob, encode(meta) if meta else None, version, created,
                                    now, expires)
                if expires is not None:
                    heapq.heappush(heap, (expires, namespace, key))
                append(record(key, decode(op.blob), namespace, dict(meta), version, created,
                              now, expires, None))
            if len(heap) > 2 * self._size + 1024:
                self._compact_heap()
            return out

    def _store_many_bounded(self, ops: Sequence[StoreOp]) -> list[Record]:
        with self._lock:
            now = self.clock()
            versions: dict[tuple[str, str], int] = {}
            for op in ops:
                slot = (op.namespace, op.key)
                if slot not in versions:
                    entry = self._live(op.namespace, op.key, now)
                    versions[slot] = entry.version if entry is not None else 0
                expected = op.expected_version
                if expected is not None and versions[slot] != expected:
                    raise VersionConflict(
                        f"key {op.key!r} is at version {versions[slot]}, expected {expected}",
                        key=op.key, expected=expected, actual=versions[slot])
                versions[slot] += 1
            self._make_room(sum(1 for (ns, k) in versions
                                if k not in self._data.get(ns, ())), now)
            return [self._write(op, self._live(op.namespace, op.key, now), now,
                                None if op.ttl is None else now + op.ttl) for op in ops]

    def retrieve(self, op: RetrieveOp) -> Record | None:
        now = self.clock()
        with self._lock:
            entry = self._live(op.namespace, op.key, now)
        return None if entry is None else _record(op.namespace, op.key, entry)

    def retrieve_many(self, ops: Sequence[RetrieveOp]) -> list[Record | None]:
        """Reads need no removal of expired entries (the sweeper or a write does that), so
        the lock is held for plain dict lookups only and decoding happens outside it."""
        now = self.clock()
        data = self._data
        with self._lock:
            entries = []
            for op in ops:
                table = data.get(op.namespace)
                entries.append(table.get(op.key) if table else None)
        decode, record = codec.decode, new_record
        return [None if e is None or (e.expires is not None and e.expires <= now) else
                record(op.key, decode(e.blob), op.namespace,
                       {} if e.meta is None else decode(e.meta), e.version, e.created,
                       e.updated, e.expires, None)
                for op, e in zip(ops, entries, strict=True)]

    def exists(self, op: ExistsOp) -> bool:
        now = self.clock()
        with self._lock:
            return self._live(op.namespace, op.key, now) is not None

    def delete(self, op: DeleteOp) -> bool:
        now = self.clock()
        with self._lock:
            return (self._live(op.namespace, op.key, now) is not None
                    and self._remove(op.namespace, op.key) is not None)

    def delete_many(self, ops: Sequence[DeleteOp]) -> int:
        now = self.clock()
        with self._lock:
            return sum(1 for op in ops if self._live(op.namespace, op.key, now) is not None
                       and self._remove(op.namespace, op.key) is not None)

    def update(self, op: UpdateOp) -> Record:
        """Atomic under the lock: `op.fn` runs once, with no retry loop."""
        with self._lock:
            now = self.clock()
            current = self._live(op.namespace, op.key, now)
            old = None if current is None else codec.decode(current.blob)
            blob = codec.encode_value(op.fn(old), max_bytes=op.max_bytes)
            metadata = op.metadata if op.metadata is not None else (
                _decode_meta(current.meta) if current is not None else {})
            if op.ttl is not None:
                expires: float | None = now + op.ttl
            else:
                expires = current.expires if current is not None else None
            if current is None:
                self._make_room(1, now)
            store = StoreOp(op.key, blob, op.namespace, metadata)
            return self._write(store, current, now, expires)

    def clear(self, op: ClearOp) -> int:
        now = self.clock()
        with self._lock:
            names = list(self._data) if op.namespace is None else [op.namespace]
            removed = 0
            for namespace in names:
                table = self._data.pop(namespace, None) or {}
                self._sorted.pop(namespace, None)
                self._size -= len(table)
                removed += sum(1 for e in table.values() if e.live(now))
            if op.namespace is None:
                self._heap.clear()
            return removed

    def list_keys(self, op: ListKeysOp) -> Page:
        now = self.clock()
        with self._lock:
            keys = self._sorted_keys(op.namespace)
            table = self._data.get(op.namespace, {})
            i = 0 if op.cursor is None else bisect.bisect_right(keys, op.cursor)
            out: list[str] = []
            more = False  # a cursor only if another live key matches after the page
            while i < len(keys):
                key = keys[i]
                i += 1
                entry = table.get(key)
                if entry is not None and entry.live(now) and match_pattern(key, op.pattern):
                    if len(out) == op.limit:
                        more = True
                        break
                    out.append(key)
        return Page(out, out[-1] if more else None)

    def _candidates(self, namespace: str, query: Query) -> tuple[list[Record], dict[str, _Entry]]:
        """Live records that match the query, and the snapshot of entries they came from.

        The snapshot is taken under the lock; decoding and matching happen outside it, and
        values and metadata are decoded only if the text or the filter needs them (search
        decodes its page afterwards), so the records returned here are for matching only.
        """
        self.check_query(query)
        check_filter(query.filter)
        now = self.clock()
        with self._lock:
            table = self._data.get(namespace, {})
            snapshot = {k: e for k, e in table.items()
                        if e.live(now) and match_pattern(k, query.pattern)}
        flt = query.filter
        text = None if query.text is None else query.text.lower()
        out = []
        for key, entry in snapshot.items():
            meta = _decode_meta(entry.meta) if flt else {}
            if flt and not match_filter(meta, flt):
                continue
            value = None if text is None else codec.decode(entry.blob)
            if text is not None and text not in searchable_text(key, value):
                continue
            out.append(Record(key, value, namespace, meta, entry.version, entry.created,
                              entry.updated, entry.expires))
        return out, snapshot

    def search(self, op: SearchOp) -> list[Record]:
        query = op.query
        if query.text is None and not query.filter and (query.order_by or "key") == "key":
            return self._page_in_key_order(op.namespace, query)
        candidates, snapshot = self._candidates(op.namespace, query)
        return [_record(op.namespace, r.key, snapshot[r.key]) for r in run(candidates, op.query)]

    def _page_in_key_order(self, namespace: str, query: Query) -> list[Record]:
        """The common case (pattern at most, key order) from the sorted keys: O(offset+limit)."""
        self.check_query(query)
        now = self.clock()
        page: list[tuple[str, _Entry]] = []
        skip = query.offset
        with self._lock:
            table = self._data.get(namespace, {})
            for key in self._sorted_keys(namespace):
                if len(page) >= query.limit:
                    break
                entry = table[key]
                if entry.live(now) and match_pattern(key, query.pattern):
                    if skip:
                        skip -= 1
                    else:
                        page.append((key, entry))
        return [_record(namespace, k, e) for k, e in page]

    def count(self, op: CountOp) -> int:
        return len(self._candidates(op.namespace, op.query)[0])

    # ---- handoff ----------------------------------------------------------------------------

    def replicate(self, op: ReplicateOp) -> bool:
        rec = op.record
        codec.check_key(rec.key)
        codec.check_namespace(rec.namespace)
        blob = codec.encode_value(rec.value, max_bytes=None)
        meta = codec.check_metadata(rec.metadata)
        codec.check_version(rec.version, what="record.version")
        now = self.clock()
        with self._lock:
            current = self._live(rec.namespace, rec.key, now)
            if current is not None and current.version >= rec.version:
                return False
            if current is None:
                self._make_room(1, now)
            entry = _Entry(blob, _encode_meta(meta), rec.version,
                           rec.created_at, rec.updated_at, rec.expires_at)
            self._put(rec.namespace, rec.key, entry)
            return True

    def export(self, *, cursor: str | None = None, limit: int = 1000
               ) -> tuple[list[Record], str | None]:
        """Live records ordered by (namespace, key); the cursor is JSON [namespace, key]."""
        after = _parse_export_cursor(cursor)
        now = self.clock()
        out: list[tuple[str, str, _Entry]] = []
        more = False
        with self._lock:
            for namespace in sorted(self._data):
                if after is not None and namespace < after[0]:
                    continue
                keys = self._sorted_keys(namespace)
                table = self._data[namespace]
                i = bisect.bisect_right(keys, after[1]) if after and namespace == after[0] else 0
                for key in keys[i:]:
                    entry = table[key]
                    if not entry.live(now):
                        continue
                    if len(out) == limit:
                        more = True
                        break
                    out.append((namespace, key, entry))
                if more:
                    break
        records = [_record(ns, k, e) for ns, k, e in out]
        next_cursor = json.dumps([out[-1][0], out[-1][1]]) if more else None
        return records, next_cursor


def _parse_export_cursor(cursor: str | None) -> tuple[str, str] | None:
    if cursor is None:
        return None
    try:
        namespace, key = json.loads(cursor)
    except (ValueError, TypeError) as exc:
        raise InvalidValue(f"not an export cursor of the memory backend: {cursor!r}") from exc
    if not isinstance(namespace, str) or not isinstance(key, str):
        raise InvalidValue(f"not an export cursor of the memory backend: {cursor!r}")
    return namespace, key


def _sweep_loop(ref: weakref.ref[MemoryStoreBackend], stop: threading.Event,
                interval: float) -> None:
    """Remove expired entries every `interval` s, in slices; ends on close or when collected."""
    while not stop.wait(interval):
        while True:
            backend = ref()
            if backend is None:
                return
            with backend._lock:
                pops = backend._purge(backend.clock(), limit=SWEEP_SLICE)
            del backend
            if pops < SWEEP_SLICE or stop.is_set():
                break
