"""The manager actor: owns a cluster's layout, supervises its shards, routes for thin callers.

Core types: `ManagerCore` (the logic, a plain class) and `manager_actor_class()` (the same
class made a detached Ray actor, named `<cluster>/manager`, `max_restarts=-1`, in one
place). On start the manager campaigns for the cluster's lease in Redis (the fencing
epoch it gets is carried by every control call, and shards refuse older epochs, so two
managers never both act), loads the spec and the rings from Redis (or stores the ones it
was given), re-attaches to live shards by name and creates missing ones, hydrating a new
shard from its replicas before it serves reads. A daemon thread renews the lease and
calls `check_shards()` each tick: that one method is the seam where the OTP supervisor
plugs in; today it replaces dead shards (three missed pings or `ShardDied`).

`scale(source, shards)` moves exactly the keys whose owners change: stage the target ring
in Redis, create new shards, copy the moving records while traffic flows, freeze writes
on the old owners (callers retry transparently: the shard answers `ShardUnavailable`),
copy what changed meanwhile and drop what was deleted meanwhile, switch every shard and
the Redis pointer to the new ring (callers on the old one get `StaleRing` and refresh),
then delete what old owners no longer own and stop removed shards. The rejected
alternative, copying everything under a long write freeze, stops writes for the whole
copy instead of only for the catch-up. A manager that dies mid-way leaves the staged
version in Redis; its successor (`_reconcile_ring`, before it attaches any shard) rolls
forward if a shard of the old ring already switched and back otherwise (why in
`recovery.py`), then fixes the spec, stops orphaned shards and collects garbage.
`inject_fault(point)` crashes the manager at a named step, for the tests of exactly this.

Data operations sent to the manager (`execute`) run through the same `Router` as smart
clients use; it is the slow path (two hops) for callers that cannot hold shard handles.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from memcluster import logs
from memcluster.backends.registry import backend_name, resolve_backend
from memcluster.cluster import names
from memcluster.cluster.recovery import Hydration, resolve_ring_switch
from memcluster.cluster.retry import Retry
from memcluster.cluster.ring import Ring, routing_key
from memcluster.cluster.router import Placement, Router
from memcluster.cluster.shard import Done, ShardHandle, shard_actor_class
from memcluster.cluster.supervisor import (
    ROOT_SUPERVISION,
    CallbackTerminator,
    ChildSpec,
    SupervisionSpec,
    Supervisor,
    SupervisorEvent,
)
from memcluster.errors import (
    ConfigError,
    FencedOut,
    MemclusterError,
    NotFound,
    ShardDied,
    ShardUnavailable,
    SourceUnavailable,
    Timeout,
    UnknownSource,
    VersionConflict,
)
from memcluster.logs import event, get_logger
from memcluster.model import Record, SourceSpec
from memcluster.ops import Op

log = get_logger("cluster.manager")
_PAGE = 1000
PING_MISSES = 3
# Coordination writes (ring switch, spec) wait this long for Redis to come back.
COORDINATION_RETRY = Retry(deadline=120.0, delay=0.1, max_delay=1.0,
                           retry_on=(SourceUnavailable,))


FAULT_POINTS = frozenset({"scale.after_freeze", "scale.after_set_ring",
                          "scale.after_switch"})


class InjectedCrash(BaseException):
    """An in-process manager 'crashing' at a fault point (a BaseException: nothing
    catches it by accident, like the process exit it stands in for)."""


@dataclass(frozen=True)
class Layout:
    """A source as the manager runs it: its spec and its placement."""

    spec: SourceSpec
    placement: Placement
    durable: bool

    def describe(self) -> dict[str, Any]:
        cls = resolve_backend(self.spec.backend)
        return {"backend": backend_name(self.spec.backend),
                "capabilities": cls.capabilities.as_dict(),
                "description": self.spec.description, "default": self.spec.default,
                "shards": len(self.placement.ring), "replicas": self.placement.replicas,
                "write_quorum": self.placement.write_quorum,
                "read_quorum": self.spec.read_quorum or 1,
                "ring": self.placement.ring.to_dict()}


def layout_for(spec: SourceSpec, ring: Ring) -> Layout:
    """N and W from the spec, defaulting by durability (N=1 durable, else 2, W=N)."""
    durable = resolve_backend(spec.backend).capabilities.durable
    n = spec.replicas if spec.replicas is not None else min(1 if durable else 2, len(ring))
    if n > len(ring):
        raise ConfigError(f"sources[{spec.name}].replicas: {n} replicas need at least "
                          f"{n} shards, have {len(ring)}")
    w = spec.write_quorum if spec.write_quorum is not None else n
    if w > n:
        raise ConfigError(f"sources[{spec.name}].write_quorum: must be <= replicas ({n})")
    return Layout(spec, Placement(spec.name, ring, n, w), durable)


class ManagerCore:
    """The manager's logic (see the module docstring). Thread-safe: Ray calls it concurrently."""

    def __init__(self, cluster: str, redis_url: str, spec: Mapping[str, Any] | None = None, *,
                 lease_ttl_ms: int | None = None, tick: float | None = None,
                 autostart: bool = True, exit_on_lost_lease: bool = False,
                 root_supervision: Mapping[str, Any] | None = None,
                 env: Mapping[str, str] | None = None) -> None:
        from memcluster.manager.config import DEFAULT_HEALTH

        self.cluster = names.check_cluster_name(cluster)
        self.namespace = names.ray_namespace(cluster)
        self.redis_url = redis_url
        self.given_spec = dict(spec) if spec is not None else None
        # Values of the spec's ${VAR}s, from the starter (the spec in Redis stays unexpanded;
        # an actor argument, unlike a runtime env, is never written to Ray's logs).
        self.env = dict(env or {})
        # Timings from the spec's `health:` section (validated again when the spec loads).
        self.health = {**DEFAULT_HEALTH, **((self.given_spec or {}).get("health") or {})}
        self.lease_ttl_ms = lease_ttl_ms or int(self.health["lease_ttl"] * 1000)
        self.tick = tick or float(self.health["interval"])
        # In the Ray actor: a lost lease or a root supervisor giving up exits the process,
        # Ray restarts the actor and it recovers from Redis.
        self.exit_on_lost_lease = exit_on_lost_lease
        self.root: Supervisor | None = None
        self.supervisors: dict[str, Supervisor] = {}
        self.failed: dict[str, str] = {}              # source -> why it is unavailable
        self.hydrations: dict[str, Hydration] = {}    # shard id -> its latest hydration
        self._attachable: set[str] = set()           # first start: attach to a live actor
        self._hb_seen: dict[str, str] = {}            # shard id -> incarnation seen beating
        self.incarnations: dict[str, str] = {}        # shard id -> its current incarnation
        self._redis_ok_since: float | None = None
        self._membership: Any = None
        self.root_supervision = root_supervision
        self.holder = f"manager-{uuid.uuid4().hex[:8]}"
        self.layouts: dict[str, Layout] = {}
        self.handles: dict[str, ShardHandle] = {}
        self.misses: dict[str, int] = {}
        self.restarts = 0
        self.restarts_by_source: dict[str, int] = {}
        self._metrics_server: Any = None
        self._report_cache: tuple[float, dict[str, Any]] = (0.0, {})
        self.epoch: int | None = None
        self.error: BaseException | None = None
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.RLock()   # layout changes: scale, restarts, shutdown
        self._coord: Any = None
        self._lease: Any = None
        self._thread: threading.Thread | None = None
        self._faults: set[str] = set()                # test hooks: see inject_fault()
        self.router = Router(_ManagerTopology(self))
        if autostart:
            self.start()

    # ---- start, leadership, the loop ---------------------------------------------------

    def start(self) -> None:
        """Campaign for the lease on a daemon thread, then manage (returns at once)."""
        self._thread = threading.Thread(target=self._run, name="memcluster-manager",
                                        daemon=True)
        self._thread.start()

    def ready(self, timeout: float | None = 60.0) -> dict[str, Any]:
        """Wait until this manager leads and its shards are up; its status, or the error."""
        if not self._ready.wait(timeout):
            raise Timeout(f"manager of {self.cluster!r} is not leading after {timeout}s "
                          "(another manager may hold the lease)")
        if self.error is not None:
            raise self.error
        return self.status()

    @property
    def leading(self) -> bool:
        return self._lease is not None and self._lease.held and self._ready.is_set()

    def _run(self) -> None:
        from memcluster.cluster.coordinator import Coordinator

        os.environ.update(self.env)
        if self.exit_on_lost_lease:  # in its own actor process: JSON/level from env, redacted
            logs.configure(os.environ.get("MEMCLUSTER_LOG_LEVEL", "INFO"))
        try:
            self._coord = Coordinator(self.redis_url, self.cluster)
            lease = self._coord.lease(self.holder, ttl_ms=self.lease_ttl_ms)
            while not self._stop.is_set():
                try:
                    if lease.acquire():
                        break
                except SourceUnavailable:
                    pass
                self._stop.wait(0.1)
            if self._stop.is_set():
                return
            self._lease = lease
            self.epoch = lease.epoch
            event(log, "manager.elected", cluster=self.cluster, epoch=self.epoch)
            threading.Thread(target=self._renew_loop, name="memcluster-lease",
                             daemon=True).start()
            self._bootstrap()
        except BaseException as exc:  # reported by ready(); the thread must not die silently
            self.error = exc
            self._ready.set()
            return
        self._start_metrics()
        self._ready.set()
        while not self._stop.wait(self.tick):
            try:
                self.check_shards()
            except FencedOut:
                self._lost_lease()
                return
            except Exception:  # keep supervising; the next tick tries again
                log.exception("check_shards failed")

    def _renew_loop(self) -> None:
        """Renew the lease every ttl/3 on its own thread, so slow work never starves it."""
        every = self.lease_ttl_ms / 3000.0
        while not self._stop.wait(every):
            try:
                if not self._lease.renew():
                    self._lost_lease()
                    return
            except SourceUnavailable:
                if not self._lease.held:
                    self._lost_lease()
                    return

    def _lost_lease(self) -> None:
        event(log, "manager.lease_lost", level=logging.WARNING, cluster=self.cluster,
              epoch=self.epoch)
        self._stop.set()
        if self.exit_on_lost_lease:  # let Ray restart us; we campaign again from Redis
            os._exit(1)

    def _fence(self) -> int:
        if not self.leading or self.epoch is None:
            raise FencedOut(f"manager {self.holder} of {self.cluster!r} does not hold the lease")
        return self.epoch

    def _bootstrap(self) -> None:
        from memcluster.manager.config import load_config

        coord = self._coord
        stored = coord.load_spec()
        spec = stored if stored is not None else self.given_spec
        if spec is None:
            raise NotFound(f"cluster {self.cluster!r} has no spec in Redis and none was given")
        config = load_config(spec)
        if stored is None:
            coord.save_spec(config.raw, self.epoch)
        self.raw_spec = config.raw
        self.health = dict(config.health)
        for src in config.sources:
            found = coord.ring_store.load(src.name)
            if found is None:
                ring = Ring(1, [names.shard_id(src.name, i) for i in range(src.shards)])
                layout = layout_for(src, ring)
                coord.ring_store.publish(src.name, 1, ring.to_dict(), expected=0,
                                         epoch=self.epoch)
            else:
                layout = layout_for(src, Ring.from_dict(found[1]))
            self.layouts[src.name] = layout
        self.default_source = next((s.name for s in config.sources if s.default),
                                   config.sources[0].name if config.sources else None)
        # Before any shard is attached (attaching lifts a rebalance freeze): finish or undo
        # a ring switch that the previous manager was interrupted in.
        unclean = [name for name in list(self.layouts) if self._reconcile_ring(name)]
        self._build_tree()
        assert self.root is not None
        self.root.start()   # attaches to live shards (no data moves), spawns missing ones
        for name in unclean:
            self._collect_garbage(name)

    # ---- recovering an interrupted rebalance -------------------------------------------

    def _reconcile_ring(self, source: str) -> bool:
        """Make the source's ring converge after a restart; True if garbage is left over.

        `scale` stages its target version in Redis before any shard switches, so a stored
        version newer than the pointer means a rebalance was interrupted.
        `resolve_ring_switch` decides (the memcluster.cluster.recovery docstring says why
        forward whenever a shard of the old ring adopted the target): forward moves the
        pointer now, so attaching sets every shard to the target and lifts the freeze;
        back leaves the pointer and the old shards, once attached, unfreeze on it. Either
        way the shards that only an abandoned or superseded ring names are killed, and a
        spec whose shard count lags the ring (a crash after the pointer moved) is fixed.
        """
        store = self._coord.ring_store
        layout = self.layouts[source]
        ring = layout.placement.ring
        stored = store.versions(source)
        staged = [v for v in stored if v > ring.version]
        decision = resolve_ring_switch(ring.version, staged,
                                       self._probe_ring_versions(ring.shard_ids)
                                       if staged else {})
        if decision.action == "forward":
            found = store.load(source, decision.version)
            assert found is not None  # listed by versions() and never deleted while newer
            target = Ring.from_dict(found[1])
            self._switch_ring(source, target.version, ring.version, self._fence_epoch())
            self.layouts[source] = layout = layout_for(layout.spec, target)
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
                    orphans += _kill_by_name(names.shard_actor_name(self.cluster, sid),
                                             self.namespace)
        lagging = layout.spec.shards != len(ring)    # the pointer moved, the spec did not
        if lagging:
            self._save_shards(source, len(ring), self._fence_epoch())
        return decision.action == "forward" or lagging or orphans > 0 or bool(staged)

    def _fence_epoch(self) -> int:
        """The epoch for control calls during bootstrap (before `leading` is true)."""
        assert self.epoch is not None
        return self.epoch

    def _probe_ring_versions(self, sids: Iterable[str]) -> dict[str, int]:
        """The ring version each reachable shard among `sids` is on (a ping: no mailbox)."""
        import ray

        timeout = float(self.health["ping_timeout"]) * 4
        pendings = []
        for sid in sids:
            name = names.shard_actor_name(self.cluster, sid)
            try:
                actor = ray.get_actor(name, namespace=self.namespace)
            except ValueError:
                continue
            handle = ShardHandle(actor, sid, name, timeout=timeout)
            pendings.append((sid, handle.control("ping")))
        out: dict[str, int] = {}
        for sid, pending in pendings:
            with contextlib.suppress(MemclusterError):
                out[sid] = int(pending.result()["ring_version"])
        return out

    def _collect_garbage(self, source: str) -> None:
        """After a recovered rebalance: each shard drops what it no longer owns."""
        placement = self.layouts[source].placement
        epoch = self._fence_epoch()
        pendings = [(sid, h.control("drop_unowned", epoch, placement.ring, placement.replicas))
                    for sid, h in self.handles.items() if sid in placement.ring.shard_ids]
        dropped = 0
        for _sid, pending in pendings:
            with contextlib.suppress(MemclusterError):  # dead: its replacement starts clean
                dropped += int(pending.result())
        event(log, "ring.garbage_collected", source=source, dropped=dropped)

    # ---- fault injection (tests) -----------------------------------------------------

    def inject_fault(self, point: str | None) -> None:
        """Test hook: crash this manager the next time it reaches `point` (None: clear).

        Points: "scale.after_freeze" (writes frozen, no shard switched yet),
        "scale.after_set_ring" (every shard switched, the Redis pointer not yet),
        "scale.after_switch" (pointer moved, spec and garbage not yet). Held in memory
        only, so the restarted manager runs clean.
        """
        if point is None:
            self._faults.clear()
        elif point not in FAULT_POINTS:
            raise ConfigError(f"fault point: one of {sorted(FAULT_POINTS)}, got {point!r}")
        else:
            self._faults.add(point)

    def _crash_point(self, point: str) -> None:
        if point not in self._faults:
            return
        event(log, "manager.injected_crash", level=logging.ERROR, cluster=self.cluster,
              point=point)
        if self.exit_on_lost_lease:   # the Ray actor: die like a crashed process
            os._exit(1)
        self._stop.set()              # in-process: stop managing, like a dead manager
        raise InjectedCrash(f"injected crash at {point}")

    # ---- the supervision tree ----------------------------------------------------------

    def _build_tree(self) -> None:
        """Root (one_for_one, 3 in 300 s) -> one supervisor per source -> its shards."""
        root_spec = SupervisionSpec.from_dict(self.root_supervision, path="root supervision",
                                              default=ROOT_SUPERVISION)
        self.root = Supervisor.with_spec([], root_spec, name="root",
                                         terminator=self._terminator(),
                                         on_event=self._on_supervisor_event,
                                         on_give_up=self._root_gave_up)
        for name, layout in self.layouts.items():
            self._attachable.update(layout.placement.ring.shard_ids)
            spec = SupervisionSpec.from_dict(layout.spec.supervision or None,
                                             path=f"sources[{name}].supervision")
            sup = Supervisor.with_spec(
                [self._child(sid) for sid in layout.placement.ring.shard_ids], spec, name=name,
                terminator=self._terminator(), on_event=self._on_supervisor_event)
            self.supervisors[name] = sup
            self.root.add_child(sup.as_child(), start=False)

    def _terminator(self) -> CallbackTerminator:
        def stop(handle: ShardHandle, timeout: float) -> bool:
            try:
                handle.control("close", timeout=timeout).result()
            except MemclusterError:
                return False     # then killed
            _kill(handle.actor)
            return True

        return CallbackTerminator(stop, lambda handle: _kill(handle.actor))

    def _child(self, sid: str) -> ChildSpec:
        return ChildSpec(sid, lambda: self._start_shard(sid), "permanent",
                         shutdown_timeout=float(self.health["ping_timeout"]) * 4)

    def _on_supervisor_event(self, ev: SupervisorEvent) -> None:
        level = logging.WARNING if ev.kind in ("gave_up", "intensity_exceeded", "escalated",
                                                "start_failed", "exited") else logging.INFO
        event(log, f"supervisor.{ev.kind}", level=level, supervisor=ev.supervisor,
              child=ev.child, **{k: v for k, v in ev.detail.items() if k != "children"})
        if ev.kind == "gave_up" and ev.supervisor in self.layouts:
            sup = self.supervisors[ev.supervisor]
            self.failed[ev.supervisor] = (f"its supervisor gave up: more than {sup.intensity} "
                                          f"restarts in {sup.period:g}s")
        elif ev.kind == "started" and ev.supervisor == "root" and ev.child in self.failed:
            self.failed.pop(ev.child, None)

    def _root_gave_up(self, root: Supervisor) -> None:
        """The root exceeded its intensity: every source fails; the actor exits (Ray restarts
        it and the new incarnation recovers from Redis)."""
        for name in self.layouts:
            self.failed[name] = "the root supervisor gave up"
        event(log, "manager.crash", level=logging.ERROR, cluster=self.cluster,
              reason="root supervisor gave up")
        if self.exit_on_lost_lease:
            os._exit(1)

    # ---- shards ------------------------------------------------------------------------

    def _layout_of(self, sid: str) -> Layout:
        return self.layouts[sid.rsplit("/", 1)[0]]

    def _start_shard(self, sid: str) -> ShardHandle:
        """A supervisor child's start: first attach (or adopt a pre-spawned shard), later
        replace: kill whatever runs under the name, spawn a new incarnation, hydrate it."""
        with self._lock:
            layout = self._layout_of(sid)
            hydrate = layout.placement.replicas > 1
            if sid in self._attachable:
                self._attachable.discard(sid)
                handle = self.handles.get(sid) or self._attach(sid, layout)
                return handle or self._spawn(sid, layout, hydrate=hydrate)
            old = self.handles.pop(sid, None)
            if old is not None:
                _kill(old.actor)
            name = names.shard_actor_name(self.cluster, sid)
            _kill_by_name(name, self.namespace)
            _wait_name_free(name, self.namespace)
            self.restarts += 1
            source = sid.rsplit("/", 1)[0]
            self.restarts_by_source[source] = self.restarts_by_source.get(source, 0) + 1
            event(log, "shard.restart", level=logging.WARNING, shard=sid,
                  restarts=self.restarts)
            return self._spawn(sid, layout, hydrate=hydrate)

    def _attach(self, sid: str, layout: Layout) -> ShardHandle | None:
        """Re-attach to a live shard actor (a restarted manager); None if there is none."""
        import ray

        name = names.shard_actor_name(self.cluster, sid)
        try:
            actor = ray.get_actor(name, namespace=self.namespace)
        except ValueError:
            return None
        handle = ShardHandle(actor, sid, name, timeout=float(self.health["call_timeout"]))
        try:
            info = handle.control("set_ring", self.epoch, layout.placement.ring.version).result()
        except (ShardDied, Timeout, ShardUnavailable):
            _kill(actor)                      # wedged or dying: replace it
            _wait_name_free(name, self.namespace)
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
        name = names.shard_actor_name(self.cluster, sid)
        version = ring_version or layout.placement.ring.version
        interval = float(self.health["interval"])
        heartbeat = {"redis_url": self.redis_url, "cluster": self.cluster,
                     "interval": interval,
                     "ttl_ms": int(interval * int(self.health["misses"]) * 1000)}
        actor = shard_actor_class().options(
            name=name, namespace=self.namespace, lifetime="detached").remote(
            layout.spec.backend, layout.spec.opts, prefix=name, shard_id=sid,
            ring_version=version, epoch=self.epoch or 0, hydrating=hydrate,
            incarnation=uuid.uuid4().hex[:12], heartbeat=heartbeat)
        handle = ShardHandle(actor, sid, name, timeout=float(self.health["call_timeout"]))
        info = handle.control("open").result()
        self.handles[sid] = handle
        self.misses[sid] = 0
        self.incarnations[sid] = info["incarnation"]
        if hydrate:
            self._start_hydration(sid, handle, info["incarnation"], layout.placement)
        event(log, "shard.started", shard=sid, hydrating=hydrate)
        return handle

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
                    self._copy_into(sid, handle, src, hyd, placement)
                    hyd.source_done(src)
                handle.control("finish_hydration", self.epoch).result()
                hyd.finish()
                event(log, "shard.hydrated", shard=sid, copied=hyd.copied)
                return
            except (ShardDied, FencedOut):
                break                     # the shard is replaced, or we are deposed
            except MemclusterError as exc:  # a slow or restarting peer: try again shortly
                event(log, "shard.hydration_retry", level=logging.WARNING, shard=sid,
                      error=type(exc).__name__)
                self._stop.wait(self.tick)
        hyd.abandon()

    def _copy_into(self, sid: str, handle: ShardHandle, src: str, hyd: Hydration,
                   placement: Placement) -> None:
        """Copy the records of `src` that `sid` should hold (a dead `src` is skipped: its
        keys' other replicas are read too)."""
        cursor = None
        while True:
            source = self.handles.get(src)
            if source is None:
                return
            try:
                records, cursor = source.control("export", cursor, _PAGE).result()
            except (ShardDied, Timeout):
                return
            mine = [r for r in records if sid in placement.preference(r.key, r.namespace)]
            if mine:
                handle.control("accept_handoff", self.epoch, mine).result()
            hyd.page_copied(len(mine))
            if cursor is None:
                return

    def _copy(self, sources: Iterable[str], targets: Callable[[Record], list[str]]
              ) -> dict[str, set[tuple[str, str]]]:
        """Export every record of `sources`; hand each to `targets(record)`. -> keys per target."""
        copied: dict[str, set[tuple[str, str]]] = {}
        for src in sources:
            cursor = None
            while True:
                try:
                    records, cursor = self.handles[src].control("export", cursor, _PAGE).result()
                except (ShardDied, Timeout):
                    break  # its replicas hold the same records
                batches: dict[str, list[Record]] = {}
                for r in records:
                    for t in targets(r):
                        batches.setdefault(t, []).append(r)
                pendings = [(t, self.handles[t].control("accept_handoff", self.epoch, recs))
                            for t, recs in batches.items()]
                for t, pending in pendings:
                    pending.result()
                    copied.setdefault(t, set()).update(
                        (r.namespace, r.key) for r in batches[t])
                if cursor is None:
                    break
        return copied

    def check_shards(self) -> list[str]:
        """Health-check every supervised shard; report the dead ones to their supervisor.

        Dead means: `ShardDied` (ActorDiedError), `misses` consecutive pings unanswered
        within `ping_timeout` (a frozen process), or its Redis heartbeat lapsed. The
        source's supervisor decides what happens (restart per strategy, or give up).
        -> the shard ids reported dead.
        """
        if not self.leading or self.root is None:
            return []
        with self._lock:
            timeout = float(self.health["ping_timeout"])
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
                    if self.misses[sid] >= int(self.health["misses"]):
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
                sup = self.supervisors[sid.rsplit("/", 1)[0]]
                sup.child_exited(sid, "crash", handle=handle)
            return [sid for sid, _, _ in dead]

    def _supervised(self, sid: str) -> bool:
        sup = self.supervisors.get(sid.rsplit("/", 1)[0])
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
        interval = float(self.health["interval"])
        ttl = interval * int(self.health["misses"])
        try:
            if self._membership is None:
                import redis as redis_py

                from memcluster.cluster.coordinator import Coordinator

                fast = float(self.health["ping_timeout"])
                client = redis_py.Redis.from_url(self.redis_url, socket_timeout=fast,
                                                 socket_connect_timeout=fast)
                self._membership = Coordinator(client, self.cluster).membership
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

    def restart_shard(self, sid: str) -> None:
        """Report `sid` crashed to its supervisor (which restarts it per its strategy)."""
        self._fence()
        with self._lock:
            handle = self.handles.get(sid)
            self.supervisors[sid.rsplit("/", 1)[0]].child_exited(sid, "crash", handle=handle)


    # ---- what callers ask ----------------------------------------------------------------

    def topology(self) -> dict[str, Any]:
        """What a client needs to route by itself: rings, N, W, shard actor names."""
        self.ready()
        return {"cluster": self.cluster, "namespace": self.namespace, "epoch": self.epoch,
                "default": self.default_source,
                "sources": {n: lay.describe() for n, lay in self.layouts.items()},
                "shards": {sid: h.name for sid, h in self.handles.items()},
                "failed": dict(self.failed),
                "call_timeout": float(self.health["call_timeout"])}

    def execute(self, source: str, ops: list[Op]) -> list[Any]:
        """Route `ops` for a caller without shard handles (the two-hop path)."""
        self._available(source)
        return self.router.execute(source, ops)

    def _available(self, source: str) -> Layout:
        """The source's layout, or `SourceUnavailable` if its supervisor gave up."""
        layout = self._source(source)
        why = self.failed.get(source)
        if why is not None:
            raise SourceUnavailable(f"source {source!r} is failed: {why}")
        return layout

    def export(self, source: str, cursor: str | None, limit: int
               ) -> tuple[list[Record], str | None]:
        """A page of every record of `source`, each once (from its first live holder)."""
        placement = self._available(source).placement
        ids = placement.ring.shard_ids
        index, _, inner = (cursor or "0:").partition(":")
        i = int(index)
        while i < len(ids):
            sid = ids[i]
            records, nxt = self.handles[sid].control("export", inner or None, limit).result()
            keep = [r for r in records if placement.preference(r.key, r.namespace)[0] == sid]
            if nxt is None:
                i, inner = i + 1, ""
            else:
                inner = nxt
            if keep or i >= len(ids):
                return keep, (f"{i}:{inner}" if i < len(ids) else None)
        return [], None

    def _source(self, source: str) -> Layout:
        try:
            return self.layouts[source]
        except KeyError:
            raise UnknownSource(f"unknown source {source!r}; configured: "
                                f"{', '.join(self.layouts)}") from None

    def status(self) -> dict[str, Any]:
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
        return {"supervision": self._supervision_status(), "failed": dict(self.failed),
                "cluster": self.cluster, "leader": self.holder, "epoch": self.epoch,
                "leading": self.leading, "restarts": self.restarts,
                "sources": {n: {**lay.describe(),
                                "restarts": self.restarts_by_source.get(n, 0)}
                            for n, lay in self.layouts.items()},
                "shards": shards, "redis": self.redis_health(),
                "metrics": self.metrics_address()}

    def _supervision_status(self) -> dict[str, Any]:
        """Per source: running / failed, its strategy and restarts in the current window."""
        out: dict[str, Any] = {}
        for name, sup in self.supervisors.items():
            out[name] = {"state": "failed" if name in self.failed else sup.state,
                         "reason": self.failed.get(name), "strategy": sup.strategy,
                         "intensity": sup.intensity, "period": sup.period,
                         "restarts_in_window": sup.restarts_in_window()}
        return out

    # ---- operations: Redis health and /metrics ---------------------------------------------

    def redis_health(self) -> dict[str, Any]:
        """The coordinator's Redis, password masked, and whether it answers now."""
        from memcluster.secrets import redact_url

        out: dict[str, Any] = {"url": redact_url(self.redis_url), "ok": False}
        try:
            out["ok"] = bool(self._coord is not None and self._coord.ping())
        except MemclusterError as exc:
            out["error"] = type(exc).__name__
        return out

    def metrics_address(self) -> str | None:
        """`host:port` where this manager serves /metrics, or None when off."""
        if self._metrics_server is None:
            return None
        import socket

        return f"{socket.gethostbyname(socket.gethostname())}:{self._metrics_server.server_port}"

    def _start_metrics(self) -> None:
        """Serve /metrics on the spec's `metrics_port` (None: off); a taken port is logged,
        never fatal, because metrics must not stop the manager from supervising."""
        from memcluster.cluster.metrics import ClusterCollector, serve
        from memcluster.manager.config import DEFAULT_METRICS_PORT

        port = getattr(self, "raw_spec", {}).get("metrics_port", DEFAULT_METRICS_PORT)
        if port is None or self._metrics_server is not None:
            return
        try:
            self._metrics_server = serve(ClusterCollector(self.metrics_report), int(port))
            event(log, "metrics.serving", port=int(port))
        except OSError as exc:
            event(log, "metrics.unavailable", level=logging.WARNING, port=port,
                  error=str(exc))

    def metrics_report(self, max_age: float = 2.0) -> dict[str, Any]:
        """What `ClusterCollector` renders: every shard's stats, gathered at most every
        `max_age` seconds (scrapes must not keep the shards' mailboxes busy)."""
        at, cached = self._report_cache
        if cached and time.monotonic() - at < max_age:
            return cached
        status = self.status()
        sources: dict[str, Any] = {}
        for name, lay in self.layouts.items():
            shards = {}
            failures = 0
            for sid in lay.placement.ring.shard_ids:
                st = status["shards"].get(sid) or {"error": "missing"}
                if "error" in st:
                    shards[sid] = {"state": "failed"}
                    continue
                shards[sid] = {k: st.get(k) for k in ("state", "records", "bytes",
                                                      "hydration", "ops")}
                failures += sum(n for (op, outcome), n in (st.get("ops") or {})
                                .get("counts", {}).items()
                                if op == "replicate" and outcome != "ok")
            sources[name] = {"ring_version": lay.placement.ring.version,
                             "restarts": self.restarts_by_source.get(name, 0),
                             "replication_failures": failures, "shards": shards}
        report = {"epoch": self.epoch or 0, "sources": sources}
        self._report_cache = (time.monotonic(), report)
        return report

    # ---- rebalancing -----------------------------------------------------------------------

    def scale(self, source: str, shards: int) -> dict[str, Any]:
        """Change the number of shards of `source`, moving only the keys whose owners change."""

        epoch = self._fence()
        with self._lock:
            layout = self._available(source)
            old = layout.placement
            if isinstance(shards, bool) or not isinstance(shards, int) or shards < 1:
                raise ConfigError(f"shards: must be an int >= 1, got {shards!r}")
            if shards < old.replicas:
                raise ConfigError(f"shards: {source!r} has {old.replicas} replicas, "
                                  f"so it needs at least {old.replicas} shards")
            new_ids = [names.shard_id(source, i) for i in range(shards)]
            if tuple(new_ids) == old.ring.shard_ids:
                return self.status()["sources"][source]
            coord = self._coord
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
            sup = self.supervisors[source]
            olds = list(old.ring.shard_ids)

            def moving(r: Record) -> list[str]:
                rk = routing_key(r.key, r.namespace)
                before = old.ring.preference(rk, old.replicas)
                return [s for s in target.preference(rk, new.replicas) if s not in before]

            try:
                for sid in added:                             # supervised from the start
                    self._spawn(sid, layout, hydrate=False, ring_version=target.version)
                    self._attachable.add(sid)
                    sup.add_child(self._child(sid))
                first = self._copy(olds, moving)              # 1. copy while traffic flows
                self._all(olds, "freeze", epoch)              # 2. writes wait (retried)
                self._crash_point("scale.after_freeze")
                second = self._copy(olds, moving)             # 3. catch up
                for sid, keys in first.items():               #    and drop what was deleted
                    gone = keys - second.get(sid, set())
                    if gone:
                        self.handles[sid].control("drop_keys", epoch, sorted(gone)).result()
                self._all([*olds, *added], "set_ring", epoch, target.version)   # 4. switch
            except InjectedCrash:
                raise
            except BaseException as exc:
                # One old shard on the target is the point of no return (see recovery.py):
                # finish the switch; the shards that failed it are replaced by their
                # supervisor on the target ring.
                if isinstance(exc, FencedOut) or not any(
                        v >= target.version for v in
                        self._probe_ring_versions(olds).values()):
                    self._abort_scale(source, olds, added, epoch, old.ring.version)
                    raise
                event(log, "ring.scale_forced_forward", level=logging.WARNING,
                      source=source, error=type(exc).__name__)
                for sid in [*olds, *added]:
                    with contextlib.suppress(MemclusterError, KeyError):
                        self.handles[sid].control("set_ring", epoch, target.version).result()
            self._crash_point("scale.after_set_ring")
            self.layouts[source] = replace(layout, placement=new)
            self._switch_ring(source, target.version, old.ring.version, epoch)
            self._crash_point("scale.after_switch")
            COORDINATION_RETRY.run(lambda: self._save_shards(source, shards, epoch))
            moved = sum(len(v) for v in second.values())
            for sid in removed:                               # 5. garbage
                self._forget_shard(sid)
            dropped = sum(self._all([s for s in olds if s not in removed], "drop_unowned",
                                    epoch, target, new.replicas))
            event(log, "ring.switched", source=source, version=target.version,
                  shards=shards, moved=moved, dropped=dropped)
            return {"source": source, "ring_version": target.version, "shards": shards,
                    "moved": moved, "dropped": dropped}

    def _abort_scale(self, source: str, olds: list[str], added: list[str], epoch: int,
                     version: int) -> None:
        """A failed scale before the switch: lift the freeze, drop the new shards."""
        for sid in olds:
            handle = self.handles.get(sid)
            if handle is not None:
                # dead or wedged: its supervisor replaces it unfrozen
                with contextlib.suppress(MemclusterError):
                    handle.control("set_ring", epoch, version).result()
        for sid in added:
            self._forget_shard(sid)
        event(log, "ring.scale_aborted", level=logging.WARNING, source=source)

    def _forget_shard(self, sid: str) -> None:
        """Stop supervising `sid` and kill it (it left the ring)."""
        sup = self.supervisors[sid.rsplit("/", 1)[0]]
        with contextlib.suppress(KeyError):
            sup.remove_child(sid)
        handle = self.handles.pop(sid, None)
        if handle is not None:
            _kill(handle.actor)
        self._attachable.discard(sid)
        self.incarnations.pop(sid, None)
        self.hydrations.pop(sid, None)
        self.misses.pop(sid, None)

    def _switch_ring(self, source: str, version: int, expected: int, epoch: int) -> None:
        """Move the Redis pointer, waiting out a Redis outage (a reply lost to the outage
        after the switch applied shows up as the pointer already at `version`)."""
        def switch() -> None:
            try:
                self._coord.ring_store.switch(source, version, expected=expected, epoch=epoch)
            except VersionConflict as exc:
                if exc.actual != version:
                    raise

        COORDINATION_RETRY.run(switch)

    def _all(self, sids: Iterable[str], method: str, *args: Any) -> list[Any]:
        pendings = [self.handles[s].control(method, *args) for s in sids]
        return [p.result() for p in pendings]

    def _save_shards(self, source: str, shards: int, epoch: int) -> None:
        raw = dict(self.raw_spec)
        raw["sources"] = [{**s, "shards": shards} if s["name"] == source else s
                          for s in raw["sources"]]
        self._coord.save_spec(raw, epoch)
        self.raw_spec = raw
        layout = self.layouts[source]
        self.layouts[source] = replace(layout, spec=replace(layout.spec, shards=shards))

    # ---- teardown ------------------------------------------------------------------------

    def shutdown(self, destroy: bool = True) -> dict[str, Any]:
        """Stop supervising, kill every shard and (with `destroy`) remove the Redis keys."""

        self._stop.set()
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()
            self._metrics_server = None
        with self._lock:
            killed = 0
            for handle in self.handles.values():
                killed += _kill(handle.actor)
            self.handles.clear()
            removed = 0
            if self._coord is not None:
                if destroy:
                    removed = self._coord.destroy()
                elif self._lease is not None:
                    self._lease.release()
            return {"shards_killed": killed, "redis_keys_removed": removed}


def _kill(actor: Any) -> bool:
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
        return _kill(ray.get_actor(name, namespace=namespace))
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


class _ManagerTopology:
    """The manager's own view for its router: its layouts and its shard handles."""

    def __init__(self, manager: ManagerCore) -> None:
        self.manager = manager

    def placement(self, source: str) -> Placement:
        return self.manager._source(source).placement

    def link(self, sid: str) -> Any:
        handle = self.manager.handles.get(sid)
        if handle is None:  # being replaced right now
            return Done(error=ShardUnavailable(f"shard {sid} is being replaced"))
        return handle

    def refresh(self, source: str, error: BaseException) -> None:
        return None  # the manager's layouts are the truth

    def forget(self, sid: str) -> None:
        return None  # check_shards replaces dead shards


def manager_actor_class() -> Any:
    """`ManagerCore` as a Ray actor class: detached, restarted forever, concurrent calls."""
    import ray

    return ray.remote(num_cpus=0, max_restarts=-1, max_concurrency=32)(ManagerCore)
