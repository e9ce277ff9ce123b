"""Recovery logic without Ray: the hydration state machine, the read-repair decision, and
the router's quorum reads, read repair and unknown outcomes over in-process shards, and the
decision that finishes an interrupted ring switch."""

from __future__ import annotations

import pytest

from memcluster.cluster.control.hydration import Hydration
from memcluster.cluster.control.ring_switch import RingResolution, resolve_ring_switch
from memcluster.cluster.data.local import Done, LocalShard
from memcluster.cluster.data.placement import Placement
from memcluster.cluster.data.repair import newest, repair_plan
from memcluster.cluster.data.ring import Ring
from memcluster.cluster.data.router import Router
from memcluster.cluster.data.shard import ShardCore
from memcluster.cluster.retry import Retry
from memcluster.errors import (
    InvalidValue,
    QuorumNotReached,
    ShardDied,
    Timeout,
    TransientError,
    UnknownOutcome,
)
from memcluster.model import Record
from memcluster.ops import ReplicateOp, RetrieveOp, StoreOp, UpdateOp
from memcluster.testing.clock import FakeClock
from tests.unit.test_router import FakeDirectory

FAST = Retry(deadline=0.2, delay=0.001, max_delay=0.01, retry_on=(TransientError, ShardDied))


def rec(version: int, value: object = "v", updated: float = 1.0) -> Record:
    return Record("k", value, "", {}, version, 0.0, updated, None)


# ---- hydration ------------------------------------------------------------------------


def test_hydration_serves_only_after_every_replica_was_read():
    clock = FakeClock(100.0)
    hyd = Hydration("c/1", "inc-2", ("c/0", "c/2"), clock=clock)
    assert hyd.state == "recovering" and hyd.progress == 0.0
    hyd.page_copied(40)
    hyd.source_done("c/0")
    assert hyd.progress == 0.5
    with pytest.raises(ValueError, match="still has to read"):
        hyd.finish()
    assert hyd.state == "recovering"
    clock.advance(2.5)
    hyd.source_done("c/2")
    hyd.finish()
    assert hyd.as_dict() == {"state": "serving", "incarnation": "inc-2", "progress": 1.0,
                             "copied": 40, "replicas_read": 2, "replicas": 2, "seconds": 2.5}


def test_abandoned_hydration_cannot_finish_or_progress():
    hyd = Hydration("c/1", "inc-2", ("c/0",), clock=FakeClock())
    hyd.abandon()
    assert hyd.state == "abandoned"
    with pytest.raises(ValueError):
        hyd.page_copied(1)
    with pytest.raises(ValueError):
        hyd.finish()
    with pytest.raises(ValueError):  # an unknown replica is a bug, not progress
        Hydration("c/1", "i", ("c/0",), clock=FakeClock()).source_done("c/9")


def test_hydration_with_no_replica_to_read_serves_at_once():
    assert Hydration("c/0", "i", (), clock=FakeClock()).state == "serving"


# ---- the read-repair decision ---------------------------------------------------------


def test_repair_plan_picks_the_newest_and_lists_lower_or_missing_copies():
    winner, stale = repair_plan({"a": rec(3), "b": rec(5, "new"), "c": None, "d": rec(5)})
    assert winner.version == 5 and winner.value == "new"
    assert stale == ["a", "c"]          # d has an equal version: replicate would keep its own
    assert repair_plan({"a": None, "b": None}) == (None, [])
    assert repair_plan({"a": rec(2), "b": rec(2)})[1] == []
    assert newest(rec(2, "x", 1.0), rec(2, "y", 3.0)).value == "y"


# ---- the router: quorum reads with repair, unknown outcomes ------------------------------


def test_quorum_read_returns_the_newest_copy_and_repairs_the_stale_replica():
    topo = FakeDirectory(3, 2, 2)
    router = Router(topo, retry=FAST)
    first = router.execute("c", [StoreOp.make("k", "old")])[0]
    primary, replica = topo.place.preference("k")
    newer = Record("k", "new", "", {}, first.version + 1, first.created_at, first.updated_at + 1,
                   None)
    topo.cores[primary].backend.replicate(ReplicateOp(newer))   # the replica missed it
    assert router.execute("c", [RetrieveOp.make("k")])[0].value == "new"  # primary-only read
    topo.place = Placement("c", topo.place.ring, 2, 2, read_quorum=2)
    topo.cores[primary].backend.replicate(ReplicateOp(
        Record("k", "newest", "", {}, newer.version + 1, 0.0, 9.0, None)))
    got = router.execute("c", [RetrieveOp.make("k")])[0]
    assert got.value == "newest"
    assert topo.cores[replica].backend.retrieve(RetrieveOp("k")).value == "newest"


def test_quorum_read_without_enough_replicas_fails_instead_of_guessing():
    topo = FakeDirectory(3, 2, 2)
    topo.place = Placement("c", topo.place.ring, 2, 2, read_quorum=2)
    router = Router(topo, retry=FAST)
    router.execute("c", [StoreOp.make("k", 1)])
    topo.dead.add(topo.place.preference("k")[1])
    assert isinstance(router.execute("c", [RetrieveOp.make("k")])[0], QuorumNotReached)
    with pytest.raises(InvalidValue):
        Placement("c", Ring(1, ["a", "b"]), 2, 2, read_quorum=3)


class _SentThenLost:
    """A link whose call reached the shard (which applied it) but whose reply was lost."""

    def __init__(self, core: ShardCore, error: BaseException) -> None:
        self.core = core
        self.shard_id = core.shard_id
        self.error = error

    def submit(self, version, ops):  # type: ignore[no-untyped-def]
        LocalShard(self.core).submit(version, ops)
        self.error.in_flight = True  # as shard.Pending marks transport errors
        return Done(error=self.error)


def test_update_whose_reply_is_lost_reports_unknown_outcome_and_is_not_reapplied():
    topo = FakeDirectory(3, 2, 2)
    router = Router(topo, retry=FAST)
    router.execute("c", [StoreOp.make("n", 1)])
    primary = topo.place.preference("n")[0]
    base_link = topo.link
    topo.link = lambda sid: (_SentThenLost(topo.cores[sid], Timeout("lost reply"))
                             if sid == primary else base_link(sid))
    out = router.execute("c", [UpdateOp.make("n", lambda v: v + 1)])[0]
    assert isinstance(out, UnknownOutcome)
    values = [core.backend.retrieve(RetrieveOp("n")) for core in topo.cores.values()]
    # the primary replicated, then applied it: both copies hold it, applied once only
    assert sorted((r.value, r.version) for r in values if r is not None) == [(2, 2), (2, 2)]


def test_store_retried_after_a_lost_reply_is_applied_once():
    topo = FakeDirectory(3, 1, 1)
    router = Router(topo, retry=FAST)
    primary = topo.place.preference("s")[0]
    core = topo.cores[primary]
    op = StoreOp.make("s", "x", op_id="op-1")
    LocalShard(core).submit(1, [op])               # the first attempt applied...
    again = router.execute("c", [op])[0]          # ...and the retry carries the same id
    assert again.version == 1
    assert core.backend.retrieve(RetrieveOp("s")).version == 1


# ---- resolve_ring_switch: finishing a rebalance the previous manager was interrupted in


def test_nothing_staged_keeps_the_pointer():
    assert resolve_ring_switch(3, [1, 2, 3], {"a": 3}) == RingResolution("keep", 3)


def test_no_old_shard_on_the_staged_ring_rolls_back():
    # Only the new shard (not reported: it is not in the pointer's ring) was at version 4.
    out = resolve_ring_switch(3, [4], {"a": 3, "b": 3})
    assert out == RingResolution("back", 3, (4,))


def test_one_old_shard_on_the_staged_ring_rolls_forward():
    out = resolve_ring_switch(3, [4, 5], {"a": 3, "b": 5, "c": 3})
    assert out == RingResolution("forward", 5, (4,))   # 4: an earlier abandoned attempt


def test_a_shard_on_a_version_never_staged_is_refused():
    with pytest.raises(ValueError, match="never staged"):
        resolve_ring_switch(3, [4], {"a": 6})
