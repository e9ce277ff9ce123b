"""The shard contract: what a shard answers, stated once as Protocols (riak_core's vnode).

Core types:
  * `Call[T]` — an in-flight call; `result()` waits and raises memcluster's typed errors
    (`ShardDied`, `ShardUnavailable`, `Timeout`, or the error the shard returned).
  * `ShardLink` — the data path the router uses: `submit(ring_version, ops)` (a batch of
    client ops; the shard is the primary for its writes) and `replicate(ring_version,
    ops)` (records and deletes its primary forwards; never refused for being a replica).
  * `ShardControl` — the control path the manager uses, each method typed: lifecycle
    (`open`, `ping`, `close`), the ring (`set_placement`, `freeze`), handoff (`export`,
    `accept_handoff`, `drop_unowned`, `drop_keys`, `holds`), hydration
    (`finish_hydration`), `settle` (pending writes) and `stats`. Every call that changes
    state carries the manager's fencing epoch; an older epoch is refused with `FencedOut`.

Implemented by `ShardHandle` (a Ray actor), `LocalShard` (an in-process `ShardCore`, for
unit tests) and the simulator's shards (`tests/sim`). Handoff is part of the contract, not
bolted on: a shard that cannot export or accept records cannot be rebalanced or hydrated.
The rejected alternative, method names as strings passed to a generic `control("name",
...)`, spread the remote interface over five files with nothing checking it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, TypeVar

from memcluster.cluster.data.placement import Placement
from memcluster.model import Record
from memcluster.ops import Op

T_co = TypeVar("T_co", covariant=True)

EXPORT_PAGE = 1000              # records per export page, at most ...
EXPORT_PAGE_BYTES = 4 << 20     # ... and about this many encoded bytes


class Call(Protocol[T_co]):
    """An in-flight call; `result()` waits for it (typed errors, never Ray's)."""

    def result(self) -> T_co: ...


class ShardLink(Protocol):
    """How the router and a primary reach one shard's data path."""

    shard_id: str

    def submit(self, ring_version: int, ops: Sequence[Op]) -> Call[list[Any]]:
        """Start a batch of client ops; the result is one entry per op."""

    def replicate(self, ring_version: int, ops: Sequence[Op],
                  sender: tuple[str, str] | None = None) -> Call[list[Any]]:
        """Start a batch of ReplicateOps and DeleteOps forwarded by a primary (`sender`:
        its shard id and incarnation)."""


class ShardControl(Protocol):
    """The control and handoff path of one shard, as the manager calls it."""

    shard_id: str

    def open(self, timeout: float | None = None) -> Call[dict[str, Any]]: ...

    def ping(self, timeout: float | None = None) -> Call[dict[str, Any]]: ...

    def close(self, timeout: float | None = None) -> Call[None]: ...

    def set_placement(self, epoch: int, placement: Placement,
                      force: bool = False) -> Call[dict[str, Any]]:
        """Adopt a newer placement (an older ring only with `force`) and lift a freeze."""

    def freeze(self, epoch: int) -> Call[None]:
        """Refuse writes (transiently) while a rebalance copies the last changes."""

    def export(self, cursor: str | None, limit: int = EXPORT_PAGE,
               max_bytes: int = EXPORT_PAGE_BYTES, fence: tuple[str, str] | None = None
               ) -> Call[tuple[list[Record], str | None]]:
        """A page of every live record; cursor None in the answer means "no more pages".
        `fence`: the hydrating incarnation the page is for (see `ShardCore.export`)."""

    def accept_handoff(self, epoch: int, records: Sequence[Record]) -> Call[int]:
        """Install copied records, keeping higher versions; -> how many were installed."""

    def holds(self, keys: Sequence[tuple[str, str, int]]) -> Call[list[tuple[str, str]]]:
        """Of (namespace, key, version) triples, the (namespace, key)s NOT held at that
        version or newer (empty: every one is confirmed)."""

    def finish_hydration(self, epoch: int) -> Call[dict[str, Any]]: ...

    def drop_unowned(self, epoch: int, placement: Placement) -> Call[int]:
        """Delete what this shard no longer holds under `placement` (after a switch)."""

    def drop_keys(self, epoch: int, keys: Sequence[tuple[str, str]]) -> Call[int]: ...

    def stats(self, timeout: float | None = None) -> Call[dict[str, Any]]: ...

    def settle(self) -> Call[int]:
        """Finish the writes still short of their replicas; -> how many stay pending."""


__all__ = ["EXPORT_PAGE", "EXPORT_PAGE_BYTES", "Call", "ShardControl", "ShardLink"]
