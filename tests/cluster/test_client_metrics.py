"""A connected client measures what its callers waited, per source, and
`memcluster.start_metrics_server(port)` serves it next to any local MemoryManager's."""

from __future__ import annotations

import asyncio
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

import memcluster as mc
from tests.support import free_port

pytestmark = pytest.mark.cluster


def _scrape(port: int) -> dict[str, list]:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {f.name: f.samples for f in text_string_to_metric_families(body)}


def _counts(fams: dict[str, list], source: str) -> dict[tuple[str, str], float]:
    return {(s.labels["op"], s.labels["outcome"]): s.value
            for s in fams["memcluster_client_operations"]
            if s.name.endswith("_total") and s.labels["source"] == source}


def test_cluster_client_latency_is_served_per_source(cluster):
    port = free_port()
    server = mc.start_metrics_server(port)
    mem = cluster.connect()
    try:
        before = {src: _counts(_scrape(port), src) for src in ("cache", "single")}
        mem.store_many([(f"k{i}", i) for i in range(20)], namespace="cm")
        found = mem.retrieve_many([f"k{i}" for i in range(25)], namespace="cm")
        assert len(found) == 20
        mem.store("s", 1, source="single", namespace="cm")
        assert mem.count(namespace="cm") == 20

        async def agents() -> None:        # coalesced into few shard calls, counted per call
            await asyncio.gather(*(mem.aretrieve(f"k{i}", namespace="cm") for i in range(6)))

        asyncio.run(agents())
        fams = _scrape(port)
        delta = {src: {k: v - before[src].get(k, 0) for k, v in _counts(fams, src).items()
                       if v != before[src].get(k, 0)} for src in ("cache", "single")}
        assert delta == {"cache": {("store", "ok"): 20, ("retrieve", "ok"): 25 + 6,
                                   ("count", "ok"): 1},
                         "single": {("store", "ok"): 1}}
    finally:
        mem.close()
        server.shutdown()
