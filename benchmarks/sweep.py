"""Throughput against shard count, for `benchmarks/cluster_ops.py --plot`.

`sweep_sources(shards)` gives the extra memory sources the sweep needs (`s1`, `s2`, ...:
N=1 over 1, 2, ... shards), to add to `bench_spec()`; `run_shard_sweep(memory, ...)`
measures each of them with the agent fleet (K agents, 75% retrieve / 20% store / 5%
search) and store_many of 1000 items, and, in the same run, the same two workloads on
the peers that do not shard: a hand-written Ray dict actor and redis-py. The rows
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
                    agents: int = 64, rounds: int = 2, redis_url: str | None = None,
                    progress: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Fleet ops/s and store_many items/s for each `s<n>` source of `memory` (started from
    `sweep_sources(shards)`), beside the Ray dict actor and redis-py (None skips it).

    Every figure is the mean of `rounds` measurements, the rounds taking the shard counts
    in alternating order with the peers measured in each, so a change in the machine's
    load (other processes) weighs on all of them alike."""
    import ray

    say = progress or (lambda _msg: None)
    shards = list(shards)
    ns = f"bench-sweep-{random.randrange(1 << 40):010x}"
    items = [(f"b{i}", VALUE) for i in range(BATCH)]
    fleet = _Fleet(seconds)
    got: dict[tuple[str, str, int | None], list[tuple[float, list[float]]]] = {}

    def measure_fleet(system: str, ops: Any, n: int | None = None) -> None:
        ((_k, rate, lat),) = asyncio.run(fleet.run_all(ops, [agents]))
        got.setdefault((system, "fleet", n), []).append((rate, lat))

    def measure_batch(system: str, call: Callable[[int], Any], n: int | None = None) -> None:
        rate, _ = _rate(call, seconds, 1_000_000)
        got.setdefault((system, "store_many", n), []).append((rate * BATCH, []))

    try:
        for r in range(rounds):
            say(f"shard sweep round {r + 1}/{rounds}: peers")
            measure_fleet("ray dict actor", DictAgentOps())
            actor = ray.remote(num_cpus=0)(DictStore).remote()
            measure_batch("ray dict actor",
                          lambda _i, a=actor: ray.get(a.put_many.remote(items)))
            ray.kill(actor)
            if redis_url is not None:
                measure_fleet("redis-py", RedisAgentOps(redis_url))
                _redis_batch(redis_url, items,
                             lambda call: measure_batch("redis-py", call))
            for n in shards if r % 2 == 0 else reversed(shards):
                say(f"shard sweep round {r + 1}/{rounds}: {n} shard(s)")
                src = f"s{n}"
                measure_fleet("memcluster", _ClusterAgentOps(memory, src, ns), n)
                measure_batch("memcluster", lambda _i, s=src: memory.store_many(
                    items, source=s, namespace=ns), n)
    finally:
        for n in shards:
            with contextlib.suppress(Exception):  # best effort: the cluster may be gone
                memory.clear(source=f"s{n}", namespace=ns, confirm=True)
                for a in range(agents):
                    memory.clear(source=f"s{n}", namespace=f"{ns}/agent-{a}", confirm=True)
    return _sweep_rows(got, agents)


def _sweep_rows(got: dict[tuple[str, str, int | None], list[tuple[float, list[float]]]],
                agents: int) -> list[dict[str, Any]]:
    rows = _Rows()
    for (system, workload, n), runs in got.items():
        rate = sum(r for r, _ in runs) / len(runs)
        lat = [t for _, ts in runs for t in ts]
        extra: dict[str, Any] = {"system": system, "workload": workload, "rounds": len(runs)}
        where = "" if n is None else f" shards={n}"
        if n is not None:
            extra["shards"] = n
        if workload == "fleet":
            rows.add("shards", f"fleet {system} K={agents}{where}", rate, agents=agents,
                     p50_ms=_pct(lat, .5), p99_ms=_pct(lat, .99), **extra)
        else:
            rows.add("shards", f"store_many {BATCH} {system}{where}", rate, "items/s", **extra)
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
