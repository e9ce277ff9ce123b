"""The vector backend: ranking, thresholds, filters, embedders and persistence.

The KV behaviour (versions, CAS, TTL, namespaces, paging, replicate/export) is covered by
the conformance suite in tests/conformance/test_vector.py; these tests cover what is
specific to similarity search.
"""

from __future__ import annotations

import os
import random

import numpy as np
import pytest

from memcluster.backends.embedders import HashingEmbedder, resolve_embedder
from memcluster.backends.registry import create_backend
from memcluster.backends.vectorlog import LOG, prefix_dir
from memcluster.errors import (
    ConfigError,
    SourceUnavailable,
    UnsupportedQuery,
    VersionConflict,
)
from memcluster.model import Query
from memcluster.ops import (
    ClearOp,
    CountOp,
    DeleteOp,
    ListKeysOp,
    RetrieveOp,
    SearchOp,
    StoreOp,
)
from memcluster.testing.clock import FakeClock

# Fixed 3-d vectors by text: scores against "q" are exactly 1.0, 0.8, 0.0 and -1.0.
TOY = {"q": [1.0, 0.0, 0.0], "a": [1.0, 0.0, 0.0], "b": [0.8, 0.6, 0.0],
       "c": [0.0, 1.0, 0.0], "d": [-1.0, 0.0, 0.0]}


def toy_embed(texts: list[str]) -> np.ndarray:
    """A deterministic callable embedder (also imported by dotted path in a test)."""
    return np.array([TOY.get(t, [0.0, 0.0, 1.0]) for t in texts], dtype=np.float32)


def open_vector(opts=None, *, clock=None, prefix="t"):
    return create_backend("vector", opts or {}, prefix=prefix, clock=clock or FakeClock())


def put(backend, key, text, **kwargs):
    return backend.store(StoreOp.make(key, {"text": text}, **kwargs))


def search(backend, **query):
    return backend.search(SearchOp.make(Query(**query)))


@pytest.fixture
def toy():
    backend = open_vector({"embedder": toy_embed})
    for key in "abcd":
        put(backend, key, key, metadata={"n": ord(key) - ord("a")})
    yield backend
    backend.close()


# ---- ranking and thresholds -------------------------------------------------------------------

def test_text_query_ranks_by_cosine_and_sets_score(toy):
    hits = search(toy, text="q")
    assert [h.key for h in hits] == ["a", "b", "c", "d"]
    assert [h.score for h in hits] == pytest.approx([1.0, 0.8, 0.0, -1.0], abs=1e-6)
    assert toy.retrieve(RetrieveOp("a")).score is None


def test_similarity_threshold_drops_weak_hits_and_min_score_is_stricter():
    backend = open_vector({"embedder": toy_embed, "similarity_threshold": 0.5})
    for key in "abcd":
        put(backend, key, key)
    assert [h.key for h in search(backend, text="q")] == ["a", "b"]
    assert [h.key for h in search(backend, text="q", min_score=0.9)] == ["a"]
    assert [h.key for h in search(backend, text="q", min_score=0.0)] == ["a", "b"]
    assert backend.count(CountOp.make(Query(text="q"))) == 2


def test_limit_offset_and_other_orders_apply_to_text_queries(toy):
    assert [h.key for h in search(toy, text="q", limit=2, offset=1)] == ["b", "c"]
    assert [h.key for h in search(toy, text="q", order_by="key", min_score=0.0)] == ["a", "b", "c"]
    assert [h.key for h in search(toy, text="q", order_by="score")] == ["d", "c", "b", "a"]
    assert search(toy, text="q", limit=0) == []


def test_filter_and_pattern_apply_with_text(toy):
    put(toy, "x:a", "a", metadata={"n": 10})
    hits = search(toy, text="q", filter={"n": {"$gte": 1}})
    assert [h.key for h in hits] == ["x:a", "b", "c", "d"]
    assert [h.key for h in search(toy, text="q", pattern="x:*")] == ["x:a"]
    assert [h.key for h in search(toy, text="q", pattern="[ab]", filter={"n": 1})] == ["b"]
    assert toy.count(CountOp.make(Query(text="q", filter={"n": {"$lt": 2}}))) == 2


def test_score_needs_text_and_bad_filters_fail(toy):
    with pytest.raises(UnsupportedQuery):
        search(toy, min_score=0.5)
    with pytest.raises(UnsupportedQuery):
        search(toy, order_by="-score")
    with pytest.raises(UnsupportedQuery):
        search(toy, text="q", filter={"n": {"$near": 1}})


def test_queries_without_text_behave_like_a_key_value_store(toy):
    assert [h.key for h in search(toy, pattern="[bc]")] == ["b", "c"]
    assert [h.score for h in search(toy)] == [None] * 4
    assert toy.count(CountOp.make(Query(filter={"n": {"$in": [0, 3]}}))) == 2


def test_top_k_equals_brute_force_on_random_data():
    seed = int(os.environ.get("MEMCLUSTER_TEST_SEED", "0"))
    print(f"seed={seed}")
    rng = np.random.default_rng(seed)
    dim, n = 24, 1500
    table = {f"t{i}": rng.standard_normal(dim).astype(np.float32) for i in range(n + 20)}
    table["zero"] = np.zeros(dim, dtype=np.float32)

    def embed(texts):
        return np.stack([table.get(t, table["zero"]) for t in texts])

    backend = open_vector({"embedder": embed, "dimension": dim})
    expected = {}
    pick = random.Random(seed)
    for i in range(n):
        key = f"k{pick.randrange(n):05d}"
        text = "zero" if i % 97 == 0 else f"t{i}"
        if i % 5 == 4 and expected:  # interleave deletes: rows move inside the matrix
            gone = pick.choice(sorted(expected))
            assert backend.delete(DeleteOp(gone))
            del expected[gone]
        put(backend, key, text, metadata={"g": i % 3})
        expected[key] = (text, i % 3)

    def brute(query_text, group, limit, offset):
        q = table[query_text] / np.linalg.norm(table[query_text])
        scored = []
        for key, (text, g) in expected.items():
            v = table[text]
            norm = np.linalg.norm(v)
            score = float(v @ q / norm) if norm else 0.0
            if group is None or g == group:
                scored.append((-score, key))
        scored.sort()
        return scored[offset:offset + limit]

    for trial in range(12):
        text = f"t{n + trial}"
        group = None if trial % 2 else trial % 3
        limit, offset = pick.choice([1, 10, 50, 400]), pick.choice([0, 0, 7])
        hits = search(backend, text=text, limit=limit, offset=offset,
                      filter=None if group is None else {"g": group})
        want = brute(text, group, limit, offset)
        assert [h.key for h in hits] == [k for _, k in want], f"seed={seed} trial={trial}"
        assert [h.score for h in hits] == pytest.approx([-s for s, _ in want], abs=1e-4)


# ---- embedders --------------------------------------------------------------------------------

def test_hashing_is_the_default_and_ranks_shared_words_first():
    backend = open_vector()
    assert backend.info()["embedder"] == "hashing:384"
    put(backend, "cats", "the cat sleeps on the sofa all afternoon")
    put(backend, "money", "bond yields rose as stock markets fell")
    put(backend, "cars", "the car engine needs new oil")
    assert search(backend, text="sleepy cats on a sofa")[0].key == "cats"
    assert search(backend, text="stock market")[0].key == "money"
    first = HashingEmbedder(64).embed(["Hello, World"])
    assert np.array_equal(first, HashingEmbedder(64).embed(["hello world"]))


def test_text_field_and_non_dict_values_are_embedded():
    backend = open_vector({"embedder": toy_embed, "text_field": "body"})
    backend.store(StoreOp.make("dict", {"body": "a", "text": "d"}))
    backend.store(StoreOp.make("str", "c"))
    backend.store(StoreOp.make("list", ["b"]))
    assert [(h.key, round(h.score, 3)) for h in search(backend, text="q")] == [
        ("dict", 1.0), ("list", 0.8), ("str", 0.0)]


def test_callable_by_dotted_path_and_dimension_checks():
    backend = open_vector({"embedder": "tests.unit.test_vector:toy_embed", "dimension": 3})
    assert backend.info()["dimension"] == 3
    with pytest.raises(ConfigError, match="dimension"):
        open_vector({"embedder": toy_embed, "dimension": 4})
    with pytest.raises(ConfigError, match="cannot be imported"):
        open_vector({"embedder": "tests.unit.test_vector:nothing_here"})
    with pytest.raises(ConfigError, match="unknown embedder"):
        open_vector({"embedder": "word2vec"})
    with pytest.raises(ConfigError, match="similarity_threshold"):
        open_vector({"similarity_threshold": 2})
    with pytest.raises(ConfigError, match="colour"):
        open_vector({"colour": "blue"})


def test_a_misbehaving_embedder_is_a_config_error_and_writes_nothing():
    calls = []

    def flaky(texts):
        calls.append(texts)
        return np.ones((1 if len(calls) == 1 else len(texts) + 1, 4))

    backend = open_vector({"embedder": flaky})
    with pytest.raises(ConfigError, match="shape"):
        put(backend, "k", "text")
    assert backend.retrieve(RetrieveOp("k")) is None
    with pytest.raises(ConfigError, match="NaN"):
        resolve_embedder(lambda texts: np.full((len(texts), 2), np.nan)).embed(["x"])


# ---- batches ----------------------------------------------------------------------------------

def test_store_many_is_all_or_nothing_on_a_cas_conflict(toy):
    ops = [StoreOp.make("new", {"text": "a"}), StoreOp.make("a", {"text": "c"}, if_version=7)]
    with pytest.raises(VersionConflict):
        toy.store_many(ops)
    assert toy.retrieve(RetrieveOp("new")) is None
    assert toy.retrieve(RetrieveOp("a")).version == 1
    assert search(toy, text="q", limit=1)[0].key == "a"


# ---- persistence ------------------------------------------------------------------------------

def test_persistence_survives_reopen_with_deletes_ttl_and_clear(tmp_path):
    clock = FakeClock()
    opts = {"embedder": toy_embed, "path": str(tmp_path / "vec")}
    backend = open_vector(opts, clock=clock)
    for key in "abcd":
        put(backend, key, key, metadata={"k": key})
    put(backend, "a", "a", metadata={"k": "a2"})
    put(backend, "short", "a", ttl=5)
    put(backend, "long", "b", ttl=500)
    put(backend, "other", "a", namespace="ns2")
    put(backend, "gone", "c", namespace="ns3")
    assert backend.delete(DeleteOp("c"))
    assert backend.clear(ClearOp.make(namespace="ns3")) == 1
    backend.close()
    clock.advance(10)

    again = open_vector(opts, clock=clock)
    assert again.list_keys(ListKeysOp.make()).keys == ["a", "b", "d", "long"]
    a = again.retrieve(RetrieveOp("a"))
    assert (a.version, a.metadata, a.value) == (2, {"k": "a2"}, {"text": "a"})
    assert again.retrieve(RetrieveOp("long")).expires_at == pytest.approx(clock() - 10 + 500)
    assert again.retrieve(RetrieveOp("other", "ns2")) is not None
    assert again.list_keys(ListKeysOp.make(namespace="ns3")).keys == []
    assert [h.key for h in search(again, text="q", min_score=0.5)] == ["a", "b", "long"]
    assert put(again, "a", "d").version == 3
    again.close()


def test_compaction_keeps_the_data_and_bounds_the_log(tmp_path):
    opts = {"embedder": toy_embed, "path": str(tmp_path), "compact_after": 8, "sync": "os"}
    backend = open_vector(opts)
    for i in range(40):
        put(backend, f"k{i % 4}", "abcd"[i % 4])
        if i % 10 == 9:
            backend.delete(DeleteOp(f"k{i % 4}"))
    log = prefix_dir(tmp_path, "t") / LOG
    assert backend._journal.log_entries < 8
    backend.close()
    again = open_vector(opts)
    assert again.list_keys(ListKeysOp.make()).keys == ["k0", "k1", "k2"]
    assert again.retrieve(RetrieveOp("k0")).version == 10
    assert again.retrieve(RetrieveOp("k1")).version == 2
    assert log.stat().st_size > 0
    again.close()


def test_a_torn_log_tail_is_cut_and_writes_continue(tmp_path):
    opts = {"embedder": toy_embed, "path": str(tmp_path)}
    backend = open_vector(opts)
    put(backend, "a", "a")
    put(backend, "b", "b")
    backend.close()
    log = prefix_dir(tmp_path, "t") / LOG
    data = log.read_bytes()
    log.write_bytes(data[:-5])  # the last entry lost its tail in a crash
    again = open_vector(opts)
    assert again.list_keys(ListKeysOp.make()).keys == ["a"]
    put(again, "c", "c")
    again.close()
    last = open_vector(opts)
    assert last.list_keys(ListKeysOp.make()).keys == ["a", "c"]
    last.close()


def test_reopen_with_another_embedder_or_a_second_instance_fails_at_open(tmp_path):
    opts = {"embedder": toy_embed, "path": str(tmp_path)}
    backend = open_vector(opts)
    put(backend, "a", "a")
    with pytest.raises(SourceUnavailable, match="already open"):
        open_vector(opts)
    assert open_vector(opts, prefix="other").list_keys(ListKeysOp.make()).keys == []
    backend.close()
    with pytest.raises(ConfigError, match="hashing:3"):
        open_vector({"embedder": "hashing", "dimension": 3, "path": str(tmp_path)})
    third = open_vector(opts)
    assert third.retrieve(RetrieveOp("a")).version == 1
    third.close()


def test_search_stays_exact_after_most_rows_are_deleted():
    backend = open_vector()
    for i in range(300):
        put(backend, f"k{i:03d}", f"word{i} common")
    keep = {"k007", "k150", "k299"}
    for i in range(300):
        if f"k{i:03d}" not in keep:
            assert backend.delete(DeleteOp(f"k{i:03d}"))
    for key in sorted(keep):
        hits = search(backend, text=f"word{int(key[1:])} common", limit=3)
        assert hits[0].key == key and hits[0].score == pytest.approx(1.0, abs=1e-5)
        assert {h.key for h in hits} == keep
    put(backend, "k000", "word0 common")
    assert search(backend, text="word0 common", limit=1)[0].key == "k000"
