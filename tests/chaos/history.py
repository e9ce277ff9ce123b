"""A Jepsen-style history of operations and the checker run over it after a chaos test.

Core types: `History` (thread-safe log of invoke/complete events per client, monotonic
clock) and `check()` returning a `Verdict` with the counts the chaos table needs.

The workload model keeps the checker simple and exact: every key is written by exactly
one client, with strictly increasing sequence numbers as values. Then "lost" is precise:
after healing, a key's final value must be at least the highest sequence number whose
write was acknowledged (a write that failed or whose outcome is unknown may or may not
be there, both are fine). Read-your-writes: a client's successful read of its own key
must return at least the highest sequence it had acknowledged before invoking the read.
Jepsen's general linearizability checker (Knossos) was rejected: exponential, and the
single-writer model already catches every loss the cluster could cause.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

OK, FAIL, UNKNOWN = "ok", "fail", "unknown"


@dataclass(slots=True)
class Event:
    client: str
    kind: str  # "write" or "read"
    key: str
    value: int | None  # the sequence written, or the sequence read (None = absent)
    invoked: float
    completed: float | None = None
    outcome: str | None = None
    error: str | None = None


class History:
    """Append-only log of operations; `run(...)` wraps one call and records its outcome."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.events: list[Event] = []
        self._lock = threading.Lock()

    def invoke(self, client: str, kind: str, key: str, value: int | None = None) -> Event:
        ev = Event(client, kind, key, value, self.clock())
        with self._lock:
            self.events.append(ev)
        return ev

    def complete(self, ev: Event, outcome: str, value: int | None = None,
                 error: str | None = None) -> None:
        ev.completed, ev.outcome, ev.error = self.clock(), outcome, error
        if ev.kind == "read" and outcome == OK:
            ev.value = value

    def run(self, client: str, kind: str, key: str, call: Callable[[], Any],
            value: int | None = None, classify: Callable[[BaseException], str] | None = None,
            ) -> Any:
        """Invoke `call`, record ok / fail / unknown (by `classify(exc)`, default fail)."""
        ev = self.invoke(client, kind, key, value)
        try:
            result = call()
        except Exception as exc:  # every failure is recorded, none escapes
            self.complete(ev, classify(exc) if classify else FAIL, error=type(exc).__name__)
            return None
        self.complete(ev, OK, value=result if kind == "read" else None)
        return result


@dataclass
class Verdict:
    attempted: int = 0
    acknowledged: int = 0
    failed: int = 0
    unknown: int = 0
    lost: list[str] = field(default_factory=list)
    stale_reads: list[str] = field(default_factory=list)
    diverged: list[str] = field(default_factory=list)
    epoch_regressions: list[str] = field(default_factory=list)
    split_brain: list[str] = field(default_factory=list)
    unavailable_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not (self.lost or self.stale_reads or self.diverged or self.epoch_regressions
                    or self.split_brain)

    def row(self) -> dict[str, Any]:
        return {"attempted": self.attempted, "acknowledged": self.acknowledged,
                "failed": self.failed, "unknown": self.unknown, "lost": len(self.lost),
                "unavailable_s": round(self.unavailable_seconds, 2)}


def _unavailable(events: list[Event], gap: float) -> float:
    """Sum of stretches longer than `gap` seconds with no successful completion."""
    times = sorted(e.completed for e in events if e.outcome == OK and e.completed is not None)
    if not events:
        return 0.0
    start = min(e.invoked for e in events)
    end = max((e.completed or e.invoked) for e in events)
    total, last = 0.0, start
    for t in [*times, end]:
        if t - last > gap:
            total += t - last
        last = max(last, t)
    return total


def check(history: History, final: Mapping[str, int | None], *,
          replicas: Iterable[Mapping[str, int | None]] = (),
          leaders: Iterable[tuple[float, int, str]] = (), gap: float = 0.25) -> Verdict:
    """Check a finished history against the healed final state.

    final: key -> sequence read after healing (None = absent). replicas: per-replica
    key -> sequence maps taken after healing (every map must agree with `final` on the
    keys it holds). leaders: (time, epoch, leader id) observations.
    """
    v = Verdict()
    acked: dict[str, int] = {}
    per_client_acked: dict[tuple[str, str], list[tuple[float, int]]] = {}
    for ev in history.events:
        if ev.kind == "write":
            v.attempted += 1
            if ev.outcome == OK:
                v.acknowledged += 1
                acked[ev.key] = max(acked.get(ev.key, 0), ev.value or 0)
                per_client_acked.setdefault((ev.client, ev.key), []).append(
                    (ev.completed or ev.invoked, ev.value or 0))
            elif ev.outcome == UNKNOWN or ev.outcome is None:
                v.unknown += 1
            else:
                v.failed += 1
    for key, seq in sorted(acked.items()):
        got = final.get(key)
        if got is None or got < seq:
            v.lost.append(f"{key}: acknowledged {seq}, found {got}")
    for ev in history.events:
        if ev.kind != "read" or ev.outcome != OK:
            continue
        before = [s for t, s in per_client_acked.get((ev.client, ev.key), []) if t <= ev.invoked]
        if before and (ev.value is None or ev.value < max(before)):
            v.stale_reads.append(f"{ev.client} read {ev.key}={ev.value} after acking {max(before)}")
    for i, replica in enumerate(replicas):
        for key, seq in replica.items():
            if final.get(key) != seq:
                v.diverged.append(f"replica {i}: {key}={seq}, final {final.get(key)}")
    seen: dict[int, str] = {}
    last_epoch = -1
    for _t, epoch, leader in sorted(leaders):
        if epoch < last_epoch:
            v.epoch_regressions.append(f"epoch {epoch} observed after {last_epoch}")
        last_epoch = max(last_epoch, epoch)
        if seen.setdefault(epoch, leader) != leader:
            v.split_brain.append(f"epoch {epoch}: {seen[epoch]} and {leader}")
    v.unavailable_seconds = _unavailable([e for e in history.events if e.kind == "write"], gap)
    return v
