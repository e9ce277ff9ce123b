"""In-process shards: the contract without Ray, for unit tests, the simulator and benchmarks.

Core types: `Done` (an already finished call), `ControlCalls` (the typed control methods
of `contract.ShardControl`, written once over a single `_call(method, *args)`: the Ray
handle and the in-process shard both inherit them), `LocalShard` (a `ShardCore` called
in-process) and `LocalPeers` (a primary's replicas as LocalShards, by shard id).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from memcluster.cluster.data.contract import EXPORT_PAGE, EXPORT_PAGE_BYTES, Call
from memcluster.cluster.data.placement import Placement
from memcluster.cluster.data.shard import ShardCore
from memcluster.errors import MemclusterError, ShardRecovering
from memcluster.model import Record
from memcluster.ops import Op


class Done:
    """An already finished call: `result()` returns the value or raises the error (a
    returned refusal, i.e. a MemclusterError value, is raised too)."""

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


class ControlCalls:
    """`contract.ShardControl`'s typed methods over `_call(method, *args, timeout=...,
    group=...)`, which each runner implements once."""

    shard_id: str

    def _call(self, method: str, *args: Any, timeout: float | None = None,
              group: str | None = None) -> Call[Any]:
        raise NotImplementedError

    def open(self, timeout: float | None = None) -> Call[dict[str, Any]]:
        return self._call("open", timeout=timeout)

    def ping(self, timeout: float | None = None) -> Call[dict[str, Any]]:
        return self._call("ping", timeout=timeout, group="health")

    def close(self, timeout: float | None = None) -> Call[None]:
        return self._call("close", timeout=timeout)

    def set_placement(self, epoch: int, placement: Placement,
                      force: bool = False) -> Call[dict[str, Any]]:
        return self._call("set_placement", epoch, placement, force)

    def freeze(self, epoch: int) -> Call[None]:
        return self._call("freeze", epoch)

    def export(self, cursor: str | None, limit: int = EXPORT_PAGE,
               max_bytes: int = EXPORT_PAGE_BYTES, fence: tuple[str, str] | None = None
               ) -> Call[tuple[list[Record], str | None]]:
        return self._call("export", cursor, limit, max_bytes, fence)

    def accept_handoff(self, epoch: int, records: Sequence[Record]) -> Call[int]:
        return self._call("accept_handoff", epoch, list(records))

    def holds(self, keys: Sequence[tuple[str, str, int]]) -> Call[list[tuple[str, str]]]:
        return self._call("holds", list(keys))

    def finish_hydration(self, epoch: int) -> Call[dict[str, Any]]:
        return self._call("finish_hydration", epoch)

    def drop_unowned(self, epoch: int, placement: Placement) -> Call[int]:
        return self._call("drop_unowned", epoch, placement)

    def drop_keys(self, epoch: int, keys: Sequence[tuple[str, str]]) -> Call[int]:
        return self._call("drop_keys", epoch, list(keys))

    def stats(self, timeout: float | None = None) -> Call[dict[str, Any]]:
        return self._call("stats", timeout=timeout)

    def settle(self) -> Call[int]:
        return self._call("settle")


class LocalShard(ControlCalls):
    """A `ShardCore` called in-process: every call is already done when it returns."""

    def __init__(self, core: ShardCore) -> None:
        self.core = core
        self.shard_id = core.shard_id

    def submit(self, ring_version: int, ops: Sequence[Op]) -> Done:
        return self._call("apply_batch", ring_version, ops)

    def replicate(self, ring_version: int, ops: Sequence[Op],
                  sender: tuple[str, str] | None = None) -> Done:
        return self._call("replicate_batch", ring_version, ops, sender)

    def _call(self, method: str, *args: Any, timeout: float | None = None,
              group: str | None = None) -> Done:
        try:
            return Done(getattr(self.core, method)(*args))
        except MemclusterError as exc:
            return Done(error=exc)


class LocalPeers:
    """The shards a primary replicates to, in-process (`shards` may change under it)."""

    def __init__(self, shards: Mapping[str, LocalShard]) -> None:
        self.shards = shards

    def link(self, shard_id: str) -> LocalShard:
        try:
            return self.shards[shard_id]
        except KeyError:
            raise ShardRecovering(f"shard {shard_id} is not running") from None

    def forget(self, shard_id: str) -> None:
        return None


class MissingShard:
    """A shard whose actor cannot be reached by name right now (being replaced): every call
    is refused before anything is sent, so it is always safe to retry."""

    def __init__(self, shard_id: str) -> None:
        self.shard_id = shard_id

    def submit(self, ring_version: int, ops: Sequence[Op], *_: Any) -> Done:
        return Done(error=ShardRecovering(f"shard {self.shard_id} is not running"))

    replicate = submit


def local_shards(cores: Sequence[ShardCore]) -> dict[str, LocalShard]:
    """LocalShards for `cores`, each able to replicate to the others."""
    shards = {c.shard_id: LocalShard(c) for c in cores}
    peers = LocalPeers(shards)
    for core in cores:
        core.peers = peers
    return shards


__all__ = ["ControlCalls", "Done", "LocalPeers", "LocalShard", "MissingShard", "local_shards"]
