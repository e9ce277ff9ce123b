"""Hostile input against a cluster source (issue 15), on the session's Ray: the same random
adversarial calls as `tests/unit/test_hostile_inputs.py`, through a connected client to a
replicated (N=2) and an unreplicated source, beside a local memory source, must be answered
or refused alike, and refusals change nothing. Plus the cluster's own findings: a status
that `json.dumps` takes (item 8), a failed start that leaves nothing running and a `down`
that stops what it can when Redis is gone or the manager does not answer (item 10).
Seeded from MEMCLUSTER_TEST_SEED (printed in the pytest header) for replay.
"""

from __future__ import annotations

import itertools
import json
import os

import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

import memcluster as mc
from memcluster import cli
from memcluster.cluster import names
from memcluster.errors import InvalidValue, MemclusterError
from tests import hostile
from tests.cluster.conftest import cluster_config
from tests.support import wait_until

pytestmark = pytest.mark.cluster
SEED = int(os.environ.get("MEMCLUSTER_TEST_SEED", "0"))
WHERE = f"(MEMCLUSTER_TEST_SEED={SEED})"
_names = itertools.count()


@pytest.fixture(scope="module")
def targets(cluster):
    client = mc.connect(cluster.name)
    local = mc.MemoryManager([mc.memory_source("local", "memory",
                                               opts={"cleanup_interval": 0})])
    yield [hostile.Target("cluster N=2", client, "cache"),
           hostile.Target("cluster N=1", client, "single"),
           hostile.Target("local", local, "local")]
    client.close()
    local.close()


@seed(SEED)
@settings(max_examples=10, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.large_base_example])
@given(calls=st.lists(hostile.calls(made_up_cursors=False), min_size=1, max_size=6))
def test_hostile_calls_on_a_cluster_are_answered_or_refused_like_local_memory(targets, calls):
    hostile.run_example(targets, calls, WHERE)


def test_5_an_if_version_beyond_64_bits_is_invalid_before_it_reaches_a_shard(targets):
    client = targets[0].surface
    client.store("k", 1, namespace="iv")
    for version in (1 << 64, 1 << 63, -1):
        with pytest.raises(InvalidValue, match="if_version"):
            client.store("k", 2, namespace="iv", if_version=version)
    assert client.retrieve("k", namespace="iv").version == 1


def test_8_status_is_json_safe(cluster, targets):
    """Item 8: the status held dicts keyed by (op, outcome) tuples."""
    targets[0].surface.store("counted", 1, namespace="status")
    status = cluster.status()
    back = json.loads(json.dumps(status, allow_nan=False))
    shards = back["shards"]
    assert sum(sum(counts.values()) for sh in shards.values()
               for counts in sh["ops"]["counts"].values()) >= 1
    assert back["sources"]["cache"]["shards"] == 3


def _left_in_namespace(name: str) -> list[str]:
    from ray.util import list_named_actors

    namespace = names.ray_namespace(name)
    return [a["name"] for a in list_named_actors(all_namespaces=True)
            if a.get("namespace") == namespace]


def test_10_a_failed_start_leaves_no_actor_and_no_redis_key(ray_session, module_redis):
    """Item 10: a start that failed (here: not ready in time) left its manager and shards
    running, with nothing to stop them."""
    import redis

    name = f"failed{os.getpid()}-{next(_names)}"
    with pytest.raises(MemclusterError):
        mc.start_cluster(cluster_config(), name=name, redis_url=module_redis.url,
                         timeout=0.001)
    wait_until(lambda: not _left_in_namespace(name), timeout=30,
               message="the failed start's actors to go")
    client = redis.Redis.from_url(module_redis.url)
    assert list(client.scan_iter(match=f"memcluster:{name}:*")) == []


def test_10_down_stops_the_cluster_when_its_redis_is_gone(ray_session, redis_server, capsys):
    """Item 10: with the cluster's Redis gone, `down` failed with a raw RayTaskError and
    left everything running; now it stops what it can and notes what it could not."""
    name = f"noredis{os.getpid()}-{next(_names)}"
    mc.start_cluster(cluster_config(), name=name, redis_url=redis_server.url)
    assert _left_in_namespace(name)
    redis_server.stop()
    code = cli.main(["--cluster", name, "down"])
    _out, err = capsys.readouterr()
    assert code == 0, err
    assert err.count("\n") == 1 and err.startswith("memcluster: note: ")
    assert "Redis keys" in err and "Traceback" not in err
    wait_until(lambda: not _left_in_namespace(name), timeout=30,
               message="the cluster's actors to go")


def test_10_down_force_does_not_wait_for_a_manager_that_does_not_answer(ray_session,
                                                                        redis_server,
                                                                        capsys):
    name = f"frozen{os.getpid()}-{next(_names)}"
    mc.start_cluster(cluster_config(), name=name, redis_url=redis_server.url)
    redis_server.freeze()  # the manager's clean-up would hang on it
    try:
        code = cli.main(["--cluster", name, "down", "--force", "--json"])
        out, err = capsys.readouterr()
        assert code == 0, err
        report = json.loads(out)
        assert report["shards_killed"] >= 4 and "--force" in report["notes"][0]
        assert not _left_in_namespace(name)
    finally:
        redis_server.thaw()
