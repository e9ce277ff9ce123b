"""The qdrant backend beyond the conformance suite: semantic ranking with the real MiniLM model,
the three distances, filters translated to Qdrant and rechecked (random filters against the
engine), writers serialised through MemoryManagers sharing one embedded store, TTL sweeps,
the embedded text kept for keyword retrieval, and a server that cannot be reached."""

from __future__ import annotations

import contextlib
import threading
import uuid

import pytest

import memcluster as mc
from memcluster.backends.qdrant import QdrantBackend
from memcluster.backends.registry import create_backend
from memcluster.errors import ConfigError, SourceUnavailable
from memcluster.model import Query
from memcluster.ops import ClearOp, CountOp, RetrieveOp, SearchOp, StoreOp
from memcluster.testing import FakeClock
from tests.support import free_port
from tests.unit import test_postgres_resilience as shared
from tests.unit.test_minilm import open_minilm

TOY = "tests.unit.test_vector:toy_embed"  # 3-d vectors: "a" = q, "b" at 0.8, "c" at 0, "d" = -q


def _open(opts=None, *, clock=None, prefix="t") -> QdrantBackend:
    backend = create_backend("qdrant", {"embedder": "hashing", "dimension": 64, **(opts or {})},
                             prefix=prefix, clock=clock or FakeClock())
    assert isinstance(backend, QdrantBackend)
    return backend


def _search(backend, **query):
    return backend.apply(SearchOp.make(Query(**query)))


@pytest.fixture(scope="module")
def minilm():
    backend = open_minilm("qdrant")
    yield backend
    backend.close()


def test_a_sleepy_domestic_feline_finds_the_cats_first(minilm):
    hits = _search(minilm, text="a sleepy domestic feline", limit=6)
    assert [h.key.split(":")[0] for h in hits[:2]] == ["cat", "cat"], hits
    cats = [h.score for h in hits if h.key.startswith("cat:")]
    assert min(cats) > max(h.score for h in hits if not h.key.startswith("cat:"))
    money = _search(minilm, text="monetary policy and the stock market", limit=2)
    assert {h.key for h in money} == {"fin:rates", "fin:stocks"}
    others = _search(minilm, text="a sleepy domestic feline", filter={"topic": {"$ne": "cat"}})
    assert {h.key.split(":")[0] for h in others} == {"fin", "car"}
    best = hits[0]
    strict = _search(minilm, text="a sleepy domestic feline", min_score=best.score - 1e-4)
    assert [h.key for h in strict] == [best.key]


@pytest.mark.parametrize("distance, scores", [
    ("cosine", {"a": 1.0, "b": 0.8, "c": 0.0, "d": -1.0}),
    ("dot", {"a": 1.0, "b": 0.8, "c": 0.0, "d": -1.0}),
    ("euclid", {"a": 0.0, "b": -(0.4 ** 0.5), "c": -(2 ** 0.5), "d": -2.0}),
])
def test_every_distance_ranks_best_first_with_higher_scores_better(distance, scores):
    backend = _open({"embedder": TOY, "dimension": None, "distance": distance})
    try:
        for key in "dcba":
            backend.apply(StoreOp.make(key, key))
        hits = _search(backend, text="q", limit=4)
        assert [h.key for h in hits] == ["a", "b", "c", "d"]
        assert [h.score for h in hits] == pytest.approx([scores[k] for k in "abcd"], abs=1e-5)
        floor = (scores["b"] + scores["c"]) / 2
        assert [h.key for h in _search(backend, text="q", min_score=floor)] == ["a", "b"]
        assert backend.apply(CountOp.make(Query(text="q", min_score=floor))) == 2
        assert [h.key for h in _search(backend, text="q", order_by="key", limit=2)] == ["a", "b"]
    finally:
        backend.close()


def test_random_filters_agree_with_the_engine():
    """Qdrant narrows by a superset of each filter and the engine decides; the answer is the
    engine's, with and without a text query."""
    backend = _open()
    try:
        shared.test_sql_filters_agree_with_the_engine_on_random_filters(backend)
        everything = [r for r in _search(backend, limit=1000)]
        for flt in ({"a": {"$gte": 9}}, {"b": "a"}, {"$or": [{"a": 1}, {"c": True}]}):
            got = _search(backend, text="ab", filter=flt, limit=1000)
            assert sorted(r.key for r in got) == sorted(
                r.key for r in everything if mc.query.match_filter(r.metadata, flt))
    finally:
        backend.close()


def test_writers_through_two_managers_on_one_store_lose_nothing(tmp_path):
    """Two MemoryManagers (each its own backend instance and lock) over one embedded store and
    prefix: the store's shared lock serialises every read-compare-upsert."""
    source = mc.memory_source("notes", "qdrant", opts={
        "path": str(tmp_path / "q"), "embedder": "hashing", "dimension": 32})
    managers = [mc.MemoryManager([source]) for _ in range(2)]
    errors: list[BaseException] = []

    def work(mem) -> None:
        try:
            for _ in range(40):
                mem.update("counter", lambda v: (v or 0) + 1)
                current = mem.retrieve("cas")
                with contextlib.suppress(mc.errors.VersionConflict):
                    mem.store("cas", "mine", if_version=0 if current is None else current.version)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(m,)) for m in managers for _ in range(2)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        counter = managers[1].retrieve("counter")
        assert (counter.value, counter.version) == (160, 160)
        assert managers[0].retrieve("cas").version <= 160
    finally:
        for m in managers:
            m.close()


def test_expired_points_are_invisible_then_swept():
    backend = _open({"sweep_interval": 1})
    try:
        backend.apply(StoreOp.make("short", "bye", ttl=5))
        backend.apply(StoreOp.make("long", "stays"))
        backend.clock.advance(5)
        assert backend.apply(RetrieveOp.make("short")) is None
        assert [r.key for r in _search(backend, text="bye", limit=5)] == ["long"]
        backend.apply(StoreOp.make("other", 1))  # a write after sweep_interval sweeps
        points, _ = backend._client.scroll(backend._collection, limit=10, with_payload=["key"])
        assert sorted(p.payload["key"] for p in points) == ["long", "other"]
    finally:
        backend.close()


def test_the_embedded_text_stays_in_the_payload_for_keyword_retrieval():
    backend = _open({"text_field": "body"})
    try:
        backend.apply(StoreOp.make("doc", {"body": "invoice INV-20931", "n": 1}))
        [point] = backend._client.retrieve(backend._collection, ids=[backend._id("", "doc")])
        assert point.payload["text"] == "invoice INV-20931"
    finally:
        backend.close()


def test_a_collection_of_another_dimension_is_a_config_error(tmp_path):
    first = _open({"path": str(tmp_path / "q"), "collection": "c"}, prefix="x")
    first.close()
    with pytest.raises(ConfigError, match="64-dimensional"):
        _open({"path": str(tmp_path / "q"), "collection": "c", "dimension": 32}, prefix="x")


@pytest.mark.parametrize("opts", [{"url": "http://h:1", "path": "/tmp/x"},
                                  {"location": "/tmp/x"}, {"distance": "manhattan"},
                                  {"payload_indexes": {"a b": "keyword"}}, {"pth": "x"}])
def test_bad_options_are_config_errors(opts):
    with pytest.raises(ConfigError):
        _open(opts)


def test_an_unreachable_server_is_unavailable_and_the_key_stays_hidden():
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(SourceUnavailable) as caught:
        _open({"url": url, "api_key": "hunter2-secret", "timeout": 2},
              prefix=f"down-{uuid.uuid4().hex[:6]}")
    assert "hunter2" not in str(caught.value)
    assert url in str(caught.value)


def test_clear_counts_only_live_records_and_removes_all():
    backend = _open()
    try:
        backend.apply(StoreOp.make("a", 1, namespace="n", ttl=5))
        backend.apply(StoreOp.make("b", 2, namespace="n"))
        backend.clock.advance(5)
        assert backend.apply(ClearOp.make(namespace="n")) == 1
        assert backend._client.count(backend._collection).count == 0
    finally:
        backend.close()
