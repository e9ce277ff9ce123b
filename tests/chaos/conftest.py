"""Chaos fixtures: one cluster with short health timings on a private redis-server."""

from __future__ import annotations

import os
import random

import pytest

CHAOS_HEALTH = {"interval": 0.3, "ping_timeout": 0.5, "misses": 3, "call_timeout": 2.0,
                "lease_ttl": 3.0}


def chaos_config() -> dict:
    return {"name": "unused", "metrics_port": None, "health": CHAOS_HEALTH, "sources": [
        {"name": "cache", "backend": "memory", "default": True, "shards": 3, "replicas": 2,
         "write_quorum": 2, "supervision": {"intensity": 50, "period": 30}}]}


@pytest.fixture(scope="module")
def chaos_redis(module_redis):
    """The coordination redis-server that the chaos tests freeze and restart."""
    return module_redis


@pytest.fixture(scope="module")
def chaos_cluster(ray_session, chaos_redis):
    """A cluster (cache: 3 shards, N=2, W=2) whose Redis the tests may freeze and restart."""
    import memcluster as mc

    handle = mc.start_cluster(chaos_config(), name=f"chaos{os.getpid()}",
                              redis_url=chaos_redis.url)
    yield handle
    handle.stop()


@pytest.fixture
def seed() -> int:
    value = int(os.environ.get("MEMCLUSTER_TEST_SEED") or random.randrange(1, 1 << 30))
    os.environ["MEMCLUSTER_TEST_SEED"] = str(value)
    print(f"chaos seed: {value}")
    return value
