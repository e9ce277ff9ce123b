"""Client-side metrics: every MemoryManager of the process is measured once per call and
`memcluster.start_metrics_server(port)` serves it as `memcluster_client_*` over HTTP.

Each test uses a source name of its own, since the registry is process-wide.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import os
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

import memcluster as mc
from memcluster.errors import VersionConflict
from tests.support import free_port

_ids = itertools.count()


def _source() -> str:
    return f"m{os.getpid()}x{next(_ids)}"


@pytest.fixture(scope="module")
def scrape():
    """`scrape()` -> {family: samples} from one client metrics server for the module."""
    port = free_port()
    server = mc.start_metrics_server(port)

    def read() -> tuple[str, dict[str, list]]:
        url = f"http://127.0.0.1:{port}/metrics"
        body = urllib.request.urlopen(url, timeout=5).read().decode()
        return body, {f.name: f.samples for f in text_string_to_metric_families(body)}

    yield read
    server.shutdown()


def _counts(fams: dict[str, list], source: str) -> dict[tuple[str, str], float]:
    return {(s.labels["op"], s.labels["outcome"]): s.value
            for s in fams["memcluster_client_operations"]
            if s.name.endswith("_total") and s.labels["source"] == source}


def _latency_counts(fams: dict[str, list], source: str) -> dict[str, float]:
    return {s.labels["op"]: s.value for s in fams["memcluster_client_operation_duration_seconds"]
            if s.name.endswith("_count") and s.labels["source"] == source}


def test_every_call_is_counted_by_op_and_outcome(scrape):
    src = _source()
    mem = mc.MemoryManager([mc.memory_source(src, "memory", default=True)])
    for i in range(3):
        mem.store(f"k{i}", i)
    mem.store_many([(f"b{i}", i) for i in range(5)])
    assert mem.retrieve("k1").value == 1 and mem.retrieve("nope") is None
    with pytest.raises(VersionConflict):
        mem.store("k0", 0, if_version=99)
    with pytest.raises(VersionConflict):       # one of three items loses its CAS
        mem.store_many([("c0", 0), ("k1", 1, {"if_version": 99}), ("c1", 1)])

    async def agents() -> None:
        await asyncio.gather(*(mem.astore(f"a{i}", i) for i in range(4)))
        assert (await mem.aretrieve("a2")).value == 2

    asyncio.run(agents())
    _, fams = scrape()
    assert _counts(fams, src) == {("store", "ok"): 3 + 5 + 2 + 4,
                                  ("store", "VersionConflict"): 2,
                                  ("retrieve", "ok"): 3}
    assert _latency_counts(fams, src) == {"store": 16, "retrieve": 3}
    buckets = [s for s in fams["memcluster_client_operation_duration_seconds"]
               if s.name.endswith("_bucket") and s.labels["source"] == src
               and s.labels["op"] == "store"]
    assert [b.value for b in buckets] == sorted(b.value for b in buckets)   # cumulative
    assert buckets[-1].labels["le"] == "+Inf" and buckets[-1].value == 16
    mem.close()


def test_a_collected_client_keeps_its_counts_and_is_not_kept_alive(scrape):
    import weakref

    src = _source()
    mem = mc.MemoryManager([mc.memory_source(src, "memory", default=True)])
    mem.store_many([(f"k{i}", i) for i in range(7)])
    mem.delete("k0")
    _, before = scrape()
    gone = weakref.ref(mem)
    mem.close()
    del mem
    gc.collect()
    assert gone() is None                          # the registry holds clients weakly
    _, after = scrape()
    assert _counts(after, src) == _counts(before, src) == {("store", "ok"): 7,
                                                           ("delete", "ok"): 1}


def test_labels_are_bounded_and_never_carry_keys_namespaces_or_values(scrape):
    src = _source()
    mem = mc.MemoryManager([mc.memory_source(src, "memory", default=True)])
    for i in range(50):
        mem.store(f"secret-key-{i}", {"v": f"private-value-{i}"}, namespace=f"tenant-{i}",
                  metadata={"tags": [f"tag-{i}"]})
        mem.retrieve(f"secret-key-{i}", namespace=f"tenant-{i}")
    mem.search(mc.Query(text="private"), namespace="tenant-1")
    body, fams = scrape()
    for marker in ("secret-key", "tenant-", "private-value", "tag-"):
        assert marker not in body
    labels = {k for samples in fams.values() for s in samples for k in s.labels}
    assert labels <= {"source", "op", "outcome", "le"}
    ops = {(s.labels["op"], s.labels["outcome"]) for s in fams["memcluster_client_operations"]
           if s.labels["source"] == src}
    assert ops == {("store", "ok"), ("retrieve", "ok"), ("search", "ok")}  # 101 calls, 3 series
    mem.close()
