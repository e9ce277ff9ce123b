"""The manager actor: leads a cluster, owns its layouts, and answers the cluster's callers.

Core types: `ClusterManager` (the logic, a plain class) and `manager_actor_class()` (the same
class made a detached Ray actor, named `<cluster>/manager`, `max_restarts=-1`, in one
place). On start the manager campaigns for the cluster's lease in Redis (the fencing
epoch it gets is carried by every control call, and shards refuse older epochs, so two
managers never both act), loads the spec and the rings from Redis (or stores the ones it
was given), finishes any rebalance its predecessor was interrupted in, then starts the
supervision tree, which re-attaches to live shards by name and creates missing ones. A
daemon thread renews the lease; another calls `check_shards()` each tick.

The manager is the owner and the front door; each concern lives in its own module:
  * `layout` — `Layout`/`layout_for`: a source's spec and placement, a frozen value.
  * `shard_tree` — `ShardTree`: the OTP tree over the shards (attach, spawn, hydrate,
    health checks, restarts).
  * `rebalance` — `Rebalancer`: `scale` and the recovery of an interrupted scale;
    `inject_fault(point)` crashes the manager at a named step of it, for the tests.
  * `handoff` — the export/accept page loops that rebalance and hydration share.
The collaborators get the manager itself through a narrow Protocol (`TreeHost`,
`RebalanceHost`) that states what they read and write. The rejected alternative, mixins
that each add methods to `ClusterManager`, keeps one object with every field of every
concern and no statement of which concern touches what.

Data operations sent to the manager (`execute`) run through the same `Router` as smart
clients use; it is the slow path (two hops) for callers that cannot hold shard handles.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Mapping
from typing import Any

from memcluster import logs
from memcluster.cluster import names
from memcluster.cluster.control.layout import Layout, layout_for
from memcluster.cluster.control.rebalance import FAULT_POINTS, InjectedCrash, Rebalancer
from memcluster.cluster.control.shard_tree import ShardTree
from memcluster.cluster.data.handle import Done
from memcluster.cluster.data.placement import Placement
from memcluster.cluster.data.ring import Ring
from memcluster.cluster.data.router import Router
from memcluster.errors import (
    ConfigError,
    FencedOut,
    MemclusterError,
    NotFound,
    ShardUnavailable,
    SourceUnavailable,
    Timeout,
    UnknownSource,
)
from memcluster.logs import event, get_logger
from memcluster.model import Record
from memcluster.ops import Op

log = get_logger("cluster.manager")


def _tree_field(name: str) -> Any:
    """A read-only manager attribute that is the shard tree's field `name` (kept on the
    manager because tests and operators read `core.handles`, `core.failed`, ...)."""
    return property(lambda self: getattr(self.tree, name),
                    doc=f"The shard tree's `{name}` (see `ShardTree`).")


class ClusterManager:
    """The manager's logic (see the module docstring). Thread-safe: Ray calls it concurrently."""

    root = _tree_field("root")
    supervisors = _tree_field("supervisors")
    failed = _tree_field("failed")
    hydrations = _tree_field("hydrations")
    handles = _tree_field("handles")
    misses = _tree_field("misses")
    incarnations = _tree_field("incarnations")
    restarts = _tree_field("restarts")
    restarts_by_source = _tree_field("restarts_by_source")

    def __init__(self, cluster: str, redis_url: str, spec: Mapping[str, Any] | None = None, *,
                 lease_ttl_ms: int | None = None, tick: float | None = None,
                 autostart: bool = True, exit_on_lost_lease: bool = False,
                 root_supervision: Mapping[str, Any] | None = None,
                 env: Mapping[str, str] | None = None) -> None:
        from memcluster.config import DEFAULT_HEALTH

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
        self.holder = f"manager-{uuid.uuid4().hex[:8]}"
        self.layouts: dict[str, Layout] = {}
        self.raw_spec: dict[str, Any] = {}
        self._metrics_server: Any = None
        self._report_cache: tuple[float, dict[str, Any]] = (0.0, {})
        self.epoch: int | None = None
        self.error: BaseException | None = None
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.RLock()   # layout changes: scale, restarts, shutdown
        self.coord: Any = None           # the Coordinator, connected by the campaign
        self._lease: Any = None
        self._thread: threading.Thread | None = None
        self._faults: set[str] = set()                # test hooks: see inject_fault()
        self.tree = ShardTree(self, lock=self._lock, stop=self._stop,
                              root_supervision=root_supervision)
        self.rebalancer = Rebalancer(self, self.tree, self._crash_point)
        self.router = Router(ManagerDirectory(self))
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
        from memcluster.cluster.coord.coordinator import Coordinator

        os.environ.update(self.env)
        if self.exit_on_lost_lease:  # in its own actor process: JSON/level from env, redacted
            logs.configure(os.environ.get("MEMCLUSTER_LOG_LEVEL", "INFO"))
        try:
            self.coord = Coordinator(self.redis_url, self.cluster)
            lease = self.coord.lease(self.holder, ttl_ms=self.lease_ttl_ms)
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
        from memcluster.config import load_config

        coord = self.coord
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
        unclean = [name for name in list(self.layouts) if self.rebalancer.reconcile(name)]
        root = self.tree.build()
        root.start()   # attaches to live shards (no data moves), spawns missing ones
        for name in unclean:
            self.rebalancer.collect_garbage(name)

    # ---- fault injection (tests) -------------------------------------------------------

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

    # ---- the shards' health ------------------------------------------------------------

    def check_shards(self) -> list[str]:
        """Health-check every supervised shard; report the dead ones to their supervisor.

        Dead means: `ShardDied` (ActorDiedError), `misses` consecutive pings unanswered
        within `ping_timeout` (a frozen process), or its Redis heartbeat lapsed. The
        source's supervisor decides what happens (restart per strategy, or give up).
        -> the shard ids reported dead.
        """
        if not self.leading or self.tree.root is None:
            return []
        return self.tree.check()

    def restart_shard(self, sid: str) -> None:
        """Report `sid` crashed to its supervisor (which restarts it per its strategy)."""
        self._fence()
        self.tree.report_crash(sid)

    # ---- what callers ask --------------------------------------------------------------

    def routing_table(self) -> dict[str, Any]:
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
        """The cluster as this manager sees it: leadership, sources, shards, supervision."""
        shards = self.tree.shard_status()
        return {"supervision": self.tree.supervision_status(), "failed": dict(self.failed),
                "cluster": self.cluster, "leader": self.holder, "epoch": self.epoch,
                "leading": self.leading, "restarts": self.restarts,
                "sources": {n: {**lay.describe(),
                                "restarts": self.restarts_by_source.get(n, 0)}
                            for n, lay in self.layouts.items()},
                "shards": shards, "redis": self.redis_health(),
                "metrics": self.metrics_address()}

    # ---- operations: Redis health and /metrics -----------------------------------------

    def redis_health(self) -> dict[str, Any]:
        """The coordinator's Redis, password masked, and whether it answers now."""
        from memcluster.secrets import redact_url

        out: dict[str, Any] = {"url": redact_url(self.redis_url), "ok": False}
        try:
            out["ok"] = bool(self.coord is not None and self.coord.ping())
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
        from memcluster.config import DEFAULT_METRICS_PORT
        from memcluster.metrics import ClusterCollector, serve

        port = self.raw_spec.get("metrics_port", DEFAULT_METRICS_PORT)
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
        from memcluster.metrics import OpStats

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
                failures += OpStats.total(st.get("ops"), "replicate", failed=True)
            sources[name] = {"ring_version": lay.placement.ring.version,
                             "restarts": self.restarts_by_source.get(name, 0),
                             "replication_failures": failures, "shards": shards}
        report = {"epoch": self.epoch or 0, "sources": sources}
        self._report_cache = (time.monotonic(), report)
        return report

    # ---- rebalancing -------------------------------------------------------------------

    def scale(self, source: str, shards: int) -> dict[str, Any]:
        """Change the number of shards of `source`, moving only the keys whose owners change
        (how: `memcluster.cluster.control.rebalance`)."""

        epoch = self._fence()
        with self._lock:
            moved = self.rebalancer.scale(self._available(source), shards, epoch)
            return self.status()["sources"][source] if moved is None else moved

    # ---- teardown ----------------------------------------------------------------------

    def shutdown(self, destroy: bool = True) -> dict[str, Any]:
        """Stop supervising, kill every shard and (with `destroy`) remove the Redis keys."""

        self._stop.set()
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()
            self._metrics_server = None
        with self._lock:
            killed = self.tree.kill_all()
            removed = 0
            if self.coord is not None:
                if destroy:
                    removed = self.coord.destroy()
                elif self._lease is not None:
                    self._lease.release()
            return {"shards_killed": killed, "redis_keys_removed": removed}


class ManagerDirectory:
    """The manager's own view for its router: its layouts and its shard handles."""

    def __init__(self, manager: ClusterManager) -> None:
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
    """`ClusterManager` as a Ray actor class: detached, restarted forever, concurrent calls."""
    import ray

    return ray.remote(num_cpus=0, max_restarts=-1, max_concurrency=32)(ClusterManager)


__all__ = ["ClusterManager", "InjectedCrash", "Layout", "layout_for", "manager_actor_class"]
