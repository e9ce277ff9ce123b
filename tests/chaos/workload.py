"""The chaos workload: several writers on a live cluster, recorded into a `History`.

Core types: `Workload` (client threads, each the only writer of its own keys, writing
strictly increasing sequence numbers and reading its own keys back; bounded by a deadline
and an operation cap) and `heal_and_check` (wait until every shard serves, read the final
state and every replica's copy, run the checker, print the row and append it as JSON to
`$MEMCLUSTER_CHAOS_REPORT`). The single-writer model is what `history.check` needs to
decide "lost" exactly; concurrency comes from the clients sharing shards, not keys.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from memcluster.errors import ShardDied, TransientError
from tests.chaos.history import FAIL, UNKNOWN, History, Verdict, check
from tests.support import wait_until

MAX_OPS_PER_CLIENT = 4000


def classify_write(exc: BaseException) -> str:
    """A transient failure after the call may have been sent leaves the write unknown."""
    return UNKNOWN if isinstance(exc, (TransientError, ShardDied)) else FAIL


class Workload:
    """`clients` threads writing and reading their own keys until `stop()`."""

    def __init__(self, mem: Any, namespace: str, *, clients: int = 4, keys_per_client: int = 8,
                 seed: int, source: str = "cache", read_ratio: float = 0.3) -> None:
        self.mem = mem
        self.namespace = namespace
        self.source = source
        self.history = History()
        self.rng = random.Random(seed)
        self.read_ratio = read_ratio
        self.keys = {f"c{c}": [f"c{c}:k{k}" for k in range(keys_per_client)]
                     for c in range(clients)}
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client, args=(name, self.rng.random()),
                                          name=f"chaos-{name}", daemon=True)
                         for name in self.keys]

    @property
    def all_keys(self) -> list[str]:
        return [k for keys in self.keys.values() for k in keys]

    def start(self) -> Workload:
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> History:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=60)
        return self.history

    def acknowledged(self) -> int:
        return sum(1 for e in self.history.events if e.kind == "write" and e.outcome == "ok")

    def wait_progress(self, more: int, timeout: float = 30.0) -> None:
        """Wait until `more` further writes were acknowledged (the cluster serves again)."""
        target = self.acknowledged() + more
        wait_until(lambda: self.acknowledged() >= target, timeout=timeout,
                   message=f"{more} more acknowledged writes")

    def _client(self, name: str, seed: float) -> None:
        rng = random.Random(seed)
        seq = dict.fromkeys(self.keys[name], 0)
        ns, src, h = self.namespace, self.source, self.history
        for _ in range(MAX_OPS_PER_CLIENT):
            if self._stop.is_set():
                return
            key = rng.choice(self.keys[name])
            if rng.random() < self.read_ratio:
                def read(key: str = key) -> int | None:
                    rec = self.mem.retrieve(key, source=src, namespace=ns)
                    return None if rec is None else rec.value
                h.run(name, "read", key, read)
            else:
                seq[key] += 1
                value = seq[key]
                h.run(name, "write", key,
                      lambda key=key, value=value: self.mem.store(key, value, source=src,
                                                                   namespace=ns),
                      value=value, classify=classify_write)


def shard_pid(cluster_name: str, sid: str) -> int:
    """The OS pid of a shard's process (for SIGKILL / SIGSTOP)."""
    import ray

    from memcluster.cluster import names

    actor = ray.get_actor(names.shard_actor_name(cluster_name, sid),
                          namespace=names.ray_namespace(cluster_name))
    return int(ray.get(actor.ping.remote(), timeout=10)["pid"])


def all_serving(cluster: Any, source: str = "cache") -> dict[str, Any] | None:
    """The status once every shard of `source` answers and none is recovering."""
    status = cluster.status()
    shards = {sid: s for sid, s in status["shards"].items() if sid.startswith(source + "/")}
    ok = shards and all("error" not in s and not s.get("hydrating") for s in shards.values())
    return status if ok else None


def replica_maps(cluster: Any, namespace: str, source: str = "cache") -> list[dict[str, int]]:
    """Every shard's copy of the namespace: key -> value (sequence)."""
    import ray

    from memcluster.cluster import names

    out = []
    status = cluster.status()
    for sid in status["sources"][source]["ring"]["shard_ids"]:
        actor = ray.get_actor(names.shard_actor_name(cluster.name, sid),
                              namespace=names.ray_namespace(cluster.name))
        held: dict[str, int] = {}
        cursor = None
        while True:
            records, cursor = ray.get(actor.export.remote(cursor, 1000), timeout=30)
            held.update({r.key: r.value for r in records if r.namespace == namespace})
            if cursor is None:
                break
        out.append(held)
    return out


def heal_and_check(fault: str, cluster: Any, mem: Any, work: Workload, *, seed: int,
                   leaders: list[tuple[float, int, str]] | None = None,
                   extra: Callable[[Verdict], None] | None = None) -> Verdict:
    """Stop the load, wait for every shard to serve, check, print and record the row."""
    history = work.stop()
    wait_until(lambda: all_serving(cluster, work.source), timeout=60,
               message="every shard serving after healing")
    found = mem.retrieve_many(work.all_keys, source=work.source, namespace=work.namespace)
    final = {k: (found[k].value if k in found else None) for k in work.all_keys}
    verdict = check(history, final, replicas=replica_maps(cluster, work.namespace, work.source),
                    leaders=leaders or [])
    row = {"fault": fault, "seed": seed, **verdict.row()}
    print(f"\nCHAOS {json.dumps(row)}")
    report = os.environ.get("MEMCLUSTER_CHAOS_REPORT")
    if report:
        with open(report, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")
    if extra is not None:
        extra(verdict)
    problems = verdict.lost + verdict.stale_reads + verdict.diverged + \
        verdict.epoch_regressions + verdict.split_brain
    assert verdict.ok, f"{fault}: {problems[:10]}"
    assert verdict.acknowledged > 0, f"{fault}: no write was acknowledged at all"
    return verdict


class LeaderWatch:
    """Samples (time, epoch, leader token) from Redis every 100 ms on a thread."""

    def __init__(self, redis_url: str, cluster: str) -> None:
        from memcluster.cluster.coord.coordinator import Coordinator

        self.coord = Coordinator(redis_url, cluster)
        self.samples: list[tuple[float, int, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> LeaderWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.coord.close()

    def _run(self) -> None:
        from memcluster.errors import MemclusterError

        while not self._stop.wait(0.1):
            try:
                found = self.coord.leader()
            except MemclusterError:
                continue
            if found is not None:
                token, epoch = found
                self.samples.append((time.monotonic(), epoch, token))
