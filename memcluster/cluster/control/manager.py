"""The manager actor: leads a cluster, owns its layouts, and answers the cluster's callers.

Core types: `ClusterManager` (the logic, a plain class) and `manager_actor_class()` (the
same class made a detached Ray actor, named `<cluster>/manager`, `max_restarts=-1`, in one
place). On start the manager campaigns for the cluster's lease in Redis with the
`election.campaign` recipe (the fencing epoch it gets is carried by every control call, and
shards refuse older epochs, so two managers never both act); once elected it loads the
spec and the rings from Redis (or stores the ones it was given), finishes any ring switch
its predecessor was interrupted in, then starts the supervision tree, which re-attaches to
live shards by name and creates missing ones on nodes it chooses. Then it health-checks
every shard each tick (and, with `placement.auto_rebalance`, spreads sources onto new
failure domains).

The manager is the owner and the front door; each concern lives in its own module:
  * `layout` — `Layout`/`layout_for`: a source's spec and placement, a frozen value.
  * `shard_tree` — `ShardTree`: the OTP tree over the shards (attach, spawn on a node,
    hydrate, health checks, restarts, moves).
  * `rebalance` — `Rebalancer`: scale, spread over more failure domains, and the recovery
    of an interrupted switch; `inject_fault(point)` crashes the manager at a named step.
  * `assignment` — which node hosts each shard, and the failure-domain report.
  * `runtime` — the seam: Ray actors and nodes (`ActorRuntime`), clock and threads
    (`Scheduler`); the simulator (`tests/sim`) passes its own, and a coordinator factory.
The collaborators get the manager itself through a narrow Protocol (`TreeHost`,
`RebalanceHost`) that states what they read and write.

Data operations sent to the manager (`execute`) run through the same `Router` as smart
clients use; it is the slow path (two hops) for callers that cannot hold shard handles.
Every public method raises only memcluster's typed errors.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from memcluster import logs
from memcluster.cluster import names
from memcluster.cluster.control import report
from memcluster.cluster.control.assignment import target_domain_count
from memcluster.cluster.control.layout import Layout, layout_for
from memcluster.cluster.control.rebalance import FAULT_POINTS, InjectedCrash, Rebalancer
from memcluster.cluster.control.runtime import (
    ActorRuntime,
    RayRuntime,
    Scheduler,
    ThreadScheduler,
)
from memcluster.cluster.control.shard_tree import ShardTree
from memcluster.cluster.data.local import MissingShard
from memcluster.cluster.data.placement import Placement
from memcluster.cluster.data.ring import Ring, spread_domains
from memcluster.cluster.data.router import Router
from memcluster.config import DEFAULT_HEALTH, DEFAULT_METRICS_PORT, PlacementPolicy, load_config
from memcluster.errors import (
    ConfigError,
    FencedOut,
    InternalError,
    MemclusterError,
    NotFound,
    ShardRecovering,
    SourceUnavailable,
    Timeout,
    UnknownSource,
)
from memcluster.logs import event, get_logger
from memcluster.model import Record
from memcluster.ops import Op

log = get_logger("cluster.manager")

CoordinatorFactory = Callable[[float | None], Any]


def _typed(method: Callable[..., Any]) -> Callable[..., Any]:
    """Let only memcluster's typed errors out of a public manager method (a bug becomes
    `InternalError` with its type and first line, logged with its traceback)."""
    @functools.wraps(method)
    def wrapper(self: ClusterManager, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except MemclusterError:
            raise
        except InjectedCrash:
            raise
        except Exception as exc:
            log.exception("manager.%s failed", method.__name__)
            first = (str(exc).splitlines() or [""])[0]
            raise InternalError(f"the manager failed in {method.__name__}: "
                                f"{type(exc).__name__}: {first}") from exc
    return wrapper


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
                 env: Mapping[str, str] | None = None,
                 runtime: ActorRuntime | None = None, sched: Scheduler | None = None,
                 coordinator: CoordinatorFactory | None = None,
                 heartbeats: bool = True) -> None:
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
        self.sched: Scheduler = sched or ThreadScheduler()
        self.runtime: ActorRuntime = runtime or RayRuntime(
            cluster, call_timeout=float(self.health["call_timeout"]))
        self._coordinator = coordinator or self._redis_coordinator
        self._heartbeats = heartbeats
        self.policy = PlacementPolicy()
        self.holder = f"manager-{uuid.uuid4().hex[:8]}"
        self.layouts: dict[str, Layout] = {}
        self.raw_spec: dict[str, Any] = {}
        self.default_source: str | None = None
        self._metrics_server: Any = None
        self._report_cache: tuple[float, dict[str, Any]] = (0.0, {})
        self._domain_warnings: dict[str, tuple[str, ...]] = {}
        self.garbage: set[str] = set()   # sources whose garbage collection must finish
        self.epoch: int | None = None
        self.error: BaseException | None = None
        self._ready = self.sched.event()
        self._stop = self.sched.event()
        self._lock = self.sched.lock()   # layout changes: scale, restarts, shutdown
        self.coord: Any = None           # the Coordinator, connected by the campaign
        self._membership: Any = None
        self._lease: Any = None
        self._faults: set[str] = set()   # test hooks: see inject_fault()
        self.tree = ShardTree(self, lock=self._lock, stop=self._stop,
                              root_supervision=root_supervision)
        self.rebalancer = Rebalancer(self, self.tree, self._crash_point)
        self.router = Router(_ManagerDirectory(self))
        if autostart:
            self.start()

    def _redis_coordinator(self, timeout: float | None) -> Any:
        """A Coordinator on the cluster's Redis (`timeout`: socket timeouts, for checks
        that must not hang on a frozen Redis)."""
        from memcluster.cluster.coord.coordinator import Coordinator

        if timeout is None:
            return Coordinator(self.redis_url, self.cluster)
        import redis as redis_py

        client = redis_py.Redis.from_url(self.redis_url, socket_timeout=timeout,
                                         socket_connect_timeout=timeout)
        return Coordinator(client, self.cluster)

    # ---- start, leadership, the loop ---------------------------------------------------

    def start(self) -> None:
        """Campaign for the lease on a thread of its own, then manage (returns at once)."""
        self.sched.start(self._campaign, "memcluster-manager")

    @_typed
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

    def _campaign(self) -> None:
        """Stand by until the lease is won (`election.campaign`), renew it while leading;
        leading itself runs on another thread so slow work never starves renewals."""
        from memcluster.cluster.coord.election import campaign

        os.environ.update(self.env)
        if self.exit_on_lost_lease:  # in its own actor process: JSON/level from env, redacted
            logs.configure(os.environ.get("MEMCLUSTER_LOG_LEVEL", "INFO"))
        try:
            self.coord = self._coordinator(None)
            lease = self.coord.lease(self.holder, ttl_ms=self.lease_ttl_ms,
                                     clock=self.sched.now)
            campaign(lease, self._elected, self._stop, poll_interval=0.1,
                     on_lost=lambda _lease: self._lost_lease())
        except BaseException as exc:  # reported by ready(); the thread must not die silently
            self.error = exc
            self._ready.set()

    def _elected(self, lease: Any) -> None:
        self._lease = lease
        self.epoch = lease.epoch
        event(log, "manager.elected", cluster=self.cluster, epoch=self.epoch)
        self.sched.start(self._lead, "memcluster-manager-lead")

    def _lead(self) -> None:
        try:
            self._bootstrap()
        except BaseException as exc:  # reported by ready()
            self.error = exc
            self._ready.set()
            return
        self._start_metrics()
        self._ready.set()
        ticks = 0
        while not self._stop.wait(self.tick):
            ticks += 1
            try:
                self.check_shards()
                for source in sorted(self.garbage):
                    with self._lock:
                        self.rebalancer.collect_garbage(source)
                if ticks % 10 == 0 and self.leading and self.epoch is not None:
                    with self._lock:
                        self.rebalancer.repair_coordination(self.epoch)
                if self.policy.auto_rebalance and ticks % 10 == 0:
                    self._auto_rebalance()
            except FencedOut:
                self._lost_lease()
                return
            except InjectedCrash:
                return
            except Exception:  # keep supervising; the next tick tries again
                log.exception("check_shards failed")

    def _lost_lease(self) -> None:
        event(log, "manager.lease_lost", level=logging.WARNING, cluster=self.cluster,
              epoch=self.epoch)
        self._stop.set()
        if self.exit_on_lost_lease:  # let Ray restart us; we campaign again from Redis
            os._exit(1)

    def crash(self, reason: str) -> None:
        """Stop managing for good (the actor exits; Ray restarts it and the new incarnation
        recovers from Redis and re-attaches to the live shards)."""
        event(log, "manager.crash", level=logging.ERROR, cluster=self.cluster, reason=reason)
        self.error = SourceUnavailable(f"the manager of {self.cluster!r} crashed: {reason}")
        self._stop.set()
        if self.exit_on_lost_lease:
            os._exit(1)

    def _fence(self) -> int:
        if not self.leading or self.epoch is None:
            raise FencedOut(f"manager {self.holder} of {self.cluster!r} does not hold the lease")
        return self.epoch

    def _bootstrap(self) -> None:
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
        self.policy = config.placement
        nodes = self.runtime.nodes()
        for src in config.sources:
            found = coord.ring_store.load(src.name)
            if found is None:
                ids = [names.shard_id(src.name, i) for i in range(src.shards)]
                domains = target_domain_count(nodes, self.policy, len(ids))
                ring = Ring(1, ids, domains=spread_domains(ids, domains))
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

    # ---- what the tree needs besides the layouts -----------------------------------------

    def membership(self) -> Any:
        """The membership to judge heartbeats by, on a fast-failing connection."""
        if not self._heartbeats:
            return None
        if self._membership is None:
            self._membership = self._coordinator(float(self.health["ping_timeout"])).membership
        return self._membership

    def heartbeat_for(self, sid: str) -> Callable[[dict[str, Any]], None] | None:
        if not self._heartbeats:
            return None
        from memcluster.cluster.coord.coordinator import cluster_prefix
        from memcluster.cluster.coord.membership import HeartbeatSender

        ttl_ms = int(float(self.health["interval"]) * int(self.health["misses"]) * 1000)
        return HeartbeatSender(self.redis_url, cluster_prefix(self.cluster), sid, ttl_ms)

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
        -> the shard ids reported dead."""
        if not self.leading or self.tree.root is None:
            return []
        return self.tree.check()

    def ping(self) -> str:
        """Liveness for `memcluster up --watch` (answers once this manager exists)."""
        return self.holder

    @_typed
    def restart_shard(self, sid: str) -> None:
        """Report `sid` crashed to its supervisor (which restarts it per its strategy)."""
        self._fence()
        self.tree.report_crash(sid)

    # ---- what callers ask --------------------------------------------------------------

    @_typed
    def routing_table(self) -> dict[str, Any]:
        """What a client needs to route by itself: rings, N, W, shard actor names."""
        self.ready()
        return {"cluster": self.cluster, "namespace": self.namespace, "epoch": self.epoch,
                "default": self.default_source,
                "sources": {n: lay.describe() for n, lay in self.layouts.items()},
                "shards": {sid: names.shard_actor_name(self.cluster, sid)
                           for sid in self.handles},
                "failed": dict(self.failed),
                "call_timeout": float(self.health["call_timeout"])}

    @_typed
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

    @_typed
    def export(self, source: str, cursor: str | None, limit: int
               ) -> tuple[list[Record], str | None]:
        """A page of every record of `source`, each once (from its primary)."""
        placement = self._available(source).placement
        ids = placement.ring.shard_ids
        index, _, inner = (cursor or "0:").partition(":")
        i = int(index)
        while i < len(ids):
            sid = ids[i]
            handle = self.handles.get(sid)
            if handle is None:
                raise ShardRecovering(f"shard {sid} is being replaced; retry the export")
            records, nxt = handle.export(inner or None, limit).result()
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

    @_typed
    def status(self) -> dict[str, Any]:
        """The cluster as this manager sees it: leadership, sources, shards (with their
        node and failure domain), placement warnings, supervision, Redis."""
        shards = self.tree.shard_status()
        return {"supervision": self.tree.supervision_status(), "failed": dict(self.failed),
                "cluster": self.cluster, "leader": self.holder, "epoch": self.epoch,
                "leading": self.leading, "restarts": self.restarts,
                "sources": {n: {**lay.describe(),
                                "restarts": self.restarts_by_source.get(n, 0)}
                            for n, lay in list(self.layouts.items())},
                "placement": self.placement_report(), "shards": shards,
                "manager_node": self.runtime.here(),
                "redis": self.redis_health(), "metrics": self.metrics_address()}

    def placement_report(self) -> dict[str, Any]:
        """Per source, whether its replicas sit in distinct failure domains
        (`report.placement_report`); a new warning is logged once."""
        out = report.placement_report(dict(self.layouts), dict(self.tree.nodes),
                                      self.runtime.nodes(), self.policy)
        for name, rep in out.items():
            warnings = tuple(rep["warnings"])
            if warnings and warnings != self._domain_warnings.get(name):
                for text in warnings:
                    event(log, "placement.warning", level=logging.WARNING, source=name,
                          warning=text)
            self._domain_warnings[name] = warnings
        return out

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
        """What `ClusterCollector` renders (`report.metrics_report`), gathered at most every
        `max_age` seconds (scrapes must not keep the shards' mailboxes busy)."""
        at, cached = self._report_cache
        if cached and self.sched.now() - at < max_age:
            return cached
        out = report.metrics_report(self.status(), self.layouts, self.restarts_by_source,
                                    self.epoch or 0)
        self._report_cache = (self.sched.now(), out)
        return out

    # ---- rebalancing -------------------------------------------------------------------

    @_typed
    def scale(self, source: str, shards: int) -> dict[str, Any]:
        """Change the number of shards of `source`, moving only the keys whose owners change
        (how: `memcluster.cluster.control.rebalance`)."""
        epoch = self._fence()
        with self._lock:
            moved = self.rebalancer.scale(self._available(source), shards, epoch)
            return self.status()["sources"][source] if moved is None else moved

    @_typed
    def rebalance(self) -> dict[str, Any]:
        """Spread every source over the eligible failure domains (see
        `Rebalancer.rebalance`). -> per source, what changed."""
        epoch = self._fence()
        with self._lock:
            return self.rebalancer.rebalance(epoch, self._available)

    def _auto_rebalance(self) -> None:
        """Rebalance when the eligible failure domains outnumber a source's domains."""
        if self.rebalancer.spread_needed():
            event(log, "placement.auto_rebalance", cluster=self.cluster)
            with contextlib.suppress(MemclusterError):
                self.rebalance()

    # ---- teardown ----------------------------------------------------------------------

    @_typed
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
                    with contextlib.suppress(MemclusterError):
                        self._lease.release()
            return {"shards_killed": killed, "redis_keys_removed": removed}


class _ManagerDirectory:
    """The manager's own view for its router: its layouts and its shard handles."""

    def __init__(self, manager: ClusterManager) -> None:
        self.manager = manager

    def placement(self, source: str) -> Placement:
        return self.manager._source(source).placement

    def link(self, sid: str) -> Any:
        handle = self.manager.handles.get(sid)
        if handle is None:  # being replaced right now
            return MissingShard(sid)
        return handle

    def refresh(self, source: str, error: BaseException) -> None:
        return None  # the manager's layouts are the truth

    def forget(self, sid: str) -> None:
        return None  # check_shards replaces dead shards


def manager_actor_class(policy: PlacementPolicy | None = None) -> Any:
    """`ClusterManager` as a Ray actor class: detached, restarted forever, concurrent
    calls, kept on an eligible node by `policy` (by default: a node with CPUs)."""
    import ray

    options = (policy or PlacementPolicy()).actor_options()
    return ray.remote(max_restarts=-1, max_concurrency=32, **options)(ClusterManager)


__all__ = ["ClusterManager", "InjectedCrash", "Layout", "layout_for", "manager_actor_class"]
