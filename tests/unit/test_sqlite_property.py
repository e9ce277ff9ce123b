"""Property: the SQLite backend answers every query exactly as the memory backend does.

The memory backend runs the pure engine (`memcluster.query`) over Python objects; the
SQLite backend translates what it can into SQL (GLOB, instr, json_extract) and falls back
to the engine for the rest. Random records (keys with glob characters and non-ASCII, metadata
with ints, floats incl. NaN/inf, strs, bools, None, lists, nested dicts, missing fields)
and random queries must give the same keys in the same order, and the same counts.
Seeded from MEMCLUSTER_TEST_SEED (printed in the pytest header) for replay.
"""

from __future__ import annotations

import os
from typing import Any

from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from memcluster.backends.registry import create_backend
from memcluster.model import Query
from memcluster.ops import CountOp, ListKeysOp, SearchOp, StoreOp
from memcluster.testing.clock import FakeClock

SEED = int(os.environ.get("MEMCLUSTER_TEST_SEED", "0"))

plain_keys = st.text("ab:-*?[]!^\\é", min_size=1, max_size=5)
odd_keys = st.text("ab\x7f\U0001f600", min_size=2, max_size=3)  # keys hold no NUL
# a small domain, so that filters often hit: 1 vs 1.0 vs True, 9 vs 10, "a" vs "ab"
plain_scalars = st.one_of(
    st.integers(0, 2),
    st.sampled_from([1.0, 0.5, 9, 10, -0.0, 1 << 62]),
    st.sampled_from(["a", "ab", "B", ""]),
    st.booleans(),
    st.none(),
)
# what JSON or SQL cannot carry as is (rows holding them are answered by the engine)
odd_scalars = st.one_of(
    st.integers(min_value=-(1 << 63), max_value=(1 << 64) - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text("abAB\x00é", max_size=3),
    st.binary(max_size=2),
    st.sampled_from([float("inf"), float("-inf"), float("nan")]),
)
# stored dicts that look like the JSON tags (as filter arguments they would be operators)
odd_meta = st.one_of(odd_scalars, st.sampled_from([{"$bytes": "a"}, {"$dict": 1}]))


def _metadata(scalars: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    meta_values = st.one_of(scalars, st.lists(scalars, max_size=3),
                            st.fixed_dictionaries({}, optional={"x": scalars, "y": scalars}))
    return st.dictionaries(st.sampled_from(["a", "n", "tags"]), meta_values, max_size=3)


values = st.one_of(st.text("abAB é", max_size=6), st.integers(-5, 50),
                   st.dictionaries(st.sampled_from(["t", "u"]), st.text("abAB", max_size=4),
                                   max_size=2))


@st.composite
def writes(draw: st.DrawFn) -> list[tuple[str, Any, dict[str, Any], str, float]]:
    """(key, value, metadata, namespace, clock tick before the write); half of the examples
    also hold rows SQL cannot judge exactly, so both answering paths get exercised."""
    odd = draw(st.booleans())
    keys = st.one_of(plain_keys, odd_keys) if odd else plain_keys
    scalars = st.one_of(plain_scalars, odd_meta, odd_meta) if odd else plain_scalars
    return draw(st.lists(st.tuples(keys, values, _metadata(scalars), st.sampled_from(["", "ns"]),
                                   st.sampled_from([0.0, 0.0, 1.0])), min_size=2, max_size=14))


arg_scalars = st.one_of(plain_scalars, plain_scalars, plain_scalars, odd_scalars)
fields = st.sampled_from(["a", "n", "n.x", "tags", "b", "a.$bytes"])
GLOB_TOKENS = ["a", "b", ":", "-", "!", "^", "*", "?", "[ab]", "[!a]", "[a-b]", "[^a]", "[",
               "]", "[]a]", "[!]", "[!]a]", "[b-a]", "[-a]", "[a-]", "[*]", "[?]", "[[]", "\\"]
patterns = st.one_of(st.none(), st.none(),
                   st.lists(st.sampled_from(GLOB_TOKENS), max_size=4).map("".join))
filter_args = st.one_of(arg_scalars, arg_scalars, arg_scalars, st.lists(arg_scalars, max_size=2))
conditions = st.one_of(
    filter_args,
    st.dictionaries(st.sampled_from(["$eq", "$ne", "$contains"]), filter_args,
                    min_size=1, max_size=2),
    st.dictionaries(st.sampled_from(["$gt", "$gte", "$lt", "$lte"]),
                    st.one_of(st.integers(0, 10), st.floats(allow_nan=False),
                              st.sampled_from(["a", "ab", "B", ""])), min_size=1, max_size=2),
    st.dictionaries(st.sampled_from(["$in", "$nin"]), st.lists(arg_scalars, max_size=3),
                    min_size=1, max_size=1),
    st.builds(lambda b: {"$exists": b}, st.booleans()),
)
leaf_filters = st.dictionaries(fields, conditions, min_size=1, max_size=2)
filters = st.one_of(st.none(), st.dictionaries(fields, conditions, min_size=1, max_size=1),
                    st.recursive(
    leaf_filters,
    lambda inner: st.one_of(
        st.builds(lambda subs: {"$and": subs}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda subs: {"$or": subs}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda sub: {"$not": sub}, inner)),
    max_leaves=5))
queries = st.builds(
    Query,
    text=st.one_of(st.none(), st.none(), st.text("abAB é5", max_size=2)),
    pattern=patterns,
    filter=filters,
    limit=st.integers(0, 8),
    offset=st.integers(0, 4),
    order_by=st.sampled_from([None, "key", "-key", "version", "-version", "created_at",
                              "-updated_at"]),
)


def _load(name: str, opts: dict[str, Any], clock: FakeClock, rows: list[Any]) -> Any:
    backend = create_backend(name, opts, prefix="prop", clock=clock)
    for key, value, meta, namespace, tick in rows:
        clock.advance(tick)
        backend.store(StoreOp.make(key, value, namespace=namespace, metadata=meta))
    return backend


def _all_keys(backend: Any, namespace: str, pattern: str | None) -> list[list[str]]:
    """Every page of keys, 3 at a time (a final empty page is allowed, and dropped)."""
    pages, cursor = [], None
    while True:
        page = backend.list_keys(ListKeysOp(namespace, pattern, 3, cursor))
        if page.keys:
            pages.append(page.keys)
        if page.cursor is None:
            return pages
        cursor = page.cursor


@seed(SEED)
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=writes(), qs=st.lists(queries, min_size=1, max_size=4),
       namespace=st.sampled_from(["", "ns"]))
def test_sqlite_answers_like_the_memory_backend(rows, qs, namespace) -> None:
    memory = _load("memory", {"cleanup_interval": 0}, FakeClock(), rows)
    sqlite = _load("sqlite", {"path": ":memory:"}, FakeClock(), rows)
    try:
        for q in qs:
            want = [(r.key, r.version) for r in memory.search(SearchOp(q, namespace))]
            got = [(r.key, r.version) for r in sqlite.search(SearchOp(q, namespace))]
            assert got == want, f"search {q!r} (MEMCLUSTER_TEST_SEED={SEED})"
            assert sqlite.count(CountOp(q, namespace)) == memory.count(CountOp(q, namespace)), \
                f"count {q!r} (MEMCLUSTER_TEST_SEED={SEED})"
            assert _all_keys(sqlite, namespace, q.pattern) == _all_keys(
                memory, namespace, q.pattern), \
                f"list_keys pattern={q.pattern!r} (MEMCLUSTER_TEST_SEED={SEED})"
    finally:
        memory.close()
        sqlite.close()
