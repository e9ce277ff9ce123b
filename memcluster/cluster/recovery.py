"""Recovery decisions as pure values: a shard's hydration and read repair.

Core types: `Hydration` (the state machine of one restarted shard incarnation copying its
keys back from live replicas: `recovering` -> `serving`, or `abandoned` when that
incarnation dies or is replaced first; progress = replicas read / replicas to read, plus
records copied) and `repair_plan(answers)` (the read-repair decision: which copy of a key
wins and which replicas are stale). Both are plain Python so they are unit-tested without
Ray; the manager's `ShardTree` drives `Hydration` and the router applies `repair_plan`.
`resolve_ring_switch(pointer, staged, reported)` decides how a restarted manager finishes
a rebalance its predecessor was interrupted in (`RingResolution`: keep, forward or back).

Decisions:
  * A hydrating shard accepts writes at once (replicas and deletes; the router makes the
    next replica primary meanwhile) but serves no reads until every live replica has been
    read: a read from a half-filled shard would return "absent" for a key that exists.
  * Read repair keeps the copy with the highest version (ties: the later `updated_at`) and
    writes it back to every replica that answered with less. A replica that has no copy at
    all is stale too: without tombstones a missing copy cannot be told apart from a delete
    that did not reach every replica, and resurrecting beats losing an acknowledged write.
    The rejected alternative, tombstones for every delete, costs storage on every backend
    for a case that W = N deletes already make rare.
  * An interrupted ring switch rolls FORWARD as soon as one shard of the current ring has
    adopted a staged (newer) version, and back otherwise. `scale` stages the target ring in
    Redis, copies the moving keys, freezes writes, copies the catch-up, and only then tells
    shards to switch; so a shard at the staged version proves every acknowledged write
    already sits on its new owners, and from that moment writes are acknowledged under the
    new ring only (the old owners refuse callers on the old ring with `StaleRing`). Rolling
    back would hide those writes (the new owners may be shards that do not exist in the old
    ring) and needs shards to go back a version, which they refuse by design. Before any
    shard switched, nothing was acknowledged under the new ring (no caller had it), so
    rolling back loses nothing and throws away only copies. What this cannot cover is a
    double fault: every switched shard of the old ring dying together with the manager.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from memcluster.model import Record

HydrationState = Literal["recovering", "serving", "abandoned"]


@dataclass
class Hydration:
    """One shard incarnation's copy-back from its replicas (see the module docstring)."""

    shard_id: str
    incarnation: str
    sources: tuple[str, ...]
    clock: Callable[[], float] = field(default=time.time, repr=False)
    state: HydrationState = "recovering"
    done: set[str] = field(default_factory=set)
    copied: int = 0
    started_at: float = 0.0
    finished_at: float | None = None

    def __post_init__(self) -> None:
        self.started_at = self.started_at or self.clock()
        if not self.sources:  # nothing to copy from: serving at once
            self.finish()

    @property
    def progress(self) -> float:
        """Fraction of the replicas read so far (1.0 once serving)."""
        if self.state == "serving" or not self.sources:
            return 1.0
        return len(self.done) / len(self.sources)

    def page_copied(self, count: int) -> None:
        self._check_recovering()
        self.copied += count

    def source_done(self, source: str) -> None:
        """Every record of `source` was read (or `source` died: its replicas hold them)."""
        self._check_recovering()
        if source not in self.sources:
            raise ValueError(f"{source!r} is not a replica source of {self.shard_id!r}")
        self.done.add(source)

    @property
    def complete(self) -> bool:
        return self.done >= set(self.sources)

    def finish(self) -> None:
        """Serve reads from now on; only once every source has been read."""
        if self.state == "abandoned":
            raise ValueError(f"hydration of {self.shard_id!r} was abandoned")
        if not self.complete:
            missing = sorted(set(self.sources) - self.done)
            raise ValueError(f"hydration of {self.shard_id!r} still has to read {missing}")
        self.state = "serving"
        self.finished_at = self.clock()

    def abandon(self) -> None:
        """This incarnation died or was replaced; its successor starts a new hydration."""
        if self.state == "recovering":
            self.state = "abandoned"
            self.finished_at = self.clock()

    def as_dict(self) -> dict[str, Any]:
        return {"state": self.state, "incarnation": self.incarnation,
                "progress": round(self.progress, 3), "copied": self.copied,
                "replicas_read": len(self.done), "replicas": len(self.sources),
                "seconds": round((self.finished_at or self.clock()) - self.started_at, 3)}

    def _check_recovering(self) -> None:
        if self.state != "recovering":
            raise ValueError(f"hydration of {self.shard_id!r} is {self.state}")


def newest(a: Record | None, b: Record | None) -> Record | None:
    """The newer of two copies of one key: higher version, then later `updated_at`."""
    if a is None:
        return b
    if b is None:
        return a
    return b if (b.version, b.updated_at) > (a.version, a.updated_at) else a


def repair_plan(answers: Mapping[str, Record | None]) -> tuple[Record | None, list[str]]:
    """(the winning copy, the shards to write it back to) for one key's replica answers.

    `answers` maps shard id -> the copy that shard returned (None = it has none). No
    winner (every replica is empty) means nothing to repair.
    """
    winner: Record | None = None
    for record in answers.values():
        winner = newest(winner, record)
    if winner is None:
        return None, []
    # `replicate` keeps a local copy of equal version, so only lower versions are stale.
    stale = [sid for sid, record in answers.items()
             if record is None or record.version < winner.version]
    return winner, stale


@dataclass(frozen=True)
class RingResolution:
    """What to do with a source's ring after a manager restart.

    `action`: "keep" (nothing was interrupted), "forward" (switch the pointer to `version`)
    or "back" (stay on the pointer). `abandoned`: staged versions no shard of the current
    ring adopted; their new shards are garbage.
    """

    action: Literal["keep", "forward", "back"]
    version: int
    abandoned: tuple[int, ...] = ()


def resolve_ring_switch(pointer: int, staged: Iterable[int],
                        reported: Mapping[str, int]) -> RingResolution:
    """Decide how to finish an interrupted ring switch (see the module docstring).

    `pointer` is the version Redis names as current, `staged` the stored versions newer than
    it, `reported` the ring versions that the reachable shards OF THE POINTER'S RING report
    (shards added by the switch are created at the staged version, so they prove nothing).
    """
    newer = sorted(v for v in set(staged) if v > pointer)
    if not newer:
        return RingResolution("keep", pointer)
    adopted = max((v for v in reported.values() if v > pointer), default=None)
    if adopted is None:
        return RingResolution("back", pointer, tuple(newer))
    if adopted not in newer:
        raise ValueError(f"a shard is on ring {adopted}, which was never staged "
                         f"(staged: {newer}); refusing to guess")
    return RingResolution("forward", adopted, tuple(v for v in newer if v != adopted))


__all__ = ["Hydration", "RingResolution", "newest", "repair_plan", "resolve_ring_switch"]
