"""The manager's supervision tree over real shard actors: hydration after a restart, a
source whose supervisor gives up, and the root giving up."""

from __future__ import annotations

import os

import pytest

from memcluster.cluster import names
from memcluster.errors import SourceUnavailable
from memcluster.ops import StoreOp
from tests.support import wait_until

pytestmark = pytest.mark.cluster

FAST = {"interval": 0.3, "ping_timeout": 0.5, "misses": 3, "call_timeout": 2.0,
        "lease_ttl": 3.0}


def _spec() -> dict:
    return {"name": "unused", "metrics_port": None, "health": FAST, "sources": [
        {"name": "cache", "backend": "memory", "shards": 3, "replicas": 2, "default": True},
        {"name": "fragile", "backend": "memory", "shards": 1, "replicas": 1,
         "supervision": {"intensity": 0, "period": 60}}]}


def _kill(core, sid: str) -> None:  # type: ignore[no-untyped-def]
    import ray

    ray.kill(ray.get_actor(names.shard_actor_name(core.cluster, sid),
                           namespace=core.namespace), no_restart=True)


def test_restart_hydrates_then_a_source_and_the_root_give_up(ray_session, module_redis):
    from memcluster.cluster.control.manager import ClusterManager

    core = ClusterManager(f"sup{os.getpid()}", module_redis.url, _spec(),
                       root_supervision={"intensity": 1, "period": 300})
    try:
        core.ready(60)
        out = core.execute("cache", [StoreOp.make(f"k{i}", i) for i in range(200)])
        assert all(r.version == 1 for r in out)

        # A killed shard is replaced by a new incarnation that copies its keys back.
        old = core.incarnations["cache/1"]
        _kill(core, "cache/1")

        def recovered():  # type: ignore[no-untyped-def]
            shard = core.status()["shards"]["cache/1"]
            rec = shard.get("recovery") or {}
            return rec.get("incarnation") != old and rec.get("state") == "serving" and shard

        shard = wait_until(recovered, timeout=30, message="cache/1 hydrated")
        assert shard["recovery"]["progress"] == 1.0 and shard["recovery"]["copied"] > 0
        assert shard["records"] == shard["recovery"]["copied"]   # exactly its keys, back
        assert core.status()["supervision"]["cache"]["restarts_in_window"] == 1

        # intensity 0: the first crash makes `fragile`'s supervisor give up; the root
        # restarts the source once (its intensity is 1) ...
        _kill(core, "fragile/0")
        wait_until(lambda: core.root.restarts_in_window() == 1, timeout=30,
                   message="the root restarting the fragile source")
        wait_until(lambda: "fragile" not in core.failed and core.status()["shards"]
                   ["fragile/0"].get("state") == "serving", timeout=30,
                   message="fragile serving again")
        core.execute("fragile", [StoreOp.make("x", 1)])
        # ... and the second time the root gives up: every source is failed.
        _kill(core, "fragile/0")
        wait_until(lambda: core.root.state == "gave_up", timeout=30,
                   message="the root giving up")
        status = core.status()
        assert status["supervision"]["fragile"]["state"] == "failed"
        assert status["failed"]["cache"] == "the root supervisor gave up"
        with pytest.raises(SourceUnavailable, match="failed"):
            core.execute("cache", [StoreOp.make("k0", 0)])
    finally:
        core.shutdown()
