"""Shard death, rebalancing, leadership, and a second process attaching by name."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

import memcluster as mc
from memcluster.cluster import names
from tests.support import wait_until

pytestmark = pytest.mark.cluster


def test_killing_a_shard_with_two_replicas_loses_no_acknowledged_write(cluster):
    import ray

    mem = mc.connect(cluster.name)
    keys = [f"dur:{i}" for i in range(300)]
    mem.store_many([(k, k) for k in keys], namespace="kill")
    victim = ray.get_actor(names.shard_actor_name(cluster.name, "cache/1"),
                           namespace=names.ray_namespace(cluster.name))
    ray.kill(victim, no_restart=True)
    found = mem.retrieve_many(keys, namespace="kill")        # served by the replicas
    assert len(found) == 300
    mem.store("after-kill", 1, namespace="kill")              # waits for the replacement

    def replaced():  # type: ignore[no-untyped-def]
        status = cluster.status()
        shard = status["shards"]["cache/1"]
        return status["restarts"] >= 1 and shard.get("hydrating") is False and status

    status = wait_until(replaced, timeout=20, message="the shard's replacement")
    assert all("error" not in s for s in status["shards"].values())
    assert len(mem.retrieve_many(keys, namespace="kill")) == 300
    assert mem.count(namespace="kill") == 301


def test_scale_up_and_down_keeps_every_key_once(cluster):
    mem = mc.connect(cluster.name)
    keys = [f"sc:{i:04d}" for i in range(400)]
    mem.store_many([(k, i) for i, k in enumerate(keys)], namespace="scale")
    out = cluster.scale("cache", 5)
    assert out["shards"] == 5 and out["moved"] > 0
    assert mem.count(namespace="scale") == 400           # the client refreshes on StaleRing
    found = mem.retrieve_many(keys, namespace="scale")
    assert [found[k].value for k in keys] == list(range(400))
    stats = cluster.status()["shards"]
    held = sum(s["records"] for sid, s in stats.items() if sid.startswith("cache/"))
    assert held >= 2 * 400  # N=2 copies of every key (plus other tests' data)
    out = cluster.scale("cache", 2)
    assert out["shards"] == 2
    pages, cursor = [], None
    while True:
        page = mem.list_keys(namespace="scale", limit=64, cursor=cursor)
        pages.extend(page.keys)
        cursor = page.cursor
        if cursor is None:
            break
    assert pages == keys
    mem.store("sc:0000", "new", namespace="scale")
    assert mem.retrieve("sc:0000", namespace="scale").version == 2


def test_second_process_attaches_by_name_and_sees_writes(cluster):
    mem = mc.connect(cluster.name)
    mem.store("from-first", {"hello": "world"}, namespace="xproc")
    import ray

    address = ray.get_runtime_context().gcs_address
    code = textwrap.dedent(f"""
        import memcluster as mc
        mem = mc.connect({cluster.name!r}, ray_address={address!r})
        print(mem.retrieve("from-first", namespace="xproc").value["hello"])
        mem.store("from-second", 2, namespace="xproc")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "RAY_DEDUP_LOGS": "0"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "world"
    assert mem.retrieve("from-second", namespace="xproc").value == 2


def test_two_managers_never_both_lead(ray_session, module_redis):
    from memcluster.cluster.control.manager import ClusterManager
    from memcluster.errors import FencedOut, Timeout
    from tests.cluster.conftest import cluster_config

    spec = cluster_config(shards=2)
    first = ClusterManager("lead-test", module_redis.url, spec, lease_ttl_ms=1500)
    try:
        first.ready(30)
        second = ClusterManager("lead-test", module_redis.url, spec, lease_ttl_ms=1500)
        with pytest.raises(Timeout):
            second.ready(2)
        assert first.leading and not second.leading
        first._stop.set()                    # the first stops renewing: its lease expires
        second.ready(30)
        assert second.leading and second.epoch > first.epoch
        with pytest.raises(FencedOut):       # shards refuse the deposed manager's epoch
            first.handles["cache/0"].freeze(first.epoch).result()
        second.shutdown()
    finally:
        first._stop.set()
