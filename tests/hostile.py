"""Hostile input, shared by the property tests: adversarial strategies, a model of what the
memory must hold, and one runner that applies each call to every target and checks it.

Used by `tests/unit/test_hostile_inputs.py` (every local backend, side by side in one
`MemoryManager`) and `tests/cluster/test_hostile_cluster.py` (a cluster source beside a
local one). A *target* is `(label, surface, source)`; the runner calls the same public
method with the same arguments on each and checks:

1. every call answers or raises a typed `MemclusterError` (anything else fails the test);
2. all targets agree on which inputs are invalid (`InvalidKey`/`InvalidValue`), and on
   every other outcome, except a semantic (vector) target's answers to text queries;
3. answers are the model's: versions, values and metadata exactly, search/count/list_keys
   by the pure query engine (`memcluster.query`) over the model's records;
4. after every call, failed or not, each target holds exactly the model's records (so a
   refused write changed nothing), and `reopen` checks them again after a restart.

The model (`Model`) knows no validation: a call that every target refused as invalid
leaves it alone, anything else it applies with the documented semantics (versions,
compare-and-set, TTL shorter than a second meaning "gone at once", tags, clear).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

from memcluster import codec
from memcluster import query as engine
from memcluster.errors import (
    ConfirmationRequired,
    InvalidKey,
    InvalidValue,
    MemclusterError,
    UnsupportedQuery,
    VersionConflict,
)
from memcluster.model import Page, Query, Record
from memcluster.ops import SearchOp

INVALID = (InvalidKey, InvalidValue)
OMIT: Any = type("Omit", (), {"__repr__": lambda self: "OMIT"})()
SHORT_TTL = 1.0  # a TTL below this expires before anything reads the record again

# ---- adversarial alphabets ----------------------------------------------------------------
# Each argument has a valid strategy (already adversarial: NUL in values, NaN, 64-bit edge
# ints, unicode, deep nesting up to the limit, glob metacharacters) and a hostile one
# (what must be refused). A call draws valid arguments and makes zero, one or two of them
# hostile, so most calls reach the stores and the hostile ones fail one rule at a time.

VALID_CHARS = ["a", "k", "1", "é", "\U0001f600", "*", "?", "[", "]", "!", "\\", "%", "_",
               ":", "/", " ", "\n", "'", '"', "$", ".", "+", "-"]
BAD_CHARS = ["\x00", "\ud800", "\udfff"]
GIANT = "x" * (1 << 20)            # over the 1 MiB value limit, once encoded
WRONG = [None, 0, -1, 1.5, math.nan, True, b"k", ["k"], ("k",), {"k": 1}, frozenset({1})]
INT_EDGES = [(1 << 63) - 1, (1 << 64) - 1, -(1 << 63), 0, -1]
BIG_INTS = [1 << 64, -(1 << 63) - 1, 1 << 200]


def _text(chars: list[str], min_size: int = 0) -> st.SearchStrategy[str]:
    return st.lists(st.sampled_from(chars), min_size=min_size, max_size=5).map("".join)


valid_texts = _text(VALID_CHARS)
bad_texts = st.tuples(valid_texts, st.sampled_from(BAD_CHARS), valid_texts).map("".join)
wrong_types = st.sampled_from(WRONG)


def _nested(depth: int) -> Any:
    """`depth` lists nested in one another around a str."""
    value: Any = "leaf"
    for _ in range(depth):
        value = [value]
    return value


# keys, namespaces
valid_keys = st.one_of(st.sampled_from(["k1", "k2", "k:3", "é"]), st.sampled_from(["k1", "k2"]),
                       _text(VALID_CHARS, 1), st.just("k" * 512))
bad_keys = st.one_of(bad_texts, wrong_types, st.sampled_from(["", "k" * 513, "é" * 257]))
valid_namespaces = st.one_of(st.sampled_from(["", "ns", "", "ns"]), valid_texts,
                             st.tuples(st.sampled_from(["ns", "a"]), st.just("x")))
bad_namespaces = st.one_of(bad_texts, wrong_types, st.just("n" * 513),
                           st.tuples(st.just("ns"), st.sampled_from(["\x00", "\ud800", 1])))

# values and metadata
field_names = st.one_of(
    st.sampled_from(["a", "n", "tags", "labels", "$bytes", "$dict", "$float", "", "+0", " 0",
                     "0", "a.b", "\t-1"]), valid_texts)
valid_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-1000, 1000), st.sampled_from(INT_EDGES),
    st.floats(allow_nan=True, allow_infinity=True), valid_texts,
    st.sampled_from(["\x00", "a\x00b"]), st.binary(max_size=3))
valid_values = st.one_of(
    st.recursive(valid_scalars, lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(field_names, inner, max_size=3)),
        max_leaves=6),
    st.just(_nested(64)))
bad_values = st.one_of(
    st.sampled_from([(1, 2), {1, 2}, {1: "a"}, {None: 1}, bytearray(b"x"), object, range(2),
                     _nested(65), GIANT, *BIG_INTS]),
    bad_texts.filter(lambda t: "\x00" not in t),
    st.builds(lambda t: {"text": t}, st.sampled_from(["\ud800", "\udfff"])),
    st.builds(lambda t: [1, {t: 2}], st.sampled_from(["\ud800", "x\udcff"])))
LABELS = [{"labels": ["x", "y"]}, {"labels": {"+0": "x"}}, {"labels": {" 0": "x", "0": "y"}},
          {"tags": ["t", "u"]}, {"n": 2}, {"n": 10}, {"n": "10"}, {"a": {"b": 1}},
          {"n": math.nan}, {"raw": b"\x00"}, {"s": "nul\x00"}]
given_metadata = st.one_of(st.none(), st.sampled_from(LABELS),
                           st.dictionaries(field_names, valid_values, max_size=3))
valid_metadata = st.one_of(st.just(OMIT), given_metadata,
                           st.just({"deep": _nested(15)}))  # 16 deep in all: the limit
bad_metadata = st.one_of(
    st.sampled_from([[("a", 1)], "meta", 5, {"big": GIANT}, {1: "a"}, {"deep": _nested(65)},
                     {"deep": _nested(16)}]),
    st.builds(lambda v: {"m": v}, bad_values.filter(lambda v: not isinstance(v, str))),
    st.builds(lambda k: {k: 1}, bad_texts.filter(lambda t: "\x00" not in t)))

# write options
TTLS = [None, 3600, 86400.0, codec.MAX_TTL, 1e-300, 1e-9]
valid_ttls = st.sampled_from([OMIT, OMIT, *TTLS])
bad_ttls = st.sampled_from([0, -1, math.nan, math.inf, -math.inf, 1e17, 1 << 70, True, "60",
                            codec.MAX_TTL * 1.01, 10 ** 400])
VERSIONS = [None, 0, 1, 2, 3, codec.MAX_VERSION]
valid_versions = st.sampled_from([OMIT, OMIT, *VERSIONS])
bad_versions = st.sampled_from([1 << 63, 1 << 64, -1, True, 1.0, "1"])
valid_overwrites = st.sampled_from([OMIT, OMIT, True, False])
bad_overwrites = st.sampled_from(["no", 0, None, 1])

# queries
valid_limits = st.sampled_from([OMIT, 0, 1, 2, 3, 10, (1 << 31) - 1])
page_limits = st.sampled_from([OMIT, 1, 2, 3, 100, (1 << 31) - 1])
bad_limits = st.sampled_from([1 << 31, 1 << 63, 1 << 64, -1, True, 2.0, "3"])
valid_offsets = st.sampled_from([OMIT, 0, 1, 2, (1 << 31) - 1])
bad_offsets = st.sampled_from([1 << 31, 1 << 63, -1, 1.5, "0"])
GLOB = ["*", "?", "k", "1", ":", "[", "]", "[!", "[k]", "[!k]", "\\", "é", "%", "_", "[a-"]
valid_patterns = st.one_of(st.just(OMIT), st.none(),
                           st.lists(st.sampled_from(GLOB), max_size=4).map("".join))
bad_patterns = st.one_of(st.sampled_from(["a\x00*", "[!\x00]", "\ud800*"]), wrong_types)
valid_query_texts = st.one_of(st.none(), st.sampled_from(["k", "K1", "x", "", "\x00", "keep"]),
                              valid_texts)
bad_query_texts = st.one_of(st.sampled_from(["\ud800", "k\udfff"]),
                            st.sampled_from([5, b"k", ["k"], True]))
valid_cursors = st.one_of(st.just(OMIT), st.none(), st.sampled_from(["k1", "k2", ""]),
                          valid_texts)
bad_cursors = st.one_of(st.sampled_from(["k\x00", "\ud800"]), st.sampled_from([5, b"k", ["k"]]))
filter_scalars = st.one_of(st.integers(0, 12), st.sampled_from(["x", "y", "t", "10", ""]),
                           st.booleans(), st.none(), st.floats(allow_nan=True))
conditions = st.one_of(
    filter_scalars,
    st.dictionaries(st.sampled_from(["$eq", "$ne", "$contains", "$gt", "$gte", "$lt", "$lte"]),
                    filter_scalars, min_size=1, max_size=2),
    st.dictionaries(st.sampled_from(["$in", "$nin"]), st.lists(filter_scalars, max_size=3),
                    min_size=1, max_size=1),
    st.builds(lambda b: {"$exists": b}, st.booleans()))
FIELDS = ["a", "n", "tags", "labels", "labels.0", "labels.+0", "labels. 0", "labels.\t-1",
          "a.b", "s", "raw"]
leaf_filters = st.dictionaries(st.sampled_from(FIELDS), conditions, min_size=1, max_size=2)
valid_filters = st.one_of(
    st.just(OMIT), st.none(),
    st.recursive(leaf_filters, lambda inner: st.one_of(
        st.builds(lambda subs: {"$and": subs}, st.lists(inner, min_size=1, max_size=2)),
        st.builds(lambda subs: {"$or": subs}, st.lists(inner, min_size=1, max_size=2)),
        st.builds(lambda sub: {"$not": sub}, inner)), max_leaves=4))


def _deep_filter(depth: int) -> dict[str, Any]:
    flt: dict[str, Any] = {"n": 1}
    for _ in range(depth):
        flt = {"$not": flt}
    return flt


bad_filters = st.sampled_from([
    "t", [("a", 1)], 5, {"$or": []}, {"$and": "x"}, _deep_filter(70), {"a": {"$gt": {}}},
    {"a": {"$in": "x"}}, {"a": {"$exists": 1}}, {"a": {"$regex": "x"}}, {"$where": 1},
    {"": 1}, {"a": {"$eq": 1, "b": 2}}, {"\ud800": 1}, {"a": "\udfff"}, {"a": {1, 2}},
    {"a": {"$in": [(1,)]}}, {"a": GIANT}, {"a": 1 << 64}])
valid_orders = st.sampled_from([OMIT, OMIT, "key", "-key", "version", "-version"])
bad_orders = st.sampled_from(["score", "-score", "bogus", 5, "--key"])
valid_min_scores = st.just(OMIT)
bad_min_scores = st.sampled_from([0.0, 0.5, math.nan, "x", True])
# search modes and ranking are for semantic sources; elsewhere they are UnsupportedQuery
valid_modes = st.just(OMIT)
bad_modes = st.sampled_from(["vector", "hybrid", "bogus", 5, ["vector"]])
valid_rankings = st.just(OMIT)
bad_rankings = st.sampled_from([{"recency": 0.5}, {"recency": 10 ** 400}, {"half_life": 0},
                                {1: 2, "recency": 1}, {"importance_field": "\ud800"},
                                {"relevance": math.nan}, "x", [("recency", 1)]])


# ---- calls ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Returns:
    """An update function that ignores the old value (printable, picklable)."""

    value: Any

    def __call__(self, old: Any) -> Any:
        return self.value


@dataclass(frozen=True)
class Call:
    """One public method call, without `source` (the runner adds each target's)."""

    method: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        parts = [repr(a)[:80] for a in self.args]
        parts += [f"{k}={v!r}"[:80] for k, v in self.kwargs.items()]
        return f"{self.method}({', '.join(parts)})"


Arg = tuple[st.SearchStrategy[Any], st.SearchStrategy[Any]]  # (valid, hostile)
KEY: Arg = (valid_keys, bad_keys)
NS: Arg = (valid_namespaces, bad_namespaces)


@st.composite
def _item(draw: st.DrawFn, hostile: bool) -> Any:
    """A store_many item: (key, value) or (key, value, opts); `hostile` breaks one rule."""
    opts = draw(st.fixed_dictionaries({}, optional={
        "metadata": given_metadata, "ttl": st.sampled_from(TTLS),
        "if_version": st.sampled_from(VERSIONS), "overwrite": st.booleans()}))
    item = (draw(valid_keys), draw(valid_values), opts)
    if not hostile:
        return item if opts or draw(st.booleans()) else item[:2]
    return draw(st.one_of(
        st.builds(lambda k: (k, *item[1:]), bad_keys),
        st.builds(lambda v: (item[0], v, opts), bad_values),
        st.builds(lambda m: (*item[:2], {**opts, "metadata": m}), bad_metadata),
        st.builds(lambda t: (*item[:2], {**opts, "ttl": t}), bad_ttls),
        st.sampled_from(["k1", 5, ["k1"], ("k1", 1, "opts"), ("k1", 1, {"bogus": 1}),
                         ("k1", 1, {1: 2}), ("k1",), ("k1", 1, {}, 4)])))


@st.composite
def _items(draw: st.DrawFn, hostile: bool) -> Any:
    n = draw(st.integers(0, 3))
    items = [draw(_item(False)) for _ in range(n)]
    if hostile:
        choice = draw(st.integers(0, 3))
        if choice == 3:
            return draw(st.sampled_from(["k", 5, {"k": 1}, None]))
        items.insert(draw(st.integers(0, n)), draw(_item(True)))
    return items


@st.composite
def _key_list(draw: st.DrawFn, hostile: bool) -> Any:
    keys = draw(st.lists(valid_keys, max_size=3))
    if hostile:
        if draw(st.booleans()):
            return draw(st.sampled_from(["k1", 5, None, b"k", {"k1": 1}]))
        keys.insert(0, draw(bad_keys))
    return keys


ITEMS: Arg = (_items(False), _items(True))
KEY_LIST: Arg = (_key_list(False), _key_list(True))
# method -> ((positional argument names), {argument: (valid, hostile)})
SIGNATURES: dict[str, tuple[tuple[str, ...], dict[str, Arg]]] = {
    "store": (("key", "value"), {
        "key": KEY, "value": (valid_values, bad_values), "namespace": NS,
        "metadata": (valid_metadata, bad_metadata), "ttl": (valid_ttls, bad_ttls),
        "if_version": (valid_versions, bad_versions),
        "overwrite": (valid_overwrites, bad_overwrites)}),
    "retrieve": (("key",), {"key": KEY, "namespace": NS}),
    "exists": (("key",), {"key": KEY, "namespace": NS}),
    "delete": (("key",), {"key": KEY, "namespace": NS}),
    "search": (("text",), {
        "text": (valid_query_texts, bad_query_texts), "namespace": NS,
        "limit": (valid_limits, bad_limits), "offset": (valid_offsets, bad_offsets),
        "filter": (valid_filters, bad_filters), "pattern": (valid_patterns, bad_patterns),
        "order_by": (valid_orders, bad_orders),
        "min_score": (valid_min_scores, bad_min_scores),
        "mode": (valid_modes, bad_modes), "ranking": (valid_rankings, bad_rankings)}),
    "count": (("text",), {
        "text": (valid_query_texts, bad_query_texts), "namespace": NS,
        "filter": (valid_filters, bad_filters), "pattern": (valid_patterns, bad_patterns)}),
    "list_keys": (("pattern",), {
        "pattern": (valid_patterns, bad_patterns), "namespace": NS,
        "limit": (page_limits, st.one_of(bad_limits, st.just(0))),
        "cursor": (valid_cursors, bad_cursors)}),
    "store_many": (("items",), {"items": ITEMS, "namespace": NS}),
    "retrieve_many": (("keys",), {"keys": KEY_LIST, "namespace": NS}),
    "delete_many": (("keys",), {"keys": KEY_LIST, "namespace": NS}),
    "update": (("key", "fn"), {
        "key": KEY, "fn": (valid_values.map(Returns), bad_values.map(Returns)),
        "namespace": NS, "metadata": (valid_metadata, bad_metadata),
        "ttl": (valid_ttls, bad_ttls)}),
    "clear": ((), {"namespace": NS, "confirm": (st.just(True),
                                                 st.sampled_from([False, "yes", 1, OMIT]))}),
    "export": ((), {"namespace": (st.one_of(st.none(), valid_namespaces), bad_namespaces),
                    "batch": (st.sampled_from([OMIT, 1, 2, 500]),
                              st.sampled_from([0, -1, 2.0, 1 << 40, "5"]))}),
}


@st.composite
def _call(draw: st.DrawFn, method: str, exclude: frozenset[str], made_up_cursors: bool
          ) -> Call:
    positional, arguments = SIGNATURES[method]
    names = list(arguments)
    n_hostile = draw(st.sampled_from([0, 0, 1, 1, 1, 2]))
    chosen = set(draw(st.permutations(names))[:n_hostile])
    drawn = {}
    for name in names:
        valid, bad = arguments[name]
        if name == "cursor" and not made_up_cursors:
            valid = st.sampled_from([OMIT, None])
        value = draw(bad if name in chosen else valid)
        if value is OMIT and name in positional:
            value = None
        drawn[name] = value
    args = tuple(drawn.pop(name) for name in positional)
    kwargs = {k: v for k, v in drawn.items() if v is not OMIT and k not in exclude}
    return Call(method, args, kwargs)


def calls(*, exclude: frozenset[str] = frozenset(), made_up_cursors: bool = True
          ) -> st.SearchStrategy[Call]:
    """Every public memory method with adversarial arguments (`exclude`: keyword
    arguments never to pass). A `list_keys` cursor is opaque: a local backend reads any
    str as the last key seen, a cluster refuses one it did not hand out; with
    `made_up_cursors=False` only hostile cursors (refused by both) or none are drawn."""
    return st.sampled_from(sorted(SIGNATURES)).flatmap(
        lambda m: _call(m, exclude, made_up_cursors))


BASELINE = [Call("store", ("k1", {"text": "keep me", "n": 1}),
                 {"namespace": "ns", "metadata": {"tags": ["t"], "labels": ["x", "y"]}}),
            Call("store", ("k2", [1, 2.5, None, b"\x00"]), {"metadata": {"n": 10}}),
            Call("store", ("k:3", "plain"), {"namespace": "ns", "ttl": 3600})]
"""Stored first in every example, so a hostile call always has something to break."""


# ---- canonical forms --------------------------------------------------------------------------

def canon(value: Any) -> Any:
    """A comparable form that tells 1 from 1.0 from True, and equals NaN to NaN."""
    kind = type(value)
    if kind is float:
        return ("f", "nan" if math.isnan(value) else repr(value))
    if kind in (bool, int):
        return (kind.__name__, value)
    if kind is list:
        return ("l", tuple(canon(v) for v in value))
    if kind is dict:
        return ("d", tuple(sorted((k, canon(v)) for k, v in value.items())))
    return (kind.__name__, value)


def record_form(rec: Record) -> tuple[Any, ...]:
    return (rec.namespace, rec.key, canon(rec.value), canon(rec.metadata), rec.version)


def normalise(method: str, result: Any) -> Any:
    """A call's answer in the comparable form the model produces."""
    if method in ("store", "update", "retrieve"):
        return None if result is None else record_form(result)
    if method == "store_many":
        return [(r.namespace, r.key, r.version) for r in result]
    if method == "search":
        return [(r.key, r.version) for r in result]
    if method == "list_keys":
        assert isinstance(result, Page)
        return (list(result.keys), result.cursor is not None)
    if method == "retrieve_many":
        return {k: record_form(r) for k, r in result.items()}
    if method == "export":
        return sorted((r.namespace, r.key, r.version) for r in result)
    return result


# ---- the model ------------------------------------------------------------------------------

@dataclass
class Entry:
    value: Any
    metadata: dict[str, Any]
    version: int


class Model:
    """What every target must hold and answer (see the module docstring)."""

    def __init__(self) -> None:
        self.records: dict[tuple[str, str], Entry] = {}

    def state(self) -> dict[tuple[str, str], tuple[Any, ...]]:
        return {(ns, key): (canon(e.value), canon(e.metadata), e.version)
                for (ns, key), e in self.records.items()}

    def _records(self, namespace: str) -> list[Record]:
        return [Record(key, e.value, ns, e.metadata, e.version)
                for (ns, key), e in sorted(self.records.items()) if ns == namespace]

    def _write(self, ns: str, key: str, value: Any, metadata: dict[str, Any], ttl: Any,
               expected: int | None) -> tuple[Any, ...]:
        current = self.records.get((ns, key))
        actual = 0 if current is None else current.version
        if expected is not None and expected != actual:
            raise VersionConflict(f"{key!r} is at {actual}, expected {expected}")
        entry = Entry(value, dict(metadata), actual + 1)
        if ttl is not None and ttl < SHORT_TTL:
            self.records.pop((ns, key), None)
        else:
            self.records[(ns, key)] = entry
        return (ns, key, canon(value), canon(entry.metadata), entry.version)

    @staticmethod
    def _expected(if_version: Any, overwrite: Any) -> int | None:
        if if_version is not None:
            return if_version
        return None if overwrite else 0

    def apply(self, call: Call) -> Any:
        """The answer `call` must give (normalised), raising what it must raise."""
        kw = dict(call.kwargs)
        method = call.method
        if method == "clear" and kw.get("confirm") is not True:  # checked before the rest
            raise ConfirmationRequired("confirm")
        ns = codec.check_namespace(kw.pop("namespace", ""))
        if method == "store":
            key, value = call.args
            return self._write(ns, key, value, kw.get("metadata") or {}, kw.get("ttl"),
                               self._expected(kw.get("if_version"), kw.get("overwrite", True)))
        if method == "store_many":
            return self._store_many(ns, call.args[0])
        if method == "update":
            key, fn = call.args
            current = self.records.get((ns, key))
            metadata = kw.get("metadata")
            if metadata is None:
                metadata = {} if current is None else current.metadata
            return self._write(ns, key, fn(None), metadata, kw.get("ttl"), None)
        if method in ("retrieve", "exists"):
            entry = self.records.get((ns, call.args[0]))
            if method == "exists":
                return entry is not None
            return None if entry is None else (ns, call.args[0], canon(entry.value),
                                                canon(entry.metadata), entry.version)
        if method == "delete":
            return self.records.pop((ns, call.args[0]), None) is not None
        if method == "retrieve_many":
            out = {}
            for key in call.args[0]:
                entry = self.records.get((ns, key))
                if entry is not None:
                    out[key] = (ns, key, canon(entry.value), canon(entry.metadata), entry.version)
            return out
        if method == "delete_many":
            return sum(self.records.pop((ns, k), None) is not None
                       for k in dict.fromkeys(call.args[0]))
        if method == "clear":
            gone = [k for k in self.records if k[0] == ns]
            for k in gone:
                del self.records[k]
            return len(gone)
        if method == "list_keys":
            pattern, limit, cursor = call.args[0], kw.get("limit", 100), kw.get("cursor")
            found = sorted(key for (n, key) in self.records if n == ns
                           and engine.match_pattern(key, pattern)
                           and (cursor is None or key > cursor))
            return (found[:limit], len(found) > limit)
        if method in ("search", "count"):
            return self._query(call, ns)
        if method == "export":
            wanted = call.kwargs.get("namespace")
            return sorted((n, k, e.version) for (n, k), e in self.records.items()
                          if wanted is None or n == codec.check_namespace(wanted))
        raise AssertionError(f"no model for {method}")

    def _store_many(self, ns: str, items: list[Any]) -> list[tuple[Any, ...]]:
        """Items apply in order; one that loses its compare-and-set is skipped and the
        batch raises VersionConflict after the others are written (the documented rule)."""
        out, conflict = [], None
        for item in items:
            key, value = item[0], item[1]
            opts = item[2] if len(item) == 3 else {}
            try:
                ns_, k, _, _, version = self._write(
                    ns, key, value, opts.get("metadata") or {}, opts.get("ttl"),
                    self._expected(opts.get("if_version"), opts.get("overwrite", True)))
                out.append((ns_, k, version))
            except VersionConflict as exc:
                conflict = conflict or exc
        if conflict is not None:
            raise conflict
        return out

    def _query(self, call: Call, ns: str) -> Any:
        kw = {k: v for k, v in call.kwargs.items() if k != "namespace"}
        if call.method == "count":
            q = Query.of(call.args[0], filter=kw.get("filter"), pattern=kw.get("pattern"))
            q = Query(text=q.text, pattern=q.pattern, filter=q.filter)
        else:
            op = SearchOp.make(call.args[0], **kw)
            if op.mode is not None or op.ranking is not None:
                raise UnsupportedQuery("search modes and ranking need a semantic source")
            q = op.query
        if q.min_score is not None or (q.order_by or "").lstrip("-") == "score":
            raise UnsupportedQuery("no similarity score")
        if call.method == "count":
            engine.check_filter(q.filter)
            return sum(1 for r in self._records(ns) if engine.matches(r, q))
        return [(r.key, r.version) for r in engine.run(self._records(ns), q)]


# ---- the runner -----------------------------------------------------------------------------

@dataclass
class Target:
    """One place a call goes: a surface and one of its sources."""

    label: str
    surface: Any
    source: str
    semantic: bool = False       # text queries are answered by similarity
    persistent: bool = True      # keeps its records across a restart


def invoke(target: Target, call: Call) -> Any:
    """Run `call` on `target`: its answer, or the MemclusterError it raised (anything
    else propagates and fails the test)."""
    try:
        result = getattr(target.surface, call.method)(*call.args, source=target.source,
                                                      **call.kwargs)
        if call.method == "export":
            result = list(result)
        return result
    except MemclusterError as exc:
        return exc


def _is_text_query(call: Call) -> bool:
    return call.method in ("search", "count") and call.args[0] is not None


def check_call(targets: list[Target], model: Model, call: Call, where: str) -> None:
    """Apply `call` to every target and to the model; assert the checks of the module
    docstring (1-3). `where` names the example (seed) in failure messages."""
    outcomes = {t.label: invoke(t, call) for t in targets}
    invalid = {label: type(o).__name__ for label, o in outcomes.items()
               if isinstance(o, INVALID)}
    if invalid:
        assert len(invalid) == len(targets), (
            f"{call!r}: only {sorted(invalid)} refused it as invalid: {outcomes} {where}")
        return
    try:
        expected, expected_error = model.apply(call), None
    except MemclusterError as exc:
        expected, expected_error = None, exc
    for target in targets:
        got = outcomes[target.label]
        if target.semantic and _is_text_query(call):
            continue  # similarity, not substring: answered by another rule
        if expected_error is not None:
            assert type(got) is type(expected_error), (
                f"{call!r} on {target.label}: expected {type(expected_error).__name__}, got "
                f"{got!r} {where}")
            continue
        assert not isinstance(got, MemclusterError), (
            f"{call!r} on {target.label}: raised {got!r}, expected {expected!r} {where}")
        assert normalise(call.method, got) == expected, (
            f"{call!r} on {target.label}: answered {normalise(call.method, got)!r}, "
            f"expected {expected!r} {where}")


def check_state(targets: Iterable[Target], model: Model, where: str) -> None:
    """Each target holds exactly the model's records (every namespace)."""
    want = model.state()
    for target in targets:
        held = {}
        for rec in target.surface.export(source=target.source):
            held[(rec.namespace, rec.key)] = (canon(rec.value), canon(rec.metadata),
                                              rec.version)
        assert held == want, (f"{target.label} holds {held}, the model {want} {where}")


def run_example(targets: list[Target], calls_: list[Call], where: str,
                reopen: Callable[[], list[Target]] | None = None) -> list[Target]:
    """Clear every target, store the baseline, run `calls_` with every check, then (with
    `reopen`) restart and check the records again. Returns the targets in use at the end."""
    for target in targets:
        target.surface.clear(source=target.source, all_namespaces=True, confirm=True)
    model = Model()
    for call in BASELINE:
        check_call(targets, model, call, where)
    for i, call in enumerate(calls_):
        check_call(targets, model, call, f"{where} at call {i}")
        check_state(targets, model, f"{where} after call {i}: {call!r}")
    if reopen is not None:
        targets = reopen()
        check_state([t for t in targets if t.persistent], model,
                    f"{where} after a restart")
    return targets
