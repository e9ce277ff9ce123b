"""Cluster fixtures: one cluster per module on the session's Ray and a private redis-server."""

from __future__ import annotations

import itertools
import os

import pytest

_names = itertools.count()


def cluster_config(**source_overrides):  # type: ignore[no-untyped-def]
    cache = {"name": "cache", "backend": "memory", "default": True, "shards": 3,
             "replicas": 2, "write_quorum": 2, "description": "session cache"}
    cache.update(source_overrides)
    single = {"name": "single", "backend": "memory", "shards": 2, "replicas": 1}
    return {"name": "unused", "sources": [cache, single], "metrics_port": None}


@pytest.fixture(scope="module")
def cluster(ray_session, module_redis):
    """A started cluster (cache: 3 shards N=2 W=2; single: 2 shards N=1), stopped after."""
    import memcluster as mc

    name = f"t{os.getpid()}-{next(_names)}"
    handle = mc.start_cluster(cluster_config(), name=name, redis_url=module_redis.url)
    yield handle
    handle.stop()
