"""The `qdrant` backend: records as points of a Qdrant collection, ranked by meaning.

Core type: `QdrantBackend`. Options: where the store is, one of `url` (a Qdrant server,
with `api_key` and `timeout`), `path` (qdrant-client's embedded local mode, on disk) or
`location: ":memory:"` (embedded, in memory; the default); `collection` (default
`memcluster`), `embedder` and `dimension` (as the vector backend: `embedders`), `distance`
(cosine, dot or euclid), `similarity_threshold`, `text_field` (the field of a dict value
that is embedded, default "text"), `payload_indexes` ({metadata field: keyword | integer
| float | bool}, created on a server) and `sweep_interval` (seconds between expiry sweeps).

A point per record, its id a UUID of (prefix, namespace, key); its payload: prefix,
namespace, key (indexed keyword fields), version, created_at, updated_at, expires_at (an
indexed float; absent: never), the value and the exact metadata as base64 msgpack,
`metadata` (the metadata as JSON, for filters; absent when JSON cannot hold it exactly,
and then `exact` is false) and `text`, the text that was embedded, kept for keyword and
hybrid retrieval. Scores: cosine and dot as Qdrant gives them; euclid as minus the distance,
so that for every distance a higher score is better, as `min_score` and `-score` expect.

Decisions:

- **Versions and CAS live in the payload, and writes are serialised here.** Qdrant has no
  conditional write, so a CAS is read, compare, upsert, safe only while nobody else writes
  the prefix in between. That holds by construction: a prefix belongs to one backend
  instance (in the cluster, one shard, whose mailbox applies one op at a time), and in one
  process every operation on a store runs under that store's lock, shared by all the
  backends opened on it (so two MemoryManagers over one path cannot interleave a CAS).
  Two processes writing one prefix of one server collection would not be safe; the
  cluster never does that.
- **Filters: a Qdrant superset, then the engine** (`qdrant_filter`): every candidate is
  rechecked by `memcluster.query`, so a filter Qdrant cannot express exactly costs speed,
  never correctness. Text queries fetch the best k with the filter in Qdrant and widen k
  fourfold while the recheck leaves too few, as the vector backend does.
- **Embedded mode keeps one store per prefix** under `path` (`vectorlog.prefix_dir`): an
  embedded store can be opened by one process at a time, and each shard is its own
  process. In one process, backends on one directory share one client (and its lock).
- **Key order is not Qdrant's**: `list_keys` reads the namespace's keys and sorts them (a
  vector store has no ordered string index); `export` pages in Qdrant's point order.
- **TTL**: expired points are invisible at once (filtered and rechecked) and deleted by a
  filter sweep on writes at most every `sweep_interval` seconds.
"""

from __future__ import annotations

import base64
import functools
import json
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
import httpx
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from memcluster import codec
from memcluster import query as engine
from memcluster.backends.base import Capabilities, MemoryBackend, chain_stores, check_options
from memcluster.backends.embedders import Embedder, resolve_embedder, text_of
from memcluster.backends.qdrant_filter import payload_key, superset
from memcluster.backends.sql_query import json_exact
from memcluster.backends.vectorlog import prefix_dir
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
    UpdateOp,
)
from memcluster.secrets import redact_text, redact_url

T = TypeVar("T")
OPTIONS = ("url", "api_key", "timeout", "path", "location", "collection", "embedder",
           "dimension", "distance", "similarity_threshold", "text_field", "payload_indexes",
           "sweep_interval")
DISTANCES = ("cosine", "dot", "euclid")
INDEX_TYPES = ("keyword", "integer", "float", "bool")
_ID_SPACE = uuid.UUID("5b0f3c0e-7d1a-4b8e-9f0e-6d656d636c75")
_PAGE = 1000
_MAX_INT = (1 << 63) - 1
# What a Qdrant server, or the way to it, raises when it is down or unreachable.
_FAILURES = (ResponseHandlingException, UnexpectedResponse, httpx.HTTPError, grpc.RpcError,
             ConnectionError, TimeoutError)


@dataclass
class _Store:
    """One qdrant-client and the lock every backend on it holds per operation."""

    client: Any
    key: str | None  # the shared-store key (an embedded directory), None: private
    lock: threading.RLock = field(default_factory=threading.RLock)
    users: int = 0


_SHARED: dict[str, _Store] = {}
_SHARED_LOCK = threading.Lock()


def _serialised(method: Callable[..., T]) -> Callable[..., T]:
    """Run under the store's lock, with server failures as SourceUnavailable (secrets masked)."""
    @functools.wraps(method)
    def wrapper(self: QdrantBackend, *args: Any, **kwargs: Any) -> T:
        store = self._store
        if store is None:
            raise SourceUnavailable("qdrant backend is not open")
        with store.lock:
            try:
                return method(self, *args, **kwargs)
            except _FAILURES as exc:
                raise SourceUnavailable(
                    f"qdrant at {self.where} is unavailable: {type(exc).__name__}: "
                    f"{redact_text(str(exc), self._api_key)}") from None
    return wrapper


def _b64(blob: bytes) -> str:
    return base64.b64encode(blob).decode("ascii")


class QdrantBackend(MemoryBackend):
    """Records plus embeddings in a Qdrant collection; `Query(text=...)` ranks by meaning."""

    name = "qdrant"
    capabilities = Capabilities(text="semantic", ttl="lazy", native_batch=True)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._store: _Store | None = None
        self._embedder: Embedder | None = None
        self._collection = "memcluster"
        self._distance = "cosine"
        self._threshold: float | None = None
        self._text_field = "text"
        self._sweep_interval = 60.0
        self._last_sweep: float | None = None
        self._api_key: str | None = None
        self.where = ""

    # ---- lifecycle ----------------------------------------------------------------------------

    @classmethod
    def node_local(cls, opts: Mapping[str, Any]) -> bool:
        return bool(opts.get("path"))      # the embedded store on this node's disk

    def open(self, opts: Mapping[str, Any]) -> None:
        check_options("qdrant", opts, OPTIONS)
        places = [name for name in ("url", "path", "location") if opts.get(name) is not None]
        if len(places) > 1:
            raise ConfigError(f"qdrant: give one of url, path or location, not {places}")
        for name in ("url", "path", "collection", "text_field", "api_key"):
            value = opts.get(name)
            if value is not None and (not isinstance(value, str) or not value):
                raise ConfigError(f"qdrant.{name}: must be a non-empty str")
        location = opts.get("location", ":memory:" if not places else None)
        if location is not None and location != ":memory:":
            raise ConfigError("qdrant.location: only ':memory:' (use url or path otherwise)")
        distance = opts.get("distance", "cosine")
        if distance not in DISTANCES:
            raise ConfigError(f"qdrant.distance: one of {', '.join(DISTANCES)}, got {distance!r}")
        threshold = opts.get("similarity_threshold")
        if threshold is not None and (isinstance(threshold, bool)
                                      or not isinstance(threshold, (int, float))):
            raise ConfigError(f"qdrant.similarity_threshold: a number, got {threshold!r}")
        for name, default in (("sweep_interval", 60.0), ("timeout", 10.0)):
            value = opts.get(name, default)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ConfigError(f"qdrant.{name}: a number of seconds > 0, got {value!r}")
        indexes = opts.get("payload_indexes") or {}
        if not isinstance(indexes, Mapping) or any(
                payload_key(str(k)) is None or v not in INDEX_TYPES for k, v in indexes.items()):
            raise ConfigError(f"qdrant.payload_indexes: {{field: {' | '.join(INDEX_TYPES)}}} "
                              "with plain dotted field names")
        self._embedder = resolve_embedder(opts.get("embedder"), opts.get("dimension"))
        self._collection = opts.get("collection", "memcluster")
        self._distance = distance
        self._threshold = None if threshold is None else float(threshold)
        self._text_field = opts.get("text_field", "text")
        self._sweep_interval = float(opts.get("sweep_interval", 60.0))
        self._api_key = opts.get("api_key")
        self._store = self._connect(opts, location, float(opts.get("timeout", 10.0)))
        try:
            self._ensure_collection(dict(indexes), server=opts.get("url") is not None)
        except _FAILURES as exc:
            self.close()
            raise SourceUnavailable(f"qdrant at {self.where} is unavailable: "
                                    f"{redact_text(str(exc), self._api_key)}") from None
        except BaseException:
            self.close()
            raise

    def _connect(self, opts: Mapping[str, Any], location: str | None, timeout: float) -> _Store:
        if opts.get("url") is not None:
            self.where = redact_url(opts["url"])
            client = QdrantClient(url=opts["url"], api_key=self._api_key, timeout=int(timeout))
            return _Store(client, None, users=1)
        if location is not None:
            self.where = ":memory:"
            return _Store(QdrantClient(location=":memory:"), None, users=1)
        directory = str(prefix_dir(opts["path"], self.prefix).resolve())
        self.where = directory
        with _SHARED_LOCK:
            store = _SHARED.get(directory)
            if store is None:
                try:
                    client = QdrantClient(path=directory)
                except RuntimeError as exc:  # portalocker: another process holds it
                    raise SourceUnavailable(f"qdrant store {directory} is open in another "
                                            f"process: {exc}") from None
                store = _SHARED[directory] = _Store(client, directory)
            store.users += 1
        return store

    def _ensure_collection(self, indexes: dict[str, str], *, server: bool) -> None:
        assert self._store is not None and self._embedder is not None
        client, size = self._store.client, self._embedder.dimension
        with self._store.lock:
            if not client.collection_exists(self._collection):
                client.create_collection(self._collection, vectors_config=models.VectorParams(
                    size=size, distance=getattr(models.Distance, self._distance.upper())))
            params = client.get_collection(self._collection).config.params.vectors
            if params.size != size or params.distance.name.lower() != self._distance:
                raise ConfigError(f"qdrant collection {self._collection!r} holds "
                                  f"{params.size}-dimensional {params.distance.name.lower()} "
                                  f"vectors, not {size}-dimensional {self._distance}")
            if server:  # an embedded store evaluates filters without indexes
                schema = {"keyword": models.PayloadSchemaType.KEYWORD,
                          "integer": models.PayloadSchemaType.INTEGER,
                          "float": models.PayloadSchemaType.FLOAT,
                          "bool": models.PayloadSchemaType.BOOL}
                fields = {"prefix": "keyword", "namespace": "keyword", "key": "keyword",
                          "expires_at": "float", "exact": "bool",
                          **{payload_key(k): v for k, v in indexes.items()}}
                for name, kind in fields.items():
                    client.create_payload_index(self._collection, name, schema[kind])

    def close(self) -> None:
        store, self._store = self._store, None
        if store is None:
            return
        with _SHARED_LOCK:
            store.users -= 1
            last = store.users <= 0
            if last and store.key is not None:
                _SHARED.pop(store.key, None)
        if last:
            store.client.close()

    @_serialised
    def info(self) -> dict[str, Any]:
        embedder = self._embedder
        return {**super().info(), "where": self.where, "collection": self._collection,
                "distance": self._distance, "embedder": embedder.name if embedder else None,
                "dimension": embedder.dimension if embedder else None,
                "similarity_threshold": self._threshold, "text_field": self._text_field,
                "prefix": self.prefix}

    # ---- points and records ---------------------------------------------------------------

    @property
    def _client(self) -> Any:
        assert self._store is not None
        return self._store.client

    def _id(self, namespace: str, key: str) -> str:
        return str(uuid.uuid5(_ID_SPACE, json.dumps([self.prefix, namespace, key])))

    @staticmethod
    def _record(payload: Mapping[str, Any], score: float | None = None) -> Record:
        return Record(payload["key"], codec.decode(base64.b64decode(payload["value"])),
                      payload["namespace"], codec.decode(base64.b64decode(payload["meta"])),
                      payload["version"], payload["created_at"], payload["updated_at"],
                      payload.get("expires_at"), score)

    def _point(self, record: Record, blob: bytes, vector: Any) -> Any:
        payload: dict[str, Any] = {
            "prefix": self.prefix, "namespace": record.namespace, "key": record.key,
            "version": record.version, "created_at": record.created_at,
            "updated_at": record.updated_at, "value": _b64(blob),
            "meta": _b64(codec.encode(record.metadata)),
            "text": text_of(record.value, self._text_field),
            "exact": json_exact(record.metadata, int_limit=_MAX_INT)}
        if payload["exact"]:
            payload["metadata"] = record.metadata
        if record.expires_at is not None:
            payload["expires_at"] = record.expires_at
        return models.PointStruct(id=self._id(record.namespace, record.key),
                                     vector=vector.tolist(), payload=payload)

    def _embed(self, records: Sequence[Record]) -> Any:
        assert self._embedder is not None
        return self._embedder.embed([text_of(r.value, self._text_field) for r in records])

    def _scope(self, namespace: str | None, now: float | None, flt: Any = None) -> Any:
        """Points of this prefix (and namespace) that are live at `now` (None: live or not),
        passing `flt` (a superset of a metadata filter; rows without exact JSON metadata
        always pass it)."""
        must: list[Any] = [models.FieldCondition(key="prefix",
                                                 match=models.MatchValue(value=self.prefix))]
        if namespace is not None:
            must.append(models.FieldCondition(key="namespace",
                                              match=models.MatchValue(value=namespace)))
        if now is not None:
            must.append(models.Filter(should=[
                models.IsEmptyCondition(is_empty=models.PayloadField(key="expires_at")),
                models.FieldCondition(key="expires_at", range=models.Range(gt=now))]))
        if flt is not None:
            must.append(models.Filter(should=[flt, models.FieldCondition(
                key="exact", match=models.MatchValue(value=False))]))
        return models.Filter(must=must)

    def _fetch(self, pairs: Sequence[tuple[str, str]], now: float) -> dict[tuple[str, str], Record]:
        """The live records of `pairs`, by (namespace, key)."""
        if not pairs:
            return {}
        points = self._client.retrieve(self._collection, ids=[self._id(*p) for p in pairs],
                                       with_payload=True, with_vectors=False)
        found = {}
        for point in points:
            record = self._record(point.payload)
            if point.payload.get("prefix") == self.prefix and not record.expired(now):
                found[record.namespace, record.key] = record
        return found

    def _scroll(self, flt: Any, payload: Any = True) -> Iterator[Any]:
        offset = None
        while True:
            points, offset = self._client.scroll(self._collection, scroll_filter=flt,
                                                 limit=_PAGE, offset=offset,
                                                 with_payload=payload, with_vectors=False)
            yield from points
            if offset is None:
                return

    # ---- writes -------------------------------------------------------------------------------

    def _upsert(self, records: Sequence[tuple[Record, bytes]], now: float) -> None:
        latest = {(r.namespace, r.key): (r, blob) for r, blob in records}  # last write wins
        chosen = list(latest.values())
        vectors = self._embed([r for r, _ in chosen])
        self._client.upsert(self._collection, wait=True, points=[
            self._point(r, blob, v) for (r, blob), v in zip(chosen, vectors, strict=True)])
        if self._last_sweep is None:
            self._last_sweep = now
        elif now - self._last_sweep >= self._sweep_interval:
            self._last_sweep = now
            self.sweep()

    def store(self, op: StoreOp) -> Record:
        return self.store_many([op])[0]

    @_serialised
    def store_many(self, ops: Sequence[StoreOp]) -> list[Record]:
        """All or nothing: every CAS is checked before the one upsert (one embed call)."""
        if not ops:
            return []
        now = self.clock()
        live = self._fetch(list(dict.fromkeys((op.namespace, op.key) for op in ops)), now)
        records = chain_stores(ops, lambda ns, key: live.get((ns, key)), now)
        self._upsert([(r, op.blob) for op, r in zip(ops, records, strict=True)], now)
        return records

    @_serialised
    def update(self, op: UpdateOp) -> Record:
        """The default CAS loop, under the store's lock: atomic per key in this process."""
        return super().update(op)

    @_serialised
    def replicate(self, op: ReplicateOp) -> bool:
        incoming, now = op.record, self.clock()
        if incoming.expired(now):
            return False
        current = self._fetch([(incoming.namespace, incoming.key)], now)
        if current and next(iter(current.values())).version >= incoming.version:
            return False
        self._upsert([(incoming.with_score(None), codec.encode_value(incoming.value))], now)
        return True

    def delete(self, op: DeleteOp) -> bool:
        return self.delete_many([op]) == 1

    @_serialised
    def delete_many(self, ops: Sequence[DeleteOp]) -> int:
        pairs = list(dict.fromkeys((op.namespace, op.key) for op in ops))
        if not pairs:
            return 0
        live = self._fetch(pairs, self.clock())
        self._client.delete(self._collection, wait=True, points_selector=models.PointIdsList(
            points=[self._id(*p) for p in pairs]))
        return len(live)

    @_serialised
    def clear(self, op: ClearOp) -> int:
        now = self.clock()
        removed = self._client.count(self._collection, count_filter=self._scope(op.namespace, now),
                                     exact=True).count
        self._client.delete(self._collection, wait=True, points_selector=models.FilterSelector(
            filter=self._scope(op.namespace, None)))
        return removed

    @_serialised
    def sweep(self) -> None:
        """Delete this prefix's expired points."""
        self._client.delete(self._collection, wait=True, points_selector=models.FilterSelector(
            filter=models.Filter(must=[
                models.FieldCondition(key="prefix", match=models.MatchValue(value=self.prefix)),
                models.FieldCondition(key="expires_at", range=models.Range(lte=self.clock()))])))

    # ---- reads --------------------------------------------------------------------------------

    @_serialised
    def retrieve(self, op: RetrieveOp) -> Record | None:
        return self._fetch([(op.namespace, op.key)], self.clock()).get((op.namespace, op.key))

    @_serialised
    def retrieve_many(self, ops: Sequence[RetrieveOp]) -> list[Record | None]:
        found = self._fetch(list(dict.fromkeys((op.namespace, op.key) for op in ops)),
                            self.clock())
        return [found.get((op.namespace, op.key)) for op in ops]

    def _live_records(self, namespace: str, q: Query) -> list[Record]:
        """Live records of `namespace` passing the superset of the query's filter."""
        flt = self._scope(namespace, self.clock(), superset(q.filter))
        return [self._record(p.payload) for p in self._scroll(flt)]

    @_serialised
    def search(self, op: SearchOp) -> list[Record]:
        q = op.query
        engine.check_filter(q.filter)
        if q.text is None:
            _check_scoreless(q)
            return engine.run(self._live_records(op.namespace, q), q)
        if q.limit == 0:
            return []
        if q.order_by in (None, "-score"):
            return self._ranked(op.namespace, q, q.offset + q.limit)[q.offset:]
        hits = engine.sort_records(self._ranked(op.namespace, q, None), q.order_by)
        return hits[q.offset:q.offset + q.limit]

    @_serialised
    def count(self, op: CountOp) -> int:
        q = op.query
        engine.check_filter(q.filter)
        if q.text is None:
            _check_scoreless(q)
            return sum(1 for r in self._live_records(op.namespace, q)
                       if engine.match_pattern(r.key, q.pattern)
                       and engine.match_filter(r.metadata, q.filter))
        return len(self._ranked(op.namespace, q, None))

    def _ranked(self, namespace: str, q: Query, need: int | None) -> list[Record]:
        """Live records passing pattern, filter and score floor, scored by similarity; with
        `need`, the best `need` by (-score, key), else all of them unordered."""
        assert self._embedder is not None
        now = self.clock()
        flt = self._scope(namespace, now, superset(q.filter))
        floors = [f for f in (self._threshold, q.min_score) if f is not None]
        floor = max(floors) if floors else None
        threshold = None if floor is None else (-floor if self._distance == "euclid" else floor)
        total = self._client.count(self._collection, count_filter=flt, exact=True).count
        vector = self._embedder.embed([q.text or ""])[0].tolist()
        k = total if need is None else min(total, max(2 * need, need + 32))
        while True:
            points = self._client.query_points(
                self._collection, query=vector, query_filter=flt, limit=max(k, 1),
                score_threshold=threshold, with_payload=True, with_vectors=False).points
            hits = []
            for point in points:
                score = -point.score if self._distance == "euclid" else point.score
                record = self._record(point.payload, score)
                if (not record.expired(now) and engine.match_pattern(record.key, q.pattern)
                        and engine.match_filter(record.metadata, q.filter)):
                    hits.append(record)
            if need is None or len(hits) >= need or len(points) < k or k >= total:
                break
            k = min(total, 4 * k)
        if need is not None:
            hits.sort(key=lambda r: (-r.score, r.key))  # type: ignore[operator]
            del hits[need:]
        return hits

    @_serialised
    def list_keys(self, op: ListKeysOp) -> Page:
        flt = self._scope(op.namespace, self.clock())
        keys = sorted(p.payload["key"] for p in self._scroll(flt, payload=["key"])
                      if engine.match_pattern(p.payload["key"], op.pattern)
                      and (op.cursor is None or p.payload["key"] > op.cursor))
        if len(keys) > op.limit:
            return Page(keys[:op.limit], keys[op.limit - 1])
        return Page(keys, None)

    @_serialised
    def export(self, *, cursor: str | None = None, limit: int = 1000
               ) -> tuple[list[Record], str | None]:
        """A page of every live record of the prefix, in Qdrant's point order."""
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise InvalidValue(f"limit must be an int >= 1, got {limit!r}")
        offset = None
        if cursor is not None:
            try:
                offset = str(uuid.UUID(json.loads(cursor)["after"]))
            except (ValueError, TypeError, KeyError):
                raise InvalidValue(f"not an export cursor: {cursor!r}") from None
        points, following = self._client.scroll(
            self._collection, scroll_filter=self._scope(None, self.clock()), limit=limit,
            offset=offset, with_payload=True, with_vectors=False)
        records = [self._record(p.payload) for p in points]
        return records, None if following is None else json.dumps({"after": str(following)})


def _check_scoreless(q: Query) -> None:
    if q.min_score is not None or (q.order_by or "").lstrip("-") == "score":
        raise UnsupportedQuery("min_score and order_by score need a text query: without "
                               "text there is no similarity score")


__all__ = ["QdrantBackend"]
