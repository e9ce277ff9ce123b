"""The memory behaviour every backend implements, with correct defaults for the optional parts.

Core types: `MemoryBackend` (the behaviour) and `Capabilities` (what a backend declares in
`info()`, and what `apply_batch` checks queries against so that an unsupported query raises
`UnsupportedQuery` instead of matching everything).

A backend receives validated ops (`memcluster.ops`), never raw arguments: the edge has
already checked keys, values and TTLs, so a backend only stores and finds. It is
synchronous and used by one caller at a time (a MemoryManager lock or a shard's mailbox).
It scopes all its storage to `prefix`, so several backends (shards) sharing one database
never see each other's keys. The constructor does no I/O; `open(opts)` connects.

Required: open, store, retrieve, search, delete, list_keys. Optional ones have defaults
built on those: `update` is a compare-and-set retry loop (atomic per key because a write
with `if_version` is), `count` pages through search, `clear` pages through keys. The
cluster also needs `replicate` and `export` (handoff is part of the contract, as in
riak_core's vnode behaviour); a backend without them can only run with one replica and
cannot be rebalanced. Optional hooks for the cluster, with no-op defaults:
`replicate_many` (a batch of replicates, e.g. one embedder call), `attachments` (derived
data, such as an embedding, to send with a record to its replicas) and `drain_evicted`
(the keys a bounded backend evicted, for the shard to delete on the replicas).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

from memcluster.errors import (
    ConfigError,
    MemclusterError,
    UnsupportedOperation,
    UnsupportedQuery,
    VersionConflict,
)
from memcluster.model import Page, Query, Record
from memcluster.ops import (
    ClearOp,
    CountOp,
    DeleteOp,
    ExistsOp,
    ListKeysOp,
    Op,
    ReplicateOp,
    RetrieveOp,
    SearchOp,
    StoreOp,
    UpdateOp,
)

Clock = Callable[[], float]
UPDATE_RETRIES = 100


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a backend can do; reported by `info()` and enforced by `check_query`.

    text: "substring" (case-insensitive on key and value), "semantic" (similarity, sets
    Record.score) or None. ttl: "lazy" (hidden at once, removed on access or by a sweeper),
    "sweeper", or "native" (the store expires keys itself). durable: the store outlives
    the process, so the cluster defaults to one replica. modes: the search modes a text
    query may ask for (`SearchOp.mode`: "vector", "keyword", "hybrid"); ranking: whether
    a search may carry a `Ranking` (recency and importance).
    """

    text: str | None = "substring"
    pattern: bool = True
    filter: bool = True
    order_by: bool = True
    ttl: str = "lazy"
    cas: bool = True
    native_batch: bool = False
    durable: bool = False
    handoff: bool = True
    modes: tuple[str, ...] = ()
    ranking: bool = False

    def as_dict(self) -> dict[str, Any]:
        """JSON-shaped: the tuple of modes becomes a list."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def check_options(backend: str, opts: Mapping[str, Any], known: Iterable[str]) -> None:
    """Reject options `backend` does not know (ConfigError naming them and the known ones).

    Every backend's `open` starts with it: a typo such as `pth:` must fail at open, not
    run on the defaults.
    """
    allowed = tuple(known)
    unknown = sorted(set(opts) - set(allowed))
    if unknown:
        raise ConfigError(f"{backend}: unknown option(s) {', '.join(unknown)}; "
                          f"known: {', '.join(allowed) or '(none)'}")


def chain_stores(ops: Sequence[StoreOp], live: Callable[[str, str], Record | None],
                 now: float) -> list[Record]:
    """The records a batch of stores writes, in order, without writing anything.

    `live(namespace, key)` reads the store; a later op on the same key sees the record of
    the earlier one (versions n+1, n+2), as if applied one by one. Raises VersionConflict
    for a failed compare-and-set, so an all-or-nothing `store_many` commits only after it
    returns.
    """
    staged: dict[tuple[str, str], Record | None] = {}
    out: list[Record] = []
    for op in ops:
        where = (op.namespace, op.key)
        current = staged[where] if where in staged else live(*where)
        record = op.record_after(current, now)
        staged[where] = record
        out.append(record)
    return out


class MemoryBackend(ABC):
    """The memory behaviour. Subclass, set `name` and `capabilities`, implement the required ops."""

    name: ClassVar[str] = "custom"
    capabilities: ClassVar[Capabilities] = Capabilities()

    def __init__(self, *, prefix: str = "", clock: Clock = time.time) -> None:
        self.prefix = prefix
        self.clock = clock

    @classmethod
    def node_local(cls, opts: Mapping[str, Any]) -> bool:
        """True if, with `opts`, the data lives on the disk of the node the shard runs on
        (files, sqlite, a vector store with a `path`): a lost node loses it unless the
        source keeps replicas in other failure domains."""
        return False

    # ---- required -------------------------------------------------------------------

    @abstractmethod
    def open(self, opts: Mapping[str, Any]) -> None:
        """Validate `opts` (ConfigError naming the option) and connect or load."""

    @abstractmethod
    def store(self, op: StoreOp) -> Record:
        """Write one record: version = previous + 1 (1 if absent or expired).

        Raise VersionConflict if `op.expected_version` is set and differs from the current
        version (0 when absent). Returns the stored record.
        """

    @abstractmethod
    def retrieve(self, op: RetrieveOp) -> Record | None:
        """The live record, or None if absent or expired."""

    @abstractmethod
    def search(self, op: SearchOp) -> list[Record]:
        """Records of `op.namespace` matching the query, ordered, offset and limited."""

    @abstractmethod
    def delete(self, op: DeleteOp) -> bool:
        """Remove the key; True if a live record existed."""

    @abstractmethod
    def list_keys(self, op: ListKeysOp) -> Page:
        """One page of live keys in key order; the cursor resumes after the last key."""

    # ---- optional, with defaults -------------------------------------------------------

    def close(self) -> None:
        """Release connections, threads and files (the behaviour's `terminate`)."""
        return None

    def store_many(self, ops: Sequence[StoreOp]) -> list[Record]:
        return [self.store(op) for op in ops]

    def retrieve_many(self, ops: Sequence[RetrieveOp]) -> list[Record | None]:
        return [self.retrieve(op) for op in ops]

    def delete_many(self, ops: Sequence[DeleteOp]) -> int:
        return sum(1 for op in ops if self.delete(op))

    def exists(self, op: ExistsOp) -> bool:
        return self.retrieve(RetrieveOp(op.key, op.namespace)) is not None

    def count(self, op: CountOp) -> int:
        """Pages through `search` (override with a native count where the store has one)."""
        total, offset, step = 0, 0, 1000
        while True:
            page = self.search(SearchOp(Query(text=op.query.text, pattern=op.query.pattern,
                                              filter=op.query.filter, limit=step, offset=offset,
                                              min_score=op.query.min_score),
                                        op.namespace))
            total += len(page)
            if len(page) < step:
                return total
            offset += step

    def update(self, op: UpdateOp) -> Record:
        """Compare-and-set retry loop: atomic per key because the conditional store is."""
        for _ in range(UPDATE_RETRIES):
            current = self.retrieve(RetrieveOp(op.key, op.namespace))
            store = self.update_store_op(op, current)
            try:
                return self.store(store)
            except VersionConflict:
                continue
        raise VersionConflict(f"update of {op.key!r} lost the race {UPDATE_RETRIES} times",
                              key=op.key)

    def update_store_op(self, op: UpdateOp, current: Record | None) -> StoreOp:
        """The CAS store an update makes from the live `current` record (calls `op.fn`).

        Keeps the record's metadata and remaining TTL unless the update gives new ones.
        Shared by the default `update` and by backends that lock the row themselves.
        """
        new_value = op.fn(None if current is None else current.value)
        now = self.clock()
        if op.ttl is not None:
            ttl = op.ttl
        elif current is not None and current.expires_at is not None:
            ttl = max(current.expires_at - now, 1e-3)
        else:
            ttl = None
        metadata = op.metadata if op.metadata is not None else (
            current.metadata if current is not None else None)
        return StoreOp.make(op.key, new_value, namespace=op.namespace, metadata=metadata,
                            ttl=ttl, if_version=0 if current is None else current.version,
                            max_bytes=op.max_bytes)

    def clear(self, op: ClearOp) -> int:
        """Pages through keys (or `export` for every namespace) and deletes them."""
        if op.namespace is None:
            removed, cursor = 0, None
            while True:
                records, cursor = self.export(cursor=cursor, limit=1000)
                removed += self.delete_many([DeleteOp(r.key, r.namespace) for r in records])
                if cursor is None:
                    return removed
        keys: list[str] = []
        cursor = None
        while True:
            page = self.list_keys(ListKeysOp(op.namespace, None, 1000, cursor))
            keys.extend(page.keys)
            cursor = page.cursor
            if cursor is None:
                break
        return self.delete_many([DeleteOp(k, op.namespace) for k in keys])

    def replicate(self, op: ReplicateOp) -> bool:
        """Install `op.record` unless a live copy with version >= its version exists.

        Returns True if installed. Needed for replicas > 1, hydration and rebalancing.
        """
        raise UnsupportedOperation(f"backend {self.name!r} does not support replicate")

    def replicate_many(self, ops: Sequence[ReplicateOp]) -> list[bool]:
        """`replicate` for a batch, with the same result as one by one (override to batch
        work, e.g. one embedder call; an override must be all or nothing)."""
        return [self.replicate(op) for op in ops]

    def attachments(self, records: Sequence[Record]) -> list[bytes | None]:
        """Optional hook: per record, derived data worth sending with it to a replica
        (`ReplicateOp.attachment`) so the replica need not derive it again; None where
        there is none. The vector backend attaches the stored embedding; the default
        attaches nothing. A receiver ignores an attachment it cannot use."""
        return [None] * len(records)

    def make_room(self, records: Sequence[Record]) -> list[tuple[str, str]]:
        """Optional hook for a bounded backend: evict now what `records` (about to be
        installed by a replicating primary, which stages writes before it applies them)
        need room for; -> the (namespace, key)s evicted, which the primary deletes on its
        replicas in the same round. CapacityExceeded (nothing evicted) if they cannot fit.
        The default evicts nothing."""
        return []

    def drain_evicted(self) -> list[tuple[str, str]]:
        """Optional hook: the (namespace, key)s this backend evicted to make room since
        the last call, oldest first, and forget them.

        A bounded backend with an eviction policy (the memory backend's `lru`, `lfu`,
        `ttl-first`) evicts only on a primary write, never on a `replicate`; the shard
        drains this after each batch and forwards the keys to the replicas as deletes,
        so replicas evict exactly what their primary evicted. The default evicts nothing.
        """
        return []

    def export(self, *, cursor: str | None = None, limit: int = 1000
               ) -> tuple[list[Record], str | None]:
        """A page of every live record under the prefix, in every namespace."""
        raise UnsupportedOperation(f"backend {self.name!r} does not support export")

    def info(self) -> dict[str, Any]:
        """The backend's name and capabilities (override to add stats; never secrets)."""
        return {"backend": self.name, "capabilities": self.capabilities.as_dict()}

    # ---- query capability check and batch dispatch --------------------------------------

    def check_query(self, query: Query) -> None:
        """Raise UnsupportedQuery if `query` uses something this backend cannot answer."""
        caps = self.capabilities
        if query.text is not None and caps.text is None:
            raise UnsupportedQuery(f"backend {self.name!r} does not support text search")
        if query.pattern is not None and not caps.pattern:
            raise UnsupportedQuery(f"backend {self.name!r} does not support key patterns")
        if query.filter and not caps.filter:
            raise UnsupportedQuery(f"backend {self.name!r} does not support metadata filters")
        if query.order_by is not None and not caps.order_by:
            raise UnsupportedQuery(f"backend {self.name!r} does not support order_by")
        if query.min_score is not None and caps.text != "semantic":
            raise UnsupportedQuery(f"backend {self.name!r} has no similarity score; "
                                   "min_score needs a semantic (vector) backend")
        if (query.order_by or "").lstrip("-") == "score" and caps.text != "semantic":
            raise UnsupportedQuery(f"backend {self.name!r} has no similarity score to order by")

    def check_search(self, op: SearchOp) -> None:
        """`check_query`, plus UnsupportedQuery for a mode or ranking this backend lacks
        (or given without a text query, where they mean nothing)."""
        self.check_query(op.query)
        caps = self.capabilities
        if op.mode is None and op.ranking is None:
            return
        if op.query.text is None:
            raise UnsupportedQuery("mode and ranking apply to text queries; give text")
        if op.mode is not None and op.mode not in caps.modes:
            raise UnsupportedQuery(f"backend {self.name!r} has no {op.mode!r} search mode"
                                   + (f" (it has {', '.join(caps.modes)})" if caps.modes
                                      else ""))
        if op.ranking is not None and not caps.ranking:
            raise UnsupportedQuery(f"backend {self.name!r} cannot rank by recency and "
                                   "importance")

    def apply(self, op: Op) -> Any:
        """Apply one op (the single-op form of `apply_batch`)."""
        kind = op.kind
        if kind == "search":
            self.check_search(op)  # type: ignore[arg-type]
        elif kind == "count":
            self.check_query(op.query)  # type: ignore[union-attr]
        return getattr(self, kind)(op)

    def _native_many(self, kind: str) -> bool:
        """True if this class overrides the *_many form for `kind` (the default is a loop)."""
        name = _MANY_METHOD[kind]
        return getattr(type(self), name) is not getattr(MemoryBackend, name)

    def apply_batch(self, ops: Iterable[Op], *, return_exceptions: bool = True) -> list[Any]:
        """Apply ops in order; runs of stores or retrieves use overridden *_many forms.

        With `return_exceptions` a MemclusterError becomes that op's result and the rest
        still apply (the shard fast path); otherwise the first error is raised. A failed
        run is redone op by op, so an overriding `store_many` must be all or nothing
        (nothing written when it raises); the default loops are not used for runs, since
        replaying their first writes would bump versions twice.
        """
        results: list[Any] = []
        ops = list(ops)
        i = 0
        while i < len(ops):
            kind = ops[i].kind
            j = i + 1
            if kind in _MANY and self._native_many(kind) and _batchable(ops[i]):
                while j < len(ops) and ops[j].kind == kind and _batchable(ops[j]):
                    j += 1
            run = ops[i:j]
            try:
                if j - i > 1:
                    results.extend(_MANY[kind](self, run))
                else:
                    results.append(self.apply(run[0]))
            except MemclusterError as exc:
                if not return_exceptions:
                    raise
                if j - i == 1:
                    results.append(exc)
                else:  # redo the run one by one so each op gets its own outcome
                    for op in run:
                        try:
                            results.append(self.apply(op))
                        except MemclusterError as one:
                            results.append(one)
            i = j
        return results


def _batchable(op: Op) -> bool:
    """CAS stores go one by one: a conflict must not fail (or replay) its neighbours."""
    return not (op.kind == "store" and op.expected_version is not None)  # type: ignore[union-attr]


# Runs of these kinds go through the *_many forms when a backend has native ones.
_MANY: dict[str, Callable[[MemoryBackend, Sequence[Any]], list[Any]]] = {
    "store": lambda backend, ops: backend.store_many(ops),
    "retrieve": lambda backend, ops: backend.retrieve_many(ops),
    "replicate": lambda backend, ops: backend.replicate_many(ops),
}
_MANY_METHOD = {"store": "store_many", "retrieve": "retrieve_many",
                "replicate": "replicate_many"}
