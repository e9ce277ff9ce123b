"""The chaos workload: several writers per key on a live cluster, checked for linearizability.

Core types: `ManyWriters` (writer threads sharing a set of keys, each key a counter that
they bump with compare-and-set increments (`store(if_version=...)` after a read) and with
`update(+1)`, mixed with reads; every call recorded as a `tests.lincheck.Call`), `heal_and_check`
(stop the load, wait until every shard serves, read the final values and every replica's
copy, run the Wing & Gong checker and the counter check, print the row and append it as
JSON to `$MEMCLUSTER_CHAOS_REPORT`) and `LeaderWatch` (epochs sampled from Redis: never
back, one leader per epoch).

Outcomes: a Record is "ok"; VersionConflict is a "fail" (the CAS saw another value);
UnknownOutcome and QuorumNotReached are "unknown" (it may take effect, once, later); any
other transient error means the call was refused before it applied ("aborted"). Histories
stay short per key (many keys, an op budget per key), so the exponential search is fast.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from collections import Counter
from typing import Any

from memcluster.errors import (
    MemclusterError,
    QuorumNotReached,
    ShardDied,
    TransientError,
    UnknownOutcome,
    VersionConflict,
)
from tests.lincheck import ABORTED, FAIL, OK, UNKNOWN, Call, check, counter_check
from tests.support import wait_until

OPS_PER_KEY = 40


class ManyWriters:
    """`writers` threads bumping `keys` shared counters until `stop()` or the op budget."""

    def __init__(self, mem: Any, namespace: str, *, seed: int, keys: int = 16,
                 writers: int = 6, source: str = "cache") -> None:
        self.mem = mem
        self.namespace = namespace
        self.source = source
        self.keys = [f"ctr{i:02d}" for i in range(keys)]
        self.calls: list[Call] = []
        self.problems: list[str] = []
        self._lock = threading.Lock()
        self._budget = Counter({k: OPS_PER_KEY for k in self.keys})
        self._stop = threading.Event()
        rng = random.Random(seed)
        self._threads = [threading.Thread(target=self._writer, args=(f"w{i}", rng.random()),
                                          name=f"chaos-w{i}", daemon=True)
                         for i in range(writers)]

    def start(self) -> ManyWriters:
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> list[Call]:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=120)
        return self.calls

    def acknowledged(self) -> int:
        return sum(1 for c in self.calls if c.outcome == OK and c.kind != "read")

    def wait_progress(self, more: int, timeout: float = 40.0) -> None:
        """Wait until `more` further writes were acknowledged (the cluster serves again)."""
        target = self.acknowledged() + more
        wait_until(lambda: self.acknowledged() >= target or self._exhausted(),
                   timeout=timeout, message=f"{more} more acknowledged writes")

    def _exhausted(self) -> bool:
        return not +self._budget

    def _take(self, rng: random.Random) -> str | None:
        with self._lock:
            left = [k for k in self.keys if self._budget[k] > 0]
            if not left:
                return None
            key = rng.choice(left)
            self._budget[key] -= 1
            return key

    def _writer(self, name: str, seed: float) -> None:
        rng = random.Random(seed)
        while not self._stop.is_set():
            key = self._take(rng)
            if key is None:
                return
            roll = rng.random()
            if roll < 0.4:
                read = self._read(name, key)
                if read is not None:
                    value, version = read
                    self._write(name, key, "cas", value, lambda k=key, v=value, ver=version:
                                self.mem.store(k, v + 1, if_version=ver, source=self.source,
                                               namespace=self.namespace))
            elif roll < 0.75:
                self._write(name, key, "incr", None, lambda k=key: self.mem.update(
                    k, _increment, source=self.source, namespace=self.namespace))
            else:
                self._read(name, key)

    def _record(self, call: Call) -> Call:
        with self._lock:
            self.calls.append(call)
        return call

    def _read(self, name: str, key: str) -> tuple[int, int] | None:
        call = self._record(Call(name, key, "read", time.monotonic()))
        try:
            rec = self.mem.retrieve(key, source=self.source, namespace=self.namespace)
        except Exception as exc:  # every failure is recorded, none escapes
            call.complete = time.monotonic()
            call.outcome = UNKNOWN
            self._typed(exc)
            return None
        call.complete = time.monotonic()
        value, version = (0, 0) if rec is None else (int(rec.value), rec.version)
        call.outcome, call.result = OK, value
        return value, version

    def _write(self, name: str, key: str, kind: str, arg: int | None, fn: Any) -> None:
        call = self._record(Call(name, key, kind, time.monotonic(), arg=arg))
        try:
            rec = fn()
        except VersionConflict:
            call.outcome = FAIL
        except (UnknownOutcome, QuorumNotReached):
            call.outcome = UNKNOWN
        except (TransientError, ShardDied) as exc:
            call.outcome = ABORTED   # refused before it applied (the router's contract)
            self._typed(exc)
        except Exception as exc:  # every failure is recorded, none escapes
            call.outcome = UNKNOWN
            self._typed(exc)
        else:
            call.outcome, call.result = OK, int(rec.value)
        call.complete = time.monotonic()

    def _typed(self, exc: BaseException) -> None:
        if not isinstance(exc, (TransientError, ShardDied, VersionConflict)):
            self.problems.append(f"untyped or permanent error {type(exc).__name__}: {exc}")


def _increment(value: Any) -> int:
    return (value or 0) + 1


def shard_pid(cluster_name: str, sid: str) -> int:
    """The OS pid of a shard's process (for SIGKILL / SIGSTOP)."""
    import ray

    from memcluster.cluster import names

    actor = ray.get_actor(names.shard_actor_name(cluster_name, sid),
                          namespace=names.ray_namespace(cluster_name))
    return int(ray.get(actor.ping.options(concurrency_group="health").remote(),
                       timeout=10)["pid"])


def all_serving(cluster: Any, source: str = "cache") -> dict[str, Any] | None:
    """The status once every shard of `source` answers, none is recovering or frozen."""
    status = cluster.status()
    ring = status["sources"][source]["ring"]["shard_ids"]
    shards = status["shards"]
    ok = all(sid in shards and "error" not in shards[sid] and not shards[sid].get("hydrating")
             and not shards[sid].get("frozen") and shards[sid].get("state") == "serving"
             for sid in ring)
    return status if ok else None


def replica_maps(cluster: Any, namespace: str, source: str = "cache"
                 ) -> dict[str, dict[str, tuple[int, int]]]:
    """Every shard's copies of the namespace: shard id -> key -> (value, version)."""
    import ray

    from memcluster.cluster import names

    out: dict[str, dict[str, tuple[int, int]]] = {}
    status = cluster.status()
    for sid in status["sources"][source]["ring"]["shard_ids"]:
        actor = ray.get_actor(names.shard_actor_name(cluster.name, sid),
                              namespace=names.ray_namespace(cluster.name))
        held: dict[str, tuple[int, int]] = {}
        cursor = None
        while True:
            records, cursor = ray.get(actor.export.remote(cursor, 1000), timeout=30)
            held.update({r.key: (r.value, r.version) for r in records
                         if r.namespace == namespace})
            if cursor is None:
                break
        out[sid] = held
    return out


def heal_and_check(fault: str, cluster: Any, mem: Any, work: ManyWriters, *, seed: int,
                   leaders: list[tuple[float, int, str]] | None = None) -> dict[str, Any]:
    """Stop the load, wait for every shard to serve, check, print and record the row."""
    from memcluster.cluster.data.placement import Placement
    from memcluster.cluster.data.ring import Ring

    calls = work.stop()
    status = wait_until(lambda: all_serving(cluster, work.source), timeout=90,
                        message="every shard serving after healing")
    found = mem.retrieve_many(work.keys, source=work.source, namespace=work.namespace)
    final = {k: (int(found[k].value) if k in found else 0) for k in work.keys}
    problems = list(work.problems)
    verdict = check(calls)
    problems += verdict.violations
    lost = counter_check(calls, final)
    problems += lost
    src = status["sources"][work.source]
    placement = Placement(work.source, Ring.from_dict(src["ring"]), src["replicas"],
                          src["write_quorum"])
    copies = replica_maps(cluster, work.namespace, work.source)
    for key in work.keys:
        holders = {sid: held[key] for sid, held in copies.items() if key in held}
        owners = set(placement.preference(key, work.namespace))
        if holders and set(holders) != owners:
            problems.append(f"{key}: held by {sorted(holders)}, owners {sorted(owners)}")
        if len(set(holders.values())) > 1:
            problems.append(f"{key}: copies differ {holders}")
    problems += _leader_problems(leaders or [])
    writes = [c for c in calls if c.kind != "read"]
    row = {"fault": fault, "seed": seed, "attempted": len(writes),
           "acknowledged": sum(c.outcome == OK for c in writes),
           "failed": sum(c.outcome in (FAIL, ABORTED) for c in writes),
           "unknown": sum(c.outcome == UNKNOWN for c in writes),
           "lost": len(lost), "violations": len(verdict.violations),
           "reads": len(calls) - len(writes), "keys": verdict.keys}
    print(f"\nCHAOS {json.dumps(row)}")
    report = os.environ.get("MEMCLUSTER_CHAOS_REPORT")
    if report:
        with open(report, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")
    assert not problems, f"{fault} (seed {seed}): {problems[:8]}"
    assert row["acknowledged"] > 0, f"{fault}: no write was acknowledged at all"
    return row


def _leader_problems(samples: list[tuple[float, int, str]]) -> list[str]:
    out, seen, last = [], {}, -1
    for _t, epoch, leader in sorted(samples):
        if epoch < last:
            out.append(f"epoch {epoch} observed after {last}")
        last = max(last, epoch)
        if seen.setdefault(epoch, leader) != leader:
            out.append(f"epoch {epoch}: {seen[epoch]} and {leader} both led")
    return out


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
        while not self._stop.wait(0.1):
            try:
                found = self.coord.leader()
            except MemclusterError:
                continue
            if found is not None:
                token, epoch = found
                self.samples.append((time.monotonic(), epoch, token))
