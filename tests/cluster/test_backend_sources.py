"""The mysql and qdrant backends as cluster sources: sharded over Ray actors, reached through
the public client (start_cluster, connect) like any other source."""

from __future__ import annotations

import itertools
import os

import pytest

import memcluster as mc

pytestmark = pytest.mark.cluster
_names = itertools.count()


@pytest.fixture(scope="module")
def mem(ray_session, module_redis, mysql_dsn):
    config = {"name": "unused", "metrics_port": None, "sources": [
        {"name": "facts", "backend": "mysql", "shards": 2, "replicas": 1, "default": True,
         "opts": {"dsn": mysql_dsn}},
        {"name": "docs", "backend": "qdrant", "shards": 2, "replicas": 2,
         "opts": {"location": ":memory:", "embedder": "hashing", "dimension": 64}}]}
    cluster = mc.start_cluster(config, name=f"bs{os.getpid()}-{next(_names)}",
                               redis_url=module_redis.url)
    client = mc.connect(cluster.name)
    yield client
    client.clear(source="facts", namespace="t", confirm=True)
    client.close()
    cluster.stop()


def test_mysql_as_a_cluster_source(mem):
    mem.store_many([(f"user:{i:02d}", {"name": f"user {i}"}, {"metadata": {"age": i}})
                    for i in range(40)], namespace="t")
    older = mem.search(mc.Query(filter={"age": {"$gte": 35}}, order_by="-key", limit=3),
                       namespace="t")
    assert [r.key for r in older] == ["user:39", "user:38", "user:37"]
    assert mem.count(mc.Query(pattern="user:1?"), namespace="t") == 10
    for _ in range(5):
        mem.update("counter", lambda v: (v or 0) + 1, namespace="t")
    assert mem.retrieve("counter", namespace="t").value == 5
    with pytest.raises(mc.errors.VersionConflict):
        mem.store("counter", 0, namespace="t", if_version=1)
    assert mem.info()["facts"]["backend"] == "mysql"


def test_qdrant_as_a_cluster_source(mem):
    mem.store_many([("cat", {"text": "the cat sleeps on the mat"}),
                    ("bank", {"text": "interest rates and the central bank"}),
                    ("car", {"text": "an electric car with a long range"})],
                   source="docs", namespace="d")
    hits = mem.search("a cat sleeping on a mat", source="docs", namespace="d", limit=2)
    assert hits[0].key == "cat" and hits[0].score > hits[1].score
    assert mem.update("cat", lambda v: {**v, "seen": 1}, source="docs",
                      namespace="d").version == 2
    assert mem.list_keys(source="docs", namespace="d").keys == ["bank", "car", "cat"]
