"""The manager's /metrics: scraped over HTTP and parsed with prometheus_client's parser,
its numbers match what the cluster did, and no label carries a key or user data."""

from __future__ import annotations

import os
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

import memcluster as mc
from tests.support import free_port, wait_until

pytestmark = pytest.mark.cluster


def scrape(port: int) -> tuple[str, dict[str, list]]:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return body, {f.name: f.samples for f in text_string_to_metric_families(body)}


def test_manager_serves_cluster_metrics(ray_session, redis_server):
    port = free_port()
    config = {"metrics_port": port, "sources": [
        {"name": "cache", "backend": "memory", "default": True, "shards": 3, "replicas": 2,
         "write_quorum": 2}]}
    handle = mc.start_cluster(config, name=f"metrics{os.getpid()}", redis_url=redis_server.url)
    try:
        mem = mc.connect(handle.name)
        items = [(f"secret-key-{i}", {"user": f"private-{i}"}) for i in range(40)]
        mem.store_many(items, namespace="tenant-x")
        assert len(mem.retrieve_many([k for k, _ in items], namespace="tenant-x")) == 40
        assert mem.retrieve("absent-key", namespace="tenant-x") is None

        def stored_all() -> tuple[str, dict] | None:
            body, fams = scrape(port)
            ops = {(s.labels["op"], s.labels["outcome"]): s.value
                   for s in fams["memcluster_operations"] if s.name.endswith("_total")}
            return (body, fams) if ops.get(("store", "ok"), 0) >= 40 else None

        body, fams = wait_until(stored_all, timeout=20, message="the store counts")  # cached 2s
        ops = {(s.labels["op"], s.labels["outcome"]): s.value
               for s in fams["memcluster_operations"] if s.name.endswith("_total")}
        assert ops[("store", "ok")] == 40            # primaries only
        assert ops[("replicate", "ok")] == 40        # N=2: one copy each
        assert ops[("retrieve", "ok")] >= 41
        records = {s.labels["shard"]: s.value for s in fams["memcluster_shard_records"]}
        assert set(records) == {"cache/0", "cache/1", "cache/2"}
        assert sum(records.values()) == 80           # every key on 2 shards
        assert all(s.value > 0 for s in fams["memcluster_shard_bytes"] if s.labels["shard"]
                   and records[s.labels["shard"]])
        serving = [s for s in fams["memcluster_shard_state"] if s.labels["state"] == "serving"]
        assert [s.value for s in serving] == [1.0, 1.0, 1.0]
        assert [s.value for s in fams["memcluster_ring_version"]] == [1.0]
        assert [s.value for s in fams["memcluster_supervisor_restarts"]
                if s.name.endswith("_total")] == [0.0]
        latency = [s for s in fams["memcluster_operation_duration_seconds"]
                   if s.name.endswith("_count") and s.labels["op"] == "store"]
        assert latency[0].value == 40
        assert "memcluster_hydration_progress_ratio" in fams
        # Bounded cardinality: keys, namespaces and values never become label values.
        assert "secret-key" not in body and "private-" not in body and "tenant-x" not in body
        assert handle.status()["metrics"].endswith(f":{port}")
        mem.close()
    finally:
        handle.stop()
    with pytest.raises(OSError):
        scrape(port)                                  # stopped with the cluster
