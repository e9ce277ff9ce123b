"""The `vector` backend: records with an embedding of their text, searched by cosine similarity.

Core types: `VectorBackend` (the behaviour) and `_Space` (one namespace: its records and
their unit vectors as the rows of one contiguous float32 matrix).

Options: `embedder` (see `memcluster.backends.embedders`; default "hashing"), `dimension`
(default: the embedder's; 384 for hashing), `similarity_threshold` (hits scoring below it
are dropped; default None: no threshold, the top `limit` however weak), `text_field` (the
field of a dict value that is embedded, default "text"; other values embed their str and
number leaves), `path` (a directory: persist as snapshot + append log, see
`memcluster.backends.vectorlog`; default in memory), `sync` (always | os, default always:
fsync each write batch) and `compact_after` (log entries before compaction, default 10000).

Everything but text search behaves like a key-value backend: versions and CAS
(`StoreOp.record_after`), lazy TTL (expired records are invisible at once, removed when a
read meets them or by a bounded sweep on each write), namespaces, pattern, metadata
filters and ordering through `memcluster.query`, list_keys in key order with a cursor,
replicate and export for the cluster.

Decisions:

- **Brute-force exact search with numpy, one matrix per namespace.** A query is one
  matrix-vector product over the namespace's rows (vectors are normalised at write, so
  the dot product is the cosine) and `np.partition` for the k-th best score (rows tied
  with it are kept, so ties break by key exactly as a full sort would); a delete moves the
  last row into the hole, so the matrix stays dense with no mask, and capacity doubles
  when full and halves when a quarter full. At 25k-100k rows per shard
  this takes milliseconds and is exact. An approximate index (HNSW, IVF) was rejected: a
  native dependency, recall below 1, and deletes/updates that degrade it, for a gain that
  only matters far beyond a shard's size.
- **Filters after scoring, widening as needed.** Pattern and metadata filters run on the
  best candidates in score order; when they reject too many, the candidate set grows
  fourfold until enough hits are found or every row has been seen. An unselective filter
  therefore costs a handful of checks; a very selective one degrades to one pass over
  the rows, which a pre-filter would have cost anyway.
- **One lock per backend.** Operations are serialised by an `RLock`, so a backend shared
  by threads (a MemoryManager, a test) behaves like one behind a shard's mailbox; a
  lock-free design was rejected: the matrix and its row maps change together.
- **The text query is embedded by the same embedder**, and `min_score` and the source's
  `similarity_threshold` both apply (the stricter wins). Text queries order by score
  descending unless `order_by` says otherwise; ties break by key.
"""

from __future__ import annotations

import bisect
import functools
import heapq
import json
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np

from memcluster import query
from memcluster.backends.base import Capabilities, MemoryBackend, chain_stores, check_options
from memcluster.backends.embedders import Embedder, resolve_embedder, text_of
from memcluster.backends.vectorlog import Drop, Put, VectorJournal, Wipe
from memcluster.errors import ConfigError, InvalidValue, SourceUnavailable, UnsupportedQuery
from memcluster.model import Page, Query, Record
from memcluster.ops import (
    ClearOp,
    CountOp,
    DeleteOp,
    ListKeysOp,
    ReplicateOp,
    RetrieveOp,
    SearchOp,
    StoreOp,
)

OPTIONS = ("embedder", "dimension", "similarity_threshold", "text_field", "path", "sync",
           "compact_after")
SYNC_MODES = ("always", "os")
DEFAULT_COMPACT_AFTER = 10_000
SWEEP_BUDGET = 32
_MIN_CAPACITY = 64
_F = TypeVar("_F", bound=Callable[..., Any])


def _locked(method: _F) -> _F:
    """Run `method` under the backend's lock: callers on several threads (a manager's
    executor, a test) see each operation whole, as the shard's mailbox would give them."""
    @functools.wraps(method)
    def wrapper(self: VectorBackend, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return method(self, *args, **kwargs)
    return wrapper  # type: ignore[return-value]


class _Space:
    """One namespace: records by key, and their unit vectors as rows of a float32 matrix.

    `rows` maps a key to its row and `row_keys` a row to its key; rows [0, size) are in
    use; capacity doubles when full and halves when a quarter full (amortised O(1)).
    """

    __slots__ = ("_sorted", "matrix", "records", "row_keys", "rows")

    def __init__(self, dimension: int) -> None:
        self.records: dict[str, Record] = {}
        self.matrix = np.zeros((_MIN_CAPACITY, dimension), dtype=np.float32)
        self.row_keys: list[str] = []
        self.rows: dict[str, int] = {}
        self._sorted: list[str] | None = None

    def __len__(self) -> int:
        return len(self.row_keys)

    def put(self, record: Record, vector: np.ndarray) -> None:
        key = record.key
        row = self.rows.get(key)
        if row is None:
            row = len(self.row_keys)
            if row == self.matrix.shape[0]:
                grown = np.zeros((2 * row, self.matrix.shape[1]), dtype=np.float32)
                grown[:row] = self.matrix
                self.matrix = grown
            self.rows[key] = row
            self.row_keys.append(key)
            self._sorted = None
        self.matrix[row] = vector
        self.records[key] = record

    def remove(self, key: str) -> Record | None:
        record = self.records.pop(key, None)
        if record is None:
            return None
        row = self.rows.pop(key)
        last = len(self.row_keys) - 1
        if row != last:
            moved = self.row_keys[last]
            self.matrix[row] = self.matrix[last]
            self.row_keys[row] = moved
            self.rows[moved] = row
        self.row_keys.pop()
        self._sorted = None
        capacity = self.matrix.shape[0]
        if capacity > _MIN_CAPACITY and last < capacity // 4:
            self.matrix = self.matrix[:capacity // 2].copy()
        return record

    def vector(self, key: str) -> np.ndarray:
        return self.matrix[self.rows[key]]

    def scores(self, vector: np.ndarray) -> np.ndarray:
        return self.matrix[:len(self.row_keys)] @ vector

    def sorted_keys(self) -> list[str]:
        """Every key (live or not) in code-point order; cached until a key comes or goes."""
        if self._sorted is None:
            self._sorted = sorted(self.row_keys)
        return self._sorted


def _unit(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1 (all-zero rows stay zero: they score 0 against everything)."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1.0).astype(np.float32)


class VectorBackend(MemoryBackend):
    """Records plus embeddings; `Query(text=...)` ranks by cosine similarity."""

    name = "vector"
    capabilities = Capabilities(text="semantic", ttl="lazy")

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._spaces: dict[str, _Space] = {}
        self._expiry: list[tuple[float, str, str, int]] = []
        self._journal: VectorJournal | None = None
        self._embedder: Embedder | None = None
        self._threshold: float | None = None
        self._text_field = "text"
        self._compact_after = DEFAULT_COMPACT_AFTER
        self._path: str | None = None
        self._lock = threading.RLock()

    # ---- lifecycle ----------------------------------------------------------------------------

    @_locked
    def open(self, opts: Mapping[str, Any]) -> None:
        check_options("vector", opts, OPTIONS)
        threshold = opts.get("similarity_threshold")
        if threshold is not None and (isinstance(threshold, bool)
                                      or not isinstance(threshold, (int, float))
                                      or not -1.0 <= threshold <= 1.0):
            raise ConfigError(f"similarity_threshold: must be a number in [-1, 1], "
                              f"got {threshold!r}")
        text_field = opts.get("text_field", "text")
        if not isinstance(text_field, str) or not text_field:
            raise ConfigError(f"text_field: must be a non-empty str, got {text_field!r}")
        sync = opts.get("sync", "always")
        if sync not in SYNC_MODES:
            raise ConfigError(f"sync: must be one of {', '.join(SYNC_MODES)}, got {sync!r}")
        compact_after = opts.get("compact_after", DEFAULT_COMPACT_AFTER)
        if isinstance(compact_after, bool) or not isinstance(compact_after, int) \
                or compact_after < 1:
            raise ConfigError(f"compact_after: must be an int >= 1, got {compact_after!r}")
        path = opts.get("path")
        if path is not None and (not isinstance(path, str) or not path):
            raise ConfigError(f"path: must be a non-empty str (a directory), got {path!r}")
        embedder = resolve_embedder(opts.get("embedder"), opts.get("dimension"))
        self._embedder = embedder
        self._threshold = None if threshold is None else float(threshold)
        self._text_field = text_field
        self._compact_after = compact_after
        self._path = path
        self._spaces.clear()
        self._expiry.clear()
        if path is not None:
            journal = VectorJournal(path, self.prefix, dimension=embedder.dimension,
                                    embedder=embedder.name, sync=sync == "always")
            try:
                self._replay(journal.open())
            except BaseException:
                journal.close()
                self._spaces.clear()
                raise
            self._journal = journal

    def _replay(self, entries: Iterator[Put | Drop | Wipe]) -> None:
        now = self.clock()
        for entry in entries:
            if isinstance(entry, Put):
                if entry.record.expired(now):
                    self._remove(entry.record.namespace, entry.record.key)
                else:
                    self._install(entry.record, entry.vector)
            elif isinstance(entry, Drop):
                self._remove(entry.namespace, entry.key)
            else:
                self._wipe(entry.namespace)

    @_locked
    def close(self) -> None:
        if self._journal is not None:
            self._journal.close()
            self._journal = None

    # ---- in-memory state ----------------------------------------------------------------------

    def _install(self, record: Record, vector: np.ndarray) -> None:
        space = self._spaces.get(record.namespace)
        if space is None:
            space = self._spaces[record.namespace] = _Space(self._dimension)
        space.put(record, vector)
        if record.expires_at is not None:
            heapq.heappush(self._expiry, (record.expires_at, record.namespace, record.key,
                                          record.version))

    def _remove(self, namespace: str, key: str) -> Record | None:
        space = self._spaces.get(namespace)
        if space is None:
            return None
        record = space.remove(key)
        if not space:
            del self._spaces[namespace]
        return record

    def _wipe(self, namespace: str | None) -> None:
        if namespace is None:
            self._spaces.clear()
            self._expiry.clear()
        else:
            self._spaces.pop(namespace, None)

    def _sweep(self, now: float) -> None:
        """Remove up to SWEEP_BUDGET expired records (bounded work per write)."""
        heap = self._expiry
        for _ in range(SWEEP_BUDGET):
            if not heap or heap[0][0] > now:
                break
            _, ns, key, version = heapq.heappop(heap)
            space = self._spaces.get(ns)
            record = space.records.get(key) if space else None
            if record is not None and record.version == version and record.expired(now):
                self._remove(ns, key)
        if len(heap) > 2 * self._record_count() + 1024:  # drop entries of overwritten records
            self._expiry = [e for e in heap if self._tracked(e)]
            heapq.heapify(self._expiry)

    def _tracked(self, entry: tuple[float, str, str, int]) -> bool:
        space = self._spaces.get(entry[1])
        record = space.records.get(entry[2]) if space else None
        return record is not None and record.version == entry[3]

    def _record_count(self) -> int:
        return sum(len(space) for space in self._spaces.values())

    def _live(self, namespace: str, key: str, now: float) -> Record | None:
        space = self._spaces.get(namespace)
        record = space.records.get(key) if space else None
        if record is None:
            return None
        if record.expired(now):
            self._remove(namespace, key)
            return None
        return record

    @property
    def _dimension(self) -> int:
        if self._embedder is None:
            raise SourceUnavailable("vector backend is not open")
        return self._embedder.dimension

    # ---- embedding ----------------------------------------------------------------------------

    def text_of(self, value: Any) -> str:
        """The text a value is embedded by (`embedders.text_of` with this `text_field`)."""
        return text_of(value, self._text_field)

    def _embed(self, texts: list[str]) -> np.ndarray:
        if self._embedder is None:
            raise SourceUnavailable("vector backend is not open")
        return _unit(self._embedder.embed(texts))

    # ---- writes -------------------------------------------------------------------------------

    def _commit(self, puts: list[tuple[Record, np.ndarray]], drops: list[tuple[str, str]],
                wipe: tuple[str | None] | None = None) -> None:
        """Persist (if a path is set) then apply: memory never claims what the log lacks.

        Entries that failed to append are discarded, never left pending for the next
        batch to commit with its own (all or nothing, per batch)."""
        journal = self._journal
        if journal is None and self._path is not None:
            raise SourceUnavailable("vector store is closed")
        if journal is not None:
            try:
                if wipe is not None:
                    journal.wipe(wipe[0])
                for ns, key in drops:
                    journal.drop(ns, key)
                for record, vector in puts:
                    journal.put(record, vector)
            except BaseException:
                journal.discard()
                raise
            journal.commit()
        if wipe is not None:
            self._wipe(wipe[0])
        for ns, key in drops:
            self._remove(ns, key)
        for record, vector in puts:
            self._install(record, vector)
        if journal is not None and journal.log_entries >= self._compact_after \
                and journal.log_entries > self._record_count():
            self.compact()

    @_locked
    def compact(self) -> None:
        """Write a fresh snapshot of the live records and empty the log (persistent only)."""
        if self._journal is None:
            return
        now = self.clock()
        self._journal.compact((record, space.vector(key))
                              for space in list(self._spaces.values())
                              for key, record in list(space.records.items())
                              if not record.expired(now))

    def store(self, op: StoreOp) -> Record:
        return self.store_many([op])[0]

    @_locked
    def store_many(self, ops: Sequence[StoreOp]) -> list[Record]:
        """All or nothing: a CAS conflict anywhere leaves the store unchanged; one embed call
        and one fsync for the batch."""
        if not ops:
            return []
        now = self.clock()
        self._sweep(now)
        out = chain_stores(ops, lambda ns, key: self._live(ns, key, now), now)
        vectors = self._embed([self.text_of(r.value) for r in out])
        self._commit(list(zip(out, vectors, strict=True)), [])
        return out

    def delete(self, op: DeleteOp) -> bool:
        return self.delete_many([op]) == 1

    @_locked
    def delete_many(self, ops: Sequence[DeleteOp]) -> int:
        now = self.clock()
        gone = list(dict.fromkeys((op.namespace, op.key) for op in ops
                                  if self._live(op.namespace, op.key, now) is not None))
        if gone:
            self._commit([], gone)
        self._sweep(now)
        return len(gone)

    @_locked
    def clear(self, op: ClearOp) -> int:
        now = self.clock()
        if op.namespace is None:
            spaces = list(self._spaces.values())
        else:
            spaces = [self._spaces[op.namespace]] if op.namespace in self._spaces else []
        removed = sum(1 for space in spaces for r in space.records.values() if not r.expired(now))
        if spaces:
            self._commit([], [], (op.namespace,))
        return removed

    @_locked
    def replicate(self, op: ReplicateOp) -> bool:
        incoming = op.record
        current = self._live(incoming.namespace, incoming.key, self.clock())
        if current is not None and current.version >= incoming.version:
            return False
        vector = self._embed([self.text_of(incoming.value)])[0]
        self._commit([(incoming.with_score(None), vector)], [])
        return True

    # ---- reads --------------------------------------------------------------------------------

    @_locked
    def retrieve(self, op: RetrieveOp) -> Record | None:
        return self._live(op.namespace, op.key, self.clock())

    def _live_records(self, namespace: str) -> list[Record]:
        now = self.clock()
        space = self._spaces.get(namespace)
        if space is None:
            return []
        return [r for r in space.records.values() if not r.expired(now)]

    @_locked
    def search(self, op: SearchOp) -> list[Record]:
        q = op.query
        query.check_filter(q.filter)
        if q.text is None:
            self._check_scoreless(q)
            return query.run(self._live_records(op.namespace), q)
        if q.limit == 0:
            return []
        if q.order_by in (None, "-score"):
            hits = self._ranked(op.namespace, q, q.offset + q.limit)
            return hits[q.offset:]
        hits = query.sort_records(self._ranked(op.namespace, q, None), q.order_by)
        return hits[q.offset:q.offset + q.limit]

    @_locked
    def count(self, op: CountOp) -> int:
        q = op.query
        query.check_filter(q.filter)
        if q.text is None:
            self._check_scoreless(q)
            return sum(1 for r in self._live_records(op.namespace)
                       if query.match_pattern(r.key, q.pattern)
                       and query.match_filter(r.metadata, q.filter))
        return len(self._ranked(op.namespace, q, None))

    @staticmethod
    def _check_scoreless(q: Query) -> None:
        if q.min_score is not None or (q.order_by or "").lstrip("-") == "score":
            raise UnsupportedQuery("min_score and order_by score need a text query: without "
                                   "text there is no similarity score")

    def _ranked(self, namespace: str, q: Query, need: int | None) -> list[Record]:
        """Live records matching pattern and filter with score >= the floor, scored.

        With `need`: the best `need` in score-descending order, ties by key. The k best
        rows are found with `np.partition` (plus every row tied with the k-th, so ties
        break by key exactly as a full sort would); if pattern and filter leave fewer than
        `need` of them, k grows fourfold. With None: every such record, unordered.
        """
        space = self._spaces.get(namespace)
        if space is None or not len(space):
            return []
        scores = space.scores(self._embed([q.text or ""])[0])
        floors = [f for f in (self._threshold, q.min_score) if f is not None]
        candidates = np.flatnonzero(scores >= max(floors)) if floors else None
        pool = scores if candidates is None else scores[candidates]
        total = len(pool)
        k = total if need is None else min(total, max(2 * need, need + 32))
        now = self.clock()
        while True:
            if k >= total:
                chosen = np.arange(total)
            else:
                kth = np.partition(pool, total - k)[total - k]
                chosen = np.flatnonzero(pool >= kth)
            rows = chosen if candidates is None else candidates[chosen]
            hits, expired = self._matching(space, rows.tolist(), scores, q, now)
            if need is None or len(hits) >= need or len(chosen) >= total:
                break
            k = min(total, 4 * k)
        for key in expired:
            self._remove(namespace, key)
        if need is not None:
            hits.sort(key=lambda r: (-r.score, r.key))  # type: ignore[operator]
            del hits[need:]
        return hits

    @staticmethod
    def _matching(space: _Space, rows: list[int], scores: np.ndarray, q: Query, now: float
                  ) -> tuple[list[Record], list[str]]:
        """The hits among `rows` (scored records passing pattern and filter) and the keys
        of the expired records met on the way."""
        hits: list[Record] = []
        expired: list[str] = []
        row_keys, records = space.row_keys, space.records
        for row in rows:
            key = row_keys[row]
            record = records[key]
            if record.expired(now):
                expired.append(key)
            elif query.match_pattern(key, q.pattern) and (
                    not q.filter or query.match_filter(record.metadata, q.filter)):
                hits.append(record.with_score(float(scores[row])))
        return hits, expired

    @_locked
    def list_keys(self, op: ListKeysOp) -> Page:
        space = self._spaces.get(op.namespace)
        if space is None:
            return Page([], None)
        now = self.clock()
        keys = space.sorted_keys()
        start = 0 if op.cursor is None else bisect.bisect_right(keys, op.cursor)
        page: list[str] = []
        for i in range(start, len(keys)):
            key = keys[i]
            if space.records[key].expired(now) or not query.match_pattern(key, op.pattern):
                continue
            if len(page) == op.limit:
                return Page(page, page[-1])
            page.append(key)
        return Page(page, None)

    @_locked
    def export(self, *, cursor: str | None = None, limit: int = 1000
               ) -> tuple[list[Record], str | None]:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise InvalidValue(f"limit must be an int >= 1, got {limit!r}")
        after: tuple[str, str] | None = None
        if cursor is not None:
            try:
                ns, key = json.loads(cursor)
                after = (str(ns), str(key))
            except (ValueError, TypeError) as exc:
                raise InvalidValue(f"not an export cursor: {cursor!r}") from exc
        now = self.clock()
        out: list[Record] = []
        for ns in sorted(self._spaces):
            if after is not None and ns < after[0]:
                continue
            space = self._spaces[ns]
            keys = space.sorted_keys()
            start = bisect.bisect_right(keys, after[1]) if after and ns == after[0] else 0
            for key in keys[start:]:
                record = space.records[key]
                if record.expired(now):
                    continue
                if len(out) == limit:
                    return out, json.dumps([out[-1].namespace, out[-1].key])
                out.append(record)
        return out, None

    @_locked
    def info(self) -> dict[str, Any]:
        now = self.clock()
        live = sum(1 for space in self._spaces.values() for r in space.records.values()
                   if not r.expired(now))
        embedder = self._embedder
        return {**super().info(), "records": live,
                "embedder": embedder.name if embedder else None,
                "dimension": embedder.dimension if embedder else None,
                "similarity_threshold": self._threshold, "text_field": self._text_field,
                "persistent": self._path is not None}


__all__ = ["VectorBackend"]
