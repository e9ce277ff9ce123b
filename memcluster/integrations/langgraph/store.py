"""The stores: `MemclusterStore` (sync TTL-sweeper API) and `AsyncMemclusterStore` (async).

Both are LangGraph `BaseStore`s over any `MemorySurface` and share everything but the
sweeper methods, which, as in SqliteStore/AsyncSqliteStore and PostgresStore/
AsyncPostgresStore, are plain methods on one and coroutines on the other. See the package
docstring for the mapping and the decisions.

Decision: a batch is written once, as a generator of calls (`_Call`) on the memory, on the
embeddings or on the store itself, and driven synchronously (`batch`) or with the async
twins (`abatch`); the sweep is a second such generator. Rejected: two copies of the logic.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
import weakref
from collections import defaultdict
from collections.abc import Callable, Generator, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np
from langgraph.store.base import (
    BaseStore,
    GetOp,
    Item,
    ListNamespacesOp,
    Op,
    PutOp,
    Result,
    SearchItem,
    SearchOp,
    TTLConfig,
    validate_op_namespace,
)
from langgraph.store.base.batch import AsyncBatchedBaseStore

from memcluster.errors import ConfigError, InvalidValue, VersionConflict
from memcluster.integrations.langgraph.expiry import (
    ExpiryLog,
    Sweeper,
    interval_seconds,
    sweeper_task,
)
from memcluster.integrations.langgraph.filters import (
    check_filter,
    mirror,
    split_filter,
    value_matches,
)
from memcluster.integrations.langgraph.index import StoreIndex
from memcluster.integrations.langgraph.namespaces import (
    RESERVED,
    decode_namespace,
    encode_namespace,
    matches_condition,
)
from memcluster.manager.surface import MemorySurface
from memcluster.model import Query, Record
from memcluster.ops import StoreOp

SCAN_BATCH = 1000        # records per page when listing namespaces
INDEX_PAGE = 500         # records per page when reading candidates to score
FILTER_PAGE = 100        # records per page when a filter is checked here


def _bookkeeping(record: Record) -> dict[str, Any]:
    own = record.metadata.get(RESERVED)
    return own if isinstance(own, dict) else {}


def _when(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, tz=timezone.utc)


@dataclass(frozen=True)
class _Call:
    """One call the driver makes: on the memory surface, the index's embeddings, or the
    store itself ("scan"). The async driver calls the `a`-prefixed twin."""

    target: str
    method: str
    kwargs: dict[str, Any] = field(default_factory=dict)


Steps = Generator[list[_Call], list[Any], Any]


@dataclass
class _Write:
    """One validated put of a batch, waiting for its vectors (if indexed) to be written."""

    namespace: str
    key: str
    value: dict[str, Any]
    own: dict[str, Any]
    ttl_seconds: float | None
    texts: list[str]


class BaseMemclusterStore(BaseStore):
    """A LangGraph `BaseStore` over a memcluster `MemorySurface` (see the package docstring).

    `source`: the memory source (None: the surface's default). `root`: the namespace under
    which LangGraph's items live in that source. `ttl`: a `TTLConfig` (minutes). `index`:
    LangGraph's store-level index config (`dims`, `embed`, `fields`; see `StoreIndex`).
    `substring_query`: without an index, match `query` as a case-insensitive substring of
    key and value instead of ignoring it as LangGraph's stores do. `clock`: the clock the
    TTL bookkeeping reads (the memory's, in tests). Opening does no I/O.
    """

    supports_ttl: bool = True

    def __init__(self, memory: MemorySurface, source: str | None = None, *,
                 root: str = RESERVED, ttl: TTLConfig | None = None,
                 index: Mapping[str, Any] | None = None, substring_query: bool = False,
                 clock: Callable[[], float] = time.time) -> None:
        if not isinstance(memory, MemorySurface):
            raise InvalidValue(f"memory must be a MemoryManager or a connected cluster, "
                               f"got {type(memory).__name__}")
        if not isinstance(root, str) or not root:
            raise InvalidValue("root must be a non-empty str")
        if ttl is not None and not isinstance(ttl, Mapping):
            raise ConfigError(f"ttl: must be a TTLConfig dict, got {type(ttl).__name__}")
        super().__init__()
        self.memory = memory
        self.source = source
        self.root = root
        self.ttl_config = ttl
        self._index = StoreIndex.of(index)
        self.index_config = None if self._index is None else self._index.config
        self.embeddings = None if self._index is None else self._index.embeddings
        self.substring_query = bool(substring_query)
        self._clock = clock
        self._expiry = ExpiryLog()
        self._semantic: bool | None = None

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.memory!r}, source={self.source!r}, "
                f"root={self.root!r})")

    # ---- drivers: the same steps, sync or async -----------------------------------------

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        return self._drive(self._steps(list(ops)))

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        return await self._adrive(self._steps(list(ops)))

    def _drive(self, steps: Steps) -> Any:
        try:
            calls = next(steps)
            while True:
                calls = steps.send([self._call(c) for c in calls])
        except StopIteration as done:
            return done.value
        finally:
            steps.close()

    async def _adrive(self, steps: Steps) -> Any:
        try:
            calls = next(steps)
            while True:
                calls = steps.send(list(await asyncio.gather(*(self._acall(c) for c in calls))))
        except StopIteration as done:
            return done.value
        finally:
            steps.close()

    def _target(self, call: _Call) -> Any:
        return {"memory": self.memory, "embeddings": self.embeddings, "store": self}[call.target]

    def _call(self, call: _Call) -> Any:
        try:
            return getattr(self._target(call), call.method)(**call.kwargs)
        except VersionConflict as exc:  # a refresh that lost to a concurrent write
            return exc

    async def _acall(self, call: _Call) -> Any:
        try:
            if call.target == "store":
                return await asyncio.to_thread(getattr(self, call.method), **call.kwargs)
            return await getattr(self._target(call), "a" + call.method)(**call.kwargs)
        except VersionConflict as exc:
            return exc

    def _scan_namespaces(self) -> set[tuple[str, ...]]:
        """Every LangGraph namespace holding a live item (one pass over the source)."""
        found: set[tuple[str, ...]] = set()
        seen: set[str] = set()
        for record in self.memory.export(source=self.source, namespace=None, batch=SCAN_BATCH):
            if record.namespace not in seen:
                seen.add(record.namespace)
                decoded = decode_namespace(record.namespace, self.root)
                if decoded is not None:
                    found.add(decoded)
        return found

    # ---- the batch ----------------------------------------------------------------------

    def _steps(self, ops: list[Op]) -> Steps:
        results: list[Result] = [None] * len(ops)
        puts: dict[tuple[tuple[str, ...], str], PutOp] = {}
        for op in ops:
            if not isinstance(op, (GetOp, PutOp, SearchOp, ListNamespacesOp)):
                raise InvalidValue(f"unknown store operation {type(op).__name__}")
            validate_op_namespace(op)
            if isinstance(op, SearchOp):
                check_filter(op.filter)
            elif isinstance(op, PutOp):
                puts[(tuple(op.namespace), op.key)] = op
        writes, deletes = self._prepare_writes(list(puts.values()))  # validated before I/O
        refresh: dict[str, dict[str, Record]] = defaultdict(dict)

        gets = [(i, op) for i, op in enumerate(ops) if isinstance(op, GetOp)]
        if gets:
            yield from self._gets(gets, results, refresh)
        searches = [op for op in ops if isinstance(op, SearchOp)]
        namespaces: set[tuple[str, ...]] = set()
        if searches or any(isinstance(op, ListNamespacesOp) for op in ops):
            (namespaces,) = yield [_Call("store", "_scan_namespaces")]
        vectors: dict[str, np.ndarray] = {}
        queries = sorted({op.query for op in searches if op.query}) if self._index else []
        if queries:
            embedded = yield [_Call("embeddings", "embed_query", {"text": q}) for q in queries]
            vectors = {q: self._index.query_vector(v)  # type: ignore[union-attr]
                       for q, v in zip(queries, embedded, strict=True)}
        for i, op in enumerate(ops):
            if isinstance(op, ListNamespacesOp):
                results[i] = self._list_namespaces(op, namespaces)
            elif isinstance(op, SearchOp):
                results[i] = yield from self._search(op, namespaces, refresh, vectors)
        if refresh:
            yield from self._refresh(refresh)
        if writes or deletes:
            yield from self._write(writes, deletes)
        return results

    def _prepare_writes(self, puts: list[PutOp]
                        ) -> tuple[list[_Write], dict[str, list[str]]]:
        """Validate every put: the writes (with the texts to embed) and deletes per namespace."""
        writes: list[_Write] = []
        deletes: dict[str, list[str]] = defaultdict(list)
        for op in puts:
            if not op.namespace:
                raise InvalidValue("a namespace must have at least one label")
            ns = encode_namespace(tuple(op.namespace), self.root)
            if op.value is None:
                StoreOp.make(op.key, None, namespace=ns)  # validates key and namespace
                deletes[ns].append(op.key)
                continue
            if not isinstance(op.value, Mapping):
                raise InvalidValue(f"a store value must be a dict, got {type(op.value).__name__}")
            if op.index is not None and op.index is not False and (
                    isinstance(op.index, str) or not isinstance(op.index, (list, tuple))):
                raise InvalidValue(f"index must be False or a list of field paths, "
                                   f"got {op.index!r}")
            value = dict(op.value)
            ttl = self._ttl_minutes(op.ttl)
            own: dict[str, Any] = {} if ttl is None else {"ttl": ttl}
            if op.index is False:
                own["noindex"] = True
            texts = [] if self._index is None or op.index is False else \
                self._index.texts(value, op.index)
            write = _Write(ns, op.key, value, own, None if ttl is None else ttl * 60, texts)
            self._store_op(write)
            writes.append(write)
        return writes, dict(deletes)

    def _store_op(self, write: _Write) -> StoreOp:
        return StoreOp.make(write.key, write.value, namespace=write.namespace,
                            max_bytes=self.memory.max_value_bytes,
                            metadata=mirror(write.value, write.own), ttl=write.ttl_seconds)

    def _write(self, writes: list[_Write], deletes: dict[str, list[str]]) -> Steps:
        """Embed the indexed puts' texts (one call), then write everything per namespace."""
        texts = list(dict.fromkeys(t for w in writes for t in w.texts))
        if texts:
            (embedded,) = yield [_Call("embeddings", "embed_documents", {"texts": texts})]
            if len(embedded) != len(texts):
                raise InvalidValue(f"index.embed returned {len(embedded)} vectors for "
                                   f"{len(texts)} texts")
            by_text = dict(zip(texts, embedded, strict=True))
            for w in writes:
                if w.texts:
                    w.own["vec"] = self._index.pack(by_text[t] for t in w.texts)  # type: ignore[union-attr]
                    self._store_op(w)
        stores: dict[str, list[tuple[str, Any, dict[str, Any]]]] = defaultdict(list)
        for w in writes:
            stores[w.namespace].append((w.key, w.value, {
                "metadata": mirror(w.value, w.own), "ttl": w.ttl_seconds}))
        calls = [_Call("memory", "store_many", {"items": items, "source": self.source,
                                                "namespace": ns})
                 for ns, items in stores.items()]
        calls += [_Call("memory", "delete_many", {"keys": keys, "source": self.source,
                                                  "namespace": ns})
                  for ns, keys in deletes.items()]
        done = yield calls
        for result in done[:len(stores)]:
            for record in result:
                self._expiry.note(record)
        for ns, keys in deletes.items():
            for key in keys:
                self._expiry.forget(ns, key)

    @staticmethod
    def _ttl_minutes(ttl: Any) -> float | None:
        if ttl is None:
            return None
        if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not ttl > 0:
            raise InvalidValue(f"ttl must be a positive number of minutes, got {ttl!r}")
        return float(ttl)

    def _item(self, record: Record, namespace: tuple[str, ...], *, scored: bool = False,
              score: float | None = None) -> Item:
        value = record.value if isinstance(record.value, dict) else {"value": record.value}
        updated = _bookkeeping(record).get("updated_at", record.updated_at)
        common = {"namespace": namespace, "key": record.key, "value": value,
                  "created_at": _when(record.created_at), "updated_at": _when(updated)}
        if scored:
            return SearchItem(**common, score=score)
        return Item(**common)

    def _note_refresh(self, refresh: dict[str, dict[str, Record]], record: Record,
                      wanted: bool) -> None:
        if wanted and isinstance(_bookkeeping(record).get("ttl"), (int, float)):
            refresh[record.namespace][record.key] = record

    def _gets(self, gets: list[tuple[int, GetOp]], results: list[Result],
              refresh: dict[str, dict[str, Record]]) -> Steps:
        by_ns: dict[tuple[str, ...], list[tuple[int, GetOp]]] = defaultdict(list)
        for i, op in gets:
            by_ns[tuple(op.namespace)].append((i, op))
        order = list(by_ns)
        found = yield [_Call("memory", "retrieve_many", {
            "keys": [op.key for _, op in by_ns[ns]], "source": self.source,
            "namespace": encode_namespace(ns, self.root)}) for ns in order]
        for ns, records in zip(order, found, strict=True):
            for i, op in by_ns[ns]:
                record = records.get(op.key)
                if record is not None:
                    results[i] = self._item(record, ns)
                    self._note_refresh(refresh, record, op.refresh_ttl)

    def _list_namespaces(self, op: ListNamespacesOp, namespaces: set[tuple[str, ...]]
                         ) -> list[tuple[str, ...]]:
        kept = [ns for ns in namespaces
                if all(matches_condition(c, ns) for c in op.match_conditions or ())]
        if op.max_depth is not None:
            kept = list({ns[: op.max_depth] for ns in kept})
        return sorted(kept)[op.offset: op.offset + op.limit]

    # ---- search -------------------------------------------------------------------------

    def _search(self, op: SearchOp, namespaces: set[tuple[str, ...]],
                refresh: dict[str, dict[str, Record]], vectors: dict[str, np.ndarray]
                ) -> Steps:
        """One search. With a query and an index (the store's, or a semantic source) items
        rank by score, unscored ones (index=False, no text at the fields) after them; with
        no query, an empty one, or no index, newest first and no score."""
        prefix = tuple(op.namespace_prefix)
        targets = sorted(ns for ns in namespaces if ns[: len(prefix)] == prefix)
        need = op.offset + op.limit
        if not targets or op.limit <= 0:
            return []
        mode = "plain"
        if op.query and self._index is not None:
            mode = "index"
        elif op.query:
            if self._semantic is None:
                (info,) = yield [_Call("memory", "info")]
                name = self.source or self.memory.default_source
                caps = (info.get(name) or {}).get("capabilities") or {}
                self._semantic = caps.get("text") == "semantic"
            mode = "semantic" if self._semantic else \
                "substring" if self.substring_query else "plain"
        pushed, residual = split_filter(op.filter)
        if mode == "index":
            page, counts = INDEX_PAGE, None
        else:
            page = need if not residual and mode != "semantic" else max(need, FILTER_PAGE)
            counts = _indexed if mode == "semantic" else _always
        query = Query(text=op.query if mode in ("semantic", "substring") else None,
                      filter=pushed or None, limit=page,
                      order_by=None if mode == "semantic" else "-updated_at")
        hits = yield from self._collect(targets, query, residual, need, counts)
        if mode == "index":
            qvec = vectors[op.query]
            ranked = [(self._index.score(qvec, _bookkeeping(r).get("vec")), ns, r)  # type: ignore[union-attr]
                      for ns, r in hits]
        elif mode == "semantic":
            ranked = [(r.score if _indexed(r) else None, ns, r) for ns, r in hits]
        else:
            ranked = [(None, ns, r) for ns, r in hits]
        scored = sorted((t for t in ranked if t[0] is not None),
                        key=lambda t: (-t[0], t[1], t[2].key))
        unscored = sorted((t for t in ranked if t[0] is None),
                          key=lambda t: (-t[2].updated_at, t[1], t[2].key))
        chosen = (scored + unscored)[op.offset: need]
        for _, _, record in chosen:
            self._note_refresh(refresh, record, op.refresh_ttl)
        return [self._item(r, ns, scored=True, score=s) for s, ns, r in chosen]

    def _collect(self, targets: list[tuple[str, ...]], query: Query, residual: dict[str, Any],
                 need: int, counts: Callable[[Record], bool] | None
                 ) -> Generator[list[_Call], list[Any], list[tuple[tuple[str, ...], Record]]]:
        """Page through each namespace's matches (the residual filter checked here) until
        `need` of them `counts` (None: read them all); every namespace in parallel."""
        hits: dict[tuple[str, ...], list[Record]] = {ns: [] for ns in targets}
        counted = dict.fromkeys(targets, 0)
        seen = dict.fromkeys(targets, 0)
        pending = list(targets)
        while pending:
            pages = yield [_Call("memory", "search", {
                "query": query, "offset": seen[ns], "source": self.source,
                "namespace": encode_namespace(ns, self.root)}) for ns in pending]
            still = []
            for ns, records in zip(pending, pages, strict=True):
                seen[ns] += len(records)
                for r in records:
                    if value_matches(r.value if isinstance(r.value, dict) else {}, residual):
                        hits[ns].append(r)
                        counted[ns] += counts is None or counts(r)
                if len(records) == query.limit and (counts is None or counted[ns] < need):
                    still.append(ns)
            pending = still
        return [(ns, r) for ns in targets for r in hits[ns]]

    def _refresh(self, refresh: dict[str, dict[str, Record]]) -> Steps:
        """Re-write each read item that has a TTL, if nobody wrote it since (CAS)."""
        calls = []
        for ns, records in refresh.items():
            items = []
            for record in records.values():
                own = _bookkeeping(record)
                meta = {**record.metadata,
                        RESERVED: {**own, "updated_at": own.get("updated_at",
                                                                record.updated_at)}}
                items.append((record.key, record.value, {
                    "metadata": meta, "ttl": float(own["ttl"]) * 60,
                    "if_version": record.version}))
            calls.append(_Call("memory", "store_many", {"items": items, "source": self.source,
                                                        "namespace": ns}))
        for result in (yield calls):
            if isinstance(result, BaseException):
                if not isinstance(result, VersionConflict):
                    raise result
                continue
            for record in result:
                self._expiry.note(record)

    # ---- TTL sweeping (the sync and async method names are the subclasses') ----------

    def _sweep(self) -> Steps:
        """Count the logged items whose deadline passed and that are gone (see expiry.py)."""
        due = self._expiry.due(self._clock())
        if not due:
            return 0
        order = list(due)
        found = yield [_Call("memory", "retrieve_many", {
            "keys": list(due[ns]), "source": self.source, "namespace": ns}) for ns in order]
        gone = 0
        for ns, records in zip(order, found, strict=True):
            for key, version in due[ns].items():
                record = records.get(key)
                if record is None:
                    gone += 1
                elif record.version == version:  # not expired by the source's clock yet
                    self._expiry.note(record)
        return gone


def _always(record: Record) -> bool:
    return True


def _indexed(record: Record) -> bool:
    """False for an item put with `index=False` (a semantic source embedded it anyway)."""
    return not _bookkeeping(record).get("noindex")


class MemclusterStore(BaseMemclusterStore):
    """The store, with SqliteStore/PostgresStore's synchronous setup and TTL-sweeper API."""

    _sweeper: Sweeper | None = None

    def setup(self) -> None:
        """Nothing to migrate: memcluster sources create their storage when opened."""

    def sweep_ttl(self) -> int:
        """How many items written or refreshed here expired since the last sweep (memcluster
        already hides them and its backends delete them; see `expiry.py`)."""
        return self._drive(self._sweep())

    def start_ttl_sweeper(self, sweep_interval_minutes: float | None = None
                          ) -> concurrent.futures.Future[None]:
        """Call `sweep_ttl` every interval on a daemon thread; the future ends when it stops."""
        if not self.ttl_config:
            done: concurrent.futures.Future[None] = concurrent.futures.Future()
            done.set_result(None)
            return done
        if self._sweeper is not None and self._sweeper.alive:
            return self._sweeper.future
        ref = weakref.ref(self)

        def sweep() -> int | None:  # weak: the thread never keeps the store alive
            store = ref()
            return None if store is None else store.sweep_ttl()

        self._sweeper = Sweeper(sweep, interval_seconds(sweep_interval_minutes,
                                                        dict(self.ttl_config))).start()
        return self._sweeper.future

    def stop_ttl_sweeper(self, timeout: float | None = None) -> bool:
        """Stop the sweeper thread; True if it stopped (or was not running)."""
        if self._sweeper is None:
            return True
        stopped = self._sweeper.stop(timeout)
        if stopped:
            self._sweeper = None
        return stopped


class AsyncMemclusterStore(BaseMemclusterStore, AsyncBatchedBaseStore):
    """The store as AsyncSqliteStore/AsyncPostgresStore are: built inside a running event
    loop, it coalesces the a* calls made in one loop tick into one batch (LangGraph's own
    `AsyncBatchedBaseStore`: so 1000 concurrent `asearch` cost one namespace scan, not
    1000); its sync methods run on that loop from other threads and raise
    `asyncio.InvalidStateError` on the loop's own thread; setup and the TTL sweeper are
    coroutines."""

    _sweeper_task: asyncio.Task[None] | None = None
    _sweeper_stop: asyncio.Event | None = None
    batch = AsyncBatchedBaseStore.batch

    def __init__(self, memory: MemorySurface, source: str | None = None, **options: Any) -> None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            self._task = None  # what AsyncBatchedBaseStore.__del__ reads
            raise RuntimeError("AsyncMemclusterStore must be created inside a running event "
                               "loop (in async code); use MemclusterStore elsewhere") from None
        super().__init__(memory, source, **options)

    async def setup(self) -> None:
        """Nothing to migrate: memcluster sources create their storage when opened."""

    async def sweep_ttl(self) -> int:
        """How many items written or refreshed here expired since the last sweep."""
        return await self._adrive(self._sweep())

    async def start_ttl_sweeper(self, sweep_interval_minutes: float | None = None
                                ) -> asyncio.Task[None]:
        """Call `sweep_ttl` every interval in a task on the running loop."""
        if not self.ttl_config:
            return asyncio.get_running_loop().create_task(asyncio.sleep(0))
        if self._sweeper_task is not None and not self._sweeper_task.done():
            return self._sweeper_task
        self._sweeper_stop = asyncio.Event()
        self._sweeper_task = sweeper_task(
            self.sweep_ttl, interval_seconds(sweep_interval_minutes, dict(self.ttl_config)),
            self._sweeper_stop)
        return self._sweeper_task

    async def stop_ttl_sweeper(self, timeout: float | None = None) -> bool:
        """Stop the sweeper task; True if it stopped (or was not running)."""
        task = self._sweeper_task
        if task is None or task.done():
            self._sweeper_task = None
            return True
        assert self._sweeper_stop is not None
        self._sweeper_stop.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout)
        except asyncio.TimeoutError:
            return False
        self._sweeper_task = None
        return True


__all__ = ["AsyncMemclusterStore", "BaseMemclusterStore", "MemclusterStore"]
