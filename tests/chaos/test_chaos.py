"""Faults under a live many-writer load; every history must be linearizable, nothing lost.

Each test runs `ManyWriters` (several writers per key: CAS increments, `update`
increments, reads), injects one fault, waits until the cluster serves again, heals, and
checks: every key's history linearizable (Wing & Gong), each counter equal to its
acknowledged increments plus at most its unknown ones, replicas converged on exactly the
key's owners, epochs monotonic with one leader per epoch. Each prints its row of the
chaos table (and appends it to `$MEMCLUSTER_CHAOS_REPORT` when set). Seeds come from
MEMCLUSTER_TEST_SEED. `scripts/chaos_loop.sh N [--load]` runs the suite N times in a row.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading

import pytest

import memcluster as mc
from memcluster.errors import MemclusterError
from tests.chaos.conftest import CHAOS_HEALTH
from tests.chaos.slow_backend import slow
from tests.chaos.workload import (
    LeaderWatch,
    ManyWriters,
    all_serving,
    heal_and_check,
    shard_pid,
)
from tests.support import wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.chaos]


@pytest.fixture
def mem(chaos_cluster, control):
    client = mc.connect(chaos_cluster.name)
    wait_until(lambda: all_serving(chaos_cluster), timeout=90, message="a healthy cluster")
    yield client
    slow(control)                    # whatever a test slowed, the next one starts fast
    client.close()


def _restarts(cluster) -> int:  # type: ignore[no-untyped-def]
    return cluster.status()["restarts"]


def _shards(cluster) -> int:  # type: ignore[no-untyped-def]
    return len(cluster.status()["sources"]["cache"]["ring"]["shard_ids"])


def test_sigkill_a_shard_process(chaos_cluster, chaos_redis, mem, seed):
    before = _restarts(chaos_cluster)
    with LeaderWatch(chaos_redis.url, chaos_cluster.name) as leaders:
        work = ManyWriters(mem, "kill9", seed=seed).start()
        work.wait_progress(30)
        os.kill(shard_pid(chaos_cluster.name, "cache/1"), signal.SIGKILL)
        wait_until(lambda: _restarts(chaos_cluster) > before, timeout=30,
                   message="the killed shard's replacement")
        work.wait_progress(30)
        heal_and_check("SIGKILL shard", chaos_cluster, mem, work, seed=seed,
                       leaders=leaders.samples)


def test_sigstop_a_shard_is_detected_and_replaced(chaos_cluster, chaos_redis, mem, seed):
    before = _restarts(chaos_cluster)
    pid = shard_pid(chaos_cluster.name, "cache/2")
    with LeaderWatch(chaos_redis.url, chaos_cluster.name) as leaders:
        work = ManyWriters(mem, "stop", seed=seed).start()
        work.wait_progress(30)
        os.kill(pid, signal.SIGSTOP)
        try:
            wait_until(lambda: _restarts(chaos_cluster) > before, timeout=30,
                       message="the frozen shard's replacement")
            assert shard_pid(chaos_cluster.name, "cache/2") != pid
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        work.wait_progress(30)
        heal_and_check("SIGSTOP/SIGCONT shard", chaos_cluster, mem, work, seed=seed,
                       leaders=leaders.samples)


def test_killed_manager_is_restarted_and_reattaches(chaos_cluster, chaos_redis, mem, seed):
    import ray

    status = chaos_cluster.status()
    epoch, pids = status["epoch"], {s: shard_pid(chaos_cluster.name, s)
                                    for s in status["sources"]["cache"]["ring"]["shard_ids"]}
    with LeaderWatch(chaos_redis.url, chaos_cluster.name) as leaders:
        work = ManyWriters(mem, "mgr", seed=seed).start()
        work.wait_progress(30)
        ray.kill(chaos_cluster.manager, no_restart=False)
        work.wait_progress(30)          # clients keep working on their cached ring
        after = wait_until(lambda: (s := chaos_cluster.status())["epoch"] > epoch
                           and s["leading"] and s, timeout=60,
                           message="the restarted manager leading")
        # Re-attached, not replaced: the same shard processes, no data moved.
        assert {s: shard_pid(chaos_cluster.name, s) for s in pids} == pids
        assert after["leader"] != status["leader"]
        heal_and_check("ray.kill manager", chaos_cluster, mem, work, seed=seed,
                       leaders=leaders.samples)


def test_redis_freeze_and_restart(chaos_cluster, chaos_redis, mem, seed):
    from memcluster.cluster.coord.coordinator import Coordinator

    target = _shards(chaos_cluster) + 1
    with LeaderWatch(chaos_redis.url, chaos_cluster.name) as leaders:
        work = ManyWriters(mem, "redis", seed=seed).start()
        work.wait_progress(30)
        scaled: dict = {}
        chaos_redis.freeze()
        try:
            # Coordination waits for Redis; data keeps flowing on the cached rings.
            scaler = threading.Thread(target=lambda: scaled.update(
                chaos_cluster.scale("cache", target)), daemon=True)
            scaler.start()
            work.wait_progress(20, timeout=30)
        finally:
            chaos_redis.thaw()
        scaler.join(timeout=120)
        assert scaled.get("shards") == target, scaled
        chaos_redis.restart()             # kill -9 and start again (AOF keeps the keys)
        heal_and_check("SIGSTOP + restart redis", chaos_cluster, mem, work, seed=seed,
                       leaders=leaders.samples)
    coord = Coordinator(chaos_redis.url, chaos_cluster.name)
    version, ring = coord.ring_store.load("cache")
    status = chaos_cluster.status()
    assert version == ring["version"]
    assert ring == status["sources"]["cache"]["ring"] and len(ring["shard_ids"]) == target
    spec = coord.load_spec()
    assert next(s for s in spec["sources"] if s["name"] == "cache")["shards"] == target
    assert coord.current_epoch() == status["epoch"]
    coord.close()
    assert chaos_cluster.scale("cache", 3)["shards"] == 3


def test_scale_up_and_down_mid_load(chaos_cluster, chaos_redis, mem, seed):
    shards = _shards(chaos_cluster)
    with LeaderWatch(chaos_redis.url, chaos_cluster.name) as leaders:
        work = ManyWriters(mem, "scale", seed=seed).start()
        work.wait_progress(30)
        assert chaos_cluster.scale("cache", shards + 2)["shards"] == shards + 2
        work.wait_progress(30)
        assert chaos_cluster.scale("cache", 3)["shards"] == 3
        heal_and_check("scale up and down", chaos_cluster, mem, work, seed=seed,
                       leaders=leaders.samples)


def test_slow_export_during_scale_rolls_back_then_a_retry_succeeds(
        chaos_cluster, chaos_redis, control, mem, seed):
    """An old shard answers every export page later than the call timeout: the copy is
    retried, then given up; the scale rolls back with a typed error, nothing is dropped,
    and once the shard is fast again the same scale succeeds."""
    shards = _shards(chaos_cluster)
    with LeaderWatch(chaos_redis.url, chaos_cluster.name) as leaders:
        work = ManyWriters(mem, "slowexport", seed=seed).start()
        work.wait_progress(30)
        slow(control, export={"cache/1": 3.0})
        with pytest.raises(MemclusterError) as failed:
            chaos_cluster.scale("cache", shards + 1)
        assert _shards(chaos_cluster) == shards, "a failed scale left the ring changed"
        slow(control)
        wait_until(lambda: all_serving(chaos_cluster), timeout=90, message="serving again")
        work.wait_progress(20)
        assert chaos_cluster.scale("cache", shards + 1)["shards"] == shards + 1
        row = heal_and_check("slow export during scale", chaos_cluster, mem, work,
                             seed=seed, leaders=leaders.samples)
    print(f"first scale failed with {type(failed.value).__name__}; row {row}")
    assert chaos_cluster.scale("cache", 3)["shards"] == 3


def test_slow_open_during_scale_cleans_up_then_a_retry_succeeds(
        chaos_cluster, chaos_redis, control, mem, seed):
    """A new shard opens later than `open_timeout`: the half-done spawn is killed by
    name, the scale rolls back with a typed error, and the next scale does not meet the
    old actor's name (the bug this guards: ActorAlreadyExistsError forever)."""
    shards = _shards(chaos_cluster)
    new = f"cache/{shards}"
    with LeaderWatch(chaos_redis.url, chaos_cluster.name) as leaders:
        work = ManyWriters(mem, "slowopen", seed=seed).start()
        work.wait_progress(30)
        slow(control, open={new: 2.5 * CHAOS_HEALTH["open_timeout"]})
        with pytest.raises(MemclusterError):
            chaos_cluster.scale("cache", shards + 1)
        assert _shards(chaos_cluster) == shards
        slow(control)
        assert chaos_cluster.scale("cache", shards + 1)["shards"] == shards + 1
        heal_and_check("slow open during scale", chaos_cluster, mem, work, seed=seed,
                       leaders=leaders.samples)
    assert chaos_cluster.scale("cache", 3)["shards"] == 3


def test_kill_during_hydration_with_slow_sources(chaos_cluster, chaos_redis, control, mem,
                                                 seed):
    """Every shard exports slowly (under the call timeout) when one is killed: its
    replacement stays recovering while it copies, reads fall back to the other replica,
    and it serves only with a complete copy: no hole, no divergence."""
    before = _restarts(chaos_cluster)
    with LeaderWatch(chaos_redis.url, chaos_cluster.name) as leaders:
        work = ManyWriters(mem, "hydrate", seed=seed).start()
        work.wait_progress(30)
        slow(control, export={"*": 1.2})
        os.kill(shard_pid(chaos_cluster.name, "cache/0"), signal.SIGKILL)
        wait_until(lambda: _restarts(chaos_cluster) > before, timeout=30,
                   message="the killed shard's replacement")
        work.wait_progress(10, timeout=60)
        slow(control)
        heal_and_check("kill during slow hydration", chaos_cluster, mem, work, seed=seed,
                       leaders=leaders.samples)
