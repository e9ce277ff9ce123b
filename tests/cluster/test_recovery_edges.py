"""Recovery edges through Ray: the manager crashing in the middle of a rebalance, the root
supervisor giving up (the manager exits and Ray restarts it), and a shard whose Redis
heartbeat lapses while it still answers pings.

Each test starts its own cluster on a private redis-server with short health timings, and
crashes the real manager actor process (`os._exit`); Ray restarts it (`max_restarts=-1`)
and the new incarnation must recover from Redis and the live shards.
"""

from __future__ import annotations

import itertools
import os
import threading

import pytest

import memcluster as mc
from memcluster.cluster import names
from memcluster.cluster.data.ring import Ring, routing_key
from memcluster.errors import MemclusterError, UnknownOutcome
from tests.support import wait_until

pytestmark = pytest.mark.cluster

FAST = {"interval": 0.3, "ping_timeout": 0.5, "misses": 3, "call_timeout": 2.0,
        "lease_ttl": 2.0}
_ids = itertools.count()


def _name(tag: str) -> str:
    return f"{tag}{os.getpid()}x{next(_ids)}"


def _spec(**cache) -> dict:  # type: ignore[no-untyped-def]
    src = {"name": "cache", "backend": "memory", "shards": 3, "replicas": 2,
           "write_quorum": 2, "default": True, **cache}
    return {"name": "unused", "metrics_port": None, "health": FAST, "sources": [src]}


def _recovered(cluster, epoch: int):  # type: ignore[no-untyped-def]
    """The status once a manager with a newer epoch leads and every shard serves."""
    def check():  # type: ignore[no-untyped-def]
        status = cluster.status()
        shards = status["shards"].values()
        return ((status.get("epoch") or 0) > epoch and status["leading"]
                and all(s.get("state") == "serving" for s in shards) and status)

    return wait_until(check, timeout=40, interval=0.1, message="the restarted manager")


def _shard(cluster_name: str, sid: str):  # type: ignore[no-untyped-def]
    import ray

    return ray.get_actor(names.shard_actor_name(cluster_name, sid),
                         namespace=names.ray_namespace(cluster_name))


class Writer:
    """One client writing new keys in a loop; remembers what was acknowledged."""

    def __init__(self, cluster_name: str) -> None:
        self.mem = mc.connect(cluster_name)
        self.acked: dict[str, int] = {}
        self.attempted: set[str] = set()
        self.errors = 0
        # Errors that are not ours (e.g. Ray's ActorUnavailableError from a directory reload
        # while the manager restarts): the client must translate every one of them.
        self.foreign: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Writer:
        self._thread.start()
        return self

    def _run(self) -> None:
        for i in itertools.count():
            if self._stop.wait(0.005):       # pacing, so the restart gets the CPUs
                return
            key = f"w{i:06d}"
            self.attempted.add(key)
            try:
                self.mem.store(key, i, namespace="w")
            except MemclusterError:
                self.errors += 1
                continue
            except Exception as exc:  # see `foreign`
                self.foreign.append(type(exc).__name__)
                continue
            self.acked[key] = i

    def wait_progress(self, more: int) -> None:
        goal = len(self.acked) + more
        wait_until(lambda: len(self.acked) >= goal, timeout=40,
                   message=f"{more} more acknowledged writes")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)
        self.mem.close()


def _all_keys(mem, namespace: str) -> list[str]:  # type: ignore[no-untyped-def]
    keys, cursor = [], None
    while True:
        page = mem.list_keys(namespace=namespace, limit=200, cursor=cursor)
        keys.extend(page.keys)
        cursor = page.cursor
        if cursor is None:
            return keys


def _holders(cluster_name: str, ring: Ring) -> dict[tuple[str, str], list[str]]:
    """(namespace, key) -> the shards holding a copy, read from every shard of `ring`."""
    import ray

    out: dict[tuple[str, str], list[str]] = {}
    for sid in ring.shard_ids:
        records, cursor = ray.get(_shard(cluster_name, sid).export.remote(None, 100_000))
        assert cursor is None
        for r in records:
            out.setdefault((r.namespace, r.key), []).append(sid)
    return out


@pytest.mark.parametrize(("point", "forward"), [
    ("scale.after_freeze", False),      # nothing switched yet: roll back
    ("scale.after_set_ring", True),     # shards switched, pointer not: roll forward
    ("scale.after_switch", True),       # pointer moved, spec and garbage not yet
])
def test_manager_crash_during_scale_converges(ray_session, redis_server, point, forward):
    import ray

    name = _name("rs")
    cluster = mc.start_cluster(_spec(), name=name, redis_url=redis_server.url)
    writer = None
    try:
        mem = cluster.connect()
        base = [f"k{i:04d}" for i in range(300)]
        mem.store_many([(k, i) for i, k in enumerate(base)], namespace="base")
        before = cluster.status()
        old_version = before["sources"]["cache"]["ring"]["version"]
        writer = Writer(name).start()
        writer.wait_progress(20)

        ray.get(cluster.manager.inject_fault.remote(point))
        with pytest.raises(UnknownOutcome):   # the manager process exits mid-scale
            cluster.scale("cache", 4)

        status = _recovered(cluster, before["epoch"])
        src = status["sources"]["cache"]
        assert src["shards"] == (4 if forward else 3)
        assert src["ring"]["version"] == (old_version + 1 if forward else old_version)
        writer.wait_progress(50)                   # clients make progress again
        writer.stop()
        print(f"writer: {len(writer.acked)} acked, {writer.errors} failed, "
              f"foreign errors {writer.foreign}")
        assert writer.foreign == []                # only memcluster errors reach the caller

        fresh = mc.connect(name)
        found = fresh.retrieve_many(base, namespace="base")
        assert {k: r.value for k, r in found.items()} == {k: i for i, k in enumerate(base)}
        got = fresh.retrieve_many(list(writer.acked), namespace="w")
        assert {k: r.value for k, r in got.items()} == writer.acked   # no acked write lost
        listed = _all_keys(fresh, "w")
        assert len(listed) == len(set(listed))                         # every key once
        assert set(writer.acked) <= set(listed) <= writer.attempted
        assert fresh.count(namespace="base") == 300

        # Converged layout: only the ring's shards hold data, each only keys it owns, and
        # every base key has its N=2 copies (the garbage of the interrupted move is gone).
        ring = Ring.from_dict(src["ring"])
        holders = _holders(name, ring)
        for (ns, key), sids in holders.items():
            assert set(sids) <= set(ring.preference(routing_key(key, ns), 2)), (key, sids)
        assert all(len(holders[("base", k)]) == 2 for k in base)
        if not forward:                       # the abandoned ring's new shard was stopped
            with pytest.raises(ValueError):
                _shard(name, "cache/3")
        # A later scale still works (it must not reuse an abandoned staged version).
        out = cluster.scale("cache", 5)
        assert out["shards"] == 5 and out["ring_version"] > src["ring"]["version"]
        assert fresh.count(namespace="base") == 300
        fresh.close()
    finally:
        if writer is not None:
            writer.stop()
        cluster.stop()


def test_root_supervisor_giving_up_restarts_the_manager_which_recovers(
        ray_session, redis_server, tmp_path):
    import ray

    from memcluster.cluster.control.manager import manager_actor_class
    from memcluster.cluster.launcher import ClusterHandle

    name = _name("rg")
    spec = _spec(shards=2, supervision={"intensity": 0, "period": 60})
    spec["sources"].append({"name": "durable", "backend": "sqlite", "shards": 1,
                            "replicas": 1, "opts": {"path": str(tmp_path / "d.db")}})
    actor = manager_actor_class().options(
        name=names.manager_name(name), namespace=names.ray_namespace(name),
        lifetime="detached").remote(name, redis_server.url, spec, exit_on_lost_lease=True,
                                    root_supervision={"intensity": 0, "period": 60})
    cluster = ClusterHandle(name, actor, None)
    try:
        first = ray.get(actor.ready.remote(60), timeout=70)
        mem = cluster.connect()
        mem.store_many([(f"d{i}", i) for i in range(50)], source="durable")
        old_pid = ray.get(_shard(name, "cache/0").ping.remote())["pid"]

        # One crash: the source's supervisor (intensity 0) gives up, escalates, the root
        # (intensity 0) gives up too, and the manager process exits.
        ray.kill(_shard(name, "cache/0"), no_restart=True)
        status = _recovered(cluster, first["epoch"])
        assert status["failed"] == {}
        assert all(s["state"] == "running" for s in status["supervision"].values())
        assert ray.get(_shard(name, "cache/0").ping.remote())["pid"] != old_pid

        # The cluster serves again: the same client, new writes, and the durable source
        # kept what it had (its store outlives the shards the root stopped).
        mem.store("after", {"ok": True})
        assert mem.retrieve("after").value == {"ok": True}
        assert mem.count(source="durable") == 50
        assert mem.retrieve("d7", source="durable").value == 7
        mem.close()
    finally:
        cluster.stop()


def test_shard_whose_heartbeat_lapses_is_replaced(ray_session, redis_server):
    """A shard cut off from Redis (its heartbeats stop) while Ray still reaches it (it
    answers every ping): the manager treats the lapsed membership as a death."""
    import ray

    from memcluster.cluster.coord.coordinator import Coordinator

    name = _name("hb")
    cluster = mc.start_cluster(_spec(), name=name, redis_url=redis_server.url)
    coord = Coordinator(redis_server.url, name)
    members = coord.membership
    try:
        mem = cluster.connect()
        keys = [f"h{i}" for i in range(200)]
        mem.store_many([(k, k) for k in keys])
        status = cluster.status()
        old = status["shards"]["cache/1"]["incarnation"]
        wait_until(lambda: members.members().get("cache/1", {}).get("incarnation") == old,
                   timeout=10, message="cache/1 heartbeating")
        restarts = status["restarts"]

        victim = _shard(name, "cache/1")
        ray.get(victim.__ray_call__.remote(lambda shard: shard._beating.clear()))
        assert ray.get(victim.ping.remote())["incarnation"] == old   # still answers

        def replaced():  # type: ignore[no-untyped-def]
            st = cluster.status()
            shard = st["shards"]["cache/1"]
            return (shard.get("incarnation") not in (None, old)
                    and shard.get("state") == "serving" and st)

        st = wait_until(replaced, timeout=30, interval=0.1, message="cache/1 replaced")
        assert st["restarts"] == restarts + 1
        assert st["shards"]["cache/1"]["recovery"]["copied"] > 0     # hydrated back
        new = st["shards"]["cache/1"]["incarnation"]
        wait_until(lambda: members.members().get("cache/1", {}).get("incarnation") == new,
                   timeout=10, message="the replacement heartbeating")
        with pytest.raises(ray.exceptions.RayActorError):           # the old one is gone
            ray.get(victim.ping.remote(), timeout=10)
        found = mem.retrieve_many(keys)
        assert {k: r.value for k, r in found.items()} == {k: k for k in keys}
        mem.close()
    finally:
        coord.close()
        cluster.stop()
