"""Read repair as a pure decision: which copy of a key wins, which replicas are stale.

Core functions: `newest(a, b)` and `repair_plan(answers)`. Read repair keeps the copy with
the highest version (ties: the later `updated_at`) and writes it back to every replica that
answered with less. A replica that has no copy at all is stale too: without tombstones a
missing copy cannot be told apart from a delete that did not reach every replica, and
resurrecting beats losing an acknowledged write. The rejected alternative, tombstones for
every delete, costs storage on every backend for a case that W = N deletes already make rare.
"""

from __future__ import annotations

from collections.abc import Mapping

from memcluster.model import Record


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


__all__ = ["newest", "repair_plan"]
