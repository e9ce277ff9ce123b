"""Rebalancing: switching a source to a new ring, and finishing a switch a crash interrupted.

Core types: `Rebalancer` (`scale`, `spread`, `reconcile`, `collect_garbage`),
`RebalanceHost` (the narrow view of the manager it needs) and `InjectedCrash` with
`FAULT_POINTS` (the steps where the tests crash the manager). Shards are started,
supervised, moved and killed by the `ShardTree`; records move through `handoff.py`; the
roll-forward-or-back decision is the pure `ring_switch.resolve_ring_switch`.

`switch(layout, target)` moves exactly the keys whose preference lists change between
the current ring and `target` (more or fewer shards: `scale`; more failure domains:
`spread`): stage the target ring in Redis, start the new shards, copy the moving records
while traffic flows, freeze writes on the old owners (callers retry transparently: the
shard answers `ShardUnavailable`), copy what changed meanwhile and drop what was deleted
meanwhile, have every new owner confirm it holds every moved record (`handoff.verify`),
switch every shard and the Redis pointer to the new ring (callers on the old one get
`StaleRing` and refresh), then delete what old owners no longer hold and stop removed
shards. Every copy is complete or the switch fails (the rules in `handoff.py`); nothing
leaves an old owner before the switch. A failure before any old shard switched rolls back
(the freeze is lifted, the new shards are killed by name, so a second attempt starts
clean); after one did, the switch is finished (why in `ring_switch.py`). Every step is
idempotent, so a scale that failed can simply be asked again.

The rejected alternative, copying everything under a long write freeze, stops writes for
the whole copy instead of only for the catch-up.

A manager that dies mid-way leaves the staged version in Redis; its successor calls
`reconcile` for every source before it attaches any shard (attaching lifts the freeze):
it rolls forward if a shard of the old ring already switched and back otherwise, fixes
the spec, stops orphaned shards, and reports whether `collect_garbage` must run once the
shards are attached. Callers hold the manager's lock.
"""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any, Protocol

from memcluster.cluster import names
from memcluster.cluster.control.assignment import misplaced, target_domain_count
from memcluster.cluster.control.handoff import hand_off, verify
from memcluster.cluster.control.layout import Layout, layout_for
from memcluster.cluster.control.ring_switch import resolve_ring_switch
from memcluster.cluster.control.runtime import ActorRuntime, Scheduler
from memcluster.cluster.control.shard_tree import ShardTree
from memcluster.cluster.data.placement import Placement
from memcluster.cluster.data.ring import Ring, spread_domains
from memcluster.cluster.retry import Retry
from memcluster.config import PlacementPolicy
from memcluster.errors import (
    ConfigError,
    FencedOut,
    MemclusterError,
    ShardUnavailable,
    SourceUnavailable,
    Timeout,
    VersionConflict,
)
from memcluster.logs import event, get_logger
from memcluster.model import Record

log = get_logger("cluster.manager")

# The steps of `switch` where a test can crash the manager (`ClusterManager.inject_fault`).
FAULT_POINTS = frozenset({"scale.after_freeze", "scale.after_set_ring",
                          "scale.after_switch"})


class InjectedCrash(BaseException):
    """An in-process manager 'crashing' at a fault point (a BaseException: nothing
    catches it by accident, like the process exit it stands in for)."""


class RebalanceHost(Protocol):
    """What a rebalance reads and writes on its manager."""

    epoch: int | None
    layouts: dict[str, Layout]
    raw_spec: dict[str, Any]
    coord: Any    # the `Coordinator`, connected once the manager campaigns
    health: dict[str, Any]
    runtime: ActorRuntime
    sched: Scheduler
    policy: PlacementPolicy
    garbage: set[str]     # sources whose garbage collection is still to finish


class Rebalancer:
    """Switch a source's ring and recover an interrupted switch (see the module docstring)."""

    def __init__(self, host: RebalanceHost, tree: ShardTree,
                 crash_point: Callable[[str], None]) -> None:
        self.host = host
        self.tree = tree
        self._crash_point = crash_point     # the manager's fault-injection hook (tests)

    # ---- retries -------------------------------------------------------------------------

    def _coordination(self) -> Retry:
        """Coordination writes (ring switch, spec) wait this long for Redis to come back."""
        sched = self.host.sched
        return Retry(deadline=float(self.host.health["copy_timeout"]) * 2, delay=0.1,
                     max_delay=1.0, retry_on=(SourceUnavailable,), clock=sched.now,
                     sleep=sched.sleep, uniform=sched.uniform)

    def _calls(self) -> Retry:
        """Control calls and copy pages: timeouts and busy answers retried."""
        sched = self.host.sched
        return Retry(deadline=float(self.host.health["copy_timeout"]), delay=0.05,
                     max_delay=1.0, retry_on=(Timeout, ShardUnavailable), clock=sched.now,
                     sleep=sched.sleep, uniform=sched.uniform)

    # ---- scale and spread ----------------------------------------------------------------

    def scale(self, layout: Layout, shards: int, epoch: int) -> dict[str, Any] | None:
        """Give `layout`'s source `shards` shards, moving only the keys whose owners change.
        -> what moved, or None when the source already has exactly those shards."""
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
        return self.switch(layout, new_ids, self._domain_target(shards), epoch)

    def spread(self, layout: Layout, epoch: int) -> dict[str, Any] | None:
        """Give the source as many logical failure domains as there are eligible physical
        ones (at most one per shard): a new ring when that count grew. None: unchanged."""
        ring = layout.placement.ring
        want = self._domain_target(len(ring))
        if want <= ring.domain_count:
            return None
        return self.switch(layout, list(ring.shard_ids), want, epoch)

    def _domain_target(self, shards: int) -> int:
        return target_domain_count(self.host.runtime.nodes(), self.host.policy, shards)

    def spread_needed(self) -> bool:
        """True if some source has fewer logical domains than eligible physical ones."""
        return any(self._domain_target(len(lay.placement.ring)) > lay.placement.ring.domain_count
                   for lay in self.host.layouts.values())

    def rebalance(self, epoch: int, available: Callable[[str], Layout]) -> dict[str, Any]:
        """Every source: more logical domains when more physical ones exist (`spread`,
        keys move), then each shard running in a failure domain shared with another
        logical domain moves to a better node (`_move_misplaced`). -> per source, what
        changed. `available(name)` is the manager's check that the source is not failed."""
        out: dict[str, Any] = {}
        for name in list(self.host.layouts):
            ring = self.spread(available(name), epoch)
            out[name] = {"ring": ring, "moved_shards": self._move_misplaced(name)}
        return out

    def _move_misplaced(self, source: str) -> list[str]:
        """Restart on a better node each shard whose logical domain shares a failure
        domain with another (`assignment.misplaced`), if it can hydrate from replicas (or
        its store is durable); one at a time, each waited for until it serves."""
        host, tree = self.host, self.tree
        layout = host.layouts[source]
        if layout.placement.replicas < 2 and not layout.durable:
            return []            # moving would lose its only copy
        domains = layout.placement.ring.domains
        placed = {s: n for s, n in tree.nodes.items() if s in domains}
        load = Counter(n for s, n in tree.nodes.items() if s in tree.handles)
        moved = []
        for sid, node in misplaced(domains, placed, host.runtime.nodes(), host.policy,
                                   load=load).items():
            tree.move_shard(sid, node)
            self._await_serving(sid)
            moved.append(sid)
        return moved

    def _await_serving(self, sid: str) -> None:
        """Wait until `sid`'s hydration finished (a move goes one shard at a time)."""
        sched = self.host.sched
        deadline = sched.now() + float(self.host.health["copy_timeout"]) * 2
        while sched.now() < deadline:
            hyd = self.tree.hydrations.get(sid)
            if hyd is None or hyd.state == "serving":
                return
            sched.sleep(0.05)
        raise Timeout(f"shard {sid} did not finish hydrating after its move")

    def switch(self, layout: Layout, new_ids: list[str], domains: int,
               epoch: int) -> dict[str, Any]:
        """Move `layout`'s source onto a ring of `new_ids` dealt over `domains` logical
        domains (see the module docstring). -> what moved."""
        host, tree = self.host, self.tree
        source = layout.spec.name
        old = layout.placement
        coord = host.coord
        # A version staged by an abandoned switch stays stored (versions are immutable),
        # so the target takes the next number after every stored one. While Redis is down
        # this waits (nothing has moved yet) and resumes after.
        coordination = self._coordination()
        top = coordination.run(lambda: max(coord.ring_store.versions(source), default=0))
        target = Ring(max(top, old.ring.version) + 1, new_ids, vnodes=old.ring.vnodes,
                      domains=spread_domains(new_ids, domains))
        new = replace(old, ring=target)
        coordination.run(lambda: coord.ring_store.put_version(
            source, target.version, target.to_dict(), epoch=epoch))
        added = [s for s in new_ids if s not in old.ring.shard_ids]
        removed = [s for s in old.ring.shard_ids if s not in new_ids]
        olds = list(old.ring.shard_ids)
        calls = self._calls()

        def moving(r: Record) -> list[str]:
            before = old.preference(r.key, r.namespace)
            return [s for s in new.preference(r.key, r.namespace) if s not in before]

        switching = False
        try:
            for sid in added:                                 # supervised from the start
                tree.add_shard(sid, layout, new)
            first = hand_off(tree.handles, olds, moving, epoch, calls)  # 1. copy, live
            self._all(olds, lambda h: h.freeze(epoch))        # 2. writes wait (retried)
            self._crash_point("scale.after_freeze")
            second = hand_off(tree.handles, olds, moving, epoch, calls)  # 3. catch up
            for sid, keys in first.items():                   #    and drop what was deleted
                gone = sorted(set(keys) - set(second.get(sid, {})))
                if gone:
                    calls.run(lambda sid=sid, gone=gone: tree.handles[sid].drop_keys(
                        epoch, gone).result())
            verify(tree.handles, second, calls)               # 4. every copy confirmed
            switching = True                                  # 5. the point of no return
            self._all([*olds, *added], lambda h: h.set_placement(epoch, new))
        except InjectedCrash:
            raise
        except BaseException as exc:
            # Once the switch was sent to one shard it may land there whatever we decide,
            # and every moved record is confirmed on its new owners: finish the switch.
            # Before that, nothing was told the target ring: roll back.
            if isinstance(exc, FencedOut) or not switching:
                self._abort(source, olds, added, epoch, old)
                if isinstance(exc, MemclusterError):
                    raise
                raise SourceUnavailable(f"scaling {source!r} failed and was rolled back: "
                                        f"{type(exc).__name__}: {exc}") from exc
            event(log, "ring.scale_forced_forward", level=logging.WARNING,
                  source=source, error=type(exc).__name__)
            for sid in [*olds, *added]:
                with contextlib.suppress(MemclusterError, KeyError):
                    tree.handles[sid].set_placement(epoch, new).result()
        self._crash_point("scale.after_set_ring")
        host.layouts[source] = replace(layout, placement=new)
        tree.switched(added)
        self._switch_ring(source, target.version, old.ring.version, epoch)
        self._crash_point("scale.after_switch")
        coordination.run(lambda: self._save_shards(source, len(new_ids), epoch))
        moved = sum(len(v) for v in second.values())
        for sid in removed:                                   # 6. garbage
            tree.forget(sid)
        dropped = self.collect_garbage(source)
        event(log, "ring.switched", source=source, version=target.version,
              shards=len(new_ids), domains=target.domain_count, moved=moved, dropped=dropped)
        return {"source": source, "ring_version": target.version, "shards": len(new_ids),
                "domains": target.domain_count, "moved": moved, "dropped": dropped or 0}

    def _abort(self, source: str, olds: list[str], added: list[str], epoch: int,
               old: Placement) -> None:
        """A failed switch before any old shard adopted it: lift the freeze, kill the new
        shards by name (so their names are free for the next attempt), and drop the copies
        old shards received as owners-to-be (garbage under the old ring)."""
        for sid in olds:
            handle = self.tree.handles.get(sid)
            if handle is not None:
                # dead or wedged: its supervisor replaces it unfrozen
                with contextlib.suppress(MemclusterError):
                    handle.set_placement(epoch, old).result()
        for sid in added:
            self.tree.forget(sid)
        self.collect_garbage(source)
        event(log, "ring.scale_aborted", level=logging.WARNING, source=source)

    # ---- recovering an interrupted switch ----------------------------------------------

    def reconcile(self, source: str) -> bool:
        """Make the source's ring converge after a restart; True if garbage is left over.

        `switch` stages its target version in Redis before any shard switches, so a stored
        version newer than the pointer means a switch was interrupted.
        `resolve_ring_switch` decides (ring_switch.py says why forward whenever a shard of
        the old ring adopted the target): forward moves the pointer now, so attaching sets
        every shard to the target and lifts the freeze; back leaves the pointer and the
        old shards, once attached, unfreeze on it. Either way the shards that only an
        abandoned or superseded ring names are killed, and a spec whose shard count lags
        the ring (a crash after the pointer moved) is fixed.
        """
        host = self.host
        store = host.coord.ring_store
        layout = host.layouts[source]
        ring = layout.placement.ring
        stored = store.versions(source)
        staged = [v for v in stored if v > ring.version]
        decision = resolve_ring_switch(ring.version, staged,
                                       self._ring_versions(ring.shard_ids)
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
                    orphans += self.host.runtime.kill(sid)  # a shard only that ring names
        lagging = layout.spec.shards != len(ring)    # the pointer moved, the spec did not
        if lagging:
            self._save_shards(source, len(ring), self._epoch())
        return decision.action == "forward" or lagging or orphans > 0 or bool(staged)

    def _ring_versions(self, sids: Iterable[str]) -> dict[str, int]:
        """The ring version each reachable shard among `sids` is on, attached or not
        (found by name; a ping: no mailbox). Unreachable shards are left out."""
        timeout = float(self.host.health["ping_timeout"]) * 4
        pendings = [(sid, handle.ping(timeout=timeout)) for sid in sids
                    if (handle := self.host.runtime.find(sid)) is not None]
        out: dict[str, int] = {}
        for sid, pending in pendings:
            with contextlib.suppress(MemclusterError):
                out[sid] = int(pending.result()["ring_version"])
        return out

    def collect_garbage(self, source: str) -> int | None:
        """Each shard of the source drops what it no longer holds (after a switch).
        -> records dropped, or None if a shard did not answer: the source is then put in
        the host's `garbage`, and the manager tries again each tick until every shard
        answered (a copy left behind could resurface a deleted key at a later switch)."""
        placement = self.host.layouts[source].placement
        epoch = self._epoch()
        calls = self._calls()
        pendings = [(sid, h.drop_unowned(epoch, placement))
                    for sid, h in self.tree.handles.items() if sid in placement.ring.shard_ids]
        dropped, complete = 0, len(pendings) == len(placement.ring.shard_ids)
        for sid, pending in pendings:
            try:
                dropped += int(pending.result())
            except (Timeout, ShardUnavailable):
                try:
                    dropped += int(calls.run(lambda sid=sid: self.tree.handles[sid]
                                             .drop_unowned(epoch, placement).result()))
                except (MemclusterError, KeyError):
                    complete = False
            except MemclusterError:
                complete = False
        if complete:
            self.host.garbage.discard(source)
        else:
            self.host.garbage.add(source)
        event(log, "ring.garbage_collected", source=source, dropped=dropped,
              complete=complete)
        return dropped if complete else None

    def repair_coordination(self, epoch: int) -> None:
        """Write back what Redis lost (a restart that dropped its last writes): a ring
        pointer behind the manager's layout, or a spec whose shard counts differ. Only
        forward: the manager's state is what its shards run. Redis unreachable: next time."""
        host = self.host
        try:
            for name, lay in host.layouts.items():
                ring = lay.placement.ring
                current = host.coord.ring_store.current_version(name) or 0
                if current < ring.version:
                    event(log, "coordination.repaired", level=logging.WARNING, source=name,
                          pointer=current, version=ring.version)
                    host.coord.ring_store.put_version(name, ring.version, ring.to_dict(),
                                                      epoch=epoch)
                    host.coord.ring_store.switch(name, ring.version, expected=current,
                                                 epoch=epoch)
            stored = host.coord.load_spec() or {}
            shards = {s["name"]: s.get("shards") for s in stored.get("sources", [])}
            if any(shards.get(n) != lay.spec.shards for n, lay in host.layouts.items()):
                event(log, "coordination.repaired", level=logging.WARNING, what="spec")
                host.coord.save_spec(host.raw_spec, epoch)
        except MemclusterError:
            return

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

        self._coordination().run(switch)

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

    def _all(self, sids: Iterable[str], call: Callable[[Any], Any]) -> list[Any]:
        """`call(handle)` on every shard of `sids`, sent at once, each retried on timeouts;
        their results in order. Every answer is awaited before an error is raised, so no
        call of this step can land after the caller moved on (e.g. a freeze after the
        rollback that lifted it)."""
        handles = self.tree.handles
        pendings = [(s, call(handles[s])) for s in sids]
        retry = self._calls()
        out: list[Any] = []
        failure: BaseException | None = None
        for sid, pending in pendings:
            try:
                try:
                    out.append(pending.result())
                except (Timeout, ShardUnavailable):
                    out.append(retry.run(lambda sid=sid: call(handles[sid]).result()))
            except MemclusterError as exc:
                failure = failure or exc
        if failure is not None:
            raise failure
        return out


__all__ = ["FAULT_POINTS", "InjectedCrash", "RebalanceHost", "Rebalancer"]
