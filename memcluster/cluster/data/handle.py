"""The handle that calls a shard actor: the one object that knows its remote method names.

Core types: `ShardHandle` (a Ray actor handle of a shard plus its id and call timeout;
keyed batches travel in the compact `wire` format, control calls by name), `Pending`
(an in-flight call: `result()` waits and turns Ray's errors into ours: `ShardUnavailable`
for an unreachable actor, `ShardDied` for a dead one, `Timeout` past the deadline, each
marked in flight because the shard may have applied the call), `Done` (an already finished
call) and `LocalShard` (an in-process `ShardCore`, for unit tests and benchmarks).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from memcluster.cluster.data import wire
from memcluster.cluster.data.shard import ShardCore
from memcluster.cluster.session import translate
from memcluster.errors import (
    MemclusterError,
    ShardDied,
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


class Done:
    """An already finished call (used by in-process links and fakes)."""

    __slots__ = ("_error", "_value")

    def __init__(self, value: Any = None, error: BaseException | None = None) -> None:
        self._value = value
        self._error = error

    def result(self) -> Any:
        if self._error is not None:
            raise self._error
        if isinstance(self._value, MemclusterError):
            raise self._value
        return self._value


class LocalShard:
    """A link to an in-process `ShardCore` (unit tests, benchmarks of the logic)."""

    def __init__(self, core: ShardCore) -> None:
        self.core = core
        self.shard_id = core.shard_id

    def submit(self, ring_version: int, ops: Sequence[Op]) -> Done:
        try:
            return Done(self.core.apply_batch(ring_version, ops))
        except MemclusterError as exc:
            return Done(error=exc)

    def control(self, method: str, *args: Any, timeout: float | None = None) -> Done:
        try:
            return Done(getattr(self.core, method)(*args))
        except MemclusterError as exc:
            return Done(error=exc)


class ShardHandle:
    """The one object that knows the shard's remote method names; errors come out as ours."""

    __slots__ = ("_apply", "_wire", "actor", "name", "shard_id", "timeout")

    def __init__(self, actor: Any, shard_id: str, name: str, *,
                 timeout: float | None = 30.0) -> None:
        self.actor = actor
        self.shard_id = shard_id
        self.name = name
        self.timeout = timeout
        self._apply = actor.apply_batch
        self._wire = actor.apply_wire

    def submit(self, ring_version: int, ops: Sequence[Op]) -> Pending:
        """Send a batch (returns at once; `result()` waits).

        Keyed batches travel in the compact wire format; one over `wire.INLINE_LIMIT`
        bytes is put in Ray's object store first, so large values are not copied inline.
        """
        payload = wire.encode_ops(ops)
        if payload is None:
            return Pending(self._apply.remote(ring_version, ops), self.shard_id, self.timeout)
        if len(payload) > wire.INLINE_LIMIT:
            import ray

            payload = ray.put(payload)
        return Pending(self._wire.remote(ring_version, payload), self.shard_id, self.timeout,
                       ops)

    def control(self, method: str, *args: Any, timeout: float | None = None) -> Pending:
        """Call a control/handoff method (open, ping, set_ring, export, accept_handoff...)."""
        remote = getattr(self.actor, method)
        if method == "ping":
            remote = remote.options(concurrency_group="health")
        return Pending(remote.remote(*args), self.shard_id,
                       timeout if timeout is not None else self.timeout)
