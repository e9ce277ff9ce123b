"""Hybrid and keyword search, recency/importance ranking and consolidation through a real
cluster (a vector source over 3 shards, N=2): the scatter merge answers exactly what one
local store holding the same records answers, and the REST API serves a cluster."""

from __future__ import annotations

import os

import pytest

import memcluster as mc

pytestmark = pytest.mark.cluster

OPTS = {"embedder": "hashing", "dimension": 128}
TEXTS = [f"{subject} {verb} the {thing} on day {i}"
         for i, (subject, verb, thing) in enumerate(
             (s, v, t) for s in ("Ada", "Marco", "Priya", "Invoice INV-2093")
             for v in ("paid", "reviewed", "archived")
             for t in ("report", "green tea order", "deployment", "contract", "E1042 error"))]


@pytest.fixture(scope="module")
def vec_cluster(ray_session, module_redis):
    spec = {"name": "unused", "metrics_port": None, "sources": [
        {"name": "vec", "backend": "vector", "default": True, "shards": 3, "replicas": 2,
         "write_quorum": 2, "opts": OPTS}]}
    handle = mc.start_cluster(spec, name=f"r{os.getpid()}", redis_url=module_redis.url)
    yield handle
    handle.stop()


@pytest.fixture(scope="module")
def both(vec_cluster):
    """The cluster client and a local manager, both holding the same records."""
    remote = mc.connect(vec_cluster.name)
    local = mc.MemoryManager([mc.memory_source("vec", "vector", opts=OPTS)])
    for mem in (remote, local):
        mem.store_many([(f"m{i:02d}", {"text": text}, {"metadata": {"importance": i % 5}})
                        for i, text in enumerate(TEXTS)], namespace="ns")
    yield remote, local
    remote.close()
    local.close()


@pytest.mark.parametrize("mode", ["vector", "keyword", "hybrid"])
def test_cluster_search_equals_a_single_store(both, mode):
    remote, local = both
    ranking = {"relevance": 1.0, "importance": 0.5, "importance_scale": 4}
    for text in ("INV-2093 contract", "green tea", "E1042", "Marco archived the deployment"):
        for rank in (None, ranking):
            kwargs = {"namespace": "ns", "limit": 7, "offset": 1, "mode": mode,
                      "ranking": rank}
            mine, theirs = remote.search(text, **kwargs), local.search(text, **kwargs)
            assert [r.key for r in mine] == [r.key for r in theirs], (mode, text, rank)
            assert [r.score for r in mine] == pytest.approx([r.score for r in theirs],
                                                            abs=1e-6)


def test_consolidation_through_the_cluster_client(both):
    remote, _ = both
    remote.set_consolidation("vec", {"policy": "threshold", "update_above": 0.8,
                                     "skip_above": 0.99})
    try:
        done = remote.remember("dup", {"text": TEXTS[3]}, namespace="ns")
        assert (done.action, done.record.key) == ("skip", "m03")
        assert remote.retrieve("dup", namespace="ns") is None
    finally:
        remote.set_consolidation("vec", None)


def test_rest_serves_a_cluster(both):
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("fastapi")
    from memcluster.rest.server import start
    from tests.support import free_port

    remote, _ = both
    with start(remote, "127.0.0.1", free_port(), namespace="ns") as running:
        hits = httpx.post(f"{running.url}/v1/search", timeout=30,
                          json={"text": "INV-2093", "mode": "keyword", "limit": 3}).json()
    assert all("INV-2093" in r["value"]["text"] for r in hits["results"])
