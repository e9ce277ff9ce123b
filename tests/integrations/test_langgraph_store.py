"""MemclusterStore against LangGraph's documented store behaviour.

The scenarios where the two should agree run against LangGraph's own `InMemoryStore` and
against `MemclusterStore`, so the reference is the real thing, not our reading of it.
What only memcluster does (TTL in minutes with refresh, semantic search on a vector
source, interplay with the memory tools, push-down of filters) is tested on its own.
"""

from __future__ import annotations

import asyncio
import os
import random

import pytest
from langgraph.store.base import GetOp, InvalidNamespaceError, ListNamespacesOp, PutOp, SearchOp
from langgraph.store.memory import InMemoryStore

import memcluster as mc
from memcluster.errors import InvalidValue, UnsupportedQuery
from memcluster.integrations.langgraph import (
    MemclusterStore,
    decode_namespace,
    encode_namespace,
    split_filter,
)
from memcluster.testing import FakeClock


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def manager(clock):
    mem = mc.MemoryManager([mc.memory_source("cache", "memory", default=True)], clock=clock)
    yield mem
    mem.close()


@pytest.fixture(params=["inmemory", "memcluster"])
def store(request, manager):
    """The reference store and ours; tests using this must hold for both."""
    return InMemoryStore() if request.param == "inmemory" else MemclusterStore(manager)


def keys(items) -> set[tuple[tuple[str, ...], str]]:
    return {(tuple(i.namespace), i.key) for i in items}


# ---- behaviour shared with InMemoryStore -----------------------------------------------------


def test_put_get_overwrite_and_delete(store):
    ns = ("users", "42")
    assert store.get(ns, "prefs") is None
    store.put(ns, "prefs", {"theme": "dark", "size": 3})
    item = store.get(ns, "prefs")
    assert (item.namespace, item.key, item.value) == (ns, "prefs", {"theme": "dark", "size": 3})
    assert item.created_at.tzinfo is not None and item.updated_at >= item.created_at
    store.put(ns, "prefs", {"theme": "light"})
    assert store.get(ns, "prefs").value == {"theme": "light"}
    store.delete(ns, "prefs")
    assert store.get(ns, "prefs") is None
    store.delete(ns, "prefs")  # deleting what is gone is not an error
    store.put(ns, "other", {"a": 1})
    store.batch([PutOp(ns, "other", None)])  # a put of None deletes
    assert store.get(ns, "other") is None


def test_search_covers_the_prefix_only(store):
    store.put(("docs", "a"), "1", {"text": "alpha"})
    store.put(("docs", "b"), "2", {"text": "beta"})
    store.put(("docs",), "3", {"text": "gamma"})
    store.put(("other",), "4", {"text": "delta"})
    assert keys(store.search(("docs",))) == {(("docs", "a"), "1"), (("docs", "b"), "2"),
                                             (("docs",), "3")}
    assert keys(store.search(("docs", "a"))) == {(("docs", "a"), "1")}
    assert len(store.search(())) == 4
    assert store.search(("nothing",)) == []


@pytest.mark.parametrize("flt, expected", [
    ({"kind": "report"}, {"r1", "r2"}),
    ({"kind": {"$eq": "memo"}}, {"m1"}),
    ({"kind": {"$ne": "report"}}, {"m1", "x"}),
    ({"score": {"$gt": 2}}, {"r2", "m1"}),
    ({"score": {"$gte": 2}}, {"r1", "r2", "m1"}),
    ({"score": {"$lt": 3}}, {"r1", "x"}),
    ({"score": {"$lte": 3}, "kind": "report"}, {"r1"}),
    ({"score": {"$gt": 1, "$lt": 4}}, {"r1", "r2"}),
    ({"author": {"name": "ada"}}, {"r1", "m1"}),           # nested partial match
    ({"author": {"name": "ada", "team": "x"}}, {"m1"}),
    ({"tags": ["a", "b"]}, {"r2"}),                         # list equality
    ({"kind": "report", "author": {"name": "bob"}}, {"r2"}),
    ({"missing": {"$ne": 1}}, {"r1", "r2", "m1", "x"}),
])
def test_filters_match_the_value_like_inmemorystore(store, flt, expected):
    ns = ("docs",)
    store.put(ns, "r1", {"kind": "report", "score": 2, "author": {"name": "ada"}})
    store.put(ns, "r2", {"kind": "report", "score": 3.5, "author": {"name": "bob"},
                         "tags": ["a", "b"]})
    store.put(ns, "m1", {"kind": "memo", "score": 4, "author": {"name": "ada", "team": "x"},
                         "tags": ["b", "a"]})
    store.put(ns, "x", {"other": True, "score": 0})
    assert {i.key for i in store.search(ns, filter=flt, limit=50)} == expected


def test_limit_and_offset_page_through_every_item_once(store):
    for n in range(7):
        store.put(("p", str(n % 3)), f"k{n}", {"n": n, "even": n % 2 == 0})
    for flt in (None, {"even": True}):
        pages = [store.search(("p",), filter=flt, limit=2, offset=o) for o in range(0, 10, 2)]
        seen = [(tuple(i.namespace), i.key) for page in pages for i in page]
        assert len(seen) == len(set(seen))
        assert set(seen) == keys(store.search(("p",), filter=flt, limit=100))
        assert len(seen) == (7 if flt is None else 4)
        assert all(len(p) <= 2 for p in pages)


def test_list_namespaces_prefix_suffix_depth_and_paging(store):
    # The example from BaseStore.list_namespaces' docstring.
    for ns in [("a", "b", "c"), ("a", "b", "d", "e"), ("a", "b", "d", "i"), ("a", "b", "f"),
               ("a", "c", "f")]:
        store.put(ns, "k", {"v": 1})
    assert store.list_namespaces(prefix=("a", "b"), max_depth=3) == [
        ("a", "b", "c"), ("a", "b", "d"), ("a", "b", "f")]
    assert store.list_namespaces(suffix=("f",)) == [("a", "b", "f"), ("a", "c", "f")]
    assert store.list_namespaces(prefix=("a", "*", "f")) == [("a", "b", "f"), ("a", "c", "f")]
    assert store.list_namespaces(prefix=("a",), suffix=("d", "*")) == [
        ("a", "b", "d", "e"), ("a", "b", "d", "i")]
    assert store.list_namespaces(max_depth=1) == [("a",)]
    everything = store.list_namespaces()
    assert len(everything) == 5 and everything == sorted(everything)
    assert store.list_namespaces(limit=2, offset=1) == everything[1:3]


def test_labels_with_slashes_and_percent_stay_apart(store):
    store.put(("a/b",), "k", {"v": "slash"})
    store.put(("a", "b"), "k", {"v": "two labels"})
    store.put(("100%",), "k", {"v": "percent"})
    assert store.get(("a/b",), "k").value == {"v": "slash"}
    assert store.get(("a", "b"), "k").value == {"v": "two labels"}
    assert store.list_namespaces() == sorted([("a/b",), ("a", "b"), ("100%",)])
    assert keys(store.search(("a",))) == {(("a", "b"), "k")}


@pytest.mark.parametrize("bad", [(), ("",), ("a.b",), ("langgraph", "x"), ("ok", 3)])
def test_invalid_namespaces_are_rejected(store, bad):
    with pytest.raises(InvalidNamespaceError):
        store.put(bad, "k", {"v": 1})


def test_batch_reads_see_the_state_before_its_writes(store):
    ns = ("b",)
    store.put(ns, "k", {"v": 0})
    results = store.batch([
        PutOp(ns, "k", {"v": 1}),
        GetOp(ns, "k"),
        PutOp(ns, "k", {"v": 2}),
        SearchOp(ns),
        ListNamespacesOp(),
        PutOp(("new",), "n", {"v": 3}),
    ])
    assert results[0] is None and results[2] is None and results[5] is None
    assert results[1].value == {"v": 0}
    assert [i.value for i in results[3]] == [{"v": 0}]
    assert results[4] == [("b",)]
    assert store.get(ns, "k").value == {"v": 2}  # the last put wins
    assert store.get(("new",), "n").value == {"v": 3}


def test_async_api(store):
    async def scenario():
        await store.aput(("as", "x"), "k", {"v": 1, "text": "hello"})
        item = await store.aget(("as", "x"), "k")
        found = await store.asearch(("as",), filter={"v": 1})
        spaces = await store.alist_namespaces(prefix=("as",))
        await store.adelete(("as", "x"), "k")
        return item, found, spaces, await store.aget(("as", "x"), "k")

    item, found, spaces, gone = asyncio.run(scenario())
    assert item.value == {"v": 1, "text": "hello"}
    assert [i.key for i in found] == ["k"]
    assert spaces == [("as", "x")]
    assert gone is None


def test_random_filters_agree_with_inmemorystore(manager):
    seed = int(os.environ.get("MEMCLUSTER_TEST_SEED", "1"))
    print(f"seed {seed}")
    rng = random.Random(seed)
    ours, ref = MemclusterStore(manager), InMemoryStore()
    for n in range(40):
        value = {"a": rng.randint(0, 5), "b": rng.choice(["x", "y", "z"]),
                 "c": {"d": rng.randint(0, 2)}, "f": rng.choice([1.5, 2.5, 3])}
        if rng.random() < 0.2:
            del value["a"]
        ns = ("r", rng.choice(["p", "q"]))
        for s in (ours, ref):
            s.put(ns, f"k{n}", value)
    ops = ["$eq", "$ne", "$gt", "$gte", "$lt", "$lte"]
    for _ in range(60):
        flt = {}
        if rng.random() < 0.7:
            flt["a"] = {rng.choice(ops): rng.randint(0, 5)}
        if rng.random() < 0.5:
            flt["b"] = rng.choice(["x", "y", {"$ne": "z"}])
        if rng.random() < 0.3:
            flt["c"] = {"d": rng.randint(0, 2)}
        if rng.random() < 0.3:
            flt["f"] = {rng.choice(ops): rng.choice([1.5, 2.5, 3])}
        if "a" in flt and next(iter(flt["a"])) in ("$gt", "$gte", "$lt", "$lte"):
            # InMemoryStore compares a missing field with float(None) and raises;
            # restrict the reference to items that have the field.
            flt_ref_ok = all("a" in i.value for i in ref.search(("r",), limit=100))
            if not flt_ref_ok:
                continue
        assert keys(ours.search(("r",), filter=flt, limit=100)) == \
            keys(ref.search(("r",), filter=flt, limit=100)), (seed, flt)


# ---- what memcluster adds --------------------------------------------------------------------


def test_namespace_encoding_is_reversible_and_readable():
    for ns in [("a",), ("a", "b"), ("a/b",), ("%2F",), ("x%", "/", "y")]:
        assert decode_namespace(encode_namespace(ns)) == ns
    assert encode_namespace(("users", "a/b")) == "langgraph/users/a%2Fb"
    assert encode_namespace(("a/b",)) != encode_namespace(("a", "b"))
    assert decode_namespace("agent-7") is None            # not LangGraph's
    assert decode_namespace("langgraph/a%41") is None      # not produced by the encoder
    assert decode_namespace("langgraph/a//b") is None


def test_items_are_visible_to_the_memory_tools(manager):
    store = MemclusterStore(manager)
    store.put(("users", "42"), "prefs", {"theme": "dark", "level": 3, "deep": {"x": 1}})
    ns = "langgraph/users/42"
    got = manager.call_tool("memory_retrieve", {"key": "prefs"}, namespace=ns)
    assert got["record"]["value"] == {"theme": "dark", "level": 3, "deep": {"x": 1}}
    # top-level scalar fields are mirrored into metadata, so memcluster filters see them
    found = manager.call_tool("memory_search", {"filter": {"level": {"$gte": 3}}}, namespace=ns)
    assert [r["key"] for r in found["results"]] == ["prefs"]
    # and a memory written by the tools in that namespace shows up in LangGraph
    manager.call_tool("memory_store", {"key": "note", "value": {"t": "hi"}}, namespace=ns)
    assert store.get(("users", "42"), "note").value == {"t": "hi"}
    # namespaces outside the store's root are not LangGraph's and are not listed
    manager.store("x", 1, namespace="agent-7")
    assert store.list_namespaces() == [("users", "42")]


def test_list_namespaces_stays_exact_after_deletes_and_other_writers(manager):
    # InMemoryStore keeps a namespace listed after its last item is deleted; a database
    # store does not, and neither do we: the listing reads the live records.
    store = MemclusterStore(manager)
    store.put(("a", "x"), "k1", {"v": 1})
    store.put(("a", "x"), "k2", {"v": 2})
    store.put(("a", "y"), "k", {"v": 3})
    store.delete(("a", "x"), "k1")
    assert store.list_namespaces() == [("a", "x"), ("a", "y")]
    store.delete(("a", "x"), "k2")
    assert store.list_namespaces() == [("a", "y")]
    manager.delete("k", namespace="langgraph/a/y")       # deleted behind the store's back
    manager.store("t", {"v": 4}, namespace="langgraph/b")  # written by another client
    assert store.list_namespaces() == [("b",)]


def test_split_filter_pushes_only_exact_conditions():
    pushed, residual = split_filter({"a": 1, "b": {"$gt": 2}, "c": {"d": 1}, "e": None,
                                     "f.g": 1, "h": [1], "langgraph": 1, "i": {"$ne": None}})
    assert pushed == {"a": {"$eq": 1}, "b": {"$gt": 2}}
    assert set(residual) == {"c", "e", "f.g", "h", "langgraph", "i"}


def test_ttl_in_minutes_refreshes_on_read(manager, clock):
    store = MemclusterStore(manager)
    ns = ("s",)
    store.put(ns, "k", {"v": 1}, ttl=1)                   # one minute
    created = store.get(ns, "k", refresh_ttl=False)
    clock.advance(50)
    assert store.get(ns, "k") is not None                 # read at 50 s: refreshed
    clock.advance(50)                                     # 100 s after the put
    item = store.get(ns, "k", refresh_ttl=False)
    assert item is not None and item.updated_at == created.updated_at
    clock.advance(20)                                     # 70 s after the last refresh
    assert store.get(ns, "k") is None
    assert store.search(ns) == [] and store.list_namespaces() == []


def test_search_refreshes_ttl_and_default_ttl_applies(manager, clock):
    store = MemclusterStore(manager, ttl={"default_ttl": 2, "refresh_on_read": False})
    store.put(("t",), "k", {"v": 1})                      # default: 2 minutes
    clock.advance(100)
    assert [i.key for i in store.search(("t",))] == ["k"]  # no refresh by default here
    clock.advance(30)
    assert store.get(("t",), "k") is None
    store.put(("t",), "k2", {"v": 2})
    clock.advance(100)
    store.search(("t",), refresh_ttl=True)
    clock.advance(100)
    assert store.get(("t",), "k2") is not None
    store.put(("t",), "forever", {"v": 3}, ttl=None)
    clock.advance(10_000)
    assert store.get(("t",), "forever") is not None


def test_a_refresh_never_overwrites_a_concurrent_write(manager):
    store = MemclusterStore(manager)
    store.put(("c",), "k", {"v": 1}, ttl=5)
    # between the read and its refresh, another writer changes the item
    original = manager.retrieve
    def racing_retrieve_many(*args, **kwargs):
        found = manager.__class__.retrieve_many(manager, *args, **kwargs)
        manager.store("k", {"v": 2}, namespace="langgraph/c")
        return found
    manager.retrieve_many = racing_retrieve_many
    try:
        assert store.get(("c",), "k").value == {"v": 1}
    finally:
        del manager.retrieve_many
    assert original("k", namespace="langgraph/c").value == {"v": 2}


def test_query_without_an_index_is_ignored_unless_substring_is_opted_in(manager, clock):
    # LangGraph's stores ignore `query` when they have no index (PostgresStore's
    # test_store_ttl searches {"foo": "bar"} with query="foo" and expects the item).
    store = MemclusterStore(manager)
    store.put(("d",), "1", {"text": "The cat sat on the mat"})
    clock.advance(1)
    store.put(("d",), "2", {"text": "Dogs bark"})
    found = store.search(("d",), query="CAT")
    assert [i.key for i in found] == ["2", "1"]           # newest first, no score
    assert all(i.score is None for i in found)
    substring = MemclusterStore(manager, substring_query=True)
    found = substring.search(("d",), query="CAT")
    assert [i.key for i in found] == ["1"] and found[0].score is None
    assert [i.key for i in substring.search(("d",), query="")] == ["2", "1"]  # "" = none


def test_semantic_search_on_a_vector_source(clock):
    mem = mc.MemoryManager([mc.memory_source("vectors", "vector", default=True,
                                             opts={"embedder": "hashing"})], clock=clock)
    store = MemclusterStore(mem, source="vectors")
    docs = {"py": "python programming tutorial for beginners",
            "ts": "typescript guide for web developers",
            "bake": "how to bake sourdough bread at home"}
    for key, text in docs.items():
        store.put(("docs", "en"), key, {"text": text, "lang": "en"})
    store.put(("docs", "fr"), "pain", {"text": "bake bread recipe", "lang": "fr"})
    found = store.search(("docs",), query="python programming", limit=3)
    assert found[0].key == "py"
    assert all(i.score is not None for i in found)
    assert [i.score for i in found] == sorted((i.score for i in found), reverse=True)
    bread = store.search(("docs",), query="bread baking", filter={"lang": "fr"})
    assert [i.key for i in bread] == ["pain"]
    mem.close()


def test_bad_input_fails_before_anything_is_written(manager):
    store = MemclusterStore(manager)
    with pytest.raises(InvalidValue):
        store.batch([PutOp(("ok",), "a", {"v": 1}), PutOp(("ok",), "b", {"v": {1, 2}})])
    assert store.get(("ok",), "a") is None
    with pytest.raises(UnsupportedQuery):
        store.search(("ok",), filter={"v": {"$regex": "x"}})
    with pytest.raises(InvalidValue):
        store.put(("ok",), "a", {"v": 1}, ttl=-1)
    with pytest.raises(InvalidValue):
        MemclusterStore("not a memory")  # type: ignore[arg-type]
