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
copy instead of only for the catch-up.

Data operations sent to the manager (`execute`) run through the same `Router` as smart
clients use; it is the slow path (two hops) for callers that cannot hold shard handles.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from memcluster.backends.registry import backend_name, resolve_backend
from memcluster.cluster import names
from memcluster.cluster.ring import Ring, routing_key
from memcluster.cluster.router import Placement, Router
from memcluster.cluster.shard import ShardHandle, shard_actor_class
from memcluster.errors import (
    ConfigError,
    FencedOut,
    MemclusterError,
    NotFound,
    ShardDied,
    SourceUnavailable,
    Timeout,
    UnknownSource,
)
from memcluster.logs import event, get_logger
from memcluster.model import Record, SourceSpec
from memcluster.ops import Op

log = get_logger("cluster.manager")
_PAGE = 1000
PING_MISSES = 3


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
                 lease_ttl_ms: int = 5000, tick: float = 1.0, autostart: bool = True,
                 exit_on_lost_lease: bool = False) -> None:
        self.cluster = names.check_cluster_name(cluster)
        self.namespace = names.ray_namespace(cluster)
        self.redis_url = redis_url
        self.given_spec = dict(spec) if spec is not None else None
        self.lease_ttl_ms = lease_ttl_ms
        self.tick = tick
        self.exit_on_lost_lease = exit_on_lost_lease
        self.holder = f"manager-{uuid.uuid4().hex[:8]}"
        self.layouts: dict[str, Layout] = {}
        self.handles: dict[str, ShardHandle] = {}
        self.misses: dict[str, int] = {}
        self.restarts = 0
        self.epoch: int | None = None
        self.error: BaseException | None = None
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.RLock()   # layout changes: scale, restarts, shutdown
        self._coord: Any = None
        self._lease: Any = None
        self._thread: threading.Thread | None = None
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
        for layout in self.layouts.values():
            for sid in layout.placement.ring.shard_ids:
                self._attach_or_spawn(sid, layout)

    # ---- shards ------------------------------------------------------------------------

    def _layout_of(self, sid: str) -> Layout:
        return self.layouts[sid.rsplit("/", 1)[0]]

    def _attach_or_spawn(self, sid: str, layout: Layout) -> None:
        import ray

        name = names.shard_actor_name(self.cluster, sid)
        try:
            actor = ray.get_actor(name, namespace=self.namespace)
            handle = ShardHandle(actor, sid, name)
            handle.control("set_ring", self.epoch, layout.placement.ring.version).result()
            self.handles[sid] = handle
        except (ValueError, ShardDied):
            self._spawn(sid, layout, hydrate=layout.placement.replicas > 1)

    def _spawn(self, sid: str, layout: Layout, *, hydrate: bool,
               ring_version: int | None = None) -> ShardHandle:
        name = names.shard_actor_name(self.cluster, sid)
        version = ring_version or layout.placement.ring.version
        actor = shard_actor_class().options(
            name=name, namespace=self.namespace, lifetime="detached").remote(
            layout.spec.backend, layout.spec.opts, prefix=name, shard_id=sid,
            ring_version=version, epoch=self.epoch or 0, hydrating=hydrate)
        handle = ShardHandle(actor, sid, name)
        handle.control("open").result()
        self.handles[sid] = handle
        self.misses[sid] = 0
        if hydrate:
            self._hydrate(sid, layout.placement)
        event(log, "shard.started", shard=sid, hydrated=hydrate)
        return handle

    def _hydrate(self, sid: str, placement: Placement) -> int:
        """Copy to `sid` every record it should hold, from the other shards of its ring."""
        others = [s for s in placement.ring.shard_ids if s != sid and s in self.handles]
        copied = self._copy(others, lambda r: [sid] if sid in placement.preference(
            r.key, r.namespace) else [])
        self.handles[sid].control("finish_hydration", self.epoch).result()
        return sum(len(v) for v in copied.values())

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
        """Ping every shard and replace the dead ones; -> the shard ids replaced.

        The supervision seam: the OTP supervisor takes over this decision later.
        """
        if not self.leading:
            return []
        with self._lock:
            pendings = [(sid, h.control("ping", timeout=2.0)) for sid, h in self.handles.items()]
            dead = []
            for sid, pending in pendings:
                try:
                    pending.result()
                    self.misses[sid] = 0
                except ShardDied:
                    dead.append(sid)
                except MemclusterError:
                    self.misses[sid] = self.misses.get(sid, 0) + 1
                    if self.misses[sid] >= PING_MISSES:
                        dead.append(sid)
            for sid in dead:
                self.restart_shard(sid)
            return dead

    def restart_shard(self, sid: str) -> None:
        """Kill (if needed) and recreate one shard, hydrating it from its replicas."""

        self._fence()
        with self._lock:
            layout = self._layout_of(sid)
            handle = self.handles.pop(sid, None)
            if handle is not None:
                _kill(handle.actor)
            _wait_name_free(names.shard_actor_name(self.cluster, sid), self.namespace)
            self.restarts += 1
            event(log, "shard.restart", level=logging.WARNING, shard=sid,
                  restarts=self.restarts)
            self._spawn(sid, layout, hydrate=layout.placement.replicas > 1)

    # ---- what callers ask ----------------------------------------------------------------

    def topology(self) -> dict[str, Any]:
        """What a client needs to route by itself: rings, N, W, shard actor names."""
        self.ready()
        return {"cluster": self.cluster, "namespace": self.namespace, "epoch": self.epoch,
                "default": self.default_source,
                "sources": {n: lay.describe() for n, lay in self.layouts.items()},
                "shards": {sid: h.name for sid, h in self.handles.items()}}

    def execute(self, source: str, ops: list[Op]) -> list[Any]:
        """Route `ops` for a caller without shard handles (the two-hop path)."""
        self._source(source)
        return self.router.execute(source, ops)

    def export(self, source: str, cursor: str | None, limit: int
               ) -> tuple[list[Record], str | None]:
        """A page of every record of `source`, each once (from its first live holder)."""
        placement = self._source(source).placement
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
        return {"cluster": self.cluster, "leader": self.holder, "epoch": self.epoch,
                "leading": self.leading, "restarts": self.restarts,
                "sources": {n: lay.describe() for n, lay in self.layouts.items()},
                "shards": shards}

    # ---- rebalancing -----------------------------------------------------------------------

    def scale(self, source: str, shards: int) -> dict[str, Any]:
        """Change the number of shards of `source`, moving only the keys whose owners change."""

        epoch = self._fence()
        with self._lock:
            layout = self._source(source)
            old = layout.placement
            if isinstance(shards, bool) or not isinstance(shards, int) or shards < 1:
                raise ConfigError(f"shards: must be an int >= 1, got {shards!r}")
            if shards < old.replicas:
                raise ConfigError(f"shards: {source!r} has {old.replicas} replicas, "
                                  f"so it needs at least {old.replicas} shards")
            new_ids = [names.shard_id(source, i) for i in range(shards)]
            if tuple(new_ids) == old.ring.shard_ids:
                return self.status()["sources"][source]
            target = old.ring.next(new_ids)
            new = replace(old, ring=target)
            coord = self._coord
            coord.ring_store.put_version(source, target.version, target.to_dict(), epoch=epoch)
            added = [s for s in new_ids if s not in old.ring.shard_ids]
            removed = [s for s in old.ring.shard_ids if s not in new_ids]
            for sid in added:
                self._spawn(sid, layout, hydrate=False, ring_version=target.version)

            def moving(r: Record) -> list[str]:
                rk = routing_key(r.key, r.namespace)
                before = old.ring.preference(rk, old.replicas)
                return [s for s in target.preference(rk, new.replicas) if s not in before]

            olds = list(old.ring.shard_ids)
            first = self._copy(olds, moving)                  # 1. copy while traffic flows
            self._all(olds, "freeze", epoch)                  # 2. writes wait (retried)
            second = self._copy(olds, moving)                 # 3. catch up
            for sid, keys in first.items():                   #    and drop what was deleted
                gone = keys - second.get(sid, set())
                if gone:
                    self.handles[sid].control("drop_keys", epoch, sorted(gone)).result()
            self._all([*olds, *added], "set_ring", epoch, target.version)   # 4. switch
            self.layouts[source] = replace(layout, placement=new)
            coord.ring_store.switch(source, target.version, expected=old.ring.version,
                                    epoch=epoch)
            self._save_shards(source, shards, epoch)
            moved = sum(len(v) for v in second.values())
            for sid in removed:                               # 5. garbage
                _kill(self.handles.pop(sid).actor)
            dropped = sum(self._all([s for s in olds if s not in removed], "drop_unowned",
                                    epoch, target, new.replicas))
            event(log, "ring.switched", source=source, version=target.version,
                  shards=shards, moved=moved, dropped=dropped)
            return {"source": source, "ring_version": target.version, "shards": shards,
                    "moved": moved, "dropped": dropped}

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

    def link(self, sid: str) -> ShardHandle:
        return self.manager.handles[sid]

    def refresh(self, source: str, error: BaseException) -> None:
        return None  # the manager's layouts are the truth

    def forget(self, sid: str) -> None:
        return None  # check_shards replaces dead shards


def manager_actor_class() -> Any:
    """`ManagerCore` as a Ray actor class: detached, restarted forever, concurrent calls."""
    import ray

    return ray.remote(num_cpus=0, max_restarts=-1, max_concurrency=32)(ManagerCore)
