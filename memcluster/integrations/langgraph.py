"""A LangGraph store over memcluster: `MemclusterStore(memory, source=None)`.

Core types: `MemclusterStore` (a `langgraph.store.base.BaseStore` over any `MemorySurface`:
a local `MemoryManager` or a connected cluster) and the small pure helpers it is built
from (`encode_namespace`/`decode_namespace`, `split_filter`, `value_matches`).

    store = MemclusterStore(mc.MemoryManager.from_config("memory.yaml"), source="persistent")
    store.put(("users", "42"), "prefs", {"theme": "dark", "level": 3}, ttl=60)   # minutes
    store.search(("users",), filter={"level": {"$gte": 2}}, query="dark")
    graph = builder.compile(store=store)

Decisions (each with the alternative rejected):

- **Namespaces.** A LangGraph namespace `("users", "a/b")` is stored in the memcluster
  namespace `langgraph/users/a%2Fb`: under a root (default "langgraph", a label LangGraph
  itself reserves, so no LangGraph namespace can collide with it), labels joined with
  "/" as memcluster joins tuples, and "%" and "/" inside a label escaped as %25 and %2F.
  The mapping is reversible and unambiguous, and the memory tools reach the same items
  with `namespace="langgraph/users/a%2Fb"`. Rejected: the raw "/"-join (("a/b",) and
  ("a", "b") would collide) and an opaque encoding (unreadable for the tools).
- **Enumerating namespaces** (`list_namespaces`, and the namespaces a prefix search
  covers) pages through every live record of the source with `MemorySurface.export`.
  It is always exact: deletes, TTL expiry and writes by other processes or by the memory
  tools are reflected at once, with nothing to keep in step. The cost is a scan of the
  source per listing or prefix search. Rejected: a namespace index kept beside the data,
  which goes stale when records expire or are deleted through another path, and whose
  upkeep races between concurrent writers (one prunes an empty namespace while another
  adds to it) unless every write pays for a second, conditional write.
- **Filters.** LangGraph filters match the item's *value*; memcluster filters match
  metadata. The item's value is stored as the memcluster value and its top-level scalar
  fields are mirrored into metadata, so the conditions that can be answered from those
  fields (a top-level field compared with $eq $ne $gt $gte $lt $lte to a non-null
  scalar) are pushed down to the source, with limit and offset. The rest (nested
  fields, lists, null, field names with "." or "$") are checked here on the value, with
  paging through the pre-filtered results. Comparisons follow memcluster's rules: numbers
  compare as numbers, strings as strings, bool is not a number, a type mismatch is no
  match, and a missing field reads as null (as in LangGraph's InMemoryStore). Gap:
  InMemoryStore coerces `$gt`-style operands with `float()`, so "5" > 3 there, not here.
  Rejected: filtering everything in the adapter (no push-down, every search a full read)
  and mirroring the whole value (twice the storage for nested data).
- **Search.** With `query`, a source whose capabilities say `text: "semantic"` (the
  vector backend) ranks by similarity and sets `SearchItem.score`; other sources match
  the query as a case-insensitive substring of key and value (InMemoryStore without an
  index ignores the query instead). Without a query, items come newest first
  (`updated_at` descending, then namespace and key). Per-item `index` field lists are
  not used: the vector source embeds per its own `text_field` option.
- **TTL** is in minutes (`ttl=`, `TTLConfig.default_ttl`) and becomes a memcluster TTL
  in seconds, so expired items vanish from every read at once. The TTL is kept in the
  record's metadata so reads can refresh it (`refresh_ttl`, default
  `TTLConfig.refresh_on_read` or True): a refresh re-writes the record conditionally on
  its version (a concurrent write wins and is never overwritten). Gap: a refresh is a
  write, so the memcluster version goes up; the item's `updated_at` is preserved for
  LangGraph, but search's newest-first order counts a refresh as an update.
  `sweep_interval_minutes` is not needed: memcluster backends sweep expired records.
- **Batches** behave like InMemoryStore's: reads (get, search, list) see the state
  before the batch's writes, and of several puts to one item the last wins. The batch
  is written once as a generator of memory calls and driven synchronously (`batch`) or
  with the surface's async twins (`abatch`); rejected: two copies of the logic.
"""

from __future__ import annotations

import asyncio
import re
from collections import defaultdict
from collections.abc import Generator, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from langgraph.store.base import (
    BaseStore,
    GetOp,
    Item,
    ListNamespacesOp,
    MatchCondition,
    Op,
    PutOp,
    Result,
    SearchItem,
    SearchOp,
    TTLConfig,
    validate_op_namespace,
)

from memcluster import query as engine
from memcluster.errors import InvalidValue, UnsupportedQuery, VersionConflict
from memcluster.manager.surface import MemorySurface
from memcluster.model import Query, Record
from memcluster.ops import StoreOp

RESERVED = "langgraph"          # the metadata key holding the adapter's own bookkeeping
OPERATORS = frozenset({"$eq", "$ne", "$gt", "$gte", "$lt", "$lte"})
SCAN_BATCH = 1000
_LABEL = re.compile(r"(?:[^%/]|%25|%2F)+")
_PUSHABLE = (str, int, float, bool)
_MIRRORED = (str, int, float, bool, bytes, type(None))


# ---- namespaces ---------------------------------------------------------------------------


def encode_namespace(namespace: tuple[str, ...], root: str = RESERVED) -> str:
    """The memcluster namespace of a LangGraph namespace: root/label/… with % and / escaped."""
    labels = (label.replace("%", "%25").replace("/", "%2F") for label in namespace)
    return "/".join((root, *labels))


def decode_namespace(namespace: str, root: str = RESERVED) -> tuple[str, ...] | None:
    """Invert `encode_namespace`; None for a namespace this root did not produce."""
    head = root + "/"
    if not namespace.startswith(head):
        return None
    labels = namespace[len(head):].split("/")
    if not all(_LABEL.fullmatch(label) for label in labels):
        return None
    return tuple(label.replace("%2F", "/").replace("%25", "%") for label in labels)


def _matches_condition(condition: MatchCondition, namespace: tuple[str, ...]) -> bool:
    path = tuple(condition.path)
    if len(namespace) < len(path):
        return False
    if condition.match_type == "prefix":
        pairs = zip(namespace, path, strict=False)
    elif condition.match_type == "suffix":
        pairs = zip(reversed(namespace), reversed(path), strict=False)
    else:
        raise InvalidValue(f"unsupported namespace match type {condition.match_type!r}")
    return all(want == "*" or got == want for got, want in pairs)


# ---- filters ------------------------------------------------------------------------------


def _is_operators(cond: Any) -> bool:
    if not isinstance(cond, Mapping) or not cond:
        return False
    dollars = [isinstance(k, str) and k.startswith("$") for k in cond]
    if any(dollars) and not all(dollars):
        raise InvalidValue(f"a filter condition mixes operators and fields: {sorted(cond)!r}")
    return all(dollars)


def check_filter(flt: Any, where: str = "filter") -> None:
    """Raise InvalidValue / UnsupportedQuery for a filter LangGraph's operators cannot mean."""
    if flt is None:
        return
    if not isinstance(flt, Mapping):
        raise InvalidValue(f"{where}: must be a dict, got {type(flt).__name__}")
    for name, cond in flt.items():
        if not isinstance(name, str) or not name:
            raise InvalidValue(f"{where}: field names must be non-empty str, got {name!r}")
        if _is_operators(cond):
            for op, arg in cond.items():
                if op not in OPERATORS:
                    raise UnsupportedQuery(f"{where}.{name}: unknown operator {op!r} "
                                           f"(supported: {', '.join(sorted(OPERATORS))})")
                engine.check_filter({"f": {op: arg}})
        elif isinstance(cond, Mapping):
            check_filter(cond, f"{where}.{name}")


def _test(value: Any, op: str, arg: Any) -> bool:
    """One comparison under memcluster's rules (one engine, not a second definition)."""
    return engine.match_filter({"f": value}, {"f": {op: arg}})


def value_matches(value: Mapping[str, Any], flt: Mapping[str, Any] | None) -> bool:
    """True if an item's value satisfies a LangGraph filter (missing fields read as null).

    A plain dict condition matches nested fields partially, an operator dict applies each
    operator, anything else must be equal (lists element by element, in order).
    """
    for name, cond in (flt or {}).items():
        got = value.get(name) if isinstance(value, Mapping) else None
        if _is_operators(cond):
            ok = all(_test(got, op, arg) for op, arg in cond.items())
        elif isinstance(cond, Mapping):
            ok = isinstance(got, Mapping) and value_matches(got, cond)
        else:
            ok = _test(got, "$eq", cond)
        if not ok:
            return False
    return True


def split_filter(flt: Mapping[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(pushed, residual): the conditions the mirrored metadata answers exactly, and the rest.

    Pushed: a top-level field (no "." or "$", not the reserved key) compared with a
    non-null scalar. For those, metadata (missing when the value's field is absent or not a
    scalar) and the value (missing reads as null) give the same answer.
    """
    pushed: dict[str, Any] = {}
    residual: dict[str, Any] = {}
    for name, cond in (flt or {}).items():
        plain_name = "." not in name and not name.startswith("$") and name != RESERVED
        if _is_operators(cond):
            scalar = all(isinstance(arg, _PUSHABLE) for arg in cond.values())
            target = pushed if plain_name and scalar else residual
            target[name] = dict(cond)
        elif plain_name and isinstance(cond, _PUSHABLE):
            pushed[name] = {"$eq": cond}
        else:
            residual[name] = cond
    return pushed, residual


def mirror(value: Mapping[str, Any], ttl_minutes: float | None) -> dict[str, Any]:
    """The metadata stored with an item: its top-level scalar fields, plus the TTL if any."""
    meta = {k: v for k, v in value.items() if isinstance(v, _MIRRORED) and k != RESERVED}
    if ttl_minutes is not None:
        meta[RESERVED] = {"ttl": ttl_minutes}
    return meta


def _bookkeeping(record: Record) -> dict[str, Any]:
    own = record.metadata.get(RESERVED)
    return own if isinstance(own, dict) else {}


def _when(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, tz=timezone.utc)


# ---- the store ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Call:
    """One call on the memory surface (or "scan"/"info" on the store), made by the driver."""

    method: str
    kwargs: dict[str, Any] = field(default_factory=dict)


Steps = Generator[list[_Call], list[Any], Any]


class MemclusterStore(BaseStore):
    """A LangGraph `BaseStore` over a memcluster `MemorySurface` (see the module docstring).

    `source`: the memory source (None: the surface's default). `root`: the namespace
    under which LangGraph's items live in that source. `ttl`: a `TTLConfig` (minutes).
    Opening does no I/O; the source's capabilities are read on first search.
    """

    supports_ttl: bool = True

    def __init__(self, memory: MemorySurface, source: str | None = None, *,
                 root: str = RESERVED, ttl: TTLConfig | None = None) -> None:
        if not isinstance(memory, MemorySurface):
            raise InvalidValue(f"memory must be a MemoryManager or a connected cluster, "
                               f"got {type(memory).__name__}")
        if not isinstance(root, str) or not root:
            raise InvalidValue("root must be a non-empty str")
        self.memory = memory
        self.source = source
        self.root = root
        self.ttl_config = ttl
        self._semantic: bool | None = None

    def __repr__(self) -> str:
        return f"MemclusterStore({self.memory!r}, source={self.source!r}, root={self.root!r})"

    # ---- drivers: the same steps, sync or async -----------------------------------------

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        steps = self._steps(list(ops))
        try:
            calls = next(steps)
            while True:
                calls = steps.send([self._call(c) for c in calls])
        except StopIteration as done:
            return done.value
        finally:
            steps.close()

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        steps = self._steps(list(ops))
        try:
            calls = next(steps)
            while True:
                calls = steps.send(list(await asyncio.gather(*(self._acall(c) for c in calls))))
        except StopIteration as done:
            return done.value
        finally:
            steps.close()

    def _call(self, call: _Call) -> Any:
        try:
            if call.method == "scan":
                return self._scan_namespaces()
            return getattr(self.memory, call.method)(**call.kwargs)
        except VersionConflict as exc:  # a refresh that lost to a concurrent write
            return exc

    async def _acall(self, call: _Call) -> Any:
        try:
            if call.method == "scan":
                return await asyncio.to_thread(self._scan_namespaces)
            return await getattr(self.memory, "a" + call.method)(**call.kwargs)
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
        writes = self._prepare_writes(list(puts.values()))  # validated before any I/O
        refresh: dict[str, dict[str, Record]] = defaultdict(dict)

        gets = [(i, op) for i, op in enumerate(ops) if isinstance(op, GetOp)]
        if gets:
            yield from self._gets(gets, results, refresh)
        needs_scan = any(isinstance(op, (SearchOp, ListNamespacesOp)) for op in ops)
        namespaces: set[tuple[str, ...]] = set()
        if needs_scan:
            (namespaces,) = yield [_Call("scan")]
        for i, op in enumerate(ops):
            if isinstance(op, ListNamespacesOp):
                results[i] = self._list_namespaces(op, namespaces)
            elif isinstance(op, SearchOp):
                results[i] = yield from self._search(op, namespaces, refresh)
        if refresh:
            yield from self._refresh(refresh)
        if writes:
            yield writes
        return results

    def _prepare_writes(self, puts: list[PutOp]) -> list[_Call]:
        """Validate every put and group them per namespace into store_many/delete_many."""
        stores: dict[str, list[tuple[str, Any, dict[str, Any]]]] = defaultdict(list)
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
            value = dict(op.value)
            ttl = self._ttl_minutes(op.ttl)
            opts = {"metadata": mirror(value, ttl), "ttl": None if ttl is None else ttl * 60}
            StoreOp.make(op.key, value, namespace=ns, max_bytes=self.memory.max_value_bytes,
                         **opts)
            stores[ns].append((op.key, value, opts))
        calls = [_Call("store_many", {"items": items, "source": self.source, "namespace": ns})
                 for ns, items in stores.items()]
        calls += [_Call("delete_many", {"keys": keys, "source": self.source, "namespace": ns})
                  for ns, keys in deletes.items()]
        return calls

    @staticmethod
    def _ttl_minutes(ttl: Any) -> float | None:
        if ttl is None:
            return None
        if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not ttl > 0:
            raise InvalidValue(f"ttl must be a positive number of minutes, got {ttl!r}")
        return float(ttl)

    def _item(self, record: Record, namespace: tuple[str, ...], *, scored: bool = False
              ) -> Item:
        value = record.value if isinstance(record.value, dict) else {"value": record.value}
        updated = _bookkeeping(record).get("updated_at", record.updated_at)
        common = {"namespace": namespace, "key": record.key, "value": value,
                  "created_at": _when(record.created_at), "updated_at": _when(updated)}
        if scored:
            return SearchItem(**common, score=record.score)
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
        found = yield [_Call("retrieve_many", {
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
                if all(_matches_condition(c, ns) for c in op.match_conditions or ())]
        if op.max_depth is not None:
            kept = list({ns[: op.max_depth] for ns in kept})
        return sorted(kept)[op.offset: op.offset + op.limit]

    def _search(self, op: SearchOp, namespaces: set[tuple[str, ...]],
                refresh: dict[str, dict[str, Record]]) -> Steps:
        prefix = tuple(op.namespace_prefix)
        targets = sorted(ns for ns in namespaces if ns[: len(prefix)] == prefix)
        need = op.offset + op.limit
        if not targets or op.limit <= 0:
            return []
        semantic = False
        if op.query is not None:
            if self._semantic is None:
                (info,) = yield [_Call("info")]
                name = self.source or self.memory.default_source
                caps = (info.get(name) or {}).get("capabilities") or {}
                self._semantic = caps.get("text") == "semantic"
            semantic = self._semantic
        pushed, residual = split_filter(op.filter)
        page = need if not residual else max(need, 100)
        query = Query(text=op.query, filter=pushed or None, limit=page,
                      order_by=None if semantic else "-updated_at")
        hits: dict[tuple[str, ...], list[Record]] = {ns: [] for ns in targets}
        seen = dict.fromkeys(targets, 0)
        pending = list(targets)
        while pending:
            pages = yield [_Call("search", {
                "query": query, "offset": seen[ns], "source": self.source,
                "namespace": encode_namespace(ns, self.root)}) for ns in pending]
            still = []
            for ns, records in zip(pending, pages, strict=True):
                seen[ns] += len(records)
                hits[ns] += [r for r in records if value_matches(
                    r.value if isinstance(r.value, dict) else {}, residual)]
                if len(records) == page and len(hits[ns]) < need:
                    still.append(ns)
            pending = still
        merged = [(ns, r) for ns in targets for r in hits[ns][:need]]
        if semantic:
            merged.sort(key=lambda p: (-(p[1].score or 0.0), p[0], p[1].key))
        else:
            merged.sort(key=lambda p: (-p[1].updated_at, p[0], p[1].key))
        chosen = merged[op.offset: need]
        for _, record in chosen:
            self._note_refresh(refresh, record, op.refresh_ttl)
        return [self._item(r, ns, scored=True) for ns, r in chosen]

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
            calls.append(_Call("store_many", {"items": items, "source": self.source,
                                              "namespace": ns}))
        for result in (yield calls):
            if isinstance(result, BaseException) and not isinstance(result, VersionConflict):
                raise result


__all__ = [
    "MemclusterStore",
    "check_filter",
    "decode_namespace",
    "encode_namespace",
    "mirror",
    "split_filter",
    "value_matches",
]
