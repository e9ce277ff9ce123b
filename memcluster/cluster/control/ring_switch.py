"""How a restarted manager finishes a ring switch its predecessor was interrupted in.

Core types: `RingResolution` and the pure `resolve_ring_switch(pointer, staged, reported)`.

Decision: an interrupted ring switch rolls FORWARD as soon as one shard of the current ring
has adopted a staged (newer) version, and back otherwise. `scale` stages the target ring in
Redis, copies the moving keys, freezes writes, copies the catch-up, and only then tells
shards to switch; so a shard at the staged version proves every acknowledged write already
sits on its new owners, and from that moment writes are acknowledged under the new ring
only (the old owners refuse callers on the old ring with `StaleRing`). Rolling back would
hide those writes (the new owners may be shards that do not exist in the old ring) and
needs shards to go back a version, which they refuse by design. Before any shard switched,
nothing was acknowledged under the new ring (no caller had it), so rolling back loses
nothing and throws away only copies. What this cannot cover is a double fault: every
switched shard of the old ring dying together with the manager.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal


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


__all__ = ["RingResolution", "resolve_ring_switch"]
