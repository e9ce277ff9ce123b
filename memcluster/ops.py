"""Operations as small frozen dataclasses: the unit every layer batches and routes.

A batch of ops is the primitive (`MemoryBackend.apply_batch`, the shard's mailbox, the
router); single-key calls build one op. Ops are validated when built with their `make`
constructors, so an op that exists is well-formed: a bad key or value fails at the edge
and nothing is written. A store op carries its value already msgpack-encoded (`blob`):
encoded once at the caller, it crosses to a shard and into a store without re-encoding,
and `value` decodes on demand for backends that want the Python object.

`key` is the routing key: ops that touch one key have it; scatter ops (search, count,
list_keys, clear) have `key = None` and go to every shard.

Batches build thousands of ops per call, so the hot paths skip the frozen dataclass's
`__init__` (`new_store_op`, see `model.fast_constructor`) once every field is checked, and
`StoreOp.make_plain` is `make` for the common unconditional item. A write's `op_id` (from
`new_op_id`) is best given when the op is made: the router would otherwise rebuild it.

What `make` checks is the same for every backend and every surface (local manager,
cluster client, tools, CLI), so all backends accept exactly the same inputs: the key,
value, metadata, TTL and version rules of `memcluster.codec`; a query's text, pattern and
filter (valid UTF-8, a filter msgpack-native, at most `codec.MAX_DEPTH` deep and
well-formed by `query.check_filter`); limits and offsets from `model.MAX_LIMIT` down; and
flags that are real bools (`overwrite="no"` is an error, not True).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from memcluster import codec
from memcluster.errors import InvalidValue, VersionConflict
from memcluster.model import Query, Ranking, Record, check_count, check_mode, fast_constructor
from memcluster.query import check_filter

_counter = itertools.count()
_PROCESS = os.urandom(6).hex()


def new_op_id() -> str:
    """A cheap process-unique id, so a retried write is applied once by its primary."""
    return f"{_PROCESS}:{next(_counter)}"


@dataclass(frozen=True, slots=True)
class StoreOp:
    """Write `key` (version = previous + 1). `if_version` / `overwrite=False` make it a CAS."""

    key: str
    blob: bytes
    namespace: str = ""
    metadata: dict[str, Any] = field(default_factory=dict, compare=False)
    ttl: float | None = None
    if_version: int | None = None
    overwrite: bool = True
    op_id: str | None = None
    kind: ClassVar[str] = "store"

    @classmethod
    def make(cls, key: Any, value: Any, *, namespace: Any = "", metadata: Any = None,
             ttl: Any = None, if_version: Any = None, overwrite: bool = True,
             max_bytes: int = codec.DEFAULT_MAX_VALUE_BYTES, op_id: str | None = None) -> StoreOp:
        new = new_store_op if cls is StoreOp else cls  # every field is checked right here
        return new(codec.check_key(key), codec.encode_value(value, max_bytes=max_bytes),
                   codec.check_namespace(namespace),
                   codec.check_metadata(metadata, max_bytes=max_bytes), codec.check_ttl(ttl),
                   codec.check_version(if_version), _flag(overwrite, "overwrite"), op_id)

    @classmethod
    def make_plain(cls, key: Any, value: Any, namespace: str, max_bytes: int,
                   op_id: str | None = None) -> StoreOp:
        """`make` for an unconditional write without metadata or TTL, into a namespace
        already checked by `codec.check_namespace`: the per-item fast path of batches."""
        return new_store_op(codec.check_key(key), codec.encode_value(value, max_bytes=max_bytes),
                            namespace, {}, None, None, True, op_id)

    @property
    def value(self) -> Any:
        return codec.decode(self.blob)

    @property
    def expected_version(self) -> int | None:
        """The version the write requires: `if_version`, 0 for overwrite=False, else None."""
        if self.if_version is not None:
            return self.if_version
        return None if self.overwrite else 0

    def record_after(self, current: Record | None, now: float) -> Record:
        """The record this write leaves, given the live `current` one (None if absent/expired).

        Raises VersionConflict if the CAS condition fails. One pure transition shared by the
        backends that compute versions themselves, so they cannot disagree on the rules.
        """
        actual = 0 if current is None else current.version
        expected = self.expected_version
        if expected is not None and expected != actual:
            raise VersionConflict(f"{self.key!r} is at version {actual}, expected {expected}",
                                  key=self.key, expected=expected, actual=actual)
        return Record(self.key, self.value, self.namespace, dict(self.metadata), actual + 1,
                      now if current is None else current.created_at, now,
                      None if self.ttl is None else now + self.ttl)


new_store_op = fast_constructor(StoreOp)
"""`StoreOp(...)` with all eight fields given and already valid (wire decoding, `make`)."""


@dataclass(frozen=True, slots=True)
class RetrieveOp:
    key: str
    namespace: str = ""
    kind: ClassVar[str] = "retrieve"

    @classmethod
    def make(cls, key: Any, *, namespace: Any = "") -> RetrieveOp:
        return cls(codec.check_key(key), codec.check_namespace(namespace))


@dataclass(frozen=True, slots=True)
class ExistsOp:
    key: str
    namespace: str = ""
    kind: ClassVar[str] = "exists"

    @classmethod
    def make(cls, key: Any, *, namespace: Any = "") -> ExistsOp:
        return cls(codec.check_key(key), codec.check_namespace(namespace))


@dataclass(frozen=True, slots=True)
class DeleteOp:
    key: str
    namespace: str = ""
    op_id: str | None = None
    kind: ClassVar[str] = "delete"

    @classmethod
    def make(cls, key: Any, *, namespace: Any = "", op_id: str | None = None) -> DeleteOp:
        return cls(codec.check_key(key), codec.check_namespace(namespace), op_id)


@dataclass(frozen=True, slots=True)
class UpdateOp:
    """Atomic read-modify-write: `fn(old value or None) -> new value`.

    metadata None keeps the record's metadata; ttl None keeps its expiry.
    """

    key: str
    fn: Callable[[Any], Any] = field(compare=False)
    namespace: str = ""
    metadata: dict[str, Any] | None = field(default=None, compare=False)
    ttl: float | None = None
    max_bytes: int = codec.DEFAULT_MAX_VALUE_BYTES
    op_id: str | None = None
    kind: ClassVar[str] = "update"

    @classmethod
    def make(cls, key: Any, fn: Callable[[Any], Any], *, namespace: Any = "",
             metadata: Any = None, ttl: Any = None,
             max_bytes: int = codec.DEFAULT_MAX_VALUE_BYTES,
             op_id: str | None = None) -> UpdateOp:
        if not callable(fn):
            raise InvalidValue(f"update needs a callable, got {type(fn).__name__}")
        meta = None if metadata is None else codec.check_metadata(metadata, max_bytes=max_bytes)
        return cls(codec.check_key(key), fn, codec.check_namespace(namespace), meta,
                   codec.check_ttl(ttl), max_bytes, op_id)


@dataclass(frozen=True, slots=True)
class SearchOp:
    """Search one namespace. `mode` (vector | keyword | hybrid) and `ranking` (recency and
    importance weights) apply to text queries on backends that declare them in their
    capabilities; None means the source's default. `parts=True` asks a backend that can
    for its raw candidates (`memcluster.retrieval.Candidates`) instead of records, so a
    scatter merge can rank across shards; a backend that cannot returns records."""

    query: Query
    namespace: str = ""
    key: None = None
    mode: str | None = None
    ranking: Ranking | None = None
    parts: bool = False
    kind: ClassVar[str] = "search"

    @classmethod
    def make(cls, query: Query | str | None = None, *, namespace: Any = "",
             mode: Any = None, ranking: Any = None, **overrides: Any) -> SearchOp:
        rank = Ranking.of(ranking)
        if rank is not None:
            codec.check_text(rank.importance_field, "ranking.importance_field")
        return cls(check_query(Query.of(query, **overrides)), codec.check_namespace(namespace),
                   None, check_mode(mode), rank)


@dataclass(frozen=True, slots=True)
class CountOp:
    """Count records matching `query` (its limit and offset are ignored)."""

    query: Query
    namespace: str = ""
    key: None = None
    kind: ClassVar[str] = "count"

    @classmethod
    def make(cls, query: Query | str | None = None, *, namespace: Any = "") -> CountOp:
        return cls(check_query(Query.of(query)), codec.check_namespace(namespace))


@dataclass(frozen=True, slots=True)
class ListKeysOp:
    """One page of keys in a namespace, in key order; `cursor` from the previous Page."""

    namespace: str = ""
    pattern: str | None = None
    limit: int = 100
    cursor: str | None = None
    key: None = None
    kind: ClassVar[str] = "list_keys"

    @classmethod
    def make(cls, *, namespace: Any = "", pattern: str | None = None, limit: int = 100,
             cursor: str | None = None) -> ListKeysOp:
        check_count("limit", limit, 1)
        if pattern is not None:
            codec.check_text(pattern, "pattern")
        if cursor is not None:
            codec.check_text(cursor, "cursor")
        return cls(codec.check_namespace(namespace), pattern, limit, cursor)


@dataclass(frozen=True, slots=True)
class ClearOp:
    """Remove every record of `namespace` (None: of every namespace under the prefix)."""

    namespace: str | None = ""
    key: None = None
    kind: ClassVar[str] = "clear"

    @classmethod
    def make(cls, *, namespace: Any = "") -> ClearOp:
        return cls(None if namespace is None else codec.check_namespace(namespace))


@dataclass(frozen=True, slots=True)
class ReplicateOp:
    """Install `record` as is unless a live copy with a version >= its version exists.

    Used by replication, hydration and rebalancing; idempotent by construction.
    `attachment` is what the sending backend derived from the record and offers so the
    receiver need not derive it again (`MemoryBackend.attachments`: the vector backend's
    embedding); a receiver that cannot use it ignores it.
    """

    record: Record = field(compare=False)
    attachment: bytes | None = field(default=None, compare=False)
    kind: ClassVar[str] = "replicate"

    @property
    def key(self) -> str:
        return self.record.key

    @property
    def namespace(self) -> str:
        return self.record.namespace


def check_query(query: Query) -> Query:
    """`query` if its text, pattern and filter are valid (see the module docstring), else
    `InvalidValue` (or `UnsupportedQuery` for an unknown filter operator)."""
    if query.text is not None:
        codec.check_text(query.text, "Query.text", nul=True)  # values may hold NUL
    if query.pattern is not None:
        codec.check_text(query.pattern, "Query.pattern")
    if query.filter:
        codec.encode_value(query.filter, what="filter")
        check_filter(query.filter)
    return query


def _flag(value: Any, what: str) -> bool:
    if type(value) is not bool:
        raise InvalidValue(f"{what} must be true or false, got {type(value).__name__}")
    return value


# ---- cluster-internal scatter ops (sent by the router to shards) ----------------------------


@dataclass(frozen=True, slots=True)
class MatchKeysOp:
    """Cluster-internal scatter op: the (namespace, key) pairs matching `query`.

    `namespace` None means every namespace. Lets count/clear deduplicate replicas.
    """

    query: Query
    namespace: str | None = ""
    key: None = None
    kind: ClassVar[str] = "match_keys"


@dataclass(frozen=True, slots=True)
class ListAfterOp:
    """Cluster-internal scatter op: keys strictly after `after`, resuming at `cursor`.

    Returns (keys, base_cursor, exhausted): `base_cursor` is the backend cursor of the
    page holding the first key returned, so resuming there and skipping keys <= the last
    key the caller consumed covers every key exactly once.
    """

    namespace: str
    pattern: str | None
    limit: int
    cursor: str | None
    after: str | None
    key: None = None
    kind: ClassVar[str] = "list_after"


Op = (StoreOp | RetrieveOp | ExistsOp | DeleteOp | UpdateOp | SearchOp | CountOp
      | ListKeysOp | ClearOp | ReplicateOp)
WRITE_KINDS = frozenset({"store", "delete", "update", "clear", "replicate"})
