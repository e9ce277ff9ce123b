"""The `vector` backend: records with an embedding of their text, searched by meaning,
by keywords (BM25) or both.

Core types: `VectorBackend` (the behaviour); one `vector_space.Space` per namespace holds
its records and their unit vectors as the rows of one contiguous float32 matrix.

Options: `embedder` (see `memcluster.backends.embedders`; default "hashing"), `dimension`
(default: the embedder's; 384 for hashing), `similarity_threshold` (hits scoring below it
are dropped; default None: no threshold, the top `limit` however weak), `text_field` (the
field of a dict value that is embedded, default "text"; other values embed their str and
number leaves), `path` (a directory: persist as snapshot + append log, see
`memcluster.backends.vectorlog`; default in memory), `sync` (always | os, default always:
fsync each write batch) and `compact_after` (log entries before compaction, default 10000).
Retrieval options (`memcluster.retrieval.rank`): `search_mode` (vector | keyword | hybrid,
default vector; a search's `mode=` overrides it), `fusion` (rrf | weighted), `rrf_k`,
`hybrid_depth`, `hybrid_alpha`, `ranking` (recency and importance weights, a
`memcluster.Ranking` as a dict) and `tokenizer` (english | plain).

Everything but text search behaves like a key-value backend: versions and CAS
(`StoreOp.record_after`), lazy TTL (expired records are invisible at once, removed when a
read meets them or by a bounded sweep on each write), namespaces, pattern, metadata
filters and ordering through `memcluster.query`, list_keys in key order with a cursor,
replicate and export for the cluster.

Decisions:

- **Brute-force exact search with numpy, one matrix per namespace.** A query is one
  matrix-vector product over the namespace's rows (vectors are normalised at write, so
  the dot product is the cosine) and `np.partition` for the k-th best score. At 25k-100k
  rows per shard this takes milliseconds and is exact. An approximate index (HNSW, IVF)
  was rejected: a native dependency, recall below 1, and deletes/updates that degrade
  it, for a gain that only matters far beyond a shard's size.
- **Embed only new text.** A write whose text equals the stored record's (a TTL refresh,
  a metadata change, a replica receiving a version it has the text of) keeps the stored
  vector; a batch embeds its distinct new texts in one call; `replicate_many` (replication,
  hydration, rebalancing) does the same, and takes the sender's vector as is when it
  comes attached (`attachments`), so a copy between shards never calls the embedder.
- **Searches return candidates, ranked by `retrieval.rank.finish`**: the same function
  ranks them here and in a cluster's scatter merge (`SearchOp.parts`), so a sharded
  source answers as one store would.
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

import msgpack
import numpy as np

from memcluster import query
from memcluster.backends.base import Capabilities, MemoryBackend, chain_stores, check_options
from memcluster.backends.embedders import Embedder, resolve_embedder, text_of
from memcluster.backends.vector_space import Space, collect
from memcluster.backends.vectorlog import Drop, Put, VectorJournal, Wipe
from memcluster.errors import ConfigError, InvalidValue, SourceUnavailable, UnsupportedQuery
from memcluster.model import SEARCH_MODES, Page, Query, Record
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
from memcluster.retrieval import rank
from memcluster.retrieval.tokenizer import tokenize

OPTIONS = ("embedder", "dimension", "similarity_threshold", "text_field", "path", "sync",
           "compact_after", *rank.OPTIONS)
SYNC_MODES = ("always", "os")
DEFAULT_COMPACT_AFTER = 10_000
SWEEP_BUDGET = 32
ATTACHMENT_FORMAT = 1
_F = TypeVar("_F", bound=Callable[..., Any])


def _locked(method: _F) -> _F:
    """Run `method` under the backend's lock: callers on several threads (a manager's
    executor, a test) see each operation whole, as the shard's mailbox would give them."""
    @functools.wraps(method)
    def wrapper(self: VectorBackend, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return method(self, *args, **kwargs)
    return wrapper  # type: ignore[return-value]


def _unit(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1 (all-zero rows stay zero: they score 0 against everything)."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1.0).astype(np.float32)


class VectorBackend(MemoryBackend):
    """Records plus embeddings; `Query(text=...)` ranks by meaning, keywords or both."""

    name = "vector"
    capabilities = Capabilities(text="semantic", ttl="lazy", modes=SEARCH_MODES, ranking=True)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._spaces: dict[str, Space] = {}
        self._expiry: list[tuple[float, str, str, int]] = []
        self._journal: VectorJournal | None = None
        self._embedder: Embedder | None = None
        self._threshold: float | None = None
        self._settings = rank.Settings()
        self._text_field = "text"
        self._compact_after = DEFAULT_COMPACT_AFTER
        self._path: str | None = None
        self._lock = threading.RLock()

    # ---- lifecycle ----------------------------------------------------------------------------

    @classmethod
    def node_local(cls, opts: Mapping[str, Any]) -> bool:
        return bool(opts.get("path"))

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
        settings = rank.Settings.from_opts(
            opts, threshold=None if threshold is None else float(threshold))
        embedder = resolve_embedder(opts.get("embedder"), opts.get("dimension"))
        self._embedder = embedder
        self._threshold = settings.threshold
        self._settings = settings
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
            space = self._spaces[record.namespace] = Space(self._dimension, self._tokens)
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

    def _tokens(self, value: Any) -> list[str]:
        """The keyword terms of a value: its embedded text, tokenized."""
        return tokenize(self.text_of(value), self._settings.tokenizer)

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
        (for the texts not stored already) and one fsync for the batch."""
        if not ops:
            return []
        now = self.clock()
        self._sweep(now)
        known = self._stored_vectors({(op.namespace, op.key) for op in ops}, now)
        out = chain_stores(ops, lambda ns, key: self._live(ns, key, now), now)
        self._commit(list(zip(out, self._vectors(out, known), strict=True)), [])
        return out

    def _stored_vectors(self, where: set[tuple[str, str]], now: float) -> dict[str, np.ndarray]:
        """{text: vector} of the live records at `where`: a write of the same text reuses
        the vector instead of embedding it again (a TTL refresh, a metadata change)."""
        known: dict[str, np.ndarray] = {}
        for ns, key in where:
            current = self._live(ns, key, now)
            if current is not None:
                known.setdefault(self.text_of(current.value), self._spaces[ns].vector(key))
        return known

    def _vectors(self, records: Sequence[Record], known: dict[str, np.ndarray],
                 given: Sequence[np.ndarray | None] | None = None) -> list[np.ndarray]:
        """The unit vector of each record: `given` (attached by a sender), else a known
        one for its text, else embedded, with the distinct new texts in one call."""
        texts = [self.text_of(r.value) for r in records]
        if given is None:
            given = [None] * len(records)
        missing = list(dict.fromkeys(t for t, v in zip(texts, given, strict=True)
                                     if v is None and t not in known))
        if missing:
            known.update(zip(missing, self._embed(missing), strict=True))
        return [v if v is not None else known[t] for t, v in zip(texts, given, strict=True)]

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

    def replicate(self, op: ReplicateOp) -> bool:
        return self.replicate_many([op])[0]

    @_locked
    def replicate_many(self, ops: Sequence[ReplicateOp]) -> list[bool]:
        """Install each record unless a live copy with a version >= its own exists, as if
        one by one; the new vectors come attached, or reused, or embedded in one call."""
        now = self.clock()
        where = {(op.namespace, op.key) for op in ops}
        known = self._stored_vectors(where, now)
        versions = {w: (r.version if (r := self._live(*w, now)) is not None else 0)
                    for w in where}
        results: list[bool] = []
        chosen: dict[tuple[str, str], tuple[Record, np.ndarray | None]] = {}
        for op in ops:
            record = op.record
            slot = (record.namespace, record.key)
            if versions[slot] >= record.version:
                results.append(False)
                continue
            versions[slot] = record.version
            chosen[slot] = (record.with_score(None), self._attached(op.attachment))
            results.append(True)
        if chosen:
            records = [r for r, _ in chosen.values()]
            vectors = self._vectors(records, known, [v for _, v in chosen.values()])
            self._commit(list(zip(records, vectors, strict=True)), [])
        return results

    def _attached(self, attachment: bytes | None) -> np.ndarray | None:
        """The vector a sender attached, if it came from this embedder (else None)."""
        if attachment is None or self._embedder is None:
            return None
        try:
            fmt, name, blob = msgpack.unpackb(attachment, raw=False)
        except (ValueError, TypeError, msgpack.UnpackException):
            return None
        dimension = self._embedder.dimension
        if fmt != ATTACHMENT_FORMAT or name != self._embedder.name \
                or not isinstance(blob, bytes) or len(blob) != 4 * dimension:
            return None
        vector = np.frombuffer(blob, dtype="<f4").astype(np.float32)
        return vector if np.isfinite(vector).all() else None

    @_locked
    def attachments(self, records: Sequence[Record]) -> list[bytes | None]:
        """Each record's stored vector (with the embedder's name), for a `ReplicateOp`, so
        the receiving replica installs it without calling the embedder; None for a record
        not stored here at that version."""
        out: list[bytes | None] = []
        name = self._embedder.name if self._embedder is not None else None
        for record in records:
            space = self._spaces.get(record.namespace)
            current = space.records.get(record.key) if space is not None else None
            if current is None or current.version != record.version or name is None:
                out.append(None)
                continue
            blob = space.vector(record.key).astype("<f4").tobytes()  # type: ignore[union-attr]
            out.append(msgpack.packb([ATTACHMENT_FORMAT, name, blob], use_bin_type=True))
        return out

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
    def search(self, op: SearchOp) -> list[Record] | rank.Candidates:
        """Records for the query; with `op.parts` and a text query, the raw candidates
        instead (`retrieval.rank.Candidates`), for a cluster's merge to rank."""
        q = op.query
        query.check_filter(q.filter)
        if q.text is None:
            self._check_scoreless(q)
            return query.run(self._live_records(op.namespace), q)
        settings = self._settings.for_search(op.mode, op.ranking)
        need = q.offset + q.limit if q.order_by in (None, "-score") else None
        bundle = self._collect(op.namespace, q, settings, need)
        return bundle if op.parts else rank.finish([bundle], q)

    @_locked
    def count(self, op: CountOp) -> int:
        q = op.query
        query.check_filter(q.filter)
        if q.text is None:
            self._check_scoreless(q)
            return sum(1 for r in self._live_records(op.namespace)
                       if query.match_pattern(r.key, q.pattern)
                       and query.match_filter(r.metadata, q.filter))
        bundle = self._collect(op.namespace, q, self._settings, None)
        everything = Query(text=q.text, limit=len(bundle.items), min_score=q.min_score)
        return len(rank.finish([bundle], everything))

    def _collect(self, namespace: str, q: Query, settings: rank.Settings,
                 need: int | None) -> rank.Candidates:
        """The candidates of a text search (`vector_space.collect`); expired records met
        on the way are removed."""
        now = self.clock()
        space = self._spaces.get(namespace)
        if space is None or not len(space) or need == 0:
            return rank.Candidates(settings, now)
        bundle, expired = collect(
            space, q, settings, need, now, lambda text: self._embed([text])[0],
            lambda text: tokenize(text, settings.tokenizer))
        for key in expired:
            self._remove(namespace, key)
        return bundle

    @staticmethod
    def _check_scoreless(q: Query) -> None:
        if q.min_score is not None or (q.order_by or "").lstrip("-") == "score":
            raise UnsupportedQuery("min_score and order_by score need a text query: without "
                                   "text there is no similarity score")

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
                "persistent": self._path is not None, **self._settings.as_dict()}


__all__ = ["VectorBackend"]
