"""Metrics: a scrape over HTTP parses with prometheus_client's parser and adds up."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from memcluster.metrics import ClusterCollector, OpStats, serve, start_metrics_server
from tests.support import free_port


def _scrape(port: int) -> dict[str, list]:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {fam.name: fam.samples for fam in text_string_to_metric_families(body)}


def _report() -> dict:
    a, b = OpStats(), OpStats()
    a.observe("store", "ok", 0.002, n=10)
    a.observe("retrieve", "ok", 0.0004)
    b.observe("store", "ok", 0.001, n=5)
    b.observe("store", "error", 0.5)
    return {"epoch": 3, "sources": {"cache": {
        "ring_version": 2, "restarts": 1, "replication_failures": 0,
        "shards": {"0": {"state": "serving", "records": 7, "bytes": 700, "ops": a.snapshot()},
                   "1": {"state": "recovering", "records": 3, "bytes": 90, "hydration": 0.5,
                         "ops": b.snapshot()}}}}}


def test_cluster_scrape_aggregates_every_shard() -> None:
    port = free_port()
    server = serve(ClusterCollector(_report), port, addr="127.0.0.1")
    try:
        fams = _scrape(port)
    finally:
        server.shutdown()
    ops = {(s.labels["op"], s.labels["outcome"]): s.value
           for s in fams["memcluster_operations"] if s.name.endswith("_total")}
    assert ops == {("store", "ok"): 15, ("store", "error"): 1, ("retrieve", "ok"): 1}
    count = [s for s in fams["memcluster_operation_duration_seconds"]
             if s.name.endswith("_count") and s.labels["op"] == "store"]
    assert count[0].value == 16
    states = {(s.labels["shard"], s.labels["state"]): s.value
              for s in fams["memcluster_shard_state"]}
    assert states[("1", "recovering")] == 1.0 and states[("1", "serving")] == 0.0
    records = {s.labels["shard"]: s.value for s in fams["memcluster_shard_records"]}
    assert records == {"0": 7, "1": 3}
    assert fams["memcluster_ring_version"][0].value == 2
    assert fams["memcluster_manager_epoch"][0].value == 3


def test_labels_never_carry_keys_or_values() -> None:
    stats = OpStats()
    stats.observe("store", "ok", 0.001)
    port = free_port()
    server = start_metrics_server(port, stats=lambda: {"cache": stats.snapshot()})
    try:
        fams = _scrape(port)
    finally:
        server.shutdown()
    labels = {k for samples in fams.values() for s in samples for k in s.labels}
    assert labels <= {"source", "op", "outcome", "le", "shard", "state"}


def test_histogram_buckets_are_cumulative() -> None:
    stats = OpStats()
    for seconds in (0.00005, 0.003, 0.003, 20.0):
        stats.observe("search", "ok", seconds)
    port = free_port()
    server = start_metrics_server(port, stats=lambda: {"v": stats.snapshot()})
    try:
        fams = _scrape(port)
    finally:
        server.shutdown()
    buckets = {s.labels["le"]: s.value for s in fams["memcluster_client_operation_duration_seconds"]
               if s.name.endswith("_bucket")}
    assert buckets["0.0001"] == 1 and buckets["0.005"] == 3 and buckets["10.0"] == 3
    assert buckets["+Inf"] == 4
