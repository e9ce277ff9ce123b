"""The chaos checker itself: it must catch losses, stale reads, divergence and split brain."""

from __future__ import annotations

from memcluster.testing.clock import FakeClock
from tests.chaos.history import FAIL, OK, UNKNOWN, History, check


def _history() -> tuple[History, FakeClock]:
    clock = FakeClock(0.0)
    return History(clock), clock


def _write(h: History, clock: FakeClock, client: str, key: str, seq: int, outcome: str) -> None:
    ev = h.invoke(client, "write", key, seq)
    clock.advance(0.01)
    h.complete(ev, outcome)


def test_clean_history_passes_and_counts() -> None:
    h, clock = _history()
    _write(h, clock, "c1", "k1", 1, OK)
    _write(h, clock, "c1", "k1", 2, UNKNOWN)
    _write(h, clock, "c1", "k1", 3, FAIL)
    v = check(h, {"k1": 2})
    assert v.ok and (v.attempted, v.acknowledged, v.unknown, v.failed) == (3, 1, 1, 1)


def test_lost_acknowledged_write_is_reported() -> None:
    h, clock = _history()
    _write(h, clock, "c1", "k1", 1, OK)
    _write(h, clock, "c1", "k1", 2, OK)
    v = check(h, {"k1": 1})
    assert not v.ok and v.lost == ["k1: acknowledged 2, found 1"]
    assert check(h, {}).lost == ["k1: acknowledged 2, found None"]


def test_stale_read_after_own_write_is_reported() -> None:
    h, clock = _history()
    _write(h, clock, "c1", "k1", 5, OK)
    ev = h.invoke("c1", "read", "k1")
    h.complete(ev, OK, value=4)
    assert check(h, {"k1": 5}).stale_reads


def test_diverged_replica_split_brain_and_epoch_regression() -> None:
    h, _ = _history()
    v = check(h, {"k": 3}, replicas=[{"k": 3}, {"k": 2}],
              leaders=[(0.0, 1, "a"), (1.0, 2, "b"), (2.0, 2, "c"), (3.0, 1, "a")])
    assert v.diverged and v.split_brain and v.epoch_regressions


def test_unavailability_sums_gaps_without_success() -> None:
    h, clock = _history()
    _write(h, clock, "c", "k", 1, OK)
    ev = h.invoke("c", "write", "k", 2)
    clock.advance(2.0)
    h.complete(ev, FAIL)
    _write(h, clock, "c", "k", 3, OK)
    assert 1.9 < check(h, {"k": 3}).unavailable_seconds < 2.1
