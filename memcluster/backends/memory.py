"""The in-process memory backend: dicts per namespace, an expiry heap and a sweeper thread.

Core types: `MemoryStoreBackend` (registered as "memory") and `_Entry`, one small tuple
per record: the value and metadata still msgpack-encoded, the version and three times.
Encoded bytes cost a decode per read but keep records small and isolate the store from
callers who mutate what they passed or got; decoded objects were rejected for both reasons.

Expiry is lazy (an expired entry is invisible at once, removed when touched) plus a daemon
sweeper popping due entries from a heap every `cleanup_interval` seconds, in bounded
slices that release the lock between them (cachetools' `TTLCache.expire`, diskcache's
`_cull`); a popped heap entry is checked against the current one (overwrites leave stale
ones). One re-entrant lock guards everything: the sweeper runs concurrently, and `update`
runs the caller's function under it, atomic without a retry loop.

Options: `cleanup_interval` (seconds between sweeps, default 30; 0/None: no sweeper),
`max_items`/`max_bytes` (per instance, so per shard; bytes of encoded key, value and
metadata) and `eviction` (`reject`, the default: a write that needs room raises
`CapacityExceeded`; `lru`, `lfu`, `ttl-first`: `memcluster.backends.eviction`).
Expired records make room first. Only a primary write evicts (`replicate` never evicts
nor refuses); `make_room()` and `drain_evicted()` hand the shard the keys evicted, to
delete on the replicas, so they evict exactly what their primary did.
"""

from __future__ import annotations

import bisect
import heapq
import json
import threading
import weakref
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from typing import Any, ClassVar, NamedTuple

from memcluster import codec
from memcluster.backends.base import Capabilities, MemoryBackend, check_options
from memcluster.backends.eviction import Capacity, Slot, soonest_expiring
from memcluster.errors import ConfigError, InvalidValue, VersionConflict
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
_OPTIONS = ("cleanup_interval", "max_items", "max_bytes", "eviction")


class _Entry(NamedTuple):
    """One stored record, encoded; replaced, never mutated. A NamedTuple: the smallest
    footprint that reads by name (about 245 bytes a record, below a plain dict of the same
    data); unlike a plain tuple it stays tracked by the garbage collector, so full
    collections in a shard scale with its record count."""

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
        self._capacity = Capacity()
        self._stop = threading.Event()
        self._sweeper: threading.Thread | None = None

    # ---- lifecycle ------------------------------------------------------------------------

    def open(self, opts: Mapping[str, Any]) -> None:
        check_options("memory", opts, _OPTIONS)
        interval = opts.get("cleanup_interval", 30)
        if interval is not None and (isinstance(interval, bool)
                                     or not isinstance(interval, (int, float)) or interval < 0):
            raise ConfigError(f"cleanup_interval: must be a number of seconds >= 0, "
                              f"got {interval!r}")
        self._capacity = Capacity.from_opts(opts, self._soonest_expiring)  # the bounds
        self.cleanup_interval = float(interval) if interval else None
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
            self._capacity.clear()

    def held(self) -> int:
        """Entries held in memory, including expired ones not yet removed."""
        return self._size

    def info(self) -> dict[str, Any]:
        now = self.clock()
        with self._lock:
            self._purge(now, limit=None)
            return {**super().info(), "records": self._size,
                    "namespaces": sum(1 for d in self._data.values() if d),
                    **self._capacity.info(), "cleanup_interval": self.cleanup_interval}

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
            self._capacity.removed((namespace, key), self._size_of(key, entry))
            if not table:
                del self._data[namespace]
        return entry

    def _put(self, namespace: str, key: str, entry: _Entry) -> None:
        table = self._data.get(namespace)
        if table is None:
            table = self._data[namespace] = {}
        old = table.get(key)
        if old is None:
            self._size += 1
            self._sorted.pop(namespace, None)
        self._capacity.added((namespace, key), self._size_of(key, entry)
                             - (0 if old is None else self._size_of(key, old)))
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

    def _size_of(self, key: str, entry: _Entry) -> int:
        """What `max_bytes` counts for a record: its key, value and metadata, encoded."""
        if not self._capacity.counts_bytes:
            return 0
        return len(key.encode("utf-8", "surrogatepass")) + len(entry.blob) + len(entry.meta or b"")

    def _make_room(self, items: int, size: int, keep: Collection[Slot], now: float) -> None:
        """Room for `items` more records and `size` more bytes: expired records go first,
        then the policy's victims (never a slot in `keep`: the write's own), all or none;
        CapacityExceeded (nothing evicted) when the write cannot fit."""
        capacity = self._capacity
        if capacity.fits(self._size, items, size):
            return
        self._purge(now, limit=None)

        def size_of(slot: Slot) -> int | None:
            entry = self._data.get(slot[0], {}).get(slot[1])
            return None if entry is None else self._size_of(slot[1], entry)

        victims = capacity.victims(self._size, items, size, keep, size_of)
        for slot in victims:
            self._remove(*slot)
        capacity.record(victims)

    def _soonest_expiring(self) -> Iterator[Slot]:
        """The `ttl-first` victims: live records with a TTL, soonest expiry first."""
        return soonest_expiring(self._heap, lambda ns, key: getattr(
            self._data.get(ns, {}).get(key), "expires", None))

    def apply_batch(self, ops: Iterable[Any], *, return_exceptions: bool = True) -> list[Any]:
        """`MemoryBackend.apply_batch`, with a fresh list of evictions to drain after it."""
        with self._lock:
            self._capacity.begin_batch()
        try:
            return super().apply_batch(ops, return_exceptions=return_exceptions)
        finally:
            self._capacity.end_batch()  # the sweeper never touches the batch's state

    def make_room(self, records: Sequence[Record]) -> list[Slot]:
        if not self._capacity.bounded:
            return []
        with self._lock:
            now = self.clock()
            new = [r for r in records if self._live(r.namespace, r.key, now) is None]
            size = sum(len(r.key.encode("utf-8", "surrogatepass")) + len(codec.encode(
                [r.value, r.metadata])) for r in new) if self._capacity.counts_bytes else 0
            self._make_room(len(new), size, {(r.namespace, r.key) for r in records}, now)
            return self._capacity.drain()

    def drain_evicted(self) -> list[Slot]:
        """The (namespace, key)s evicted since the current `apply_batch` began (or since
        the last drain), oldest first; the list is emptied."""
        with self._lock:
            return self._capacity.drain()

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
        if self._capacity.bounded:
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
        """CAS checks, then room for the batch (`_make_room`), then the writes."""
        with self._lock:
            self._capacity.begin_write()
            now = self.clock()
            versions: dict[Slot, int] = {}
            current: dict[Slot, _Entry | None] = {}
            for op in ops:
                slot = (op.namespace, op.key)
                if slot not in versions:
                    entry = current[slot] = self._live(op.namespace, op.key, now)
                    versions[slot] = entry.version if entry is not None else 0
                expected = op.expected_version
                if expected is not None and versions[slot] != expected:
                    raise VersionConflict(
                        f"key {op.key!r} is at version {versions[slot]}, expected {expected}",
                        key=op.key, expected=expected, actual=versions[slot])
                versions[slot] += 1
            final = {(op.namespace, op.key): op for op in ops}  # the last write wins
            size = sum(self._size_of(op.key, _Entry(op.blob, _encode_meta(op.metadata), 0, 0,
                                                    0, None))
                       - (0 if current[slot] is None else self._size_of(op.key, current[slot]))
                       for slot, op in final.items()) if self._capacity.counts_bytes else 0
            self._make_room(sum(1 for e in current.values() if e is None), size, current, now)
            return [self._write(op, self._live(op.namespace, op.key, now), now,
                                None if op.ttl is None else now + op.ttl) for op in ops]

    def retrieve(self, op: RetrieveOp) -> Record | None:
        now = self.clock()
        with self._lock:
            entry = self._live(op.namespace, op.key, now)
            if entry is not None and self._capacity.tracks_use:
                self._capacity.policy.used((op.namespace, op.key))
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
            if self._capacity.tracks_use:
                for op, entry in zip(ops, entries, strict=True):
                    if entry is not None and entry.live(now):
                        self._capacity.policy.used((op.namespace, op.key))
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
            store = StoreOp(op.key, blob, op.namespace, metadata)
            if self._capacity.bounded:
                self._capacity.begin_write()
                size = self._size_of(op.key, _Entry(blob, _encode_meta(metadata), 0, 0, 0, None)
                                     ) - (0 if current is None else self._size_of(op.key, current))
                self._make_room(int(current is None), size, [(op.namespace, op.key)], now)
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
                for key, entry in table.items():
                    self._capacity.removed((namespace, key), self._size_of(key, entry))
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
                return False  # no room check: a replica follows its primary (see above)
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
