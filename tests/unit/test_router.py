"""The router's decisions with in-process shards (ShardCore + the memory backend), no Ray."""

from __future__ import annotations

import pytest

from memcluster.cluster.data.local import Done, LocalShard
from memcluster.cluster.data.placement import Placement
from memcluster.cluster.data.ring import Ring
from memcluster.cluster.data.router import Router
from memcluster.cluster.data.shard import ShardCore
from memcluster.cluster.retry import Retry
from memcluster.errors import (
    QuorumNotReached,
    ShardDied,
    ShardUnavailable,
    TransientError,
    VersionConflict,
)
from memcluster.model import Query
from memcluster.ops import (
    ClearOp,
    CountOp,
    DeleteOp,
    ListKeysOp,
    RetrieveOp,
    SearchOp,
    StoreOp,
    UpdateOp,
)


class FakeDirectory:
    """Shards in-process; `dead`/`blocked`/`frozen` make a shard dead, refusing or silent
    (for the router and for primaries replicating alike); counts calls."""

    def __init__(self, shards: int, replicas: int, quorum: int) -> None:
        ids = [f"c/{i}" for i in range(shards)]
        self.place = Placement("c", Ring(1, ids), replicas, quorum)
        self.cores = {sid: ShardCore("memory", {}, prefix=f"t/{sid}", shard_id=sid,
                                     placement=self.place) for sid in ids}
        for core in self.cores.values():
            core.open()
            core.peers = self
        self.dead: set[str] = set()
        self.blocked: set[str] = set()
        self.frozen: set[str] = set()  # the call is sent, its answer never comes
        self.calls: list[tuple[str, int]] = []
        self.forgotten: list[str] = []
        self.refreshes = 0
        self._links: dict[str, object] = {}

    def placement(self, source: str) -> Placement:
        return self.place

    def link(self, sid: str):  # type: ignore[no-untyped-def]
        if sid not in self._links:   # one link per shard, like a client's handle cache
            self._links[sid] = self._make_link(sid)
        return self._links[sid]

    def _make_link(self, sid: str):  # type: ignore[no-untyped-def]
        topo = self

        class _Link:
            shard_id = sid

            def submit(self, version, ops):  # type: ignore[no-untyped-def]
                return self._call("submit", version, ops)

            def replicate(self, version, ops, sender=None):  # type: ignore[no-untyped-def]
                return self._call("replicate", version, ops)

            def _call(self, how, version, ops):  # type: ignore[no-untyped-def]
                topo.calls.append((sid, len(ops)))
                if sid in topo.dead:
                    return Done(error=ShardDied(sid))
                if sid in topo.blocked:
                    return Done(error=ShardUnavailable(sid))
                if sid in topo.frozen:
                    return _Frozen(sid)
                return getattr(LocalShard(topo.cores[sid]), how)(version, ops)

        return _Link()

    def refresh(self, source: str, error: BaseException) -> None:
        self.refreshes += 1

    def forget(self, sid: str) -> None:
        self.forgotten.append(sid)

    def holders(self, key: str) -> list[str]:
        return [sid for sid, core in self.cores.items()
                if core.backend.retrieve(RetrieveOp(key)) is not None]


class _Frozen:
    """A call to a frozen shard: waiting for its answer would block forever."""

    def __init__(self, sid: str) -> None:
        self.sid = sid

    def result(self):  # type: ignore[no-untyped-def]
        raise AssertionError(f"waited for frozen shard {self.sid}")


FAST = Retry(deadline=0.2, delay=0.001, max_delay=0.01, retry_on=(TransientError, ShardDied))


def store(key, value, **kw):  # type: ignore[no-untyped-def]
    return StoreOp.make(key, value, **kw)


def test_write_lands_on_exactly_n_shards_of_the_preference_list():
    topo = FakeDirectory(4, 2, 2)
    router = Router(topo, retry=FAST)
    ops = [store(f"k{i}", i) for i in range(50)]
    records = router.execute("c", ops)
    assert [r.version for r in records] == [1] * 50
    for i in range(50):
        assert sorted(topo.holders(f"k{i}")) == sorted(topo.place.preference(f"k{i}"))
    [got] = router.execute("c", [RetrieveOp.make("k7")])
    assert got.value == 7


def test_batches_make_one_call_per_shard_and_one_per_replica():
    topo = FakeDirectory(4, 2, 2)
    Router(topo, retry=FAST).execute("c", [store(f"k{i}", i) for i in range(200)])
    # 4 primary calls from the router, then each primary one call per replica it feeds
    assert len(topo.calls) <= 4 + 4 * 3
    assert sum(n for _, n in topo.calls) == 400


def test_cas_and_update_are_decided_by_the_primary_and_replicated():
    topo = FakeDirectory(3, 2, 2)
    router = Router(topo, retry=FAST)
    router.execute("c", [store("k", 1)])
    [conflict] = router.execute("c", [store("k", 2, if_version=5)])
    assert isinstance(conflict, VersionConflict)
    [rec] = router.execute("c", [UpdateOp.make("k", lambda v: v + 10)])
    assert (rec.value, rec.version) == (11, 2)
    for sid in topo.place.preference("k"):
        assert topo.cores[sid].backend.retrieve(RetrieveOp("k")).version == 2


def test_reads_fall_back_when_the_primary_is_dead():
    topo = FakeDirectory(3, 2, 2)
    router = Router(topo, retry=FAST)
    router.execute("c", [store(f"k{i}", i) for i in range(30)])
    victim = "c/0"
    topo.dead.add(victim)
    got = router.execute("c", [RetrieveOp.make(f"k{i}") for i in range(30)])
    assert [r.value for r in got] == list(range(30))
    assert victim in topo.forgotten


def test_a_write_below_quorum_is_reported_not_acknowledged():
    topo = FakeDirectory(2, 2, 2)
    router = Router(topo, retry=FAST)
    topo.dead.add("c/1")
    [result] = router.execute("c", [store("k", 1)])
    assert isinstance(result, QuorumNotReached)
    topo2 = FakeDirectory(2, 2, 1)  # W=1 tolerates the dead replica
    topo2.dead.add("c/1")
    [rec] = Router(topo2, retry=FAST).execute("c", [store("k", 1)])
    assert rec.version == 1


def test_a_write_returns_after_w_copies_without_waiting_for_the_rest():
    topo = FakeDirectory(2, 2, 1)  # N=2, W=1: the primary's copy is enough
    router = Router(topo, retry=FAST)
    key = "k"
    replica = Placement("c", topo.place.ring, 2, 1).preference(key, "")[1]
    topo.frozen.add(replica)
    [rec] = router.execute("c", [store(key, 1)])
    assert rec.version == 1
    assert (replica, 1) in topo.calls  # the replica was still sent its copy
    topo.frozen.clear()
    topo3 = FakeDirectory(3, 3, 2)  # N=3, W=2: one replica's answer is awaited
    placement = topo3.place
    first, second = placement.preference(key, "")[1:]
    topo3.frozen.add(second)
    [rec] = Router(topo3, retry=FAST).execute("c", [store(key, 1)])
    assert rec.version == 1 and first in topo3.holders(key)


def test_retried_write_is_applied_once_by_its_primary():
    topo = FakeDirectory(2, 2, 2)
    router = Router(topo, retry=Retry(deadline=5, delay=0.001))
    replica = topo.place.preference("k")[1]
    topo.blocked.add(replica)
    attempts = {"n": 0}
    original = topo.refresh

    def unblock(source, error):  # type: ignore[no-untyped-def]
        attempts["n"] += 1
        if attempts["n"] == 2:
            topo.blocked.clear()
        original(source, error)

    topo.refresh = unblock  # type: ignore[method-assign]
    [rec] = router.execute("c", [store("k", "v")])
    assert rec.version == 1  # the primary did not apply it a second time
    assert sorted(topo.holders("k")) == sorted(topo.place.preference("k"))


def test_delete_reaches_every_replica():
    topo = FakeDirectory(3, 2, 2)
    router = Router(topo, retry=FAST)
    router.execute("c", [store("k", 1)])
    assert router.execute("c", [DeleteOp.make("k")]) == [True]
    assert topo.holders("k") == []
    assert router.execute("c", [DeleteOp.make("k")]) == [False]


def test_search_merges_top_k_and_deduplicates_replicas():
    topo = FakeDirectory(3, 2, 2)
    router = Router(topo, retry=FAST)
    router.execute("c", [store(f"user:{i:02d}", {"n": i}, metadata={"n": i})
                         for i in range(20)])
    [found] = router.execute("c", [SearchOp.make(Query(pattern="user:*", limit=5, offset=3))])
    assert [r.key for r in found] == [f"user:{i:02d}" for i in range(3, 8)]
    [found] = router.execute("c", [SearchOp.make(Query(filter={"n": {"$gte": 15}},
                                                        order_by="-key", limit=100))])
    assert [r.key for r in found] == [f"user:{i:02d}" for i in range(19, 14, -1)]


def test_count_and_clear_count_each_key_once():
    topo = FakeDirectory(3, 2, 2)
    router = Router(topo, retry=FAST)
    router.execute("c", [store(f"k{i}", i) for i in range(40)])
    assert router.execute("c", [CountOp.make(Query(pattern="k1*"))]) == [11]
    assert router.execute("c", [ClearOp.make()]) == [40]
    assert router.execute("c", [CountOp.make()]) == [0]


@pytest.mark.parametrize("replicas", [1, 2])
def test_list_keys_pages_cover_every_key_exactly_once(replicas):
    topo = FakeDirectory(4, replicas, replicas)
    router = Router(topo, retry=FAST)
    keys = [f"key{i:03d}" for i in range(137)]
    router.execute("c", [store(k, 1) for k in keys])
    seen: list[str] = []
    cursor = None
    while True:
        [page] = router.execute("c", [ListKeysOp.make(limit=10, cursor=cursor)])
        assert len(page.keys) <= 10
        seen.extend(page.keys)
        cursor = page.cursor
        if cursor is None:
            break
    assert seen == keys


def test_list_keys_paging_survives_writes_between_pages():
    topo = FakeDirectory(3, 2, 2)
    router = Router(topo, retry=FAST)
    router.execute("c", [store(f"b{i:02d}", 1) for i in range(30)])
    [page] = router.execute("c", [ListKeysOp.make(limit=10)])
    router.execute("c", [store("a-new", 1), store("b05x", 1), store("c-new", 1)])
    seen = list(page.keys)
    cursor = page.cursor
    while cursor:
        [page] = router.execute("c", [ListKeysOp.make(limit=10, cursor=cursor)])
        seen.extend(page.keys)
        cursor = page.cursor
    assert len(seen) == len(set(seen))
    assert {f"b{i:02d}" for i in range(30)} | {"c-new"} <= set(seen)
    assert "a-new" not in seen  # before the position already returned


def test_scatter_reads_tolerate_n_minus_one_dead_shards():
    topo = FakeDirectory(3, 2, 2)
    router = Router(topo, retry=FAST)
    router.execute("c", [store(f"k{i}", i) for i in range(25)])
    topo.dead.add("c/2")
    assert router.execute("c", [CountOp.make()]) == [25]
    topo.dead.add("c/1")
    [result] = router.execute("c", [CountOp.make()])
    assert isinstance(result, ShardDied)


def test_stale_ring_refreshes_and_retries():
    topo = FakeDirectory(2, 1, 1)
    router = Router(topo, retry=FAST)
    newer = Placement("c", Ring(2, topo.place.ring.shard_ids), 1, 1)
    for core in topo.cores.values():
        core.set_placement(0, newer)

    def refresh(source, error):  # type: ignore[no-untyped-def]
        topo.refreshes += 1
        topo.place = newer

    topo.refresh = refresh  # type: ignore[method-assign]
    [rec] = router.execute("c", [store("k", 1)])
    assert rec.version == 1 and topo.refreshes == 1
