"""The memory surface: every public memory method, written once for every way of running.

Core types: `MemorySurface` (the abstract base of `MemoryManager` and the cluster's
`ClusterMemory`) and the `operation` decorator. A subclass implements only execution:

    _source_names() -> list[str]               configured source names, in order
    _default_source_name() -> str | None       the default source (None: no sources)
    _describe() -> dict[str, dict]             per source: backend, capabilities,
                                               description, default (+ any stats)
    _execute(source, ops) -> list              one result per op, in order; a
                                               MemclusterError instance as the result of an
                                               op that failed (like
                                               `MemoryBackend.apply_batch(return_exceptions=True)`);
                                               raise only for a failure of the whole batch
    _aexecute(source, ops) -> list             optional: the async form (default: `_execute`
                                               in a worker thread; the cluster coalesces)
    _export(source, cursor, limit)             optional: a page of every record of every
                                               namespace, as `MemoryBackend.export`
    close()                                    optional

Decision: each public operation is a generator that validates its arguments, builds ops
(`memcluster.ops`) and yields `(source, ops)`; it receives the results and returns the
method's value. The `operation` decorator drives it synchronously (`store`) and generates
the async twin (`astore`) from the same body. So argument normalisation, validation and
result shaping exist once for the local manager, the cluster client, sync and async.
Rejected alternative: writing each method three times (sync, async, cluster), the pitfall
that lets the three drift apart. The same driver times each `(source, ops)` request once
into the process's client-side metrics (`memcluster.start_metrics_server`).
"""

from __future__ import annotations

import asyncio
import functools
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from typing import Any

from memcluster import codec, consolidation
from memcluster.consolidation import steps as consolidation_steps
from memcluster.errors import (
    ConfigError,
    ConfirmationRequired,
    InvalidKey,
    InvalidValue,
    UnknownSource,
    UnsupportedOperation,
    UnsupportedQuery,
)
from memcluster.model import Query, Ranking, Record, check_count
from memcluster.ops import (
    ClearOp,
    CountOp,
    DeleteOp,
    ExistsOp,
    ListKeysOp,
    Op,
    RetrieveOp,
    SearchOp,
    StoreOp,
    UpdateOp,
    new_op_id,
)

Request = tuple[str, list[Op]]
Steps = Generator[Request, list[Any], Any]
ITEM_OPTIONS = ("metadata", "ttl", "if_version", "overwrite")


def operation(body: Callable[..., Steps]) -> Callable[..., Any]:
    """Turn a generator body into the sync method; `MemorySurface` adds the `a*` twin."""

    @functools.wraps(body)
    def run(self: MemorySurface, *args: Any, **kwargs: Any) -> Any:
        steps = body(self, *args, **kwargs)
        try:
            source, ops = next(steps)
            while True:
                source, ops = steps.send(self._timed_execute(source, ops))
        except StopIteration as done:
            return done.value
        finally:
            steps.close()

    run.__memcluster_body__ = body  # type: ignore[attr-defined]
    return run


def _async_twin(name: str, body: Callable[..., Steps]) -> Callable[..., Any]:
    @functools.wraps(body)
    async def run(self: MemorySurface, *args: Any, **kwargs: Any) -> Any:
        steps = body(self, *args, **kwargs)
        try:
            source, ops = next(steps)
            while True:
                source, ops = steps.send(await self._timed_aexecute(source, ops))
        except StopIteration as done:
            return done.value
        finally:
            steps.close()

    run.__name__ = run.__qualname__ = f"a{name}"
    run.__doc__ = f"Async twin of `{name}`."
    return run


def _first(results: list[Any]) -> Any:
    """The single result of a one-op request, raising it if it is an error."""
    (result,) = results
    if isinstance(result, BaseException):
        raise result
    return result


def _all(results: list[Any]) -> list[Any]:
    """Every result, raising the first error among them."""
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results


def _key_list(keys: Any, what: str) -> list[str]:
    """The distinct keys of a list, each checked (so an unhashable item is InvalidKey)."""
    if isinstance(keys, (str, bytes)) or not isinstance(keys, Sequence):
        raise InvalidKey(f"{what} takes a list of keys, got {type(keys).__name__}")
    checked = []
    for i, key in enumerate(keys):
        try:
            checked.append(codec.check_key(key))
        except InvalidKey as exc:
            raise InvalidKey(f"{what}[{i}]: {exc}") from None
    return list(dict.fromkeys(checked))


def _filter(filter: Any) -> dict[str, Any] | None:
    """A caller's filter as a plain dict; a list of pairs or any non-mapping is refused
    (dict() would accept pairs silently and fail on anything else with a bare error)."""
    if filter is None:
        return None
    if not isinstance(filter, Mapping):
        raise InvalidValue(f"filter must be a dict, got {type(filter).__name__}")
    return dict(filter)


class MemorySurface(ABC):
    """The public memory API (see the module docstring for what a subclass provides).

    Every operation takes `source=` (None: the default source) and `namespace=` (a str, or
    a tuple of str joined with '/'; default ""). Each has an async twin named `a<name>`.
    """

    max_value_bytes: int = codec.DEFAULT_MAX_VALUE_BYTES

    # ---- what a subclass implements ---------------------------------------------------

    @abstractmethod
    def _source_names(self) -> list[str]:
        """The configured source names, in order."""

    @abstractmethod
    def _default_source_name(self) -> str | None:
        """The default source's name, or None when there are no sources."""

    @abstractmethod
    def _describe(self) -> dict[str, dict[str, Any]]:
        """Per source: backend, capabilities, description, default (and any stats)."""

    @abstractmethod
    def _execute(self, source: str, ops: list[Op]) -> list[Any]:
        """Apply `ops` to `source`; one result (or MemclusterError instance) per op."""

    async def _aexecute(self, source: str, ops: list[Op]) -> list[Any]:
        """The async form of `_execute` (default: run it in a worker thread)."""
        return await asyncio.to_thread(self._execute, source, ops)

    def _export(self, source: str, cursor: str | None, limit: int
                ) -> tuple[list[Record], str | None]:
        """A page of every live record of `source`, all namespaces (see `export`)."""
        raise UnsupportedOperation(f"{type(self).__name__} cannot export every namespace; "
                                   "give a namespace")

    def close(self) -> None:
        """Release what the surface holds (backends, connections)."""
        return None

    # ---- client-side metrics: one observation per call --------------------------------

    _stats: Any = None  # this surface's ClientStats, registered on its first call

    def _timed_execute(self, source: str, ops: list[Op]) -> list[Any]:
        """`_execute`, timed into this surface's client-side metrics (see
        `memcluster.start_metrics_server`): one observation per call, not per op."""
        start = time.perf_counter()
        try:
            results = self._execute(source, ops)
        except BaseException as exc:
            self._observe(source, ops, exc, time.perf_counter() - start)
            raise
        self._observe(source, ops, results, time.perf_counter() - start)
        return results

    async def _timed_aexecute(self, source: str, ops: list[Op]) -> list[Any]:
        """`_aexecute`, timed like `_timed_execute` (what the awaiting caller waited)."""
        start = time.perf_counter()
        try:
            results = await self._aexecute(source, ops)
        except BaseException as exc:
            self._observe(source, ops, exc, time.perf_counter() - start)
            raise
        self._observe(source, ops, results, time.perf_counter() - start)
        return results

    def _observe(self, source: str, ops: list[Op], outcome: Any, seconds: float) -> None:
        if not ops:
            return
        stats = self._stats
        if stats is None:  # the registry holds this surface weakly (metrics never leak it)
            from memcluster.metrics import CLIENTS

            stats = self._stats = CLIENTS.track(self)
        stats.record(source, ops[0].kind, len(ops), outcome, seconds)

    # ---- sources ----------------------------------------------------------------------

    @property
    def sources(self) -> list[str]:
        """The configured source names, in order."""
        return self._source_names()

    @property
    def default_source(self) -> str | None:
        return self._default_source_name()

    def _source(self, source: str | None) -> str:
        """Resolve `source` (None: the default) or raise UnknownSource."""
        if source is None:
            default = self._default_source_name()
            if default is None:
                raise UnknownSource("no memory sources are configured")
            return default
        names = self._source_names()
        if source not in names:
            raise UnknownSource(f"unknown source {source!r}; configured: "
                                f"{', '.join(names) or '(none)'}")
        return source

    def info(self) -> dict[str, dict[str, Any]]:
        """{source: backend name, capabilities, description, default, stats}. No secrets."""
        return self._describe()

    # ---- single-key operations ----------------------------------------------------------

    @operation
    def store(self, key: str, value: Any, *, source: str | None = None,
              namespace: str | tuple[str, ...] = "", metadata: Mapping[str, Any] | None = None,
              ttl: float | None = None, if_version: int | None = None,
              overwrite: bool = True, consolidate: bool | None = None) -> Steps:
        """Write `value` under `key` and return the stored Record (version = previous + 1).

        `ttl` in seconds; `if_version=v` raises VersionConflict unless the current version
        is v; `if_version=0` or `overwrite=False` write only if the key is absent. On a
        source with consolidation (`set_consolidation`), a plain write is consolidated
        (see `remember`) and the Record returned is the one now holding the memory;
        `consolidate=False` skips that, `True` requires it.
        """
        op = StoreOp.make(key, value, namespace=namespace, metadata=metadata, ttl=ttl,
                          if_version=if_version, overwrite=overwrite,
                          max_bytes=self.max_value_bytes)
        name = self._source(source)
        plain = if_version is not None or not overwrite or consolidate is False
        settings = None if plain else self._consolidation_of(name, required=bool(consolidate))
        if settings is None:
            return _first((yield name, [op]))
        done = yield from consolidation_steps(name, op, *settings,
                                              max_bytes=self.max_value_bytes)
        return done.record

    @operation
    def remember(self, key: str, value: Any, *, source: str | None = None,
                 namespace: str | tuple[str, ...] = "",
                 metadata: Mapping[str, Any] | None = None, ttl: float | None = None,
                 consolidation: consolidation.Consolidation | None = None) -> Steps:
        """Store `value` unless its nearest neighbours make it redundant; returns a
        `Consolidated` (action add, update or skip; the record now holding the memory;
        the neighbours considered). Uses the source's consolidation, or `consolidation`.
        """
        op = StoreOp.make(key, value, namespace=namespace, metadata=metadata, ttl=ttl,
                          max_bytes=self.max_value_bytes)
        name = self._source(source)
        settings = self._consolidation_of(name, required=True, given=consolidation)
        assert settings is not None
        return (yield from consolidation_steps(name, op, *settings,
                                               max_bytes=self.max_value_bytes))

    def set_consolidation(self, source: str,
                          settings: consolidation.Consolidation | Mapping[str, Any] | None
                          ) -> None:
        """Consolidate plain stores into `source` with `settings` (a `Consolidation`, or
        a dict in the config file's `consolidation:` format); None turns it off. The
        source must rank by similarity (a semantic backend: vector)."""
        name = self._source(source)
        if settings is None:
            self._consolidations.pop(name, None)
            return
        if not isinstance(settings, consolidation.Consolidation):
            settings = consolidation.Consolidation.from_config(settings)
        self._consolidations[name] = (settings, self._similarity_mode(name))

    def _similarity_mode(self, name: str) -> str | None:
        """The search mode whose score is similarity: "vector" on a backend with modes,
        None on a semantic one without; UnsupportedQuery on a backend with no similarity."""
        caps = self.info()[name].get("capabilities") or {}
        if caps.get("text") != "semantic":
            raise UnsupportedQuery(f"source {name!r} has no similarity search "
                                   "(consolidation needs a semantic source, e.g. vector)")
        return "vector" if "vector" in (caps.get("modes") or ()) else None

    def _consolidation_of(self, name: str, *, required: bool,
                          given: consolidation.Consolidation | None = None
                          ) -> tuple[consolidation.Consolidation, str | None] | None:
        if given is not None:
            return given, self._similarity_mode(name)
        found = self._consolidations.get(name)
        if found is None and required:
            raise ConfigError(f"source {name!r} has no consolidation; call "
                              "set_consolidation or pass consolidation=")
        return found

    @property
    def _consolidations(self) -> dict[str, tuple[consolidation.Consolidation, str | None]]:
        table = self.__dict__.get("_consolidation_table")
        if table is None:
            table = self.__dict__["_consolidation_table"] = {}
        return table

    @operation
    def retrieve(self, key: str, *, source: str | None = None,
                 namespace: str | tuple[str, ...] = "") -> Steps:
        """The live Record under `key`, or None."""
        op = RetrieveOp.make(key, namespace=namespace)
        return _first((yield self._source(source), [op]))

    @operation
    def exists(self, key: str, *, source: str | None = None,
               namespace: str | tuple[str, ...] = "") -> Steps:
        """True if `key` holds a live record."""
        op = ExistsOp.make(key, namespace=namespace)
        return bool(_first((yield self._source(source), [op])))

    @operation
    def delete(self, key: str, *, source: str | None = None,
               namespace: str | tuple[str, ...] = "") -> Steps:
        """Remove `key`; True if it existed."""
        op = DeleteOp.make(key, namespace=namespace)
        return bool(_first((yield self._source(source), [op])))

    @operation
    def update(self, key: str, fn: Callable[[Any], Any], *, source: str | None = None,
               namespace: str | tuple[str, ...] = "",
               metadata: Mapping[str, Any] | None = None, ttl: float | None = None) -> Steps:
        """Atomically replace the value with `fn(old value or None)`; returns the Record.

        `metadata`/`ttl` None keep the record's own.
        """
        op = UpdateOp.make(key, fn, namespace=namespace, metadata=metadata, ttl=ttl,
                           max_bytes=self.max_value_bytes)
        return _first((yield self._source(source), [op]))

    # ---- queries ------------------------------------------------------------------------

    @operation
    def search(self, query: Query | str | None = None, *, source: str | None = None,
               namespace: str | tuple[str, ...] = "", limit: int | None = None,
               filter: Mapping[str, Any] | None = None, pattern: str | None = None,
               offset: int | None = None, order_by: str | None = None,
               min_score: float | None = None, mode: str | None = None,
               ranking: Ranking | Mapping[str, Any] | None = None) -> Steps:
        """Records matching `query` (a Query, or a str meaning `Query(text=...)`).

        Keyword arguments given (not None) override the query's fields. On a source whose
        backend has search modes (vector): `mode` is "vector", "keyword" (BM25) or
        "hybrid" (both, fused), default the source's `search_mode`; `ranking` (a
        `Ranking` or a dict of its fields) mixes in recency and importance.
        """
        op = SearchOp.make(query, namespace=namespace, limit=limit, offset=offset,
                           filter=_filter(filter), pattern=pattern, order_by=order_by,
                           min_score=min_score, mode=mode, ranking=ranking)
        return list(_first((yield self._source(source), [op])))

    @operation
    def count(self, query: Query | str | None = None, *, source: str | None = None,
              namespace: str | tuple[str, ...] = "", filter: Mapping[str, Any] | None = None,
              pattern: str | None = None) -> Steps:
        """How many records match `query` (its limit and offset are ignored)."""
        q = Query.of(query, filter=_filter(filter), pattern=pattern)
        op = CountOp.make(q, namespace=namespace)
        return int(_first((yield self._source(source), [op])))

    @operation
    def list_keys(self, pattern: str | None = None, *, source: str | None = None,
                  namespace: str | tuple[str, ...] = "", limit: int = 100,
                  cursor: str | None = None) -> Steps:
        """One Page of keys in key order; pass `page.cursor` back for the next one."""
        op = ListKeysOp.make(namespace=namespace, pattern=pattern, limit=limit, cursor=cursor)
        return _first((yield self._source(source), [op]))

    # ---- batches ------------------------------------------------------------------------

    @operation
    def store_many(self, items: Sequence[Any], *, source: str | None = None,
                   namespace: str | tuple[str, ...] = "") -> Steps:
        """Store `(key, value)` or `(key, value, {metadata, ttl, if_version, overwrite})` items.

        Every item is validated before anything is written: one bad item writes nothing.
        A conditional item that loses its compare-and-set raises VersionConflict after
        the batch; the other items are written.
        """
        if isinstance(items, (str, bytes, Mapping)) or not isinstance(items, Sequence):
            raise InvalidValue(f"store_many takes a list of items, got {type(items).__name__}")
        ns, name = codec.check_namespace(namespace), self._source(source)
        make, plain, max_bytes = StoreOp.make, StoreOp.make_plain, self.max_value_bytes
        ops = []
        append = ops.append
        for i, item in enumerate(items):
            try:  # the op id is given here, once: the router would rebuild the op to add it
                if type(item) is tuple and len(item) == 2:  # the common (key, value) item
                    append(plain(item[0], item[1], ns, max_bytes, new_op_id()))
                    continue
                if not isinstance(item, (tuple, list)) or len(item) not in (2, 3):
                    raise InvalidValue("must be (key, value) or (key, value, opts)")
                opts = item[2] if len(item) == 3 else {}
                if not isinstance(opts, Mapping):
                    raise InvalidValue(f"opts must be a dict, got {type(opts).__name__}")
                unknown = [repr(k)[:40] for k in opts if k not in ITEM_OPTIONS]
                if unknown:
                    raise InvalidValue(f"unknown option(s) {', '.join(unknown)} "
                                       f"(allowed: {', '.join(ITEM_OPTIONS)})")
                append(make(item[0], item[1], namespace=ns, max_bytes=max_bytes,
                            op_id=new_op_id(), **opts))
            except (InvalidKey, InvalidValue) as exc:
                raise type(exc)(f"items[{i}]: {exc}") from None
        if not ops:
            return []
        return _all((yield name, ops))

    @operation
    def retrieve_many(self, keys: Sequence[str], *, source: str | None = None,
                      namespace: str | tuple[str, ...] = "") -> Steps:
        """{key: Record} for the keys that exist (missing keys are left out)."""
        ns, name = codec.check_namespace(namespace), self._source(source)
        ops = [RetrieveOp.make(k, namespace=ns) for k in _key_list(keys, "retrieve_many")]
        if not ops:
            return {}
        results = _all((yield name, ops))
        return {op.key: rec for op, rec in zip(ops, results, strict=True) if rec is not None}

    @operation
    def delete_many(self, keys: Sequence[str], *, source: str | None = None,
                    namespace: str | tuple[str, ...] = "") -> Steps:
        """Remove `keys`; returns how many existed."""
        ns, name = codec.check_namespace(namespace), self._source(source)
        ops = [DeleteOp.make(k, namespace=ns) for k in _key_list(keys, "delete_many")]
        if not ops:
            return 0
        return sum(1 for removed in _all((yield name, ops)) if removed)

    @operation
    def clear(self, *, source: str | None = None, namespace: str | tuple[str, ...] = "",
              all_namespaces: bool = False, confirm: bool = False) -> Steps:
        """Remove every record of `namespace` (or of every namespace); returns how many.

        Requires `confirm=True`, else ConfirmationRequired and nothing is removed. Only
        `all_namespaces=True` reaches beyond one namespace: `namespace=None` means the
        default namespace "" here as everywhere, never "all of them".
        """
        if confirm is not True:
            raise ConfirmationRequired("clear removes every record; pass confirm=True")
        if type(all_namespaces) is not bool:
            raise InvalidValue(f"all_namespaces must be true or false, got "
                               f"{type(all_namespaces).__name__}")
        ns = codec.check_namespace(namespace)
        op = ClearOp.make(namespace=None if all_namespaces else ns)
        return int(_first((yield self._source(source), [op])))

    # ---- export, tools, lifecycle -------------------------------------------------------

    def export(self, *, source: str | None = None, namespace: str | tuple[str, ...] | None = None,
               batch: int = 500) -> Iterator[Record]:
        """Every live record of `source`: of one namespace, or of all when `namespace` is None.

        Reads page by page, so records written meanwhile may or may not appear.
        """
        name = self._source(source)
        check_count("batch", batch, 1)
        cursor: str | None = None
        if namespace is None:
            while True:
                records, cursor = self._export(name, cursor, batch)
                yield from records
                if cursor is None:
                    return
        while True:
            page = self.list_keys(source=name, namespace=namespace, limit=batch, cursor=cursor)
            found = self.retrieve_many(page.keys, source=name, namespace=namespace)
            yield from (found[k] for k in page.keys if k in found)
            cursor = page.cursor
            if cursor is None:
                return

    def tools(self, fmt: str = "openai", namespace: str | tuple[str, ...] | None = None
              ) -> list[dict[str, Any]]:
        """The memory tools' schemas for an LLM (`fmt`: openai, anthropic or mcp).

        With `namespace`, the tools carry no namespace parameter: the agent is bound to it.
        """
        from memcluster.manager import tools

        return tools.tool_schemas(self, fmt=fmt, namespace=namespace)

    def call_tool(self, name: str, arguments: Mapping[str, Any] | str | None = None,
                  namespace: str | tuple[str, ...] | None = None) -> dict[str, Any]:
        """Run one tool call from an LLM; returns a JSON-safe dict and never raises."""
        from memcluster.manager import tools

        return tools.call_tool(self, name, arguments, namespace=namespace)

    def __enter__(self) -> MemorySurface:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _add_async_twins(cls: type) -> None:
    """Give `cls` an `a<name>` twin of each operation and of the plain helpers."""
    for name, attr in list(vars(cls).items()):
        body = getattr(attr, "__memcluster_body__", None)
        if body is not None:
            setattr(cls, f"a{name}", _async_twin(name, body))
    for name in ("info", "tools", "call_tool", "close"):
        setattr(cls, f"a{name}", _threaded(name))


def _threaded(name: str) -> Callable[..., Any]:
    async def run(self: MemorySurface, *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(getattr(self, name), *args, **kwargs)

    run.__name__ = run.__qualname__ = f"a{name}"
    run.__doc__ = f"Async twin of `{name}` (runs it in a worker thread)."
    return run


_add_async_twins(MemorySurface)

__all__ = ["MemorySurface", "operation"]
