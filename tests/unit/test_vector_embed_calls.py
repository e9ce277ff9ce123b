"""The vector backend calls its embedder only for text it has not embedded yet.

Measured with a counting embedder (what a paid embedding API would bill):
- a LangGraph search(limit=10) over items with a TTL refreshes them: 1 call (the query),
  was 11 (the query plus one re-embedding per refreshed item);
- replicating 100 records to a fresh replica: 1 call (was 100), and 0 when the sender
  attaches its stored vectors (`MemoryBackend.attachments`).
"""

from __future__ import annotations

import numpy as np
import pytest

import memcluster as mc
from memcluster.backends.embedders import HashingEmbedder
from memcluster.backends.registry import create_backend
from memcluster.model import Query, Record
from memcluster.ops import ReplicateOp, RetrieveOp, SearchOp, StoreOp


class CountingEmbedder:
    """A hashing embedder that records every call and how many texts it got."""

    def __init__(self, dimension: int = 64) -> None:
        self.inner = HashingEmbedder(dimension)
        self.calls: list[int] = []

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.calls.append(len(texts))
        return self.inner.embed(texts)

    def reset(self) -> None:
        self.calls.clear()

    def __deepcopy__(self, memo: dict) -> CountingEmbedder:  # config copies its options
        return self


@pytest.fixture
def counter():
    return CountingEmbedder()


def backend_with(counter: CountingEmbedder, prefix: str = "v", **opts):
    backend = create_backend("vector", {"embedder": counter, **opts}, prefix=prefix)
    counter.reset()  # opening probes the dimension once
    return backend


def test_langgraph_ttl_refresh_on_search_embeds_only_the_query(counter):
    pytest.importorskip("langgraph")
    from memcluster.integrations.langgraph import MemclusterStore

    with mc.MemoryManager([mc.memory_source("v", "vector", opts={"embedder": counter})]) as mem:
        store = MemclusterStore(mem, source="v")
        for i in range(10):
            store.put(("docs",), f"k{i}", {"text": f"note {i} about cats and dogs"}, ttl=60)
        before = {r.key: r for r in mem.export(source="v")}
        counter.reset()
        hits = store.search(("docs",), query="cats", limit=10)
        assert len(hits) == 10
        assert counter.calls == [1], counter.calls         # was 11: one per refreshed item
        after = {r.key: r for r in mem.export(source="v")}
        assert all(after[k].version == before[k].version + 1 for k in before)  # refreshed
        counter.reset()
        again = store.search(("docs",), query="cats", limit=10, refresh_ttl=False)
        assert [h.key for h in again] == [h.key for h in hits]  # same vectors, same ranking
        assert counter.calls == [1]


def test_a_write_embeds_only_text_that_changed(counter):
    backend = backend_with(counter)
    backend.store(StoreOp.make("a", {"text": "the red fox"}, metadata={"n": 1}))
    assert counter.calls == [1]
    backend.store(StoreOp.make("a", {"text": "the red fox"}, metadata={"n": 2}, ttl=30))
    assert counter.calls == [1]                             # same text: vector kept
    backend.store(StoreOp.make("a", {"text": "the grey wolf"}))
    assert counter.calls == [1, 1]
    hits = backend.search(SearchOp.make(Query(text="the grey wolf", limit=1)))
    assert hits[0].key == "a" and hits[0].score == pytest.approx(1.0, abs=1e-5)


def test_a_batch_embeds_its_distinct_new_texts_in_one_call(counter):
    backend = backend_with(counter)
    backend.store_many([StoreOp.make(f"k{i}", f"text number {i % 10}") for i in range(100)])
    assert counter.calls == [10]


def records_of(backend, n: int) -> list[Record]:
    return backend.store_many([StoreOp.make(f"k{i}", {"text": f"memory {i} of a fleet"},
                                            namespace="ns", metadata={"i": i})
                               for i in range(n)])


def test_replicating_a_hundred_records_is_one_embedder_call(counter):
    primary = backend_with(counter, "p")
    records = records_of(primary, 100)
    replica = backend_with(counter, "r")
    results = replica.apply_batch([ReplicateOp(r) for r in records])
    assert results == [True] * 100
    assert counter.calls == [100]                            # was 100 calls of one text
    q = SearchOp.make(Query(text="memory 42", limit=5), namespace="ns")
    assert replica.search(q) == primary.search(q)


def test_attached_vectors_replicate_without_the_embedder(counter):
    primary = backend_with(counter, "p")
    records = records_of(primary, 100)
    attached = primary.attachments(records)
    assert all(isinstance(a, bytes) for a in attached)
    replica = backend_with(counter, "r")
    assert replica.replicate_many([ReplicateOp(r, a) for r, a in zip(records, attached,
                                                                     strict=True)]) == [True] * 100
    assert counter.calls == []
    q = SearchOp.make(Query(text="memory 42", limit=5), namespace="ns")
    assert replica.search(q) == primary.search(q)
    # a stale record (another version than stored) gets no attachment
    old = records[0].__class__(**{**records[0].to_dict(), "version": 7})
    assert primary.attachments([old]) == [None]


def test_an_attachment_from_another_embedder_is_ignored(counter):
    other = create_backend("vector", {"embedder": "hashing", "dimension": 64}, prefix="o")
    records = records_of(other, 3)
    replica = backend_with(counter, "r")
    replica.replicate_many([ReplicateOp(r, a) for r, a in
                            zip(records, other.attachments(records), strict=True)]
                           + [ReplicateOp(records[0], b"not msgpack \xc1")])
    assert counter.calls == [3]                              # embedded, not trusted


def test_replicate_many_keeps_the_one_by_one_semantics(counter):
    primary = backend_with(counter, "p")
    v1 = primary.store(StoreOp.make("k", "first"))
    v2 = primary.store(StoreOp.make("k", "second"))
    other = primary.store(StoreOp.make("j", "third"))
    ops = [ReplicateOp(v2), ReplicateOp(v1), ReplicateOp(other), ReplicateOp(v2)]
    batched = backend_with(counter, "b")
    single = backend_with(counter, "s")
    assert batched.replicate_many(ops) == [single.replicate(op) for op in ops] \
        == [True, False, True, False]
    assert batched.export() == single.export()
    assert batched.retrieve(RetrieveOp("k")).value == "second"
