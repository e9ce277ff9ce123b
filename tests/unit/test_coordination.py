"""The Redis coordination recipes against a private redis-server: lease and fencing epochs,
election and takeover, ring compare-and-set, membership expiry, spec, hints, destroy,
and Redis being down."""

from __future__ import annotations

import itertools
import os
import random
import threading
import time

import pytest

from memcluster.cluster.coord.coordinator import Coordinator
from memcluster.cluster.coord.election import Election, campaign
from memcluster.errors import (
    ConfigError,
    FencedOut,
    InvalidValue,
    NotFound,
    SourceUnavailable,
    VersionConflict,
)
from tests.support import RedisServer, free_port, wait_until

RING1 = {"version": 1, "shard_ids": ["cache/0", "cache/1"]}
RING2 = {"version": 2, "shard_ids": ["cache/0", "cache/1", "cache/2"]}
RING3 = {"version": 3, "shard_ids": ["cache/0", "cache/2"]}


@pytest.fixture
def coord(redis_server: RedisServer) -> Coordinator:
    c = Coordinator(redis_server.url, "agents")
    yield c
    c.close()


def leader_epoch(coord: Coordinator, holder: str = "m1") -> int:
    lease = coord.lease(holder, ttl_ms=60_000)
    assert lease.acquire()
    return lease.epoch


# -- lease -----------------------------------------------------------------------------

def test_only_one_of_two_holders_gets_the_lease(coord: Coordinator) -> None:
    a, b = coord.lease("m1", ttl_ms=60_000), coord.lease("m2", ttl_ms=60_000)
    assert a.acquire() is True
    assert b.acquire() is False
    assert a.held and not b.held
    assert coord.leader() == (a.token, a.epoch)
    assert a.acquire() is True and coord.current_epoch() == a.epoch   # re-acquire: same epoch


def test_same_holder_id_twice_is_still_two_holders(coord: Coordinator) -> None:
    a, b = coord.lease("m1", ttl_ms=60_000), coord.lease("m1", ttl_ms=60_000)
    assert a.acquire() and not b.acquire()


def test_a_lapsed_holder_can_neither_renew_nor_release_the_new_holders_lease(
        coord: Coordinator) -> None:
    old = coord.lease("old", ttl_ms=100)
    assert old.acquire()
    new = coord.lease("new", ttl_ms=60_000)
    wait_until(new.acquire, timeout=5, message="the new holder to acquire after expiry")
    assert not old.held
    assert old.renew() is False and not old.held
    assert old.release() is False
    assert coord.leader() == (new.token, new.epoch)
    assert new.epoch > old.epoch
    assert new.renew() and new.release() is True
    assert coord.leader() is None


def test_release_lets_another_holder_acquire_at_once(coord: Coordinator) -> None:
    a, b = coord.lease("m1", ttl_ms=60_000), coord.lease("m2", ttl_ms=60_000)
    assert a.acquire()
    assert a.release() is True and not a.held
    assert b.acquire()


def test_epochs_strictly_increase_with_every_acquisition(coord: Coordinator) -> None:
    leases = [coord.lease(f"m{i}", ttl_ms=60_000) for i in range(3)]
    epochs = []
    for round_ in range(9):
        lease = leases[round_ % 3]
        assert lease.acquire()
        epochs.append(lease.epoch)
        assert coord.current_epoch() == lease.epoch
        lease.release()
    assert epochs == sorted(set(epochs)) and len(epochs) == 9


def test_fence_check(coord: Coordinator) -> None:
    first = leader_epoch(coord)
    coord.fence_check(first)
    coord.lease("m1", ttl_ms=60_000)  # building a lease changes nothing
    coord.fence_check(first)
    coord.link.client.delete(coord.leader_key)          # the first lease vanishes
    second = leader_epoch(coord, "m2")
    with pytest.raises(FencedOut) as info:
        coord.fence_check(first)
    assert (info.value.epoch, info.value.current) == (first, second)


def test_never_two_leaders_at_once_nor_in_one_epoch(coord: Coordinator) -> None:
    """Threads contend for a short lease; whenever a holder believes it leads (`held`), the
    belief intervals of different tenures never overlap and every epoch has one holder."""
    seed = int(os.environ.get("MEMCLUSTER_TEST_SEED", "0"))
    print(f"seed={seed}")
    stop_at = time.monotonic() + 1.5
    tenures: list[tuple[int, str, float, float]] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def contender(n: int) -> None:
        rng = random.Random(seed * 100 + n)
        lease = coord.lease(f"m{n}", ttl_ms=40)
        try:
            while time.monotonic() < stop_at:
                if not lease.acquire():
                    time.sleep(rng.uniform(0, 0.01))
                    continue
                begin = last = time.monotonic()
                epoch = lease.epoch
                for _ in range(rng.randrange(1, 6)):
                    time.sleep(rng.uniform(0, 0.03))
                    if rng.random() < 0.6:
                        lease.renew()
                    now = time.monotonic()
                    if not lease.held:
                        break
                    last = now
                with lock:
                    tenures.append((epoch, lease.token, begin, last))
                if rng.random() < 0.5:
                    lease.release()
                else:
                    time.sleep(0.05)        # let it lapse instead
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=contender, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not errors
    assert len(tenures) > 5
    holders: dict[int, str] = {}
    for epoch, token, _b, _e in tenures:
        assert holders.setdefault(epoch, token) == token, f"epoch {epoch} had two holders"
    tenures.sort(key=lambda t: t[2])
    for (e1, _t1, _b1, end1), (e2, _t2, begin2, _e2) in itertools.pairwise(tenures):
        assert end1 <= begin2, f"tenures of epochs {e1} and {e2} overlap"
        assert e2 > e1


# -- election --------------------------------------------------------------------------

def test_one_of_two_managers_leads_and_the_standby_takes_over_on_release(
        coord: Coordinator) -> None:
    elected: list[tuple[str, int]] = []
    elections = [coord.election(name, lambda lease: elected.append((lease.holder_id,
                                                                      lease.epoch)),
                                ttl_ms=300, poll_interval=0.02) for name in ("m1", "m2")]
    for e in elections:
        e.start()
    try:
        wait_until(lambda: elected, message="a leader")
        leader = next(e for e in elections if e.is_leader)
        standby = next(e for e in elections if e is not leader)
        assert not standby.is_leader
        leader.stop()
        wait_until(lambda: standby.is_leader, timeout=5, message="the standby to lead")
        assert [h for h, _ in elected] == [leader.lease.holder_id, standby.lease.holder_id]
        assert elected[1][1] > elected[0][1]
    finally:
        for e in elections:
            e.stop()


def test_standby_takes_over_when_the_leader_stops_renewing(coord: Coordinator) -> None:
    frozen = coord.lease("frozen", ttl_ms=200)          # acquires once, then never renews
    assert frozen.acquire()
    lost: list[int] = []
    standby = Election(coord.lease("standby", ttl_ms=200), lambda lease: None,
                       on_lost=lambda lease: lost.append(lease.epoch), poll_interval=0.02)
    standby.start()
    try:
        assert not standby.is_leader
        wait_until(lambda: standby.is_leader, timeout=5, message="takeover after lapse")
        assert standby.epoch > frozen.epoch
        assert not frozen.held and frozen.renew() is False
        with pytest.raises(FencedOut):
            coord.fence_check(frozen.epoch)
        time.sleep(0.25)                                  # longer than the TTL: renewed?
        assert standby.is_leader and lost == []
    finally:
        standby.stop()
    assert coord.leader() is None                         # stop() released the lease


def test_campaign_releases_and_propagates_when_on_elected_fails(coord: Coordinator) -> None:
    def boom(lease: object) -> None:
        raise RuntimeError("cannot start")

    with pytest.raises(RuntimeError, match="cannot start"):
        campaign(coord.lease("m1", ttl_ms=60_000), boom, threading.Event(), 0.01)
    assert coord.leader() is None


# -- ring store ------------------------------------------------------------------------

def test_ring_compare_and_set(coord: Coordinator) -> None:
    store = coord.ring_store
    epoch = leader_epoch(coord)
    assert store.load("cache") is None and store.current_version("cache") is None
    store.publish("cache", 1, RING1, expected=0, epoch=epoch)
    assert store.load("cache") == (1, RING1)
    with pytest.raises(VersionConflict) as info:          # stale expected version
        store.publish("cache", 2, RING2, expected=0, epoch=epoch)
    assert info.value.actual == 1
    assert store.load("cache") == (1, RING1) and store.versions("cache") == [1]
    with pytest.raises(VersionConflict):                  # not newer
        store.publish("cache", 1, RING1, expected=1, epoch=epoch)
    store.publish("cache", 2, RING2, expected=1, epoch=epoch)
    assert store.load("cache") == (2, RING2)
    assert store.load("cache", 1) == (1, RING1)           # old versions stay readable


def test_ring_switch_with_a_stale_epoch_is_fenced(coord: Coordinator) -> None:
    store = coord.ring_store
    old = coord.lease("old", ttl_ms=60_000)
    assert old.acquire()
    store.publish("cache", 1, RING1, expected=0, epoch=old.epoch)
    old.release()
    new_epoch = leader_epoch(coord, "new")
    with pytest.raises(FencedOut) as info:
        store.publish("cache", 2, RING2, expected=1, epoch=old.epoch)
    assert info.value.current == new_epoch
    with pytest.raises(FencedOut):
        store.put_version("cache", 2, RING2, epoch=old.epoch)
    assert store.load("cache") == (1, RING1) and store.versions("cache") == [1]
    store.publish("cache", 2, RING2, expected=1, epoch=new_epoch)
    assert store.current_version("cache") == 2


def test_ring_versions_are_immutable_and_can_be_staged(coord: Coordinator) -> None:
    store = coord.ring_store
    epoch = leader_epoch(coord)
    store.publish("cache", 1, RING1, expected=None, epoch=epoch)
    store.put_version("cache", 2, RING2, epoch=epoch)
    store.put_version("cache", 2, dict(reversed(RING2.items())), epoch=epoch)  # same content
    with pytest.raises(VersionConflict, match="immutable"):
        store.put_version("cache", 2, RING3, epoch=epoch)
    with pytest.raises(VersionConflict, match="immutable"):
        store.publish("cache", 2, RING3, expected=1, epoch=epoch)
    assert store.current_version("cache") == 1            # staged, not switched
    with pytest.raises(NotFound):
        store.switch("cache", 5, expected=1, epoch=epoch)
    store.switch("cache", 2, expected=1, epoch=epoch)
    assert store.load("cache") == (2, RING2)
    store.publish("cache", 3, RING3, expected=2, epoch=epoch)
    assert store.sources() == ["cache"]
    assert store.gc("cache", keep=2, epoch=epoch) == 1
    assert store.versions("cache") == [2, 3] and store.load("cache") == (3, RING3)
    with pytest.raises(InvalidValue):
        store.publish("bad:name", 1, RING1, expected=0, epoch=epoch)


def test_a_ring_switch_publishes_a_hint(coord: Coordinator) -> None:
    hints: list[dict] = []
    epoch = leader_epoch(coord)
    listener = coord.subscribe_hints(hints.append)
    try:
        coord.ring_store.publish("cache", 1, RING1, expected=0, epoch=epoch)
        with pytest.raises(VersionConflict):
            coord.ring_store.publish("cache", 7, RING3, expected=0, epoch=epoch)
        coord.ring_store.publish("cache", 2, RING2, expected=1, epoch=epoch)
        wait_until(lambda: len(hints) >= 2, timeout=5, message="two hints")
        assert hints == [{"kind": "ring", "source": "cache", "version": 1, "epoch": epoch},
                         {"kind": "ring", "source": "cache", "version": 2, "epoch": epoch}]
    finally:
        listener.stop()
    assert not listener.running


def test_hint_listener_resubscribes_after_redis_restarts(redis_server: RedisServer,
                                                         coord: Coordinator) -> None:
    hints: list[dict] = []
    listener = coord.subscribe_hints(hints.append)
    try:
        redis_server.restart()
        wait_until(lambda: {"kind": "resubscribed"} in hints, timeout=10,
                   message="the resubscribed hint")
        coord.publish_hint("ring", source="cache", version=9)
        wait_until(lambda: any(h.get("version") == 9 for h in hints), timeout=5,
                   message="a hint after the restart")
    finally:
        listener.stop()


# -- membership ------------------------------------------------------------------------

def test_members_expire_without_heartbeats(coord: Coordinator) -> None:
    members = coord.membership
    members.heartbeat("cache/0", {"incarnation": 1}, ttl_ms=150)
    members.heartbeat("cache/1", {"incarnation": 4, "actor": "agents/cache/1"}, ttl_ms=60_000)
    assert members.members() == {"cache/0": {"incarnation": 1},
                                 "cache/1": {"incarnation": 4, "actor": "agents/cache/1"}}
    assert 0 < members.expiries()["cache/0"] <= 0.15
    wait_until(lambda: "cache/0" not in members.members(), timeout=5,
               message="cache/0 to expire")
    assert members.alive("cache/1") and not members.alive("cache/0")
    members.heartbeat("cache/0", {"incarnation": 2}, ttl_ms=60_000)   # comes back
    assert members.members()["cache/0"] == {"incarnation": 2}
    assert members.leave("cache/1") is True and members.leave("cache/1") is False
    assert list(members.members()) == ["cache/0"]


# -- spec and teardown -----------------------------------------------------------------

def test_spec_round_trip_fenced_and_never_with_clear_text_secrets(coord: Coordinator) -> None:
    assert coord.load_spec() is None
    epoch = leader_epoch(coord)
    spec = {"name": "agents", "redis_url": "redis://:${REDIS_PASSWORD}@redis:6379/0",
            "sources": [{"name": "cache", "backend": "memory", "shards": 4,
                         "opts": {"dsn": "host=db password=${PG_PASSWORD}"}}]}
    coord.save_spec(spec, epoch)
    assert coord.load_spec() == spec
    with pytest.raises(FencedOut):
        coord.save_spec({"name": "other"}, epoch - 1)
    with pytest.raises(ConfigError, match="spec"):
        coord.save_spec({**spec, "redis_url": "redis://:hunter2@redis:6379/0"}, epoch)
    with pytest.raises(InvalidValue):
        coord.save_spec({"bad": object()}, epoch)
    assert coord.load_spec() == spec


def test_destroy_removes_every_key_of_the_cluster_and_nothing_else(
        redis_server: RedisServer, coord: Coordinator) -> None:
    other = Coordinator(redis_server.url, "other")
    for c in (coord, other):
        epoch = leader_epoch(c)
        c.save_spec({"name": c.cluster}, epoch)
        c.ring_store.publish("cache", 1, RING1, expected=0, epoch=epoch)
        c.ring_store.put_version("cache", 2, RING2, epoch=epoch)
        c.membership.heartbeat("cache/0", {}, ttl_ms=60_000)
    assert len(coord.keys()) == 8
    assert coord.destroy() == 8
    assert coord.keys() == [] and coord.load_spec() is None and coord.leader() is None
    assert len(other.keys()) == 8 and other.load_spec() == {"name": "other"}


# -- Redis down ------------------------------------------------------------------------

def test_redis_down_raises_source_unavailable_with_the_redacted_url(tmp_path) -> None:
    server = RedisServer(tmp_path / "pw", port=free_port(), password="hunter2")
    server.start()
    coord = Coordinator(server.url, "agents")
    lease = coord.lease("m1", ttl_ms=60_000)
    assert coord.ping() and lease.acquire()
    server.stop()
    calls = [coord.ping, coord.load_spec, lease.acquire, lease.renew,
             lambda: coord.ring_store.load("cache"), coord.membership.members,
             lambda: coord.subscribe_hints(lambda h: None), coord.destroy]
    for call in calls:
        with pytest.raises(SourceUnavailable) as info:
            call()
        assert "hunter2" not in str(info.value)
        assert f"redis://:***@127.0.0.1:{server.port}/0" in str(info.value)
    assert lease.held                 # a failed renew does not end the validity window early
    coord.close()


def test_constructors_do_no_io() -> None:
    coord = Coordinator(f"redis://127.0.0.1:{free_port()}/0", "nobody-listens")
    coord.lease("m1")
    coord.election("m1", lambda lease: None)
    with pytest.raises(SourceUnavailable):
        coord.ping()
    with pytest.raises(ConfigError):
        Coordinator("redis://127.0.0.1:1/0", "bad name")
