"""Throughput against shard count, for `benchmarks/cluster_ops.py --plot`.

`sweep_sources(shards)` gives the extra memory sources the sweep needs (`s1`, `s2`, ...:
N=1 over 1, 2, ... shards), to add to `bench_spec()`; `run_shard_sweep(memory, ...)`
measures each of them with the agent fleet (K agents, 75% retrieve / 20% store / 5%
search) and store_many of 1000 items, and, once in the same run, the same two workloads
on the peers that do not shard: a hand-written Ray dict actor and redis-py. The rows
carry `system`, `workload` and (memcluster only) `shards`, which `benchmarks/plots.py`
draws; the peers are the horizontal lines beside memcluster's curve.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable, Iterable
from typing import Any

from benchmarks.harness import VALUE, DictStore, _ClusterAgentOps, _Fleet, _pct, _rate, _Rows
from benchmarks.peers import DictAgentOps, RedisAgentOps

SHARDS = (1, 2, 4, 8)
BATCH = 1000


def sweep_sources(shards: Iterable[int] = SHARDS) -> list[dict[str, Any]]:
    """One memory source per shard count: `s<n>`, N=1 over n shards."""
    return [{"name": f"s{n}", "backend": "memory", "shards": n, "replicas": 1,
             "opts": {"cleanup_interval": 0}} for n in shards]


def run_shard_sweep(memory: Any, *, shards: Iterable[int] = SHARDS, seconds: float = 2.0,
                    agents: int = 64, redis_url: str | None = None,
                    progress: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Fleet ops/s and store_many items/s for each `s<n>` source of `memory` (started from
    `sweep_sources(shards)`), beside the Ray dict actor and redis-py (None skips it)."""
    import ray

    say = progress or (lambda _msg: None)
    rows = _Rows()
    shards = list(shards)
    ns = f"bench-sweep-{random.randrange(1 << 40):010x}"
    items = [(f"b{i}", VALUE) for i in range(BATCH)]
    fleet = _Fleet(seconds)

    def fleet_row(system: str, ops: Any, **extra: Any) -> None:
        ((k, rate, lat),) = asyncio.run(fleet.run_all(ops, [agents]))
        where = f" shards={extra['shards']}" if "shards" in extra else ""
        rows.add("shards", f"fleet {system} K={k}{where}", rate, system=system,
                 workload="fleet", agents=k, p50_ms=_pct(lat, .5), p99_ms=_pct(lat, .99),
                 **extra)

    def batch_row(system: str, call: Callable[[int], Any], **extra: Any) -> None:
        rate, _ = _rate(call, seconds, 1_000_000)
        where = f" shards={extra['shards']}" if "shards" in extra else ""
        rows.add("shards", f"store_many {BATCH} {system}{where}", rate * BATCH, "items/s",
                 system=system, workload="store_many", **extra)

    say("shard sweep: peers")
    fleet_row("ray dict actor", DictAgentOps())
    actor = ray.remote(num_cpus=0)(DictStore).remote()
    batch_row("ray dict actor", lambda _i: ray.get(actor.put_many.remote(items)))
    ray.kill(actor)
    if redis_url is not None:
        fleet_row("redis-py", RedisAgentOps(redis_url))
        _redis_batch(redis_url, items, lambda call: batch_row("redis-py", call))
    try:
        for n in shards:
            say(f"shard sweep: {n} shard(s)")
            src = f"s{n}"
            fleet_row("memcluster", _ClusterAgentOps(memory, src, ns), shards=n)
            batch_row("memcluster", lambda _i, s=src: memory.store_many(items, source=s,
                                                                          namespace=ns),
                      shards=n)
    finally:
        for n in shards:
            with contextlib.suppress(Exception):  # best effort: the cluster may be gone
                memory.clear(source=f"s{n}", namespace=ns, confirm=True)
                for a in range(agents):
                    memory.clear(source=f"s{n}", namespace=f"{ns}/agent-{a}", confirm=True)
    return rows.rows


def _redis_batch(url: str, items: list[tuple[str, Any]],
                 measure: Callable[[Callable[[int], Any]], None]) -> None:
    """redis-py's batch: one HSET of the 1000 msgpack-encoded items into one hash."""
    import msgpack
    import redis

    client = redis.Redis.from_url(url)
    key = f"memcluster-bench-sweep:{random.randrange(1 << 30)}"
    try:
        measure(lambda _i: client.hset(key, mapping={k: msgpack.packb(v) for k, v in items}))
    finally:
        client.delete(key)
        client.close()
