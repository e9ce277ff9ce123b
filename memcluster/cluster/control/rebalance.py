"""Rebalancing: changing a source's shard count, and finishing a change a crash interrupted.

Core types: `Rebalancer` (`scale`, `reconcile`, `collect_garbage`), `RebalanceHost`
(the narrow view of the manager it needs: the fencing epoch, the layouts, the raw spec and
the coordinator) and `InjectedCrash` with `FAULT_POINTS` (the steps of `scale` where the
tests crash the manager, through the hook the manager passes in). Shards are started,
supervised and killed by the `ShardTree` it is given; records move through
`memcluster.cluster.control.handoff`; the roll-forward-or-back decision is the pure
`recovery.resolve_ring_switch`.

`scale(layout, shards, epoch)` moves exactly the keys whose owners change: stage the
target ring in Redis, create new shards, copy the moving records while traffic flows,
freeze writes on the old owners (callers retry transparently: the shard answers
`ShardUnavailable`), copy what changed meanwhile and drop what was deleted meanwhile,
switch every shard and the Redis pointer to the new ring (callers on the old one get
`StaleRing` and refresh), then delete what old owners no longer own and stop removed
shards. The rejected alternative, copying everything under a long write freeze, stops
writes for the whole copy instead of only for the catch-up. A failure before any old
shard switched aborts (the freeze is lifted, the new shards are dropped); after one did,
the switch is finished (why in `recovery.py`).

A manager that dies mid-way leaves the staged version in Redis; its successor calls
`reconcile` for every source before it attaches any shard (attaching lifts the freeze):
it rolls forward if a shard of the old ring already switched and back otherwise, fixes
the spec, stops orphaned shards, and reports whether `collect_garbage` must run once the
shards are attached.

Design decision: a collaborator holding a reference to its host, not a mixin of the
manager. The rejected alternative, `class ClusterManager(RebalanceMixin, ...)`, keeps one
object with every field of every concern, so nothing states which of the manager's state
a rebalance reads or writes; `RebalanceHost` does. Callers hold the manager's lock.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any, Protocol

from memcluster.cluster import names
from memcluster.cluster.control.handoff import hand_off
from memcluster.cluster.control.layout import Layout, layout_for
from memcluster.cluster.control.ring_switch import resolve_ring_switch
from memcluster.cluster.control.shard_tree import ShardTree
from memcluster.cluster.data.ring import Ring, routing_key
from memcluster.cluster.retry import Retry
from memcluster.errors import (
    ConfigError,
    FencedOut,
    MemclusterError,
    SourceUnavailable,
    VersionConflict,
)
from memcluster.logs import event, get_logger
from memcluster.model import Record

log = get_logger("cluster.manager")

# The steps of `scale` where a test can crash the manager (`ClusterManager.inject_fault`).
FAULT_POINTS = frozenset({"scale.after_freeze", "scale.after_set_ring",
                          "scale.after_switch"})
# Coordination writes (ring switch, spec) wait this long for Redis to come back.
COORDINATION_RETRY = Retry(deadline=120.0, delay=0.1, max_delay=1.0,
                           retry_on=(SourceUnavailable,))


class InjectedCrash(BaseException):
    """An in-process manager 'crashing' at a fault point (a BaseException: nothing
    catches it by accident, like the process exit it stands in for)."""


class RebalanceHost(Protocol):
    """What a rebalance reads and writes on its manager."""

    epoch: int | None
    layouts: dict[str, Layout]
    raw_spec: dict[str, Any]
    coord: Any    # the `Coordinator`, connected once the manager campaigns


class Rebalancer:
    """Scale a source and recover an interrupted scale (see the module docstring)."""

    def __init__(self, host: RebalanceHost, tree: ShardTree,
                 crash_point: Callable[[str], None]) -> None:
        self.host = host
        self.tree = tree
        self._crash_point = crash_point     # the manager's fault-injection hook (tests)

    # ---- scale -------------------------------------------------------------------------

    def scale(self, layout: Layout, shards: int, epoch: int) -> dict[str, Any] | None:
        """Give `layout`'s source `shards` shards, moving only the keys whose owners change.
        -> what moved, or None when the source already has exactly those shards."""
        host, tree = self.host, self.tree
        source = layout.spec.name
        old = layout.placement
        if isinstance(shards, bool) or not isinstance(shards, int) or shards < 1:
            raise ConfigError(f"shards: must be an int >= 1, got {shards!r}")
        if shards < old.replicas:
            raise ConfigError(f"shards: {source!r} has {old.replicas} replicas, "
                              f"so it needs at least {old.replicas} shards")
        new_ids = [names.shard_id(source, i) for i in range(shards)]
        if tuple(new_ids) == old.ring.shard_ids:
            return None
        coord = host.coord
        # A version staged by an abandoned switch stays stored (versions are immutable),
        # so the target takes the next number after every stored one.
        # While Redis is down this waits (nothing has moved yet) and resumes after.
        top = COORDINATION_RETRY.run(lambda: max(coord.ring_store.versions(source),
                                                 default=0))
        target = Ring(max(top, old.ring.version) + 1, new_ids, vnodes=old.ring.vnodes)
        new = replace(old, ring=target)
        COORDINATION_RETRY.run(lambda: coord.ring_store.put_version(
            source, target.version, target.to_dict(), epoch=epoch))
        added = [s for s in new_ids if s not in old.ring.shard_ids]
        removed = [s for s in old.ring.shard_ids if s not in new_ids]
        olds = list(old.ring.shard_ids)

        def moving(r: Record) -> list[str]:
            rk = routing_key(r.key, r.namespace)
            before = old.ring.preference(rk, old.replicas)
            return [s for s in target.preference(rk, new.replicas) if s not in before]

        try:
            for sid in added:                                 # supervised from the start
                tree.add_shard(sid, layout, target.version)
            first = hand_off(tree.handles, olds, moving, epoch)   # 1. copy, traffic flows
            self._all(olds, "freeze", epoch)                  # 2. writes wait (retried)
            self._crash_point("scale.after_freeze")
            second = hand_off(tree.handles, olds, moving, epoch)  # 3. catch up
            for sid, keys in first.items():                   #    and drop what was deleted
                gone = keys - second.get(sid, set())
                if gone:
                    tree.handles[sid].control("drop_keys", epoch, sorted(gone)).result()
            self._all([*olds, *added], "set_ring", epoch, target.version)   # 4. switch
        except InjectedCrash:
            raise
        except BaseException as exc:
            # One old shard on the target is the point of no return (see recovery.py):
            # finish the switch; the shards that failed it are replaced by their
            # supervisor on the target ring.
            if isinstance(exc, FencedOut) or not any(
                    v >= target.version for v in tree.ring_versions(olds).values()):
                self._abort(source, olds, added, epoch, old.ring.version)
                raise
            event(log, "ring.scale_forced_forward", level=logging.WARNING,
                  source=source, error=type(exc).__name__)
            for sid in [*olds, *added]:
                with contextlib.suppress(MemclusterError, KeyError):
                    tree.handles[sid].control("set_ring", epoch, target.version).result()
        self._crash_point("scale.after_set_ring")
        host.layouts[source] = replace(layout, placement=new)
        self._switch_ring(source, target.version, old.ring.version, epoch)
        self._crash_point("scale.after_switch")
        COORDINATION_RETRY.run(lambda: self._save_shards(source, shards, epoch))
        moved = sum(len(v) for v in second.values())
        for sid in removed:                                   # 5. garbage
            tree.forget(sid)
        dropped = sum(self._all([s for s in olds if s not in removed], "drop_unowned",
                                epoch, target, new.replicas))
        event(log, "ring.switched", source=source, version=target.version,
              shards=shards, moved=moved, dropped=dropped)
        return {"source": source, "ring_version": target.version, "shards": shards,
                "moved": moved, "dropped": dropped}

    def _abort(self, source: str, olds: list[str], added: list[str], epoch: int,
               version: int) -> None:
        """A failed scale before the switch: lift the freeze, drop the new shards."""
        for sid in olds:
            handle = self.tree.handles.get(sid)
            if handle is not None:
                # dead or wedged: its supervisor replaces it unfrozen
                with contextlib.suppress(MemclusterError):
                    handle.control("set_ring", epoch, version).result()
        for sid in added:
            self.tree.forget(sid)
        event(log, "ring.scale_aborted", level=logging.WARNING, source=source)

    # ---- recovering an interrupted scale -----------------------------------------------

    def reconcile(self, source: str) -> bool:
        """Make the source's ring converge after a restart; True if garbage is left over.

        `scale` stages its target version in Redis before any shard switches, so a stored
        version newer than the pointer means a rebalance was interrupted.
        `resolve_ring_switch` decides (the memcluster.cluster.control.hydration docstring says why
        forward whenever a shard of the old ring adopted the target): forward moves the
        pointer now, so attaching sets every shard to the target and lifts the freeze;
        back leaves the pointer and the old shards, once attached, unfreeze on it. Either
        way the shards that only an abandoned or superseded ring names are killed, and a
        spec whose shard count lags the ring (a crash after the pointer moved) is fixed.
        """
        host = self.host
        store = host.coord.ring_store
        layout = host.layouts[source]
        ring = layout.placement.ring
        stored = store.versions(source)
        staged = [v for v in stored if v > ring.version]
        decision = resolve_ring_switch(ring.version, staged,
                                       self.tree.ring_versions(ring.shard_ids)
                                       if staged else {})
        if decision.action == "forward":
            found = store.load(source, decision.version)
            assert found is not None  # listed by versions() and never deleted while newer
            target = Ring.from_dict(found[1])
            self._switch_ring(source, target.version, ring.version, self._epoch())
            host.layouts[source] = layout = layout_for(layout.spec, target)
            ring = target
        if decision.action != "keep":
            event(log, "ring.recovered", level=logging.WARNING, source=source,
                  action=decision.action, version=ring.version,
                  abandoned=list(decision.abandoned))
        orphans = 0
        for version in stored:
            if version == ring.version:
                continue
            found = store.load(source, version)
            if found is None:
                continue
            for sid in Ring.from_dict(found[1]).shard_ids:
                if sid not in ring.shard_ids:
                    orphans += self.tree.kill_stray(sid)
        lagging = layout.spec.shards != len(ring)    # the pointer moved, the spec did not
        if lagging:
            self._save_shards(source, len(ring), self._epoch())
        return decision.action == "forward" or lagging or orphans > 0 or bool(staged)

    def collect_garbage(self, source: str) -> None:
        """After a recovered rebalance: each shard drops what it no longer owns."""
        placement = self.host.layouts[source].placement
        epoch = self._epoch()
        pendings = [(sid, h.control("drop_unowned", epoch, placement.ring, placement.replicas))
                    for sid, h in self.tree.handles.items() if sid in placement.ring.shard_ids]
        dropped = 0
        for _sid, pending in pendings:
            with contextlib.suppress(MemclusterError):  # dead: its replacement starts clean
                dropped += int(pending.result())
        event(log, "ring.garbage_collected", source=source, dropped=dropped)

    # ---- shared steps ------------------------------------------------------------------

    def _epoch(self) -> int:
        """The epoch for control calls during bootstrap (before the manager is `leading`)."""
        assert self.host.epoch is not None
        return self.host.epoch

    def _switch_ring(self, source: str, version: int, expected: int, epoch: int) -> None:
        """Move the Redis pointer, waiting out a Redis outage (a reply lost to the outage
        after the switch applied shows up as the pointer already at `version`)."""
        def switch() -> None:
            try:
                self.host.coord.ring_store.switch(source, version, expected=expected,
                                                  epoch=epoch)
            except VersionConflict as exc:
                if exc.actual != version:
                    raise

        COORDINATION_RETRY.run(switch)

    def _save_shards(self, source: str, shards: int, epoch: int) -> None:
        """Store the spec with `source`'s new shard count, in Redis and in the manager."""
        host = self.host
        raw = dict(host.raw_spec)
        raw["sources"] = [{**s, "shards": shards} if s["name"] == source else s
                          for s in raw["sources"]]
        host.coord.save_spec(raw, epoch)
        host.raw_spec = raw
        layout = host.layouts[source]
        host.layouts[source] = replace(layout, spec=replace(layout.spec, shards=shards))

    def _all(self, sids: Iterable[str], method: str, *args: Any) -> list[Any]:
        """`method` on every shard of `sids`, sent at once; their results in order."""
        pendings = [self.tree.handles[s].control(method, *args) for s in sids]
        return [p.result() for p in pendings]


__all__ = ["COORDINATION_RETRY", "FAULT_POINTS", "InjectedCrash", "RebalanceHost",
           "Rebalancer"]
