"""One simulated schedule: the real control plane and data path under seeded faults.

`run_schedule(seed)` builds a world (3 nodes, a simulated coordination Redis), starts the
real `ClusterManager` on it, runs several writers per key (CAS increments, `update`
increments, reads) through the real `Router` and client directory, injects a random
sequence of faults while they run (a shard killed, frozen, answering exports late or
opening late; the manager crashed and restarted; Redis stalled; a node lost; scales up and
down), heals, waits for the cluster to converge and checks the invariants:
  * every call answered with a result or a typed `MemclusterError`; nothing untyped
    escaped any thread of the manager, the shards or the clients;
  * each key's history is linearizable (`tests.lincheck`) and its final value is its
    acknowledged increments plus at most its unknown ones: no acknowledged write lost;
  * versions a client observes never go back;
  * once converged, every key is held by exactly its N owners, all with the same copy;
  * every scale converged or rolled back: the Redis pointer and spec match the manager,
    no shard is frozen, no actor runs outside the ring.
A failing seed is reported and replays exactly (`python -m tests.sim --seed N`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from memcluster.cluster.control.manager import ClusterManager
from memcluster.cluster.data.client import ClientDirectory
from memcluster.cluster.data.local import MissingShard
from memcluster.cluster.data.router import Router
from memcluster.cluster.retry import Retry
from memcluster.errors import (
    MemclusterError,
    QuorumNotReached,
    ShardDied,
    SourceUnavailable,
    Timeout,
    TransientError,
    UnknownOutcome,
    VersionConflict,
)
from memcluster.model import Record
from memcluster.ops import RetrieveOp, StoreOp, UpdateOp
from tests.lincheck import ABORTED, FAIL, OK, UNKNOWN, Call, check, counter_check
from tests.sim.actors import SimRuntime
from tests.sim.coord import SimCoordinator
from tests.sim.world import Future, Owner, SimScheduler, World

SOURCE = "cache"
HEALTH = {"interval": 0.2, "ping_timeout": 0.2, "misses": 3, "call_timeout": 0.6,
          "lease_ttl": 1.2, "open_timeout": 2.0, "copy_timeout": 3.0}


def spec(shards: int) -> dict[str, Any]:
    return {"name": "sim", "metrics_port": None, "health": HEALTH, "sources": [
        {"name": SOURCE, "backend": "memory", "default": True, "shards": shards,
         "replicas": 2, "write_quorum": 2, "opts": {"cleanup_interval": 0},
         "supervision": {"intensity": 10_000, "period": 10}}]}


class Increment:
    """`update`'s function: the counter plus one (picklable, like Ray needs)."""

    def __call__(self, value: Any) -> int:
        return (value or 0) + 1


@dataclass
class Outcome:
    seed: int
    ok: bool
    problems: list[str] = field(default_factory=list)
    calls: int = 0
    acknowledged: int = 0
    unknown: int = 0
    faults: list[str] = field(default_factory=list)
    sim_seconds: float = 0.0
    events: int = 0


class _ManagerLink:
    """The client's `session.ManagerHandle`, over whichever manager leads now."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    def call(self, method: str, *args: Any, timeout: float | None = None,
             idempotent: bool = True) -> Any:
        world = self.cluster.world
        mgr = self.cluster.manager
        if mgr is None or mgr.owner.dead:
            world.sleep(0.01)
            raise SourceUnavailable("the manager is restarting")
        fut = Future(world, "the manager", timeout or 5.0)  # a lost actor does not hang
        target = getattr(mgr.core, method)

        def run() -> None:
            world.sleep(self.cluster.runtime.latency())
            try:
                fut.resolve(target(*args))
            except MemclusterError as exc:
                fut.resolve(error=exc)

        world.spawn(run, mgr.owner, f"manager.{method}")
        return fut.result()


class _SimDirectory(ClientDirectory):
    """The real client directory; shard handles come from the simulated runtime."""

    runtime: SimRuntime

    def link(self, sid: str) -> Any:
        self.calls += 1
        handle = self._handles.get(sid)
        if handle is None:
            handle = self.runtime.find(sid)
            if handle is None:
                return MissingShard(sid)
            self._handles[sid] = handle
        return handle


@dataclass
class _Manager:
    core: ClusterManager
    owner: Owner


class Cluster:
    """The simulated cluster: world, runtime, coordinator and the current manager."""

    def __init__(self, world: World, shards: int) -> None:
        self.world = world
        self.runtime = SimRuntime(world, nodes=3, call_timeout=HEALTH["call_timeout"])
        self.coord = SimCoordinator(world)
        self.spec = spec(shards)
        self.manager: _Manager | None = None
        self.generation = 0
        self.ray = Owner("ray")
        self.scales: list[tuple[Owner, dict[str, bool]]] = []   # (manager, {"done": ...})

    def start_manager(self) -> _Manager:
        """A (new) manager process: the actor is one, so any previous one is gone."""
        self.crash_manager()
        self.generation += 1
        owner = Owner(f"manager{self.generation}")
        sched = SimScheduler(self.world, owner)
        core = ClusterManager("sim", "redis://sim", self.spec, runtime=self.runtime,
                              sched=sched, coordinator=lambda _timeout: self.coord,
                              heartbeats=False, exit_on_lost_lease=False, autostart=False)
        self.manager = _Manager(core, owner)
        self.world.spawn(core.start, owner, "manager.start")
        return self.manager

    def crash_manager(self) -> None:
        if self.manager is not None:
            self.world.crash(self.manager.owner)
            self.manager = None

    def crash_and_restart_manager(self, pause: float) -> None:
        """The manager process dies; Ray starts the actor again `pause` seconds later."""
        self.crash_manager()

        def restart() -> None:
            self.world.sleep(pause)
            if self.manager is None:
                self.start_manager()

        self.world.spawn(restart, self.ray, "ray restarts the crashed manager")

    def supervise_manager(self) -> None:
        """Ray's `max_restarts=-1` for the manager actor: a manager that stopped (lost its
        lease, or its root supervisor gave up: in the actor, the process exits) is
        replaced by a fresh one a moment later."""
        while True:
            self.world.sleep(0.1)
            mgr = self.manager
            if mgr is not None and (mgr.core._stop.is_set() or mgr.core.error is not None):
                self.crash_manager()
                self.world.sleep(self.world.rng.uniform(0.05, 0.5))
                self.start_manager()

    def leading(self) -> ClusterManager | None:
        mgr = self.manager
        if mgr is None or mgr.owner.dead or not mgr.core.leading:
            return None
        return mgr.core


class Workload:
    """Writers sharing keys: CAS increments, update increments and reads, recorded."""

    def __init__(self, cluster: Cluster, keys: int, writers: int, ops: int) -> None:
        self.cluster = cluster
        self.world = cluster.world
        self.keys = [f"k{i}" for i in range(keys)]
        self.writers = writers
        self.ops_per_writer = ops
        self.calls: list[Call] = []
        self.versions: dict[tuple[str, str], int] = {}
        self.problems: list[str] = []
        self.done = 0
        self.owner = Owner("clients")

    def start(self) -> None:
        for w in range(self.writers):
            self.world.spawn(lambda w=w: self._writer(f"w{w}"), self.owner, f"writer {w}")

    def _router(self) -> Router:
        world = self.world
        sched = SimScheduler(world, self.owner)
        while True:
            try:
                directory = _SimDirectory.__new__(_SimDirectory)
                directory.runtime = self.cluster.runtime
                ClientDirectory.__init__(directory, "sim", _ManagerLink(self.cluster),
                                         clock=sched.now)
                break
            except (SourceUnavailable, Timeout):
                world.sleep(0.1)
        retry = Retry(deadline=6.0, delay=0.01, max_delay=0.3,
                      retry_on=(TransientError, ShardDied), clock=sched.now,
                      sleep=sched.sleep, uniform=sched.uniform)
        return Router(directory, retry=retry)

    def _writer(self, name: str) -> None:
        router = self._router()
        rng = self.world.rng
        for _ in range(self.ops_per_writer):
            key = rng.choice(self.keys)
            roll = rng.random()
            if roll < 0.35:
                read = self._read(router, name, key)
                if read is not None:
                    value, version = read
                    self._write(router, name, key, "cas", value, StoreOp.make(
                        key, value + 1, if_version=version))
            elif roll < 0.7:
                self._write(router, name, key, "incr", None, UpdateOp.make(key, Increment()))
            else:
                self._read(router, name, key)
            self.world.sleep(rng.uniform(0.0, 0.05))
        self.done += 1

    def _run(self, router: Router, op: Any) -> Any:
        [result] = router.execute(SOURCE, [op])
        if isinstance(result, Record) or result is None or isinstance(result, MemclusterError):
            return result
        self.problems.append(f"untyped result {type(result).__name__}: {result!r}")
        return None

    def _read(self, router: Router, name: str, key: str) -> tuple[int, int] | None:
        call = Call(name, key, "read", self.world.now)
        self.calls.append(call)
        result = self._run(router, RetrieveOp.make(key))
        call.complete = self.world.now
        if isinstance(result, MemclusterError):
            self._typed(result)
            call.outcome = UNKNOWN
            return None
        value, version = (0, 0) if result is None else (int(result.value), result.version)
        call.outcome, call.result = OK, value
        self._observe(name, key, version)
        return value, version

    def _write(self, router: Router, name: str, key: str, kind: str, arg: int | None,
               op: Any) -> None:
        call = Call(name, key, kind, self.world.now, arg=arg)
        self.calls.append(call)
        result = self._run(router, op)
        call.complete = self.world.now
        if isinstance(result, Record):
            call.outcome = OK
            call.result = int(result.value)
            self._observe(name, key, result.version)
        elif isinstance(result, VersionConflict):
            call.outcome = FAIL
        elif isinstance(result, (UnknownOutcome, QuorumNotReached)):
            call.outcome = UNKNOWN
        elif isinstance(result, (TransientError, ShardDied)):
            call.outcome = ABORTED         # never sent, or refused before it applied
        else:
            self._typed(result)
            call.outcome = UNKNOWN

    def _typed(self, error: Any) -> None:
        if not isinstance(error, (TransientError, ShardDied, VersionConflict)):
            self.problems.append(f"unexpected error {type(error).__name__}: {error}")

    def _observe(self, client: str, key: str, version: int) -> None:
        last = self.versions.get((client, key), 0)
        if version < last:
            self.problems.append(f"{client} saw {key!r} go back from version {last} to "
                                 f"{version}")
        self.versions[(client, key)] = max(last, version)


class _ErrorLog(logging.Handler):
    """Collects ERROR records of memcluster's loggers: an exception a thread logged."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and record.exc_info[0] is not None and issubclass(
                record.exc_info[0], BaseException) and record.exc_info[0].__name__ == "Crashed":
            return
        self.records.append(f"{record.name}: {record.getMessage()}"
                            + (f" ({record.exc_info[1]!r})" if record.exc_info else ""))


def run_schedule(seed: int, *, faults: int | None = None) -> Outcome:
    """Run one seeded schedule and check it (see the module docstring)."""
    world = World(seed)
    rng = world.rng
    cluster = Cluster(world, shards=rng.choice([2, 3, 4]))
    outcome = Outcome(seed, ok=True)
    errors = _ErrorLog()
    logger = logging.getLogger("memcluster")
    logger.addHandler(errors)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        world.run(lambda: _drive(cluster, outcome, faults), until=600.0)
    except RuntimeError as exc:
        outcome.problems.append(str(exc))
    finally:
        logger.removeHandler(errors)
        logger.setLevel(level)
        outcome.sim_seconds, outcome.events = world.now, world.events
        world.close()
    outcome.problems.extend(errors.records)
    outcome.ok = not outcome.problems
    return outcome


def _drive(cluster: Cluster, outcome: Outcome, faults: int | None) -> None:
    world, rng = cluster.world, cluster.world.rng
    cluster.start_manager()
    world.spawn(cluster.supervise_manager, cluster.ray, "ray restarts the manager")
    if not _await(world, lambda: cluster.leading() is not None and _serving(cluster), 30):
        outcome.problems.append("the cluster never started")
        return
    work = Workload(cluster, keys=rng.choice([2, 3, 4]), writers=3, ops=rng.randint(8, 14))
    work.start()
    plan = [_pick_fault(rng) for _ in range(faults if faults is not None
                                             else rng.choice([1, 2, 2, 3]))]
    for fault in plan:
        world.sleep(rng.uniform(0.05, 0.8))
        outcome.faults.append(fault)
        _inject(cluster, fault, outcome)
    _await(world, lambda: work.done == work.writers, 120)
    if work.done < work.writers:
        outcome.problems.append("the writers did not finish")
    _heal(cluster)
    if not _await(world, lambda: _converged(cluster), 120):
        outcome.problems.append(f"did not converge: {_why_not(cluster)}")
        return
    _check(cluster, work, outcome)


FAULTS = ("kill", "freeze", "slow_export", "slow_open", "crash_manager", "stall",
          "lose_node", "scale", "scale_with_kill", "scale_with_stall", "scale_with_crash")


def _pick_fault(rng: Any) -> str:
    return rng.choice(FAULTS)


# Faults that take a shard down: injected only while every shard serves, so a key never
# loses more than N - 1 = 1 of its copies at once (beyond that, loss is expected).
SHARD_FAULTS = frozenset({"kill", "freeze", "slow_open", "lose_node", "scale_with_kill"})


def _inject(cluster: Cluster, fault: str, outcome: Outcome) -> None:
    world, rng, runtime = cluster.world, cluster.world.rng, cluster.runtime
    if fault in SHARD_FAULTS and not _await(world, lambda: _healthy(cluster), 10):
        outcome.faults[-1] = f"{fault} (skipped: not healthy)"
        return
    live = sorted(runtime.live_shards().items())
    if fault == "kill" and live:
        live[rng.randrange(len(live))][1].crash()
    elif fault == "freeze" and live:
        shard = live[rng.randrange(len(live))][1]
        shard.frozen = True
        thaw_after = rng.uniform(0.1, 2.0)

        def thaw() -> None:
            world.sleep(thaw_after)
            shard.frozen = False

        world.spawn(thaw, runtime.network, "thaw")
    elif fault == "slow_export" and live:
        shard = live[rng.randrange(len(live))][1]
        shard.slow["export"] = HEALTH["call_timeout"] * rng.choice([0.5, 1.5, 3.0])
    elif fault == "slow_open":
        runtime.slow_open += 1
        if live:
            live[rng.randrange(len(live))][1].crash()
    elif fault == "crash_manager":
        cluster.crash_and_restart_manager(rng.uniform(0.0, 1.5))
    elif fault == "stall":
        cluster.coord.stall(rng.uniform(0.3, 3.0))
    elif fault == "lose_node":
        alive = [n.node_id for n in runtime.nodes() if n.alive]
        if len(alive) > 2:
            runtime.lose_node(alive[rng.randrange(len(alive))])
    elif fault.startswith("scale"):
        _scale(cluster, rng.choice([2, 3, 4, 5]), outcome)
        if fault == "scale_with_kill" and live:
            world.sleep(rng.uniform(0.0, 0.3))
            live[rng.randrange(len(live))][1].crash()
        elif fault == "scale_with_stall":
            cluster.coord.stall(rng.uniform(0.3, 2.0))
        elif fault == "scale_with_crash":      # the manager dies mid-scale, Ray restarts it
            world.sleep(rng.uniform(0.0, 0.4))
            cluster.crash_and_restart_manager(rng.uniform(0.0, 1.5))


def _scale(cluster: Cluster, shards: int, outcome: Outcome) -> None:
    """Ask the leading manager to scale, on a thread of its own (it may take a while)."""
    world = cluster.world
    mgr = cluster.manager
    if mgr is None:
        return
    running = {"done": False}
    cluster.scales.append((mgr.owner, running))

    def run() -> None:
        try:
            mgr.core.scale(SOURCE, shards)
        except MemclusterError:
            pass                    # typed: a failed scale rolls back (checked at the end)
        finally:
            running["done"] = True

    world.spawn(run, mgr.owner, "scale")


def _heal(cluster: Cluster) -> None:
    for shard in cluster.runtime.live_shards().values():
        shard.frozen = False
        shard.slow.clear()
    cluster.runtime.slow_open = 0
    cluster.coord.stalled_until = 0.0
    if cluster.manager is None:
        cluster.start_manager()


def _await(world: World, cond: Callable[[], bool], seconds: float) -> bool:
    end = world.now + seconds
    while world.now < end:
        if cond():
            return True
        world.sleep(0.1)
    return cond()


def _serving(cluster: Cluster) -> bool:
    mgr = cluster.leading()
    if mgr is None or not mgr.layouts:
        return False
    ring = mgr.layouts[SOURCE].placement.ring
    for sid in ring.shard_ids:
        shard = cluster.runtime.live_shards().get(sid)
        if shard is None or shard.core.hydrating or shard.core.frozen \
                or shard.core.ring_version != ring.version or shard.core.backend is None:
            return False
    return True


def _healthy(cluster: Cluster) -> bool:
    """Every shard serves, answers the manager's pings (a thawed shard with misses counted
    may still be declared dead and restarted empty) and no hydration runs: one more shard
    may go down."""
    mgr = cluster.leading()
    return (mgr is not None and _serving(cluster)
            and not any(h.state == "recovering" for h in mgr.hydrations.values())
            and not any(mgr.tree.misses.values())
            and not any(s.frozen for s in cluster.runtime.live_shards().values()))


def _converged(cluster: Cluster) -> bool:
    mgr = cluster.leading()
    if mgr is None or not _serving(cluster) or mgr.garbage:
        return False
    if any(not owner.dead and not state["done"] for owner, state in cluster.scales):
        return False
    ring = mgr.layouts[SOURCE].placement.ring
    coord = cluster.coord
    if coord.pointers.get(SOURCE) != ring.version:
        return False
    if set(cluster.runtime.live_shards()) != set(ring.shard_ids):
        return False
    return not any(h.state == "recovering" for h in mgr.hydrations.values())


def _why_not(cluster: Cluster) -> str:
    mgr = cluster.leading()
    if mgr is None:
        m = cluster.manager
        if m is None:
            return "no manager"
        core = m.core
        return (f"no leading manager: {m.owner}, error={core.error!r}, ready="
                f"{core._ready.is_set()}, stop={core._stop.is_set()}, lease="
                f"{core._lease and (core._lease.held, core._lease.epoch)}, redis leader="
                f"{cluster.coord.leader}, epoch={cluster.coord.epoch}, now={cluster.world.now}")
    ring = mgr.layouts[SOURCE].placement.ring
    live = cluster.runtime.live_shards()
    states = {sid: (None if sid not in live else
                    ("hydrating" if live[sid].core.hydrating else "frozen"
                     if live[sid].core.frozen else live[sid].core.ring_version))
              for sid in sorted(set(ring.shard_ids) | set(live))}
    return (f"ring v{ring.version} {list(ring.shard_ids)}, pointer "
            f"{cluster.coord.pointers.get(SOURCE)}, garbage {sorted(mgr.garbage)}, "
            f"shards {states}")


def _check(cluster: Cluster, work: Workload, outcome: Outcome) -> None:
    mgr = cluster.leading()
    assert mgr is not None
    placement = mgr.layouts[SOURCE].placement
    live = cluster.runtime.live_shards()
    final: dict[str, int] = {}
    for key in work.keys:
        copies = {}
        for sid, shard in live.items():
            rec = shard.core.backend.retrieve(RetrieveOp(key))  # type: ignore[union-attr]
            if rec is not None:
                copies[sid] = (rec.value, rec.version)
        owners = set(placement.preference(key, ""))
        if copies and set(copies) != owners:
            outcome.problems.append(f"{key!r} held by {sorted(copies)}, owners "
                                    f"{sorted(owners)}")
        if len(set(copies.values())) > 1:
            outcome.problems.append(f"{key!r} copies differ: {copies}")
        final[key] = int(next(iter(copies.values()))[0]) if copies else 0
    verdict = check(work.calls)
    outcome.problems.extend(verdict.violations)
    outcome.problems.extend(counter_check(work.calls, final))
    outcome.problems.extend(work.problems)
    spec = cluster.coord.spec or {}
    shards = next((s["shards"] for s in spec.get("sources", []) if s["name"] == SOURCE), None)
    if shards != len(placement.ring):
        outcome.problems.append(f"spec says {shards} shards, the ring has "
                                f"{len(placement.ring)}")
    outcome.calls = len(work.calls)
    outcome.acknowledged = sum(1 for c in work.calls if c.outcome == OK and c.kind != "read")
    outcome.unknown = sum(1 for c in work.calls if c.outcome == UNKNOWN and c.kind != "read")


__all__ = ["FAULTS", "Outcome", "run_schedule"]
