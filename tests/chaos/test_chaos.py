"""Faults under a live multi-writer load; no acknowledged write may be lost.

Each test runs the `Workload` (4 writer clients, each the only writer of its keys), injects
one fault, waits until the cluster serves again, heals, and checks the history: no
acknowledged write lost, read-your-writes per client, replicas converged, epochs
monotonic, one leader per epoch. Each prints its row of the chaos table (and appends it to
`$MEMCLUSTER_CHAOS_REPORT` when set). Seeds come from MEMCLUSTER_TEST_SEED.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading

import pytest

import memcluster as mc
from tests.chaos.workload import (
    LeaderWatch,
    Workload,
    all_serving,
    heal_and_check,
    shard_pid,
)
from tests.support import wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.chaos]


@pytest.fixture
def mem(chaos_cluster):
    client = mc.connect(chaos_cluster.name)
    wait_until(lambda: all_serving(chaos_cluster), timeout=60, message="a healthy cluster")
    yield client
    client.close()


def _restarts(cluster) -> int:  # type: ignore[no-untyped-def]
    return cluster.status()["restarts"]


def test_sigkill_a_shard_process(chaos_cluster, chaos_redis, mem, seed):
    before = _restarts(chaos_cluster)
    with LeaderWatch(chaos_redis.url, chaos_cluster.name) as leaders:
        work = Workload(mem, "kill9", seed=seed).start()
        work.wait_progress(50)
        os.kill(shard_pid(chaos_cluster.name, "cache/1"), signal.SIGKILL)
        wait_until(lambda: _restarts(chaos_cluster) > before, timeout=30,
                   message="the killed shard's replacement")
        work.wait_progress(100)
        heal_and_check("SIGKILL shard", chaos_cluster, mem, work, seed=seed,
                       leaders=leaders.samples)


def test_sigstop_a_shard_is_detected_and_replaced(chaos_cluster, chaos_redis, mem, seed):
    before = _restarts(chaos_cluster)
    pid = shard_pid(chaos_cluster.name, "cache/2")
    with LeaderWatch(chaos_redis.url, chaos_cluster.name) as leaders:
        work = Workload(mem, "stop", seed=seed).start()
        work.wait_progress(50)
        os.kill(pid, signal.SIGSTOP)
        try:
            wait_until(lambda: _restarts(chaos_cluster) > before, timeout=30,
                       message="the frozen shard's replacement")
            assert shard_pid(chaos_cluster.name, "cache/2") != pid
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        work.wait_progress(100)
        heal_and_check("SIGSTOP/SIGCONT shard", chaos_cluster, mem, work, seed=seed,
                       leaders=leaders.samples)


def test_killed_manager_is_restarted_and_reattaches(chaos_cluster, chaos_redis, mem, seed):
    import ray

    status = chaos_cluster.status()
    epoch, pids = status["epoch"], {s: shard_pid(chaos_cluster.name, s)
                                    for s in status["sources"]["cache"]["ring"]["shard_ids"]}
    with LeaderWatch(chaos_redis.url, chaos_cluster.name) as leaders:
        work = Workload(mem, "mgr", seed=seed).start()
        work.wait_progress(50)
        ray.kill(chaos_cluster.manager, no_restart=False)
        work.wait_progress(50)          # clients keep working on their cached ring
        after = wait_until(lambda: (s := chaos_cluster.status())["epoch"] > epoch
                           and s["leading"] and s, timeout=60,
                           message="the restarted manager leading")
        # Re-attached, not replaced: the same shard processes, no data moved.
        assert {s: shard_pid(chaos_cluster.name, s) for s in pids} == pids
        assert after["leader"] != status["leader"]
        work.wait_progress(50)
        heal_and_check("ray.kill manager", chaos_cluster, mem, work, seed=seed,
                       leaders=leaders.samples)


def test_redis_freeze_and_restart(chaos_cluster, chaos_redis, mem, seed):
    from memcluster.cluster.coord.coordinator import Coordinator

    with LeaderWatch(chaos_redis.url, chaos_cluster.name) as leaders:
        work = Workload(mem, "redis", seed=seed).start()
        work.wait_progress(50)
        scaled: dict = {}
        chaos_redis.freeze()
        try:
            # Coordination waits for Redis; data keeps flowing on the cached rings.
            scaler = threading.Thread(target=lambda: scaled.update(
                chaos_cluster.scale("cache", 4)), daemon=True)
            scaler.start()
            work.wait_progress(50, timeout=20)
        finally:
            chaos_redis.thaw()
        scaler.join(timeout=60)
        assert scaled.get("shards") == 4, scaled
        chaos_redis.restart()             # kill -9 and start again (AOF keeps the keys)
        work.wait_progress(50)
        heal_and_check("SIGSTOP + restart redis", chaos_cluster, mem, work, seed=seed,
                       leaders=leaders.samples)
    coord = Coordinator(chaos_redis.url, chaos_cluster.name)
    version, ring = coord.ring_store.load("cache")
    status = chaos_cluster.status()
    assert version == ring["version"]
    assert ring == status["sources"]["cache"]["ring"] and len(ring["shard_ids"]) == 4
    spec = coord.load_spec()
    assert next(s for s in spec["sources"] if s["name"] == "cache")["shards"] == 4
    assert coord.current_epoch() == status["epoch"]
    coord.close()


def test_scale_up_and_down_mid_load(chaos_cluster, chaos_redis, mem, seed):
    shards = len(chaos_cluster.status()["sources"]["cache"]["ring"]["shard_ids"])
    with LeaderWatch(chaos_redis.url, chaos_cluster.name) as leaders:
        work = Workload(mem, "scale", seed=seed).start()
        work.wait_progress(50)
        assert chaos_cluster.scale("cache", shards + 2)["shards"] == shards + 2
        work.wait_progress(50)
        assert chaos_cluster.scale("cache", 3)["shards"] == 3
        work.wait_progress(50)
        heal_and_check("scale up and down", chaos_cluster, mem, work, seed=seed,
                       leaders=leaders.samples)
