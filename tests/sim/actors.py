"""Simulated shard actors, nodes and the `ActorRuntime` over them.

Core types: `SimShard` (one actor incarnation: the real `ShardCore` with a memory backend
behind three mailboxes, like the Ray actor's default, `replica` and `health` concurrency
groups, each served by a greenlet in arrival order), `SimHandle` (the shard contract: data
path and the typed control methods, every call a message with a seeded latency and its
result a `world.Future`) and `SimRuntime` (spawn by name on a node, find, kill, names freed
asynchronously, nodes that can be lost).

Faults a schedule injects: `crash()` (the incarnation dies at once: queued and running calls
fail with `ShardDied`, nothing it was doing finishes), `freeze()`/`thaw()` (SIGSTOP:
nothing is processed, pings included), `slow[method] = seconds` (that method answers late,
so a caller's timeout fires first), a node lost with every actor on it, and `slow_open` on
the next spawns. Arguments and results cross by pickle, as they do between Ray processes.
"""

from __future__ import annotations

import pickle
from collections import deque
from collections.abc import Sequence
from typing import Any

from memcluster.cluster.control.runtime import Node, ShardSpawn
from memcluster.cluster.data.local import ControlCalls
from memcluster.cluster.data.shard import ShardCore
from memcluster.errors import ShardDied, ShardRecovering, mark_in_flight
from memcluster.ops import Op
from tests.sim.world import Future, Owner, World

GROUPS = ("default", "replica", "health")


class _Core(ShardCore):
    """`ShardCore` as the simulated actor runs it: its ping names its node, like
    `handle.ShardActor`'s."""

    node = ""

    def ping(self) -> dict[str, Any]:
        return {**super().ping(), "node_id": self.node}


class SimShard:
    """One shard incarnation in the simulated world (see the module docstring)."""

    def __init__(self, world: World, runtime: SimRuntime, spec: ShardSpawn, node: str) -> None:
        self.world = world
        self.runtime = runtime
        self.spec = spec
        self.node = node
        self.owner = Owner(f"shard {spec.shard_id} {spec.incarnation}")
        self.core = _Core(spec.backend, {**spec.opts, "cleanup_interval": 0},
                              prefix=f"sim/{spec.shard_id}", shard_id=spec.shard_id,
                              placement=spec.placement, epoch=spec.epoch,
                              hydrating=spec.hydrating, incarnation=spec.incarnation,
                              replica_timeout=spec.replica_timeout,
                              clock=lambda: world.epoch_base + world.now)
        self.core.peers = SimPeers(runtime)
        self.core.node = node
        self.dead = False
        self.frozen = False
        self.slow: dict[str, float] = {}
        self._boxes: dict[str, deque[tuple[str, tuple[Any, ...], Future]]] = {
            g: deque() for g in GROUPS}
        self._idle: dict[str, Any] = {}

    def call(self, method: str, args: tuple[Any, ...], group: str,
             timeout: float | None) -> Future:
        """Send `method(*args)`; its answer arrives later (or never)."""
        fut = Future(self.world, f"shard {self.spec.shard_id}", timeout)
        if self.dead:
            fut.resolve(error=mark_in_flight(ShardDied(f"shard {self.spec.shard_id} died")))
            return fut
        payload = pickle.dumps(args)
        latency = self.runtime.latency()

        def deliver() -> None:
            self.world.sleep(latency)
            if self.dead:
                fut.resolve(error=mark_in_flight(
                    ShardDied(f"shard {self.spec.shard_id} died")))
                return
            self._boxes[group].append((method, pickle.loads(payload), fut))
            waiter = self._idle.pop(group, None)
            if waiter is not None:
                self.world.resume(waiter)

        self.world.spawn(deliver, self.runtime.network, f"deliver {method}")
        return fut

    def start(self) -> None:
        for group in GROUPS:
            self.world.spawn(lambda group=group: self._serve(group), self.owner,
                             f"{self.spec.shard_id}:{group}")

    def _serve(self, group: str) -> None:
        """Process this group's mailbox in order, one call at a time."""
        box = self._boxes[group]
        while True:
            while not box or self.frozen:
                import greenlet

                self._idle[group] = greenlet.getcurrent()
                self.world.park(0.05 if self.frozen else None)
            method, args, fut = box.popleft()
            delay = self.slow.get(method, 0.0)
            if delay:
                self.world.sleep(delay)
            try:
                value = getattr(self.core, method)(*args)
                reply: Any = pickle.loads(pickle.dumps(value))
                error = None
            except BaseException as exc:
                if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                    raise
                reply, error = None, exc
            latency = self.runtime.latency()

            def answer(fut: Future = fut, reply: Any = reply,
                       error: BaseException | None = error, latency: float = latency) -> None:
                self.world.sleep(latency)
                fut.resolve(reply, error)

            self.world.spawn(answer, self.runtime.network, "answer")

    def crash(self) -> None:
        """Die now: the mailboxes' calls fail, the greenlets stop where they are."""
        if self.dead:
            return
        self.dead = True
        self.world.crash(self.owner)
        for box in self._boxes.values():
            for _method, _args, fut in box:
                fut.resolve(error=mark_in_flight(ShardDied(
                    f"shard {self.spec.shard_id} died")))
            box.clear()
        self.runtime.dead_calls(self)


class SimHandle(ControlCalls):
    """A handle to one `SimShard` incarnation (the shard contract)."""

    def __init__(self, shard: SimShard, timeout: float) -> None:
        self.shard = shard
        self.shard_id = shard.spec.shard_id
        self.timeout = timeout

    def submit(self, ring_version: int, ops: Sequence[Op]) -> Future:
        return self.shard.call("apply_batch", (ring_version, list(ops)), "default",
                               self.timeout)

    def replicate(self, ring_version: int, ops: Sequence[Op],
                  sender: tuple[str, str] | None = None) -> Future:
        return self.shard.call("replicate_batch", (ring_version, list(ops), sender),
                               "replica", self.timeout)

    def _call(self, method: str, *args: Any, timeout: float | None = None,
              group: str | None = None) -> Future:
        return self.shard.call(method, args, group or "default",
                               timeout if timeout is not None else self.timeout)


class SimPeers:
    """A primary's replicas, found by name in the runtime (like `handle.RayPeers`)."""

    def __init__(self, runtime: SimRuntime) -> None:
        self.runtime = runtime
        self._handles: dict[str, SimHandle] = {}

    def link(self, shard_id: str) -> SimHandle:
        handle = self._handles.get(shard_id)
        if handle is None:
            found = self.runtime.find(shard_id)
            if found is None:
                raise ShardRecovering(f"shard {shard_id} is not running")
            handle = self._handles[shard_id] = found
        return handle

    def forget(self, shard_id: str) -> None:
        self._handles.pop(shard_id, None)


class SimRuntime:
    """`runtime.ActorRuntime` over simulated shards and nodes."""

    def __init__(self, world: World, *, nodes: int, call_timeout: float) -> None:
        self.world = world
        self.call_timeout = call_timeout
        self.network = Owner("network")
        self.named: dict[str, SimShard] = {}     # shard id -> the incarnation holding it
        self.every: list[SimShard] = []
        self.node_list = [Node(f"node{i}", True, {"CPU": 1.0}) for i in range(nodes)]
        self.slow_open = 0                       # the next N spawns open slowly
        self.spawned = 0

    def latency(self) -> float:
        rng = self.world.rng
        return rng.uniform(0.0002, 0.002) if rng.random() > 0.02 else rng.uniform(0.01, 0.2)

    # ---- ActorRuntime ------------------------------------------------------------------

    def spawn(self, spec: ShardSpawn, node_id: str | None) -> SimHandle:
        if spec.shard_id in self.named:
            raise ValueError(f"the actor name {spec.shard_id!r} is already taken")
        alive = [n.node_id for n in self.node_list if n.alive]
        node = node_id if node_id in alive else (alive[0] if alive else "nowhere")
        shard = SimShard(self.world, self, spec, node)
        if node_id is not None and node_id not in alive:
            shard.dead = True                    # hard affinity to a dead node: never runs
        self.named[spec.shard_id] = shard
        self.every.append(shard)
        self.spawned += 1
        if self.slow_open > 0:
            self.slow_open -= 1
            shard.slow["open"] = self.call_timeout * 20
        if not shard.dead:
            shard.start()
        return SimHandle(shard, self.call_timeout)

    def find(self, shard_id: str) -> SimHandle | None:
        shard = self.named.get(shard_id)
        if shard is None or shard.dead:
            return None
        return SimHandle(shard, self.call_timeout)

    def kill(self, shard_id: str) -> bool:
        shard = self.named.get(shard_id)
        if shard is None:
            return False
        alive = not shard.dead
        self._kill(shard)
        return alive

    def kill_handle(self, handle: Any) -> bool:
        shard = handle.shard
        alive = not shard.dead
        self._kill(shard)
        return alive

    def _kill(self, shard: SimShard) -> None:
        shard.crash()

    def dead_calls(self, shard: SimShard) -> None:
        """A dead incarnation's name is freed a little later (Ray does it asynchronously)."""
        delay = self.world.rng.uniform(0.0, 0.05)

        def free() -> None:
            self.world.sleep(delay)
            if self.named.get(shard.spec.shard_id) is shard:
                del self.named[shard.spec.shard_id]

        self.world.spawn(free, self.network, "free name")

    def name_free(self, shard_id: str) -> bool:
        return shard_id not in self.named

    def nodes(self) -> list[Node]:
        return list(self.node_list)

    def here(self) -> str | None:
        return None

    # ---- faults ------------------------------------------------------------------------

    def lose_node(self, node_id: str) -> None:
        self.node_list = [Node(n.node_id, False if n.node_id == node_id else n.alive,
                               n.resources, n.labels) for n in self.node_list]
        for shard in list(self.named.values()):
            if shard.node == node_id:
                shard.crash()

    def live_shards(self) -> dict[str, SimShard]:
        return {sid: s for sid, s in self.named.items() if not s.dead}


__all__ = ["SimHandle", "SimPeers", "SimRuntime", "SimShard"]
