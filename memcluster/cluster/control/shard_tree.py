"""The supervision tree over a cluster's shards: who runs, who is dead, who gets replaced.

Core types: `ShardTree` (builds root -> one `Supervisor` per source -> its shards, starts a
shard by attaching to a live actor or spawning one, launches its hydration, health-checks
every supervised shard and reports the dead to their supervisor) and `TreeHost` (the
narrow view of the manager it needs: identity, health timings, the fencing epoch and the
layouts). `kill_actor` ends a Ray actor for good. The generic OTP engine is
`memcluster.cluster.control.supervisor`; this module applies it to shard actors.

Decisions:
  * A shard is dead on `ShardDied`, on `misses` consecutive pings unanswered within
    `ping_timeout` (a frozen process), or when its current incarnation's Redis heartbeat
    lapsed; the tree only reports the exit and the source's supervisor decides (restart per
    strategy, or give up and mark the source failed). The rejected alternative, replacing
    dead shards right here, was what the manager did before the supervisor existed: no
    strategies, no intensity window, no escalation to the root.
  * A child's first start attaches to a live actor under the shard's name (a restarted
    manager must not move data), every later start replaces: kill whatever runs under the
    name, wait for Ray to free it, spawn a new incarnation and hydrate it from its replicas
    when the source has more than one.
  * Heartbeats are judged only after Redis has answered for a whole heartbeat TTL: while
    Redis is down every heartbeat lapses, which says nothing about the shards.

Thread-safety: starts, checks and crash reports run under the manager's re-entrant lock
(`scale` holds it too); hydrations run on their own daemon threads and stop when the
manager stops or the shard's handle is replaced.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from memcluster.cluster import names
from memcluster.cluster.control.handoff import copy_into
from memcluster.cluster.control.hydration import Hydration
from memcluster.cluster.control.layout import Layout
from memcluster.cluster.control.supervisor import (
    ROOT_SUPERVISION,
    CallbackTerminator,
    ChildSpec,
    SupervisionSpec,
    Supervisor,
    SupervisorEvent,
)
from memcluster.cluster.data.handle import ShardHandle
from memcluster.cluster.data.placement import Placement
from memcluster.cluster.data.shard import shard_actor_class
from memcluster.errors import (
    FencedOut,
    MemclusterError,
    ShardDied,
    ShardUnavailable,
    Timeout,
)
from memcluster.logs import event, get_logger

log = get_logger("cluster.manager")


class TreeHost(Protocol):
    """What the tree reads from its manager (late: health and epoch change at bootstrap)."""

    cluster: str
    namespace: str
    redis_url: str
    health: dict[str, Any]
    epoch: int | None
    tick: float
    exit_on_lost_lease: bool
    layouts: dict[str, Layout]


class ShardTree:
    """The shards of every source under supervision (see the module docstring)."""

    def __init__(self, host: TreeHost, *, lock: threading.RLock, stop: threading.Event,
                 root_supervision: Mapping[str, Any] | None = None) -> None:
        self.host = host
        self._lock = lock
        self._stop = stop
        self.root_supervision = root_supervision
        self.root: Supervisor | None = None
        self.supervisors: dict[str, Supervisor] = {}
        self.failed: dict[str, str] = {}              # source -> why it is unavailable
        self.hydrations: dict[str, Hydration] = {}    # shard id -> its latest hydration
        self.handles: dict[str, ShardHandle] = {}
        self.misses: dict[str, int] = {}
        self.incarnations: dict[str, str] = {}        # shard id -> its current incarnation
        self.restarts = 0
        self.restarts_by_source: dict[str, int] = {}
        self._attachable: set[str] = set()           # first start: attach to a live actor
        self._hb_seen: dict[str, str] = {}            # shard id -> incarnation seen beating
        self._redis_ok_since: float | None = None
        self._membership: Any = None

    # ---- building the tree -------------------------------------------------------------

    def build(self) -> Supervisor:
        """Root (one_for_one, 3 in 300 s) -> one supervisor per source -> its shards.
        Returns the root, not started: starting it attaches or spawns every shard."""
        root_spec = SupervisionSpec.from_dict(self.root_supervision, path="root supervision",
                                              default=ROOT_SUPERVISION)
        self.root = Supervisor.with_spec([], root_spec, name="root",
                                         terminator=self._terminator(),
                                         on_event=self._on_supervisor_event,
                                         on_give_up=self._root_gave_up)
        for name, layout in self.host.layouts.items():
            self._attachable.update(layout.placement.ring.shard_ids)
            spec = SupervisionSpec.from_dict(layout.spec.supervision or None,
                                             path=f"sources[{name}].supervision")
            sup = Supervisor.with_spec(
                [self._child(sid) for sid in layout.placement.ring.shard_ids], spec, name=name,
                terminator=self._terminator(), on_event=self._on_supervisor_event)
            self.supervisors[name] = sup
            self.root.add_child(sup.as_child(), start=False)
        return self.root

    def _terminator(self) -> CallbackTerminator:
        def stop(handle: ShardHandle, timeout: float) -> bool:
            try:
                handle.control("close", timeout=timeout).result()
            except MemclusterError:
                return False     # then killed
            kill_actor(handle.actor)
            return True

        return CallbackTerminator(stop, lambda handle: kill_actor(handle.actor))

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
        event(log, "manager.crash", level=logging.ERROR, cluster=self.host.cluster,
              reason="root supervisor gave up")
        if self.host.exit_on_lost_lease:
            os._exit(1)

    # ---- starting shards ---------------------------------------------------------------

    def _start_shard(self, sid: str) -> ShardHandle:
        """A supervisor child's start: first attach (or adopt a pre-spawned shard), later
        replace: kill whatever runs under the name, spawn a new incarnation, hydrate it."""
        with self._lock:
            layout = self.host.layouts[names.shard_source(sid)]
            hydrate = layout.placement.replicas > 1
            if sid in self._attachable:
                self._attachable.discard(sid)
                handle = self.handles.get(sid) or self._attach(sid, layout)
                return handle or self._spawn(sid, layout, hydrate=hydrate)
            old = self.handles.pop(sid, None)
            if old is not None:
                kill_actor(old.actor)
            name = names.shard_actor_name(self.host.cluster, sid)
            _kill_by_name(name, self.host.namespace)
            _wait_name_free(name, self.host.namespace)
            self.restarts += 1
            source = names.shard_source(sid)
            self.restarts_by_source[source] = self.restarts_by_source.get(source, 0) + 1
            event(log, "shard.restart", level=logging.WARNING, shard=sid,
                  restarts=self.restarts)
            return self._spawn(sid, layout, hydrate=hydrate)

    def _attach(self, sid: str, layout: Layout) -> ShardHandle | None:
        """Re-attach to a live shard actor (a restarted manager); None if there is none."""
        import ray

        name = names.shard_actor_name(self.host.cluster, sid)
        try:
            actor = ray.get_actor(name, namespace=self.host.namespace)
        except ValueError:
            return None
        handle = ShardHandle(actor, sid, name, timeout=float(self.host.health["call_timeout"]))
        try:
            info = handle.control("set_ring", self.host.epoch,
                                  layout.placement.ring.version).result()
        except (ShardDied, Timeout, ShardUnavailable):
            kill_actor(actor)                 # wedged or dying: replace it
            _wait_name_free(name, self.host.namespace)
            return None
        self.handles[sid] = handle
        self.misses[sid] = 0
        self.incarnations[sid] = info["incarnation"]
        if info.get("hydrating"):            # the previous manager died mid-hydration
            self._start_hydration(sid, handle, info["incarnation"], layout.placement)
        event(log, "shard.attached", shard=sid, incarnation=info["incarnation"])
        return handle

    def _spawn(self, sid: str, layout: Layout, *, hydrate: bool,
               ring_version: int | None = None) -> ShardHandle:
        host = self.host
        name = names.shard_actor_name(host.cluster, sid)
        version = ring_version or layout.placement.ring.version
        interval = float(host.health["interval"])
        heartbeat = {"redis_url": host.redis_url, "cluster": host.cluster,
                     "interval": interval,
                     "ttl_ms": int(interval * int(host.health["misses"]) * 1000)}
        actor = shard_actor_class().options(
            name=name, namespace=host.namespace, lifetime="detached").remote(
            layout.spec.backend, layout.spec.opts, prefix=name, shard_id=sid,
            ring_version=version, epoch=host.epoch or 0, hydrating=hydrate,
            incarnation=uuid.uuid4().hex[:12], heartbeat=heartbeat)
        handle = ShardHandle(actor, sid, name, timeout=float(host.health["call_timeout"]))
        info = handle.control("open").result()
        self.handles[sid] = handle
        self.misses[sid] = 0
        self.incarnations[sid] = info["incarnation"]
        if hydrate:
            self._start_hydration(sid, handle, info["incarnation"], layout.placement)
        event(log, "shard.started", shard=sid, hydrating=hydrate)
        return handle

    def add_shard(self, sid: str, layout: Layout, ring_version: int) -> None:
        """Spawn a shard a rebalance adds (on the target ring, empty: nothing to hydrate)
        and supervise it from the start (its first start adopts the spawned actor)."""
        self._spawn(sid, layout, hydrate=False, ring_version=ring_version)
        self._attachable.add(sid)
        self.supervisors[layout.spec.name].add_child(self._child(sid))

    # ---- hydration ---------------------------------------------------------------------

    def _start_hydration(self, sid: str, handle: ShardHandle, incarnation: str,
                         placement: Placement) -> Hydration:
        """Copy `sid`'s keys back from its replicas on a thread; it serves reads after."""
        others = tuple(s for s in placement.ring.shard_ids if s != sid)
        previous = self.hydrations.get(sid)
        if previous is not None:
            previous.abandon()
        hyd = Hydration(sid, incarnation, others)
        self.hydrations[sid] = hyd
        threading.Thread(target=self._hydrate, args=(handle, hyd, placement),
                         name=f"memcluster-hydrate-{sid}", daemon=True).start()
        return hyd

    def _hydrate(self, handle: ShardHandle, hyd: Hydration, placement: Placement) -> None:
        sid = hyd.shard_id
        while not self._stop.is_set() and self.handles.get(sid) is handle:
            try:
                for src in hyd.sources:
                    if src in hyd.done:
                        continue
                    copy_into(self.handles, handle, src, hyd, placement, self.host.epoch)
                    hyd.source_done(src)
                handle.control("finish_hydration", self.host.epoch).result()
                hyd.finish()
                event(log, "shard.hydrated", shard=sid, copied=hyd.copied)
                return
            except (ShardDied, FencedOut):
                break                     # the shard is replaced, or we are deposed
            except MemclusterError as exc:  # a slow or restarting peer: try again shortly
                event(log, "shard.hydration_retry", level=logging.WARNING, shard=sid,
                      error=type(exc).__name__)
                self._stop.wait(self.host.tick)
        hyd.abandon()

    # ---- health checks -----------------------------------------------------------------

    def check(self) -> list[str]:
        """Ping every supervised shard, read heartbeats; report the dead to their supervisor.
        -> the shard ids reported dead."""
        with self._lock:
            health = self.host.health
            timeout = float(health["ping_timeout"])
            watched = [(sid, h) for sid, h in self.handles.items()
                       if self._supervised(sid)]
            pendings = [(sid, h, h.control("ping", timeout=timeout)) for sid, h in watched]
            lapsed = self._lapsed_heartbeats()
            dead: list[tuple[str, ShardHandle, str]] = []
            for sid, handle, pending in pendings:
                try:
                    pending.result()
                    self.misses[sid] = 0
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
                self.misses[sid] = 0
                self._hb_seen.pop(sid, None)
                hyd = self.hydrations.get(sid)
                if hyd is not None:
                    hyd.abandon()
                sup = self.supervisors[names.shard_source(sid)]
                sup.child_exited(sid, "crash", handle=handle)
            return [sid for sid, _, _ in dead]

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
        health = self.host.health
        interval = float(health["interval"])
        ttl = interval * int(health["misses"])
        try:
            if self._membership is None:
                import redis as redis_py

                from memcluster.cluster.coord.coordinator import Coordinator

                fast = float(health["ping_timeout"])
                client = redis_py.Redis.from_url(self.host.redis_url, socket_timeout=fast,
                                                 socket_connect_timeout=fast)
                self._membership = Coordinator(client, self.host.cluster).membership
            members = self._membership.members()
        except MemclusterError:
            self._redis_ok_since = None
            return set()
        now = time.monotonic()
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
        """Report `sid` crashed to its supervisor (which restarts it per its strategy)."""
        with self._lock:
            handle = self.handles.get(sid)
            self.supervisors[names.shard_source(sid)].child_exited(sid, "crash", handle=handle)

    # ---- removing and finding shards ---------------------------------------------------

    def forget(self, sid: str) -> None:
        """Stop supervising `sid` and kill it (it left the ring)."""
        sup = self.supervisors[names.shard_source(sid)]
        with contextlib.suppress(KeyError):
            sup.remove_child(sid)
        handle = self.handles.pop(sid, None)
        if handle is not None:
            kill_actor(handle.actor)
        self._attachable.discard(sid)
        self.incarnations.pop(sid, None)
        self.hydrations.pop(sid, None)
        self.misses.pop(sid, None)

    def kill_stray(self, sid: str) -> bool:
        """Kill the actor registered under `sid`'s name, supervised or not (e.g. a shard
        that only an abandoned ring names); False if none runs."""
        return _kill_by_name(names.shard_actor_name(self.host.cluster, sid),
                             self.host.namespace)

    def kill_all(self) -> int:
        """Kill every shard this tree holds a handle to (shutdown). -> how many were alive."""
        killed = 0
        for handle in self.handles.values():
            killed += kill_actor(handle.actor)
        self.handles.clear()
        return killed

    def ring_versions(self, sids: Iterable[str]) -> dict[str, int]:
        """The ring version each reachable shard among `sids` is on, attached or not
        (found by name; a ping: no mailbox). Unreachable shards are left out."""
        import ray

        timeout = float(self.host.health["ping_timeout"]) * 4
        pendings = []
        for sid in sids:
            name = names.shard_actor_name(self.host.cluster, sid)
            try:
                actor = ray.get_actor(name, namespace=self.host.namespace)
            except ValueError:
                continue
            handle = ShardHandle(actor, sid, name, timeout=timeout)
            pendings.append((sid, handle.control("ping")))
        out: dict[str, int] = {}
        for sid, pending in pendings:
            with contextlib.suppress(MemclusterError):
                out[sid] = int(pending.result()["ring_version"])
        return out

    # ---- status ------------------------------------------------------------------------

    def shard_status(self) -> dict[str, Any]:
        """Every shard's stats (or its error), overlaid with its current hydration."""
        shards: dict[str, Any] = {}
        pendings = [(sid, h.control("stats", timeout=5.0)) for sid, h in self.handles.items()]
        for sid, pending in pendings:
            try:
                shards[sid] = pending.result()
            except MemclusterError as exc:
                shards[sid] = {"error": type(exc).__name__}
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
        for name, sup in self.supervisors.items():
            out[name] = {"state": "failed" if name in self.failed else sup.state,
                         "reason": self.failed.get(name), "strategy": sup.strategy,
                         "intensity": sup.intensity, "period": sup.period,
                         "restarts_in_window": sup.restarts_in_window()}
        return out


def kill_actor(actor: Any) -> bool:
    """Kill an actor for good; False if it was already gone."""
    import ray

    try:
        ray.kill(actor, no_restart=True)
    except Exception:  # already dead or its node is gone
        return False
    return True


def _kill_by_name(name: str, namespace: str) -> bool:
    """Kill the actor registered under `name` (e.g. left by a previous manager)."""
    import ray

    try:
        return kill_actor(ray.get_actor(name, namespace=namespace))
    except ValueError:
        return False


def _wait_name_free(name: str, namespace: str, timeout: float = 10.0) -> None:
    """Ray frees a killed actor's name asynchronously: wait until it is gone."""
    import ray

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            ray.get_actor(name, namespace=namespace)
        except ValueError:
            return
        time.sleep(0.02)


__all__ = ["ShardTree", "TreeHost", "kill_actor"]
