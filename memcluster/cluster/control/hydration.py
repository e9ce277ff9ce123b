"""Hydration: a restarted shard incarnation copying its keys back from live replicas.

Core type: `Hydration`, the state machine of one incarnation: `recovering` -> `serving`,
or `abandoned` when that incarnation dies or is replaced first; progress = replicas read /
replicas to read, plus records copied. Plain Python, unit-tested without Ray; the
manager's `ShardTree` drives it.

Decision: a hydrating shard accepts writes at once (replicas and deletes) but serves no
reads until every live replica has been read: a read from a half-filled shard would return
"absent" for a key that exists.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

HydrationState = Literal["recovering", "serving", "abandoned"]


@dataclass
class Hydration:
    """One shard incarnation's copy-back from its replicas (see the module docstring)."""

    shard_id: str
    incarnation: str
    sources: tuple[str, ...]
    clock: Callable[[], float] = field(default=time.time, repr=False)
    ring_version: int = 0          # the ring the copy follows (a switch starts it over)
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


__all__ = ["Hydration", "HydrationState"]
