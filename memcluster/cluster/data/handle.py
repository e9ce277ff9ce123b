"""The shard on Ray: the actor class made remote in one place, and the handle that calls it.

Core types: `ShardActor` (a `ShardCore` as it runs in its own actor process: its replicas
reached by name through `RayPeers`), `shard_actor_class()` (the Ray actor class: detached
by its spawner, `max_restarts=0` because the manager supervises, `num_cpus=0`, one mailbox
plus a `health` group for pings and a `replica` group for what primaries forward),
`ShardHandle` (the one object that knows the remote method names: keyed batches travel in
the compact `wire` format, control calls are the typed methods of `local.ControlCalls`) and
`Pending` (an in-flight call: `result()` waits and turns Ray's errors into ours through
`session.translate`: `ShardUnavailable` for an unreachable actor, `ShardDied` for a dead
one, `Timeout` past the deadline, each marked in flight because the shard may have applied
the call; an error the shard itself raised or returned comes out as itself).

Ray is imported inside the functions, so importing this module does not start Ray.
"""

from __future__ import annotations

import gc
from collections.abc import Sequence
from typing import Any

from memcluster.cluster import names
from memcluster.cluster.data import wire
from memcluster.cluster.data.local import ControlCalls
from memcluster.cluster.data.shard import ShardCore
from memcluster.cluster.session import translate
from memcluster.errors import (
    MemclusterError,
    ShardDied,
    ShardRecovering,
    ShardUnavailable,
    mark_in_flight,
)
from memcluster.ops import Op


class Pending:
    """An in-flight shard call; `result()` waits and translates errors."""

    __slots__ = ("_ops", "_ref", "_shard_id", "_timeout")

    def __init__(self, ref: Any, shard_id: str, timeout: float | None,
                 ops: Sequence[Any] | None = None) -> None:
        self._ref = ref
        self._shard_id = shard_id
        self._timeout = timeout
        self._ops = ops  # set: the reply is in the wire format, decoded for these ops

    def decode(self, out: Any) -> Any:
        """Turn a raw reply into the call's result (raising a returned refusal)."""
        if isinstance(out, MemclusterError):
            raise out
        if self._ops is not None:
            return wire.decode_results(self._ops, out)
        return out

    def result(self) -> Any:
        import ray

        try:
            out = ray.get(self._ref, timeout=self._timeout)
        except Exception as exc:
            error = translate(exc, f"shard {self._shard_id}", "a call", self._timeout,
                              died=ShardDied, unavailable=ShardUnavailable)
            if isinstance(exc, ray.exceptions.RayTaskError) or error is exc:
                raise error from None          # the shard itself raised it
            raise mark_in_flight(error) from exc  # the transport: it may have applied it
        return self.decode(out)


class ShardHandle(ControlCalls):
    """A shard actor as the router and the manager call it (see the module docstring)."""

    __slots__ = ("_apply", "_replicate", "_wire", "actor", "name", "shard_id", "timeout")

    def __init__(self, actor: Any, shard_id: str, name: str, *,
                 timeout: float | None = 30.0) -> None:
        self.actor = actor
        self.shard_id = shard_id
        self.name = name
        self.timeout = timeout
        self._apply = actor.apply_batch
        self._wire = actor.apply_wire
        self._replicate = actor.replicate_wire.options(concurrency_group="replica")

    def submit(self, ring_version: int, ops: Sequence[Op]) -> Pending:
        """Send a batch of client ops (returns at once; `result()` waits).

        Keyed batches travel in the compact wire format; one over `wire.INLINE_LIMIT`
        bytes is put in Ray's object store first, so large values are not copied inline.
        """
        payload = wire.encode_ops(ops)
        if payload is None:
            return Pending(self._apply.remote(ring_version, ops), self.shard_id, self.timeout)
        return Pending(self._wire.remote(ring_version, _inline(payload)), self.shard_id,
                       self.timeout, ops)

    def replicate(self, ring_version: int, ops: Sequence[Op],
                  sender: tuple[str, str] | None = None) -> Pending:
        """Forward a primary's records and deletes (the replica concurrency group)."""
        payload = wire.encode_ops(ops)
        assert payload is not None, "replicate batches hold ReplicateOps and DeleteOps only"
        return Pending(self._replicate.remote(ring_version, _inline(payload), sender),
                       self.shard_id, self.timeout, ops)

    def _call(self, method: str, *args: Any, timeout: float | None = None,
              group: str | None = None) -> Pending:
        remote = getattr(self.actor, method)
        if group is not None:
            remote = remote.options(concurrency_group=group)
        return Pending(remote.remote(*args), self.shard_id,
                       timeout if timeout is not None else self.timeout)


def _inline(payload: bytes) -> Any:
    """`payload`, or a reference to it in Ray's object store when it is large."""
    if len(payload) > wire.INLINE_LIMIT:
        import ray

        return ray.put(payload)
    return payload


class RayPeers:
    """A primary's replicas, found by actor name in the cluster's Ray namespace."""

    def __init__(self, cluster: str, *, timeout: float) -> None:
        self.cluster = cluster
        self.timeout = timeout
        self._handles: dict[str, ShardHandle] = {}

    def link(self, shard_id: str) -> ShardHandle:
        handle = self._handles.get(shard_id)
        if handle is not None:
            return handle
        import ray

        name = names.shard_actor_name(self.cluster, shard_id)
        try:
            actor = ray.get_actor(name, namespace=names.ray_namespace(self.cluster))
        except ValueError:
            raise ShardRecovering(f"shard {shard_id} is not running") from None
        handle = self._handles[shard_id] = ShardHandle(actor, shard_id, name,
                                                       timeout=self.timeout)
        return handle

    def forget(self, shard_id: str) -> None:
        self._handles.pop(shard_id, None)


class ShardActor(ShardCore):
    """`ShardCore` as it runs in its own actor process."""

    def __init__(self, *args: Any, cluster: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.peers = RayPeers(cluster, timeout=self.replica_timeout)

    def open(self) -> dict[str, Any]:
        info = super().open()
        # The worker's start-up heap (Ray's own ~100k objects) moves out of the collector's
        # reach: otherwise every full collection rescans it, a ~40% tax on batch throughput.
        gc.freeze()
        return info

    def ping(self) -> dict[str, Any]:
        import ray

        return {**super().ping(), "node_id": ray.get_runtime_context().get_node_id()}

    def apply_wire(self, ring_version: int, payload: bytes) -> bytes | MemclusterError:
        """`apply_batch` for a batch in the compact wire format."""
        ops = wire.decode_ops(payload)
        out = self.apply_batch(ring_version, ops)
        return out if isinstance(out, MemclusterError) else wire.encode_results(out)

    def replicate_wire(self, ring_version: int, payload: bytes,
                       sender: tuple[str, str] | None = None) -> bytes | MemclusterError:
        """`replicate_batch` for a batch in the compact wire format."""
        out = self.replicate_batch(ring_version, wire.decode_ops(payload), sender)
        return out if isinstance(out, MemclusterError) else wire.encode_results(out)


def shard_actor_class() -> Any:
    """`ShardActor` as a Ray actor class (imported lazily so the core needs no Ray)."""
    import ray

    # `ping` runs in its own concurrency group: a long batch or export in the mailbox must
    # not look like a dead shard, while a frozen (SIGSTOP) process still misses its pings.
    # `replicate_wire` runs in another: two primaries replicating to each other must never
    # wait on each other's mailbox.
    return ray.remote(num_cpus=0, max_restarts=0, max_concurrency=1,
                      concurrency_groups={"health": 1, "replica": 1})(ShardActor)


__all__ = ["Pending", "RayPeers", "ShardActor", "ShardHandle", "shard_actor_class"]
