"""The supervision tree over a cluster's shards: who runs where, who is dead, who replaces it.

Core types: `ShardTree` (builds root -> one `Supervisor` per source -> its shards, starts a
shard by attaching to a live actor or spawning one on a chosen node, runs its hydration,
health-checks every supervised shard and reports the dead to their supervisor) and
`TreeHost` (the narrow view of the manager it needs). The generic OTP engine is
`supervisor.py`; node choice is `assignment.py`; actors and time come from the host's
`ActorRuntime` and `Scheduler` (`runtime.py`), so the simulator runs this unchanged.

Rules:
  * Dead means `ShardDied`, `misses` consecutive pings unanswered within `ping_timeout` (a
    frozen process), or a lapsed Redis heartbeat of the current incarnation; the tree only
    reports the exit and the source's supervisor decides (restart, or give up).
  * A child's first start attaches to a live actor under the shard's name (a restarted
    manager must not move data); every later start replaces it: kill whatever runs under
    the name, wait until Ray has freed the name (the name is the fence: a new incarnation
    exists only once the old one is dead), spawn on the node `choose_node` picks, open it
    within `open_timeout`, and hydrate it when its source keeps N > 1 copies.
  * A spawn that fails half-way (the actor exists but did not open in time, or Ray refused
    it) is undone: the actor is killed by name and the name waited free, then the typed
    error propagates (the supervisor counts it as a crash and tries again). So a later
    spawn never meets `ActorAlreadyExistsError`.
  * Hydration copies, from every other shard of the ring, the records the new incarnation
    holds, each copy complete (cursor None) or retried; a source that dies is copied again
    from its replacement. Only then does the shard serve reads and primary writes.
  * Heartbeats are judged only after Redis has answered for a whole heartbeat TTL: while
    Redis is down every heartbeat lapses, which says nothing about the shards.

Thread-safety: starts, checks and crash reports run under the manager's re-entrant lock
(`scale` holds it too); hydrations run on their own threads and stop when the manager
stops or the shard's handle is replaced.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from memcluster.cluster import names
from memcluster.cluster.control.assignment import choose_node
from memcluster.cluster.control.handoff import SourceLost, copy_into
from memcluster.cluster.control.hydration import Hydration
from memcluster.cluster.control.layout import Layout
from memcluster.cluster.control.runtime import (
    ActorRuntime,
    Event,
    Scheduler,
    ShardActorHandle,
    ShardSpawn,
)
from memcluster.cluster.control.supervisor import (
    ROOT_SUPERVISION,
    CallbackTerminator,
    ChildSpec,
    SupervisionSpec,
    Supervisor,
    SupervisorEvent,
)
from memcluster.cluster.data.placement import Placement
from memcluster.cluster.retry import Retry
from memcluster.config import PlacementPolicy
from memcluster.errors import (
    FencedOut,
    MemclusterError,
    ShardDied,
    ShardUnavailable,
    SourceUnavailable,
    Timeout,
)
from memcluster.logs import event, get_logger

log = get_logger("cluster.manager")


class TreeHost(Protocol):
    """What the tree reads from its manager (late: health and epoch change at bootstrap)."""

    cluster: str
    health: dict[str, Any]
    epoch: int | None
    tick: float
    exit_on_lost_lease: bool
    layouts: dict[str, Layout]
    runtime: ActorRuntime
    sched: Scheduler
    policy: PlacementPolicy

    def membership(self) -> Any:
        """The coordinator's `Membership` (heartbeats), or None."""

    def crash(self, reason: str) -> None:
        """The manager cannot go on (its root supervisor gave up): exit, and be restarted."""

    garbage: set[str]     # sources whose garbage collection must run (again)

    def heartbeat_for(self, sid: str) -> Callable[[dict[str, Any]], None] | None:
        """The callable a new shard incarnation beats with (None: no heartbeats)."""


class ShardTree:
    """The shards of every source under supervision (see the module docstring)."""

    def __init__(self, host: TreeHost, *, lock: Any, stop: Event,
                 root_supervision: Mapping[str, Any] | None = None) -> None:
        self.host = host
        self._lock = lock
        self._stop = stop
        self.root_supervision = root_supervision
        self.root: Supervisor | None = None
        self.supervisors: dict[str, Supervisor] = {}
        self.failed: dict[str, str] = {}              # source -> why it is unavailable
        self.hydrations: dict[str, Hydration] = {}    # shard id -> its latest hydration
        self.handles: dict[str, ShardActorHandle] = {}
        self.nodes: dict[str, str] = {}               # shard id -> node id it runs on
        self.misses: dict[str, int] = {}
        self.incarnations: dict[str, str] = {}        # shard id -> its current incarnation
        self.restarts = 0
        self.restarts_by_source: dict[str, int] = {}
        self._attachable: set[str] = set()            # may be spawned without a restart
        self._replace: set[str] = set()               # reported dead: replace, not attach
        self._targets: dict[str, Placement] = {}      # added by a switch not finished yet
        self._hb_seen: dict[str, str] = {}            # shard id -> incarnation seen beating
        self._redis_ok_since: float | None = None

    # ---- building the tree -------------------------------------------------------------

    def build(self) -> Supervisor:
        """Root (one_for_one, 3 in 300 s) -> one supervisor per source -> its shards.
        Returns the root, not started: starting it attaches or spawns every shard."""
        sched = self.host.sched
        root_spec = SupervisionSpec.from_dict(self.root_supervision, path="root supervision",
                                              default=ROOT_SUPERVISION)
        self.root = Supervisor.with_spec([], root_spec, name="root",
                                         terminator=self._terminator(),
                                         on_event=self._on_supervisor_event,
                                         on_give_up=self._root_gave_up, clock=sched.now,
                                         lock=sched.lock(), start_failures="restart")
        for name, layout in self.host.layouts.items():
            self._attachable.update(layout.placement.ring.shard_ids)
            spec = SupervisionSpec.from_dict(layout.spec.supervision or None,
                                             path=f"sources[{name}].supervision")
            sup = Supervisor.with_spec(
                [self._child(sid) for sid in layout.placement.ring.shard_ids], spec, name=name,
                terminator=self._terminator(), on_event=self._on_supervisor_event,
                clock=sched.now, lock=sched.lock(), start_failures="restart")
            self.supervisors[name] = sup
            self.root.add_child(sup.as_child(), start=False)
        return self.root

    def _terminator(self) -> CallbackTerminator:
        """A supervisor "stopping" a shard only stops supervising it: the actor keeps its
        data and runs on, and the next start re-attaches to it if it is healthy. Shards
        die only when they are dead already (a restart replaces them), leave the ring
        (`forget`) or the cluster stops (`kill_all`): killing healthy replicas because a
        sibling failed, or a supervisor gave up, would lose data that no copy holds."""
        def detach(handle: ShardActorHandle, timeout: float = 0.0) -> bool:
            return True

        return CallbackTerminator(detach, detach)

    def _child(self, sid: str) -> ChildSpec:
        return ChildSpec(sid, lambda: self._start_shard(sid), "permanent",
                         shutdown_timeout=float(self.host.health["ping_timeout"]) * 4)

    def _on_supervisor_event(self, ev: SupervisorEvent) -> None:
        level = logging.WARNING if ev.kind in ("gave_up", "intensity_exceeded", "escalated",
                                                "start_failed", "exited") else logging.INFO
        event(log, f"supervisor.{ev.kind}", level=level, supervisor=ev.supervisor,
              child=ev.child, **{k: v for k, v in ev.detail.items() if k != "children"})
        if ev.kind == "gave_up" and ev.supervisor in self.host.layouts:
            sup = self.supervisors[ev.supervisor]
            self.failed[ev.supervisor] = (f"its supervisor gave up: more than {sup.intensity} "
                                          f"restarts in {sup.period:g}s")
        elif ev.kind == "started" and ev.supervisor == "root" and ev.child in self.failed:
            self.failed.pop(ev.child, None)

    def _root_gave_up(self, root: Supervisor) -> None:
        """The root exceeded its intensity: every source fails; the actor exits (Ray restarts
        it and the new incarnation recovers from Redis)."""
        for name in self.host.layouts:
            self.failed[name] = "the root supervisor gave up"
        self.host.crash("the root supervisor gave up")

    # ---- starting shards ---------------------------------------------------------------

    def _start_shard(self, sid: str) -> ShardActorHandle:
        """A supervisor child's start: attach to the live, healthy actor under the name
        (a restarted manager, a sibling's restart, a supervisor started again), unless the
        shard was reported dead: then replace it (kill, spawn a new incarnation, hydrate)."""
        with self._lock:
            layout = self.host.layouts[names.shard_source(sid)]
            placement = self.placement_of(sid)
            hydrate = placement.replicas > 1
            if sid not in self._replace:
                handle = self._attach(sid, layout)
                if handle is not None:
                    return handle
                if sid in self._attachable:   # never ran (a new cluster): a first spawn
                    self._attachable.discard(sid)
                    return self._spawn(sid, placement, layout, hydrate=hydrate)
            self._replace.discard(sid)
            self._attachable.discard(sid)
            old = self.handles.pop(sid, None)
            if old is not None:
                self.host.runtime.kill_handle(old)
            self.restarts += 1
            source = names.shard_source(sid)
            self.restarts_by_source[source] = self.restarts_by_source.get(source, 0) + 1
            event(log, "shard.restart", level=logging.WARNING, shard=sid,
                  restarts=self.restarts)
            return self._spawn(sid, placement, layout, hydrate=hydrate)

    def placement_of(self, sid: str) -> Placement:
        """The placement `sid` must have: its source's, or the target of the switch that
        is adding it (until that switch finishes or is rolled back)."""
        return self._targets.get(sid) or self.host.layouts[names.shard_source(sid)].placement

    def _attach(self, sid: str, layout: Layout) -> ShardActorHandle | None:
        """Re-attach to the live shard actor under `sid`'s name; None if there is none or
        its health ping goes unanswered for `misses` ping timeouts (then it is killed: it
        is dead or frozen). A shard that answers its ping but whose mailbox is slow (a
        long export) is alive and keeps its data: it is adopted, and its placement is
        brought in line now or by a later health check (`_align`)."""
        runtime, health = self.host.runtime, self.host.health
        handle = self.handles.get(sid) or runtime.find(sid)
        if handle is None:
            return None
        try:
            info = handle.ping(timeout=float(health["ping_timeout"])
                               * int(health["misses"])).result()
        except (ShardDied, Timeout, ShardUnavailable):
            self._free_name(sid)             # dead or frozen: replace it
            return None
        self._adopt(sid, handle, info)
        try:
            info = self._align(sid, handle, info, layout, wait=True)
        except ShardDied:
            self._free_name(sid)
            return None
        if info.get("hydrating"):            # the previous manager died mid-hydration:
            self._start_hydration(sid, handle, info["incarnation"])
            self.host.garbage.add(layout.spec.name)   # its copy may have followed a ring
        self._note_untidy(sid, info)
        event(log, "shard.attached", shard=sid, incarnation=info["incarnation"])
        return handle

    def _align(self, sid: str, handle: ShardActorHandle, info: Mapping[str, Any],
               layout: Layout, *, wait: bool) -> Mapping[str, Any]:
        """Give the shard this manager's placement (and epoch: it fences older managers)
        and lift a freeze. A shard AHEAD of the layout adopted a switch that was rolled
        back (a message that landed late); nothing was written under that ring, so it is
        forced back with the others. -> its ping info (`info` if not waited for or it
        did not answer in time: a later health check tries again)."""
        placement = self.placement_of(sid)
        ahead = info["ring_version"] > placement.ring.version
        if ahead:
            event(log, "ring.forced_back", level=logging.WARNING, shard=sid,
                  version=info["ring_version"], to=placement.ring.version)
        pending = handle.set_placement(self._epoch(), placement, ahead)
        if not wait:
            return info
        try:
            return pending.result()
        except (Timeout, ShardUnavailable):
            return info

    def _adopt(self, sid: str, handle: ShardActorHandle, info: Mapping[str, Any]) -> None:
        self.handles[sid] = handle
        self.misses[sid] = 0
        self.incarnations[sid] = info["incarnation"]
        if info.get("node_id"):
            self.nodes[sid] = info["node_id"]

    def _spawn(self, sid: str, placement: Placement, layout: Layout, *,
               hydrate: bool) -> ShardActorHandle:
        """Spawn, open and (optionally) hydrate a new incarnation; a half-done spawn is
        killed by name before the error propagates."""
        host = self.host
        runtime = host.runtime
        self._free_name(sid)
        node = self._node_for(sid, placement)
        spec = ShardSpawn(sid, layout.spec.backend, layout.spec.opts, placement,
                          host.epoch or 0, hydrate, uuid.uuid4().hex[:12],
                          float(host.health["call_timeout"]), host.heartbeat_for(sid),
                          float(host.health["interval"]))
        open_timeout = float(host.health["open_timeout"])
        try:
            handle = runtime.spawn(spec, node)
            info = handle.open(timeout=open_timeout).result()
        except Exception as exc:
            self._free_name(sid)
            if isinstance(exc, MemclusterError):
                raise
            raise SourceUnavailable(f"shard {sid} could not be started: "
                                    f"{type(exc).__name__}: {exc}") from exc
        self._adopt(sid, handle, info)
        if node is not None and "node_id" not in info:
            self.nodes[sid] = node
        if hydrate:
            self._start_hydration(sid, handle, info["incarnation"])
        event(log, "shard.started", shard=sid, hydrating=hydrate, node=self.nodes.get(sid))
        return handle

    def _node_for(self, sid: str, placement: Placement) -> str | None:
        """Where the next incarnation of `sid` runs (`assignment.choose_node`)."""
        runtime, policy = self.host.runtime, self.host.policy
        source = names.shard_source(sid)
        placed = {s: n for s, n in self.nodes.items()
                  if names.shard_source(s) == source and s != sid and s in self.handles}
        load = Counter(n for s, n in self.nodes.items() if s in self.handles and s != sid)
        return choose_node(sid, placement.ring.domains, placed, runtime.nodes(), policy,
                           load=load, previous=self.nodes.get(sid))

    def _free_name(self, sid: str) -> None:
        """Kill whatever holds `sid`'s name and wait until Ray has freed it."""
        runtime, sched = self.host.runtime, self.host.sched
        runtime.kill(sid)
        deadline = sched.now() + float(self.host.health["open_timeout"])
        while not runtime.name_free(sid):
            if sched.now() >= deadline:
                raise ShardUnavailable(f"the name of shard {sid} was not freed in time")
            sched.sleep(0.02)

    def add_shard(self, sid: str, layout: Layout, placement: Placement) -> None:
        """Spawn a shard a rebalance adds (on the target placement, empty: nothing to
        hydrate) and supervise it from the start (its first start adopts the spawned one)."""
        self._targets[sid] = placement
        self._spawn(sid, placement, layout, hydrate=False)
        self._attachable.add(sid)
        self.supervisors[layout.spec.name].add_child(self._child(sid))

    def move_shard(self, sid: str, node: str) -> None:
        """Restart `sid` on `node` (spreading onto new nodes): the new incarnation hydrates
        from the other replicas, so only sources keeping N > 1 copies (or a durable store)
        may be moved; the caller checks that."""
        with self._lock:
            layout = self.host.layouts[names.shard_source(sid)]
            old = self.handles.pop(sid, None)
            if old is not None:
                self.host.runtime.kill_handle(old)
            self.nodes[sid] = node
            placement = self.placement_of(sid)
            handle = self._spawn(sid, placement, layout, hydrate=placement.replicas > 1)
            sup = self.supervisors[names.shard_source(sid)]
            sup.replace_handle(sid, handle)

    # ---- hydration ---------------------------------------------------------------------

    def _start_hydration(self, sid: str, handle: ShardActorHandle,
                         incarnation: str) -> Hydration:
        """Copy `sid`'s keys back from the other shards on a thread; it serves after."""
        previous = self.hydrations.get(sid)
        if previous is not None:
            previous.abandon()
        hyd = self._new_hydration(sid, incarnation)
        self.host.sched.start(lambda: self._hydrate(handle, hyd), f"memcluster-hydrate-{sid}")
        return hyd

    def _new_hydration(self, sid: str, incarnation: str) -> Hydration:
        ring = self.placement_of(sid).ring
        hyd = Hydration(sid, incarnation, tuple(s for s in ring.shard_ids if s != sid),
                        clock=self.host.sched.wall, ring_version=ring.version)
        self.hydrations[sid] = hyd
        return hyd

    def _hydrate(self, handle: ShardActorHandle, hyd: Hydration) -> None:
        """Copy from every source completely; a lost source is copied again from its
        replacement next round. The copy follows the shard's placement as it is now: if a
        ring switch changed it meanwhile, the copy starts over under the new ring (and
        the source's garbage collection runs again for what the old one brought). Ends
        when done, replaced, deposed or stopped."""
        sid = hyd.shard_id
        retry = self._copy_retry()
        while not self._stop.is_set() and self.handles.get(sid) is handle:
            placement = self.placement_of(sid)
            if placement.ring.version != hyd.ring_version:
                hyd.abandon()
                hyd = self._new_hydration(sid, hyd.incarnation)
                self.host.garbage.add(names.shard_source(sid))
                continue
            try:
                for src in hyd.sources:
                    if src in hyd.done:
                        continue
                    try:
                        copy_into(self.handles, handle, src, hyd, placement,
                                  self._epoch(), retry)
                    except SourceLost as exc:     # try its replacement next round
                        event(log, "shard.hydration_source_lost", level=logging.WARNING,
                              shard=sid, source=src, error=str(exc))
                        continue
                    hyd.source_done(src)
                if hyd.complete and self.placement_of(sid).ring.version == hyd.ring_version:
                    handle.finish_hydration(self._epoch()).result()
                    hyd.finish()
                    event(log, "shard.hydrated", shard=sid, copied=hyd.copied)
                    return
            except (ShardDied, FencedOut):
                break                     # the shard is replaced, or we are deposed
            except MemclusterError as exc:  # a slow or restarting peer: try again shortly
                event(log, "shard.hydration_retry", level=logging.WARNING, shard=sid,
                      error=type(exc).__name__)
            except ValueError:            # abandoned meanwhile (replaced by a new one)
                break
            self._stop.wait(self.host.tick)
        hyd.abandon()

    def _copy_retry(self) -> Retry:
        """Backoff for one page of a copy: timeouts retried up to `copy_timeout`."""
        sched = self.host.sched
        return Retry(deadline=float(self.host.health["copy_timeout"]), delay=0.05,
                     max_delay=1.0, retry_on=(Timeout, ShardUnavailable),
                     clock=sched.now, sleep=sched.sleep,
                     uniform=sched.uniform)

    # ---- health checks -----------------------------------------------------------------

    def check(self) -> list[str]:
        """Ping every supervised shard, read heartbeats; report the dead to their supervisor.
        -> the shard ids reported dead."""
        with self._lock:
            health = self.host.health
            timeout = float(health["ping_timeout"])
            watched = [(sid, h) for sid, h in self.handles.items() if self._supervised(sid)]
            pendings = [(sid, h, h.ping(timeout=timeout)) for sid, h in watched]
            lapsed = self._lapsed_heartbeats()
            dead: list[tuple[str, ShardActorHandle, str]] = []
            misaligned: list[tuple[str, ShardActorHandle, Any]] = []
            for sid, handle, pending in pendings:
                try:
                    info = pending.result()
                    self.misses[sid] = 0
                    # No rebalance runs while we hold the lock: a frozen shard or one on
                    # another ring missed a step (a message lost or landed late).
                    if info.get("frozen") or \
                            info["ring_version"] != self.placement_of(sid).ring.version:
                        misaligned.append((sid, handle, info))
                    if info.get("pending"):  # writes short of W: finish them (not awaited)
                        handle.settle()
                    self._note_untidy(sid, info)
                except ShardDied:
                    dead.append((sid, handle, "died"))
                    continue
                except MemclusterError:
                    self.misses[sid] = self.misses.get(sid, 0) + 1
                    if self.misses[sid] >= int(health["misses"]):
                        dead.append((sid, handle, f"{self.misses[sid]} pings missed"))
                    continue
                if sid in lapsed:
                    dead.append((sid, handle, "heartbeat lapsed"))
            for sid, handle, why in dead:
                event(log, "shard.dead", level=logging.WARNING, shard=sid, reason=why)
                self._replace.add(sid)
                self.misses[sid] = 0
                self._hb_seen.pop(sid, None)
                hyd = self.hydrations.get(sid)
                if hyd is not None:
                    hyd.abandon()
                sup = self.supervisors[names.shard_source(sid)]
                sup.child_exited(sid, "crash", handle=handle)
            for sid, handle, info in misaligned:
                with contextlib.suppress(MemclusterError):
                    self._align(sid, handle, info, self.host.layouts[names.shard_source(sid)],
                                wait=False)
            return [sid for sid, _, _ in dead]

    def _note_untidy(self, sid: str, info: Mapping[str, Any]) -> None:
        """A settled shard that may hold keys it does not own (a switch or a handoff
        whose garbage collection a previous manager did not finish) puts its source up
        for garbage collection."""
        if info.get("tidy") is False and not info.get("hydrating") and \
                not info.get("frozen") and \
                info["ring_version"] == self.placement_of(sid).ring.version:
            self.host.garbage.add(names.shard_source(sid))

    def _supervised(self, sid: str) -> bool:
        sup = self.supervisors.get(names.shard_source(sid))
        if sup is None or sup.state != "running":
            return False
        try:
            return sup.child(sid).state == "running"
        except KeyError:
            return False

    def _lapsed_heartbeats(self) -> set[str]:
        """Shards whose current incarnation heartbeated in Redis and has stopped since.

        Only judged after Redis has answered for a whole heartbeat TTL: heartbeats lapse
        for everyone while Redis is down, which says nothing about the shards."""
        membership = self.host.membership()
        if membership is None:
            return set()
        health = self.host.health
        ttl = float(health["interval"]) * int(health["misses"])
        try:
            members = membership.members()
        except MemclusterError:
            self._redis_ok_since = None
            return set()
        now = self.host.sched.now()
        if self._redis_ok_since is None:
            self._redis_ok_since = now
        judge = now - self._redis_ok_since >= ttl
        lapsed = set()
        for sid, incarnation in self.incarnations.items():
            info = members.get(sid)
            if info is not None and info.get("incarnation") == incarnation:
                self._hb_seen[sid] = incarnation
            elif judge and self._hb_seen.get(sid) == incarnation:
                lapsed.add(sid)
        return lapsed

    def report_crash(self, sid: str) -> None:
        """Report `sid` crashed to its supervisor (which replaces it per its strategy)."""
        with self._lock:
            self._replace.add(sid)
            handle = self.handles.get(sid)
            self.supervisors[names.shard_source(sid)].child_exited(sid, "crash", handle=handle)

    # ---- removing and finding shards ---------------------------------------------------

    def switched(self, sids: Iterable[str]) -> None:
        """The switch that added `sids` finished (their source's layout names them now)."""
        for sid in sids:
            self._targets.pop(sid, None)

    def forget(self, sid: str) -> None:
        """Stop supervising `sid` and kill it by name (it left the ring, or never joined)."""
        sup = self.supervisors[names.shard_source(sid)]
        with contextlib.suppress(KeyError):
            sup.remove_child(sid)
        handle = self.handles.pop(sid, None)
        if handle is not None:
            self.host.runtime.kill_handle(handle)
        with contextlib.suppress(MemclusterError):
            self._free_name(sid)
        self._attachable.discard(sid)
        for table in (self.incarnations, self.hydrations, self.misses, self.nodes,
                      self._targets):
            table.pop(sid, None)

    def kill_all(self) -> int:
        """Kill every shard this tree holds a handle to (shutdown). -> how many were alive."""
        killed = sum(self.host.runtime.kill_handle(h) for h in self.handles.values())
        self.handles.clear()
        return killed

    def _epoch(self) -> int:
        assert self.host.epoch is not None, "control calls need the manager's epoch"
        return self.host.epoch

    # ---- status ------------------------------------------------------------------------

    def shard_status(self) -> dict[str, Any]:
        """Every shard's stats (or its error) with its node, overlaid with its hydration."""
        shards: dict[str, Any] = {}
        # Copies (atomic under the GIL): status runs without the lock, beside a scale.
        pendings = [(sid, h.stats(timeout=5.0)) for sid, h in list(self.handles.items())]
        for sid, pending in pendings:
            try:
                shards[sid] = pending.result()
            except MemclusterError as exc:
                shards[sid] = {"error": type(exc).__name__}
            shards[sid]["node"] = self.nodes.get(sid)
            hyd = self.hydrations.get(sid)
            if hyd is not None and hyd.incarnation == self.incarnations.get(sid):
                shards[sid]["recovery"] = hyd.as_dict()
                if hyd.state == "recovering" and "error" not in shards[sid]:
                    shards[sid]["state"] = "recovering"
                    shards[sid]["hydration"] = hyd.progress
        return shards

    def supervision_status(self) -> dict[str, Any]:
        """Per source: running / failed, its strategy and restarts in the current window."""
        out: dict[str, Any] = {}
        for name, sup in list(self.supervisors.items()):
            out[name] = {"state": "failed" if name in self.failed else sup.state,
                         "reason": self.failed.get(name), "strategy": sup.strategy,
                         "intensity": sup.intensity, "period": sup.period,
                         "restarts_in_window": sup.restarts_in_window()}
        return out


__all__ = ["ShardTree", "TreeHost"]
