"""Multi-node scenarios on `ray.cluster_utils.Cluster` (several raylets on this machine).

Run as `python -m tests.multinode.scenarios` (the pytest test does, in a process of its
own, since a process joins one Ray): a head started with 0 CPUs, as the Helm chart does,
and three 1-CPU worker nodes; one source of 6 shards, N=2, W=2. Prints one JSON line per
scenario (`ROW {...}`), and exits 1 if any check failed:

  1. placement: no shard and no manager on the head; every key's 2 replicas on 2 nodes;
     `status` reports each shard's node and domain, and the domains as sufficient;
  2. node loss under load: the node that hosts the manager and two shards is removed
     ungracefully while six writers run CAS and update increments; the manager restarts
     on another node and re-attaches, the lost shards respawn on the surviving nodes and
     hydrate; nothing acknowledged is lost (linearizability and counter checks), at most
     20% of writes fail (an error; a CAS conflict is an answer), and the seconds until
     every key has N copies again are reported;
  3. new node: a node is added, `rebalance()` moves shards onto it, and the placement is
     sufficient again.
"""

from __future__ import annotations

import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HEALTH = {"interval": 0.3, "ping_timeout": 0.5, "misses": 3, "call_timeout": 2.0,
          "lease_ttl": 3.0, "open_timeout": 20.0, "copy_timeout": 10.0}
SYSTEM = {"health_check_period_ms": 500, "health_check_failure_threshold": 3,
          "health_check_initial_delay_ms": 0}
SHARDS, REPLICAS = 6, 2


def main() -> int:
    import ray
    from ray.cluster_utils import Cluster

    import memcluster as mc
    from tests.support import RedisServer, free_port

    seed = int(os.environ.get("MEMCLUSTER_TEST_SEED") or random.randrange(1 << 30))
    print(f"multinode seed: {seed}", flush=True)
    rows: list[dict[str, Any]] = []
    failures: list[str] = []
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "include_dashboard": False, "_system_config": SYSTEM})
    workers = [cluster.add_node(num_cpus=1) for _ in range(3)]
    redis = RedisServer(Path(tempfile.mkdtemp(prefix="mn-redis-")), port=free_port())
    redis.start()
    handle = None
    try:
        ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
        cluster.wait_for_nodes()
        head = next(n["NodeID"] for n in ray.nodes() if not n["Resources"].get("CPU"))
        config = {"name": "mn", "metrics_port": None, "health": HEALTH,
                  "placement": {"domain": "node"}, "sources": [
                      {"name": "cache", "backend": "memory", "default": True,
                       "shards": SHARDS, "replicas": REPLICAS, "write_quorum": REPLICAS,
                       "supervision": {"intensity": 50, "period": 30}}]}
        handle = mc.start_cluster(config, name="mn", redis_url=redis.url, timeout=120)
        mem = mc.connect("mn")
        _wait(lambda: _serving(handle), 60, "every shard serving")
        rows.append(_placement(handle, head, failures))
        rows.append(_node_loss(cluster, workers, handle, mem, head, seed, failures))
        rows.append(_new_node(cluster, handle, failures))
        mem.close()
    except Exception as exc:  # reported as a failed scenario, with the state we reached
        failures.append(f"{type(exc).__name__}: {exc}")
    finally:
        if handle is not None:
            try:
                handle.stop()
            except Exception as exc:  # the cluster is torn down below anyway
                print(f"stop: {type(exc).__name__}: {exc}", flush=True)
        ray.shutdown()
        cluster.shutdown()
        redis.close()
    for row in rows:
        print("ROW " + json.dumps(row), flush=True)
    for failure in failures:
        print("FAILED " + failure, flush=True)
    return 1 if failures else 0


def _wait(cond: Any, timeout: float, what: str) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            value = cond()
        except Exception:  # the cluster may be mid-recovery: ask again
            value = None
        if value:
            return value
        time.sleep(0.2)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def _serving(handle: Any, gone: str | None = None) -> dict[str, Any] | None:
    """The status once every shard of the ring serves (and, given `gone`, neither the
    manager nor any shard runs on that node)."""
    status = handle.status()
    ring = status["sources"]["cache"]["ring"]["shard_ids"]
    shards = status["shards"]
    ok = all(s in shards and shards[s].get("state") == "serving" and "error" not in shards[s]
             and (gone is None or shards[s].get("node") != gone) for s in ring)
    ok = ok and (gone is None or status.get("manager_node") not in (None, gone))
    return status if ok else None


def _key_nodes(status: dict[str, Any]) -> list[set[str]]:
    """For sample keys, the set of nodes their replicas sit on."""
    from memcluster.cluster.data.placement import Placement
    from memcluster.cluster.data.ring import Ring

    src = status["sources"]["cache"]
    placement = Placement("cache", Ring.from_dict(src["ring"]), src["replicas"],
                          src["write_quorum"])
    nodes = {sid: sh.get("node") for sid, sh in status["shards"].items()}
    return [{nodes[s] for s in placement.preference(f"key{i}", "")} for i in range(500)]


def _placement(handle: Any, head: str, failures: list[str]) -> dict[str, Any]:
    status = handle.status()
    shard_nodes = {sid: sh.get("node") for sid, sh in status["shards"].items()}
    on_head = sorted(sid for sid, node in shard_nodes.items() if node == head)
    spread = _key_nodes(status)
    split = sum(len(nodes) == REPLICAS for nodes in spread)
    report = status["placement"]["cache"]
    if on_head:
        failures.append(f"placement: shards on the 0-CPU head: {on_head}")
    if status.get("manager_node") == head:
        failures.append("placement: the manager runs on the 0-CPU head")
    if split != len(spread):
        failures.append(f"placement: {len(spread) - split} keys have replicas on one node")
    if not report["ok"]:
        failures.append(f"placement: reported insufficient: {report['warnings']}")
    return {"scenario": "placement", "nodes": 4, "shards": SHARDS, "N": REPLICAS,
            "shards_on_head": len(on_head),
            "manager_on_head": status.get("manager_node") == head,
            "keys_on_distinct_nodes": f"{split}/{len(spread)}",
            "domains": report["physical_domains"]}


def _node_loss(cluster: Any, workers: list[Any], handle: Any, mem: Any, head: str,
               seed: int, failures: list[str]) -> dict[str, Any]:
    from tests.chaos.workload import ManyWriters, heal_and_check
    from tests.lincheck import ABORTED, FAIL, UNKNOWN

    status = handle.status()
    victim_id = status.get("manager_node")
    victim = next((w for w in workers if w.node_id == victim_id), workers[0])
    lost_shards = sorted(s for s, sh in status["shards"].items()
                         if sh.get("node") == victim.node_id)
    work = ManyWriters(mem, "nodeloss", seed=seed, keys=24, writers=6).start()
    work.wait_progress(40)
    before = {id(c) for c in work.calls}
    removed_at = time.monotonic()
    cluster.remove_node(victim, allow_graceful=False)
    workers.remove(victim)
    # The removed node's processes may answer for a moment: wait until the manager and
    # every shard run elsewhere, and serve.
    status = _wait(lambda: _serving(handle, gone=victim.node_id), 120,
                   "every shard serving off the removed node")
    recovered = time.monotonic() - removed_at
    work.wait_progress(40, timeout=60)
    during = [c for c in work.calls if id(c) not in before and c.kind != "read"
              and c.invoke <= removed_at + recovered]
    # a CAS that lost its race (a conflict) answered correctly: a failure is an error
    failed = sum(c.outcome in (ABORTED, UNKNOWN) for c in during)
    conflicts = sum(c.outcome == FAIL for c in during)
    row = heal_and_check("node loss", handle, mem, work, seed=seed)
    status = handle.status()
    if any(sh.get("node") == victim.node_id for sh in status["shards"].values()):
        failures.append("node loss: a shard is still placed on the removed node")
    if status.get("manager_node") in (head, victim.node_id):
        failures.append("node loss: the manager did not move to a surviving worker")
    rate = failed / max(1, len(during))
    if rate > 0.2:
        failures.append(f"node loss: {failed} of {len(during)} writes failed during the loss")
    if row["lost"]:
        failures.append(f"node loss: {row['lost']} acknowledged writes lost")
    return {"scenario": "node loss (manager's node)", "nodes": 4, "shards": SHARDS,
            "N": REPLICAS, "shards_lost": len(lost_shards), "acknowledged": row["acknowledged"],
            "lost": row["lost"], "unknown": row["unknown"],
            "failed_during_loss": f"{failed}/{len(during)}", "cas_conflicts": conflicts,
            "seconds_to_n_copies": round(recovered, 1)}


def _new_node(cluster: Any, handle: Any, failures: list[str]) -> dict[str, Any]:
    node = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    started = time.monotonic()
    out = handle.rebalance()
    status = _wait(lambda: _serving(handle), 120, "every shard serving after the rebalance")
    seconds = time.monotonic() - started
    hosted = sorted(s for s, sh in status["shards"].items() if sh.get("node") == node.node_id)
    spread = _key_nodes(status)
    split = sum(len(nodes) == REPLICAS for nodes in spread)
    if not hosted:
        failures.append(f"new node: rebalance put no shard on it ({out})")
    if split != len(spread) or not status["placement"]["cache"]["ok"]:
        failures.append(f"new node: placement not sufficient after rebalance: "
                        f"{status['placement']['cache']['warnings']}")
    return {"scenario": "node added + rebalance", "nodes": 4, "shards": SHARDS,
            "N": REPLICAS, "shards_on_new_node": len(hosted),
            "domains": status["placement"]["cache"]["physical_domains"],
            "seconds": round(seconds, 1)}


if __name__ == "__main__":
    sys.exit(main())
