"""Chaos fixtures: one cluster with short health timings on a private redis-server, over a
memory backend the tests can slow down on demand (`slow_backend.py`)."""

from __future__ import annotations

import os
import random

import pytest

# Short timings make faults quick to detect; open_timeout stays well above how long Ray
# takes to start a new actor's worker process with one core busy (it took over 4 s once),
# or a healthy scale would time out on a slow machine (the product default is 60 s).
CHAOS_HEALTH = {"interval": 0.3, "ping_timeout": 0.5, "misses": 3, "call_timeout": 2.0,
                "lease_ttl": 3.0, "open_timeout": 12.0, "copy_timeout": 6.0}


def chaos_config(control: str) -> dict:
    return {"name": "unused", "metrics_port": None, "health": CHAOS_HEALTH, "sources": [
        {"name": "cache", "backend": "tests.chaos.slow_backend.SlowMemoryBackend",
         "default": True, "shards": 3, "replicas": 2, "write_quorum": 2,
         "opts": {"control": control, "cleanup_interval": 0},
         "supervision": {"intensity": 50, "period": 30}}]}


@pytest.fixture(scope="module")
def chaos_redis(module_redis):
    """The coordination redis-server that the chaos tests freeze and restart."""
    return module_redis


@pytest.fixture(scope="module")
def control(tmp_path_factory) -> str:
    """The slow backend's control file (starts empty: nothing is slow)."""
    from tests.chaos.slow_backend import slow

    path = str(tmp_path_factory.mktemp("chaos") / "slow.json")
    slow(path)
    return path


@pytest.fixture(scope="module")
def chaos_cluster(ray_session, chaos_redis, control):
    """A cluster (cache: 3 shards, N=2, W=2) whose Redis the tests may freeze and restart."""
    import memcluster as mc

    handle = mc.start_cluster(chaos_config(control), name=f"chaos{os.getpid()}",
                              redis_url=chaos_redis.url)
    yield handle
    handle.stop()


@pytest.fixture
def seed() -> int:
    value = int(os.environ.get("MEMCLUSTER_TEST_SEED") or random.randrange(1, 1 << 30))
    os.environ["MEMCLUSTER_TEST_SEED"] = str(value)
    print(f"chaos seed: {value}")
    return value
