"""The seam between the control plane and the world: actors, nodes, time and threads.

Core types:
  * `ActorRuntime` — spawn a shard actor (on a chosen node), find a live one by shard id,
    kill by name, tell whether a name is free, list the nodes. `RayRuntime` is Ray.
  * `Scheduler` — the clock and concurrency the control plane uses: `now()` (monotonic),
    `wall()` (epoch seconds), `sleep`, `start` (a daemon thread), `event()`, `lock()`.
    `ThreadScheduler` is the real one.
  * `Node` and `ShardSpawn` — plain values crossing the seam.

The shard tree, the rebalancer, hydration and the manager reach Ray and time only through
these two objects, so the deterministic simulator (`tests/sim`) runs them unchanged with a
virtual clock, greenlets for threads and simulated shards that it can slow, freeze and
kill. The rejected alternative, mocking `ray` itself, would test the mocks: the simulator
needs to decide when each message arrives, which Ray's API has no place for.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from memcluster.cluster import names
from memcluster.cluster.data.contract import ShardControl, ShardLink
from memcluster.cluster.data.placement import Placement


@dataclass(frozen=True)
class Node:
    """A node that may host shards: its id, liveness, resources and labels."""

    node_id: str
    alive: bool = True
    resources: Mapping[str, float] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ShardSpawn:
    """Everything a new shard incarnation is started with."""

    shard_id: str
    backend: Any
    opts: Mapping[str, Any]
    placement: Placement
    epoch: int
    hydrating: bool
    incarnation: str
    replica_timeout: float
    heartbeat: Callable[[dict[str, Any]], None] | None = None
    heartbeat_interval: float = 1.0


class ShardActorHandle(ShardControl, ShardLink, Protocol):
    """What the runtime hands back: a shard's control and data paths in one handle."""


class ActorRuntime(Protocol):
    """Shard actors and the nodes they run on (see the module docstring)."""

    def spawn(self, spec: ShardSpawn, node_id: str | None) -> ShardActorHandle:
        """Create the named actor for `spec.shard_id` (on `node_id` if given) without
        waiting for it; its `open()` is the caller's next call. Raises if the name is
        taken."""

    def find(self, shard_id: str) -> ShardActorHandle | None:
        """The live actor registered under the shard's name, or None."""

    def kill(self, shard_id: str) -> bool:
        """Kill whatever actor holds the shard's name; False if none did."""

    def kill_handle(self, handle: ShardActorHandle) -> bool:
        """Kill that very actor (not whatever holds its name now); False if it was gone."""

    def name_free(self, shard_id: str) -> bool:
        """True once no actor holds the shard's name (Ray frees it asynchronously)."""

    def nodes(self) -> list[Node]:
        """Every node Ray knows, alive or not."""

    def here(self) -> str | None:
        """The node this process (the manager) runs on, if known."""


class Event(Protocol):
    def set(self) -> None: ...

    def clear(self) -> None: ...

    def is_set(self) -> bool: ...

    def wait(self, timeout: float | None = None) -> bool: ...


class Scheduler(Protocol):
    """Time and concurrency for the control plane (see the module docstring)."""

    def now(self) -> float: ...

    def wall(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...

    def uniform(self, low: float, high: float) -> float:
        """A random float in [low, high] (jitter; seeded in the simulator)."""

    def start(self, fn: Callable[[], None], name: str) -> None:
        """Run `fn` on a daemon thread of its own."""

    def event(self) -> Event: ...

    def lock(self) -> Any:
        """A re-entrant lock (a context manager)."""


class ThreadScheduler:
    """The real scheduler: `time` and `threading`."""

    def now(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def uniform(self, low: float, high: float) -> float:
        return random.uniform(low, high)

    def start(self, fn: Callable[[], None], name: str) -> None:
        threading.Thread(target=fn, name=name, daemon=True).start()

    def event(self) -> Event:
        return threading.Event()

    def lock(self) -> Any:
        return threading.RLock()


class RayRuntime:
    """`ActorRuntime` on Ray: detached named actors in the cluster's namespace; a shard is
    pinned to its node with hard node affinity (the manager chooses the node)."""

    def __init__(self, cluster: str, *, call_timeout: float) -> None:
        self.cluster = cluster
        self.namespace = names.ray_namespace(cluster)
        self.call_timeout = call_timeout

    def _name(self, shard_id: str) -> str:
        return names.shard_actor_name(self.cluster, shard_id)

    def spawn(self, spec: ShardSpawn, node_id: str | None) -> ShardActorHandle:
        from memcluster.cluster.data.handle import ShardHandle, shard_actor_class

        options: dict[str, Any] = {"name": self._name(spec.shard_id),
                                   "namespace": self.namespace, "lifetime": "detached"}
        if node_id is not None:
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node_id, soft=False)
        actor = shard_actor_class().options(**options).remote(
            spec.backend, spec.opts, prefix=self._name(spec.shard_id), shard_id=spec.shard_id,
            placement=spec.placement, epoch=spec.epoch, hydrating=spec.hydrating,
            incarnation=spec.incarnation, heartbeat=spec.heartbeat,
            heartbeat_interval=spec.heartbeat_interval, replica_timeout=spec.replica_timeout,
            cluster=self.cluster)
        return ShardHandle(actor, spec.shard_id, self._name(spec.shard_id),
                           timeout=self.call_timeout)

    def find(self, shard_id: str) -> ShardActorHandle | None:
        import ray

        from memcluster.cluster.data.handle import ShardHandle

        try:
            actor = ray.get_actor(self._name(shard_id), namespace=self.namespace)
        except ValueError:
            return None
        return ShardHandle(actor, shard_id, self._name(shard_id), timeout=self.call_timeout)

    def kill(self, shard_id: str) -> bool:
        import ray

        try:
            actor = ray.get_actor(self._name(shard_id), namespace=self.namespace)
        except ValueError:
            return False
        return _kill(actor)

    def kill_handle(self, handle: ShardActorHandle) -> bool:
        return _kill(handle.actor)  # type: ignore[attr-defined]

    def name_free(self, shard_id: str) -> bool:
        import ray

        try:
            ray.get_actor(self._name(shard_id), namespace=self.namespace)
        except ValueError:
            return True
        return False

    def nodes(self) -> list[Node]:
        import ray

        return [Node(n["NodeID"], bool(n.get("Alive")), dict(n.get("Resources") or {}),
                     dict(n.get("Labels") or {})) for n in ray.nodes()]

    def here(self) -> str | None:
        import ray

        return ray.get_runtime_context().get_node_id() if ray.is_initialized() else None


def _kill(actor: Any) -> bool:
    import ray

    try:
        ray.kill(actor, no_restart=True)
    except Exception:  # already dead, or its node is gone
        return False
    return True


__all__ = ["ActorRuntime", "Event", "Node", "RayRuntime", "Scheduler", "ShardActorHandle",
           "ShardSpawn", "ThreadScheduler"]
