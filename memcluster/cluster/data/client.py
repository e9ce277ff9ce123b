"""The cluster client: `connect(name)` -> `ClusterMemory`, every memory method, one hop.

Core types: `ClusterMemory` (a `MemorySurface`, so store/retrieve/.../tools/call_tool and
the async `a*` twins are the very same code as the local `MemoryManager`'s) and
`ClientDirectory` (the client's cache of rings and shard handles). The client asks the
manager actor once for the directory, then calls shards directly with the shared `Router`:
a single op is one `apply_batch` call to its primary (plus the replicas' copy for
N > 1); `*_many` are grouped by shard, one call per shard, all in parallel. A `StaleRing`
answer or a hint on the cluster's pub/sub channel marks the directory stale, and the next
routing attempt re-reads it; a dead shard's handle is dropped and looked up again by name
once the manager has replaced it. Writes carry an operation id, so a retry after
`ActorUnavailableError` is applied once.

Every call to the manager actor goes through `session.ManagerHandle`, which turns Ray's errors into
ours: while Ray restarts the manager (`ActorUnavailableError`, `ActorDiedError`) the
caller sees `SourceUnavailable`, and a call past its deadline `Timeout` — both transient,
so the router's `Retry` waits for the new incarnation instead of leaking Ray's types.
The directory is re-read inside a routing attempt (not in the retry hook), so that a
failed re-read is one more retried attempt rather than the end of the operation.

The async twins (`astore`, ...) go through a `Coalescer`: every request made in one
event-loop tick becomes one router call per source (one Ray call per shard), identical
reads are sent once, per-key order is kept and a cancelled request is dropped if it was
not sent yet. The sync methods stay one direct hop with nothing added.

`via_manager=True` sends every batch through the manager actor instead (two hops): for
callers that should not hold shard handles, and for the benchmark that compares both.
The rejected alternative, always routing through the manager, doubles latency and makes
one actor the throughput ceiling of the whole cluster.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from memcluster.cluster import names, session
from memcluster.cluster.data.coalescer import Coalescer
from memcluster.cluster.data.handle import ShardHandle
from memcluster.cluster.data.local import MissingShard
from memcluster.cluster.data.placement import Placement
from memcluster.cluster.data.ring import Ring
from memcluster.cluster.data.router import DEFAULT_RETRY, Router
from memcluster.cluster.retry import Retry
from memcluster.errors import (
    MemclusterError,
    SourceUnavailable,
    StaleRing,
    UnknownSource,
)
from memcluster.manager.surface import MemorySurface
from memcluster.model import Record
from memcluster.ops import Op


class ClientDirectory:
    """The client's cached directory: placements from the manager, shard handles by name."""

    def __init__(self, cluster: str, manager: session.ManagerHandle, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.cluster = cluster
        self.namespace = names.ray_namespace(cluster)
        self.manager = manager
        self._lock = threading.Lock()
        self._handles: dict[str, ShardHandle] = {}
        self.calls = 0  # shard calls made (one per shard per routing phase)
        self.info: dict[str, Any] = {}
        self._placements: dict[str, Placement] = {}
        self._clock = clock
        self._reloaded_at = 0.0
        self._stale = False  # set by StaleRing or a ring hint: re-read before routing
        self.reload()

    def _timeout(self) -> float:
        return float(self.info.get("call_timeout", 10.0))

    def reload(self, timeout: float | None = None) -> None:
        """Re-read placements from the manager (SourceUnavailable/Timeout if it is down)."""
        self._stale = False
        try:
            info = self.manager.call("routing_table", timeout=timeout)
        except BaseException:
            self._stale = True
            raise
        placements = {}
        for name, src in info["sources"].items():
            old = self._placements.get(name)
            ring = old.ring if old and old.ring.version == src["ring"]["version"] else \
                Ring.from_dict(src["ring"])
            placements[name] = Placement(name, ring, src["replicas"], src["write_quorum"],
                                         src.get("read_quorum", 1))
        with self._lock:
            self.info = info
            self._placements = placements

    def placement(self, source: str) -> Placement:
        if self._stale:  # inside the router's attempt: a failed re-read is retried
            self.reload(timeout=self._timeout())
        try:
            placement = self._placements[source]
        except KeyError:
            raise UnknownSource(f"unknown source {source!r}") from None
        why = self.info.get("failed", {}).get(source)
        if why is not None:  # its supervisor gave up (see the manager's status)
            raise SourceUnavailable(f"source {source!r} is failed: {why}")
        return placement

    def link(self, sid: str) -> Any:
        self.calls += 1  # the router asks for a link once per call it makes
        handle = self._handles.get(sid)
        if handle is not None:
            return handle
        import ray

        name = names.shard_actor_name(self.cluster, sid)
        try:
            actor = ray.get_actor(name, namespace=self.namespace)
        except ValueError:
            return MissingShard(sid)
        handle = ShardHandle(actor, sid, name, timeout=self.info.get("call_timeout", 30.0))
        self._handles[sid] = handle
        return handle

    def refresh(self, source: str, error: BaseException) -> None:
        if isinstance(error, StaleRing):
            current = getattr(error, "current", None)
            placement = self._placements.get(source)
            if placement is None or current is None or current > placement.ring.version:
                self._stale = True

    def forget(self, sid: str) -> None:
        self._handles.pop(sid, None)
        now = self._clock()
        if now - self._reloaded_at >= 1.0:  # a dead shard may mean a failed source: re-read
            self._reloaded_at = now
            stale = self._stale
            try:
                self.reload(timeout=self._timeout())
            except MemclusterError:  # the manager may be restarting: keep routing on the
                self._stale = stale  # cached ring (a StaleRing answer says if it is old)

    def on_hint(self, hint: dict[str, Any]) -> None:
        """A ring changed (pub/sub): the next operation re-reads (no Ray call here)."""
        if hint.get("kind") in ("ring", "resubscribed"):
            self._stale = True


class ClusterMemory(MemorySurface):
    """Every memory method against a running cluster (see the module docstring)."""

    def __init__(self, name: str, *, ray_address: str | None = None,
                 via_manager: bool = False, retry: Retry | None = None,
                 redis_url: str | None = None) -> None:
        self.name = names.check_cluster_name(name)
        session.join(name, ray_address)
        self._manager = session.ManagerHandle.find(name)
        self.manager = self._manager.actor
        self.via_manager = via_manager
        self.directory = ClientDirectory(name, self._manager)
        self.router = Router(self.directory, retry=retry or DEFAULT_RETRY)
        self.coalescer = Coalescer(self._execute)
        self._hints: Any = None
        if redis_url is not None:
            from memcluster.cluster.coord.coordinator import Coordinator

            self._hints = Coordinator(redis_url, name).subscribe_hints(self.directory.on_hint)

    def __repr__(self) -> str:
        return f"ClusterMemory({self.name!r})"

    def _source_names(self) -> list[str]:
        return list(self.directory.info["sources"])

    def _default_source_name(self) -> str | None:
        return self.directory.info.get("default")

    def _describe(self) -> dict[str, dict[str, Any]]:
        return self.status()["sources"]

    def _execute(self, source: str, ops: list[Op]) -> list[Any]:
        if self.via_manager:
            return self._manager.call("execute", source, ops)
        return self.router.execute(source, ops)

    async def _aexecute(self, source: str, ops: list[Op]) -> list[Any]:
        if self.via_manager:
            return await self._manager.acall("execute", source, ops)
        return await self.coalescer.submit(source, ops)

    @property
    def shard_calls(self) -> int:
        """How many shard calls this client has made (sync and async)."""
        return self.directory.calls

    def _export(self, source: str, cursor: str | None, limit: int
                ) -> tuple[list[Record], str | None]:
        return self._manager.call("export", source, cursor, limit)

    def status(self) -> dict[str, Any]:
        return self._manager.call("status")

    def close(self) -> None:
        self.coalescer.close()
        if self._hints is not None:
            self._hints.stop()
            self._hints = None


def connect(name: str, ray_address: str | None = None, **kwargs: Any) -> ClusterMemory:
    """Attach to the running cluster `name` from any process, Ray job, task or actor."""
    return ClusterMemory(name, ray_address=ray_address, **kwargs)
