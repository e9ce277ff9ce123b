"""MemclusterStore keeps parity with LangGraph's own store test suites.

LangGraph's suites for InMemoryStore (libs/checkpoint/tests/test_store.py), SqliteStore
(libs/checkpoint-sqlite/tests/test_store.py, test_async_store.py, test_ttl.py),
PostgresStore (libs/checkpoint-postgres/tests/test_store.py, test_async_store.py) and the
graph tests that take a store (libs/langgraph/tests/test_pregel*.py) were run against
MemclusterStore out of tree. These tests are ours: each covers the behaviour of the
upstream test(s) it names, over memory, sqlite and vector sources, so CI keeps the parity.
Time is a fake clock wherever the upstream tests sleep.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import operator
import threading
import uuid
from collections import Counter
from typing import Annotated, Any

import pytest
from langchain_core.embeddings import Embeddings
from langgraph.store.base import BaseStore, PutOp, SearchOp

import memcluster as mc
from memcluster.errors import ConfigError, InvalidValue
from memcluster.integrations.langgraph import AsyncMemclusterStore, MemclusterStore
from memcluster.testing import FakeClock
from tests.support import wait_until

SOURCES = ["memory", "sqlite", "vector"]


class LetterEmbeddings(Embeddings):
    """Deterministic: a text's character frequencies, one dimension per ASCII character
    and 128 hashed ones for the rest. Similar spellings score high, disjoint ones 0."""

    dims = 256

    def _one(self, text: str) -> list[float]:
        vec = [0.0] * self.dims
        for char, n in Counter(text).items():
            code = ord(char)
            slot = code if code < 128 else 128 + hashlib.blake2b(
                char.encode(), digest_size=2).digest()[0] % 128
            vec[slot] += n
        norm = math.sqrt(sum(x * x for x in vec)) or 1.0
        return [x / norm for x in vec]

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self._one(t) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self._one(text)


EMBED = LetterEmbeddings()


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture(params=SOURCES)
def memory(request, tmp_path, clock):
    opts = {"memory": {}, "sqlite": {"path": str(tmp_path / "lg.db")},
            "vector": {"embedder": "hashing"}}[request.param]
    with mc.MemoryManager([mc.memory_source("lg", request.param, default=True, opts=opts)],
                          clock=clock) as mem:
        yield mem


def indexed(memory, clock, fields=None, **kw) -> MemclusterStore:
    index: dict[str, Any] = {"dims": EMBED.dims, "embed": EMBED}
    if fields is not None:
        index["fields"] = fields
    return MemclusterStore(memory, index=index, clock=clock, **kw)


def keys(items) -> list[str]:
    return [i.key for i in items]


# ---- the index config ------------------------------------------------------------------------


def test_index_config_is_kept_as_given(memory, clock):
    """Mirrors checkpoint test_store.py::test_vector_store_initialization and
    checkpoint-sqlite test_store.py::test_vector_store_initialization."""
    store = indexed(memory, clock)
    assert store.index_config["dims"] == EMBED.dims and store.index_config["embed"] is EMBED
    assert store.embeddings is EMBED and store.index_config.get("text_fields") is None
    sqlite_style = MemclusterStore(memory, index={"dims": EMBED.dims, "embed": EMBED,
                                                  "text_fields": ["content", "title"]})
    assert sqlite_style.index_config["text_fields"] == ["content", "title"]
    plain = MemclusterStore(memory)
    assert plain.index_config is None and plain.embeddings is None
    for bad in ({"embed": EMBED}, {"dims": 0, "embed": EMBED}, {"dims": 4},
                {"dims": 4, "embed": EMBED, "fields": ["a"], "text_fields": ["b"]},
                {"dims": 4, "embed": EMBED, "distance_type": "hamming"},
                {"dims": 4, "embed": EMBED, "fields": [1]}, ["dims"]):
        with pytest.raises(ConfigError):
            MemclusterStore(memory, index=bad)


def test_puts_are_embedded_and_a_query_ranks_by_meaning(memory, clock):
    """Mirrors test_vector_insert_with_auto_embedding (InMemoryStore, SqliteStore,
    PostgresStore; sync and async)."""
    store = indexed(memory, clock)
    docs = {"doc1": {"text": "short text"}, "doc2": {"text": "longer text document"},
            "doc3": {"text": "longest text document here"},
            "doc4": {"description": "text in description field"},
            "doc5": {"content": "text in content field"}}

    async def put_all() -> None:
        await asyncio.gather(*(store.aput(("test",), k, v) for k, v in docs.items()))

    asyncio.run(put_all())
    found = store.search(("test",), query="longer text document", limit=5)
    assert set(keys(found)[:2]) == {"doc2", "doc3"}     # the whole value ("$") is embedded
    scores = [i.score for i in found]
    assert all(s is not None for s in scores) and scores == sorted(scores, reverse=True)


def test_an_overwrite_re_embeds_and_index_false_is_never_scored(memory, clock):
    """Mirrors test_vector_update_with_embedding (all three suites, sync and async)."""
    store = indexed(memory, clock)
    store.put(("test",), "doc1", {"text": "zany zebra Xerxes"})
    store.put(("test",), "doc2", {"text": "something about dogs"})
    store.put(("test",), "doc3", {"text": "text about birds"})
    first = store.search(("test",), query="Zany Xerxes")
    assert first[0].key == "doc1"
    store.put(("test",), "doc1", {"text": "new text about dogs"})
    after = {i.key: i.score for i in store.search(("test",), query="Zany Xerxes")}
    assert after["doc1"] < first[0].score
    now = {i.key: i.score for i in store.search(("test",), query="new text about dogs")}
    assert now["doc1"] > after["doc1"]
    store.put(("test",), "doc4", {"text": "new text about dogs"}, index=False)
    top = store.search(("test",), query="new text about dogs", limit=3)
    assert "doc4" not in keys(top)
    assert store.get(("test",), "doc4").value == {"text": "new text about dogs"}


def test_filters_narrow_a_scored_search(memory, clock):
    """Mirrors test_vector_search_with_filters (all three suites) and InMemoryStore's
    test_async_batched_vector_search_concurrent."""
    store = indexed(memory, clock, fields=["text"])
    for key, value in {"doc1": {"text": "red apple", "color": "red", "score": 4.5},
                       "doc2": {"text": "red car", "color": "red", "score": 3.0},
                       "doc3": {"text": "green apple", "color": "green", "score": 4.0},
                       "doc4": {"text": "blue car", "color": "blue", "score": 3.5}}.items():
        store.put(("test",), key, value)
    assert keys(store.search(("test",), query="apple", filter={"color": "red"})) == \
        ["doc1", "doc2"]
    assert keys(store.search(("test",), query="car", filter={"color": "red"}))[0] == "doc2"
    high = store.search(("test",), query="bbbbluuu", filter={"score": {"$gt": 3.2}})
    assert keys(high)[0] == "doc4" and set(keys(high)) == {"doc1", "doc3", "doc4"}
    both = store.search(("test",), query="apple", filter={"score": {"$gte": 4.0},
                                                          "color": "green"})
    assert keys(both) == ["doc3"]

    async def concurrent() -> list[list[str]]:
        found = await asyncio.gather(
            store.asearch(("test",), query="apple", filter={"color": "red"}),
            store.asearch(("test",), query="car", filter={"score": {"$lt": 3.5}}))
        return [keys(f) for f in found]

    assert asyncio.run(concurrent()) == [["doc1", "doc2"], ["doc2"]]


def test_scored_pages_do_not_overlap(memory, clock):
    """Mirrors test_vector_search_pagination (all three suites, sync and async)."""
    store = indexed(memory, clock)
    for i in range(5):
        store.put(("test",), f"doc{i}", {"text": f"test document number {i}"})
    page1 = store.search(("test",), query="test", limit=2)
    page2 = store.search(("test",), query="test", limit=2, offset=2)
    everything = store.search(("test",), query="test", limit=10)
    assert len(page1) == len(page2) == 2 and len(everything) == 5
    assert not set(keys(page1)) & set(keys(page2))
    assert keys(page1) + keys(page2) == keys(everything)[:4]
    scores = [i.score for i in everything]
    assert scores == sorted(scores, reverse=True)


def test_an_empty_or_missing_query_means_no_score(memory, clock):
    """Mirrors test_vector_search_edge_cases (SqliteStore, PostgresStore)."""
    store = indexed(memory, clock)
    store.put(("test",), "doc1", {"text": "test document"})
    for query in ("", None):
        found = store.search(("test",), query=query)
        assert keys(found) == ["doc1"] and found[0].score is None
    for query in ("test " * 100, "test!@#$%^&*()"):
        found = store.search(("test",), query=query)
        assert keys(found) == ["doc1"] and found[0].score is not None


def test_several_fields_and_json_paths_score_by_the_best_field(memory, clock):
    """Mirrors test_embed_with_path (InMemoryStore, SqliteStore, PostgresStore), plus
    JSON paths into nested values and lists."""
    store = indexed(memory, clock, fields=["key0", "key1", "key3"])
    store.put(("test",), "doc1", {"key1": "xxx", "key2": "yyy", "key3": "zzz"})
    store.put(("test",), "doc2", {"key0": "uuu", "key1": "vvv", "key2": "www",
                                  "key3": "xxx"})
    best = store.search(("test",), query="xxx")
    assert len(best) == 2 and best[0].score == pytest.approx(1.0, abs=1e-5)
    assert best[1].score == pytest.approx(1.0, abs=1e-5)
    assert keys(store.search(("test",), query="uuu"))[0] == "doc2"
    assert keys(store.search(("test",), query="zzz"))[0] == "doc1"
    unindexed = store.search(("test",), query="www")    # key2 is not an indexed field
    assert all(i.score < 0.5 for i in unindexed)

    paths = indexed(memory, clock, fields=["metadata.title", "items[*]"], root="paths")
    paths.put(("p",), "nested", {"metadata": {"title": "quantum physics"}, "body": "zzz"})
    paths.put(("p",), "listed", {"items": ["apples", "pears"], "body": "quantum physics"})
    assert keys(paths.search(("p",), query="quantum physics"))[0] == "nested"
    assert keys(paths.search(("p",), query="pears"))[0] == "listed"
    assert paths.search(("p",), query="pears")[0].score == pytest.approx(1.0, abs=1e-5)


def test_per_put_fields_override_and_unindexed_items_come_last_unscored(memory, clock):
    """Mirrors test_embed_with_path_operation_config (SqliteStore, PostgresStore) and the
    operation-level half of InMemoryStore's test_embed_with_path."""
    store = indexed(memory, clock, fields=["key17"])
    store.put(("test",), "doc3", {"key0": "aaa", "key1": "bbb", "key2": "ccc"},
              index=["key0", "key1"])
    store.put(("test",), "doc4", {"key0": "eee", "key1": "bbb", "key3": "ggg"},
              index=["key1", "key3"])
    assert keys(store.search(("test",), query="aaa"))[0] == "doc3"
    assert keys(store.search(("test",), query="ggg"))[0] == "doc4"
    tie = store.search(("test",), query="bbb")
    assert tie[0].score == pytest.approx(tie[1].score)
    assert all(i.score < 0.5 for i in store.search(("test",), query="ccc"))
    store.put(("test",), "doc5", {"key0": "hhh", "key1": "iii"}, index=False)
    found = store.search(("test",), query="hhh")
    assert len(found) == 3 and found[-1].key == "doc5" and found[-1].score is None
    assert len(store.search(("test",), query="hhh", limit=2)) == 2     # scored ones first
    assert "doc5" in keys(store.search(("test",)))
    with pytest.raises(InvalidValue):
        store.put(("test",), "bad", {"a": 1}, index="key0")  # type: ignore[arg-type]
    with pytest.raises(InvalidValue):
        store.put(("test",), "bad", {"a": 1}, index=[3])  # type: ignore[list-item]
    assert store.get(("test",), "bad") is None


@pytest.mark.parametrize("distance", ["cosine", "inner_product", "l2"])
@pytest.mark.parametrize("query", ["aaa", "abcd", "poisson"])
def test_scores_are_the_configured_similarity(memory, clock, distance, query):
    """Mirrors test_scores (SqliteStore: cosine; PostgresStore: each distance type)."""
    store = MemclusterStore(memory, clock=clock, index={
        "dims": EMBED.dims, "embed": EMBED, "fields": ["key0"], "distance_type": distance})
    store.put(("test",), "doc", {"key0": "aaa"}, index=["key0", "key1"])
    doc, q = EMBED.embed_query("aaa"), EMBED.embed_query(query)
    expected = {"cosine": cosine(q, doc),
                "inner_product": sum(a * b for a, b in zip(q, doc, strict=True)),
                "l2": -math.dist(q, doc)}[distance]
    (found,) = store.search((), query=query)
    assert found.score == pytest.approx(expected, abs=1e-3)


def test_non_ascii_texts(memory, clock):
    """Mirrors test_non_ascii (InMemoryStore, SqliteStore, PostgresStore)."""
    store = indexed(memory, clock)
    texts = ["这是中文", "これは日本語です", "이건 한국어야", "Это русский", "यह रूसी है"]
    for n, text in enumerate(texts, start=1):
        store.put(("user_123", "memories"), str(n), {"text": text})
    for n, text in enumerate(texts, start=1):
        assert store.search(("user_123", "memories"), query=text)[0].key == str(n)


# ---- filters and queries without an index -----------------------------------------------------


def test_dotted_filter_keys_reach_nested_fields(memory, clock):
    """Mirrors checkpoint-sqlite test_store.py::test_filter_keys_with_hyphens_and_digits."""
    store = MemclusterStore(memory, clock=clock)
    store.put(("docs",), "hyphen", {"access-level": "public",
                                    "user": {"access-level": "nested"}})
    store.put(("docs",), "digit", {"123abc": "ok", "user": {"123abc": "ok2", "n": 5}})
    assert keys(store.search(("docs",), filter={"access-level": "public"})) == ["hyphen"]
    assert keys(store.search(("docs",), filter={"user.access-level": "nested"})) == ["hyphen"]
    assert keys(store.search(("docs",), filter={"123abc": "ok"})) == ["digit"]
    assert keys(store.search(("docs",), filter={"user.123abc": "ok2"})) == ["digit"]
    assert keys(store.search(("docs",), filter={"user.n": {"$gte": 5}})) == ["digit"]
    assert store.search(("docs",), filter={"user.missing.deeper": "x"}) == []


def test_query_without_an_index(memory, clock):
    """Mirrors PostgresStore test_store.py::test_store_ttl's searches: with no index the
    query is ignored (`substring_query=True` opts into substring matching); a semantic
    source is itself an index, which `index=False` still opts out of."""
    store = MemclusterStore(memory, clock=clock)
    store.put(("foo",), "item1", {"foo": "bar"})
    clock.advance(1)
    store.put(("foo",), "item2", {"text": "kittens are small cats"}, index=False)
    clock.advance(1)
    store.put(("foo",), "item3", {"text": "cats purr"})
    found = store.search(("foo",), query="foo")
    semantic = memory.info()["lg"]["capabilities"]["text"] == "semantic"
    if not semantic:
        assert keys(found) == ["item3", "item2", "item1"]   # newest first, the query ignored
        assert all(i.score is None for i in found)
        substring = MemclusterStore(memory, clock=clock, substring_query=True)
        assert keys(substring.search(("foo",), query="cats")) == ["item3", "item2"]
    else:
        ranked = store.search(("foo",), query="cats purr")
        assert keys(ranked)[0] == "item3" and ranked[0].score is not None
        assert ranked[-1].key == "item2" and ranked[-1].score is None   # index=False
        assert "item2" not in keys(store.search(("foo",), query="kittens", limit=2))


# ---- TTL and the sweeper API ----------------------------------------------------------------


def test_sweep_ttl_counts_what_expired_and_refresh_keeps_items(memory, clock):
    """Mirrors checkpoint-sqlite test_ttl.py::test_ttl_basic, test_ttl_refresh,
    test_ttl_custom_value, test_ttl_override_default and test_search_with_ttl."""
    store = MemclusterStore(memory, clock=clock, ttl={"default_ttl": 1 / 60,
                                                      "refresh_on_read": True})
    store.setup()                                        # nothing to migrate, but callable
    store.put(("test",), "item1", {"value": "test"})
    store.put(("test",), "long", {"value": "x"}, ttl=5 / 60)
    store.put(("test",), "forever", {"value": "x"}, ttl=None)
    clock.advance(0.5)
    assert store.sweep_ttl() == 0
    assert store.get(("test",), "item1") is not None     # a read refreshes it
    clock.advance(0.7)
    assert store.sweep_ttl() == 0
    assert store.search(("test",), refresh_ttl=True)     # so does a search
    clock.advance(1.5)
    assert store.sweep_ttl() == 1
    assert store.get(("test",), "item1") is None
    assert store.get(("test",), "long", refresh_ttl=False) is not None
    clock.advance(5)
    assert store.sweep_ttl() == 1
    assert keys(store.search(("test",))) == ["forever"]
    store.put(("test",), "gone", {"v": 1}, ttl=1 / 60)
    store.delete(("test",), "gone")                      # a delete is not an expiry
    clock.advance(5)
    assert store.sweep_ttl() == 0


def test_the_sweeper_thread_starts_once_and_stops(memory, clock, caplog):
    """Mirrors test_ttl.py::test_ttl_sweeper (SqliteStore) and the start/stop calls of
    PostgresStore's store fixture."""
    assert MemclusterStore(memory).start_ttl_sweeper().done()     # no TTL config: no thread
    store = MemclusterStore(memory, clock=clock, ttl={"default_ttl": 1 / 60,
                                                      "sweep_interval_minutes": 0.0005})
    caplog.set_level(logging.INFO, logger="memcluster.integrations.langgraph")
    future = store.start_ttl_sweeper()
    assert store.start_ttl_sweeper() is future
    store.put(("test",), "item1", {"value": "test"})
    clock.advance(2)
    wait_until(lambda: "TTL sweep: 1 items expired" in caplog.text, timeout=10,
               message="the sweeper thread to count the expired item")
    assert store.get(("test",), "item1") is None
    assert store.stop_ttl_sweeper(timeout=10) is True and future.done()
    assert store.stop_ttl_sweeper() is True


def test_the_async_store_sweeps_with_coroutines(memory, clock):
    """Mirrors test_ttl.py::test_async_ttl_basic, test_async_ttl_sweeper and
    test_async_asearch_refresh_ttl, and AsyncPostgresStore's store fixture."""
    async def scenario() -> None:
        store = AsyncMemclusterStore(memory, clock=clock, ttl={
            "default_ttl": 1 / 60, "refresh_on_read": True, "sweep_interval_minutes": 0.0005})
        await store.setup()
        task = await store.start_ttl_sweeper()
        assert await store.start_ttl_sweeper() is task
        await store.aput(("test",), "a", {"v": 1})
        await store.aput(("test",), "b", {"v": 2})
        clock.advance(0.8)
        assert keys(await store.asearch(("test",), filter={"v": 1})) == ["a"]  # refreshes a
        clock.advance(0.8)
        assert await store.aget(("test",), "b", refresh_ttl=False) is None
        assert (await store.aget(("test",), "a", refresh_ttl=False)).value == {"v": 1}
        assert await store.stop_ttl_sweeper(timeout=10) is True and task.done()
        clock.advance(5)
        assert await store.sweep_ttl() in (1, 2)    # a, plus b unless the task counted it

    asyncio.run(scenario())


# ---- the async store ---------------------------------------------------------------------------


def test_the_async_store_batches_concurrent_calls_and_guards_its_loop(memory, clock):
    """Mirrors PostgresStore test_async_store.py::test_large_batches_async,
    checkpoint-sqlite test_async_store.py::test_no_running_loop and the sync node of
    test_pregel_async.py::test_store_injected_async."""
    async def scenario() -> None:
        store = AsyncMemclusterStore(memory, clock=clock)
        ns = ("test", "foo", "bar")
        calls = []
        for i in range(200):
            calls += [store.aput(ns, f"key{i}", {"foo": f"bar{i}"}), store.aget(ns, f"key{i}"),
                      store.alist_namespaces(prefix=None, max_depth=2), store.asearch(("test",)),
                      store.aput(ns, f"key{i}", {"foo": f"baz{i}"}), store.adelete(ns, f"key{i}")]
        results = await asyncio.gather(*calls)
        assert len(results) == 1200 and await store.asearch(("test",)) == []
        with pytest.raises(asyncio.InvalidStateError):
            store.put(ns, "k", {"v": 1})
        with pytest.raises(asyncio.InvalidStateError):
            store.batch([SearchOp(ns)])
        assert "must be created inside" in await asyncio.to_thread(_outside_a_loop, memory)
        await asyncio.to_thread(store.put, ns, "k", {"v": 1})     # another thread: fine
        assert (await asyncio.to_thread(store.get, ns, "k")).value == {"v": 1}

    asyncio.run(scenario())


def _outside_a_loop(memory) -> str:
    try:
        AsyncMemclusterStore(memory)
    except RuntimeError as exc:
        return str(exc)
    return "built"


# ---- graphs that take a store ------------------------------------------------------------------


def test_a_store_injected_into_graph_nodes(memory):
    """Mirrors test_pregel.py::test_store_injected and
    test_pregel.py::test_overriding_injectable_args_with_tasks."""
    from langchain_core.runnables import RunnableConfig
    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.func import entrypoint, task
    from langgraph.graph import StateGraph
    from typing_extensions import TypedDict

    class State(TypedDict):
        count: Annotated[int, operator.add]

    store = MemclusterStore(memory)
    namespace = (f"foo-{uuid.uuid4().hex}", "bar")

    def node(inputs: State, config: RunnableConfig, *, store: BaseStore) -> dict:
        thread = config["configurable"]["thread_id"]
        store.put(namespace, "doc", {"from_thread": thread, "some_val": inputs["count"]})
        return {"count": 1}

    builder = StateGraph(State)
    for i in range(10):
        builder.add_node(f"node_{i}", node)
        builder.add_edge("__start__", f"node_{i}")
    graph = builder.compile(store=store, checkpointer=InMemorySaver())
    assert graph.invoke({"count": 0}, {"configurable": {"thread_id": "t1"}}) == {"count": 10}
    assert store.get(namespace, "doc").value == {"from_thread": "t1", "some_val": 0}
    assert graph.invoke({"count": 0}, {"configurable": {"thread_id": "t1"}}) == {"count": 20}
    assert store.get(namespace, "doc").value["some_val"] == 10
    assert len(store.search(namespace)) == 1

    @task
    def echo(store: BaseStore, value: Any) -> bool:
        return store is value

    @entrypoint(store=store)
    def main(inputs: dict, *, store: BaseStore) -> list[bool]:
        return [echo(store=None, value=None).result(), echo(store="x", value="x").result()]

    assert main.invoke({}) == [True, True]


def test_an_async_store_injected_into_graph_nodes(memory):
    """Mirrors test_pregel_async.py::test_store_injected_async and
    test_overriding_injectable_args_with_async_task."""
    from langchain_core.runnables import RunnableConfig
    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.graph import StateGraph
    from typing_extensions import TypedDict

    class State(TypedDict):
        count: Annotated[int, operator.add]

    async def scenario() -> None:
        store = AsyncMemclusterStore(memory)
        namespace = ("foo", "bar")

        async def node(inputs: State, config: RunnableConfig, *, store: BaseStore) -> dict:
            await store.aput(namespace, "doc", {"thread": config["configurable"]["thread_id"]})
            return {"count": 1}

        def sync_node(inputs: State, *, store: BaseStore) -> dict:   # runs in a worker thread
            store.put(("not", "interesting"), "key", {"val": "val"})
            assert store.get(("not", "interesting"), "key").value == {"val": "val"}
            return {"count": 0}

        builder = StateGraph(State)
        for i in range(10):
            builder.add_node(f"node_{i}", node)
            builder.add_edge("__start__", f"node_{i}")
        builder.add_node("sync_node", sync_node)
        builder.add_edge("node_0", "sync_node")
        graph = builder.compile(store=store, checkpointer=InMemorySaver())
        result = await graph.ainvoke({"count": 0}, {"configurable": {"thread_id": "t2"}})
        assert result == {"count": 10}
        assert (await store.aget(namespace, "doc")).value == {"thread": "t2"}
        assert len(await store.asearch(namespace)) == 1
        assert (await store.abatch([PutOp(namespace, "doc", None)])) == [None]

    asyncio.run(scenario())


def test_the_memory_keeps_working_from_many_threads(memory, clock):
    """Mirrors the thread-pool halves of PostgresStore's async suite: sync calls from
    many threads on one store."""
    store = MemclusterStore(memory, clock=clock)
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(20):
                store.put(("t", str(n)), f"k{i}", {"n": n, "i": i})
            assert len(store.search(("t", str(n)), limit=50)) == 20
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors and len(store.list_namespaces(prefix=("t",))) == 4
