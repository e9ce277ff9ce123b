"""The shard: one backend instance behind one mailbox, the primary of its keys' writes.

Core types: `ShardCore` (the shard's logic: a plain class, testable without Ray; the Ray
actor wrapping it is `handle.ShardActor`, the in-process one `local.LocalShard`) and
`Peers` (how a primary reaches the other replicas of its keys). It implements the
contract in `contract.py`.

Data path (`apply_batch`): ops apply in arrival order, so a key's primary serialises its
writes, CAS and updates. For a source with N > 1 the primary replicates BEFORE it applies:
it computes each write's record (CAS checked against its committed state), forwards the
records and deletes to the key's other replicas (`Peers`, their `replicate` path, which is
never refused for being a replica), waits until W - 1 of them acknowledged, and only then
installs them locally and answers. So nothing a caller can read from the primary is held
by fewer than W shards, and a write whose replicas did not acknowledge is not applied at
the primary (its result is `QuorumNotReached`). If a replica may hold it anyway (it
acknowledged, or the call failed after it was sent), the write stays *pending* on its
key: the next op on the key (its own retry under the same op id included) first sends
the very same record again and, once W copies hold it, installs it and answers the retry
with it; until then other writes of the key are refused. `settle()` does the same for
every pending key (the manager asks when a ping reports some), so replicas converge even
when nobody writes the key again. So a pending write either takes effect late (exactly
once) or, if the primary dies first, its replacement hydrates it from the replica that
holds it: versions never skip and never fork. A replica holding a HIGHER version than the
primary's record refuses it, and that copy does not count toward W. The rejected
alternative, the client writing the primary and then the replicas, let a reader see a
write on the primary that a crash then lost.

N = 1 skips all that: the batch goes to the backend as is (`MemoryBackend.apply_batch`).

Call-level refusals (stale ring, starting or hydrating, frozen for a rebalance, fenced)
are returned as an exception object instead of raised: Ray wraps raised exceptions in
costly `RayTaskError`s, and these are normal outcomes. Per-op errors (VersionConflict, ...)
come back in the result list. A restarted shard is hydrating: it takes replicas and
deletes from its peers at once, refuses client ops (`ShardRecovering`) until the manager
has copied its keys back, and remembers keys deleted meanwhile so a late handoff cannot
resurrect them. Every control call that changes state carries the manager's fencing epoch.

Threads: the client path, the replica path (a Ray concurrency group of its own, so two
primaries replicating to each other never wait on each other's mailbox) and control calls
share the backend under one lock; the primary never holds it while it waits for replicas.
Keys a shard is primary for are only written by that shard's own client path.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from operator import attrgetter
from typing import Any, Protocol

from memcluster import codec
from memcluster.backends.base import MemoryBackend
from memcluster.backends.registry import create_backend
from memcluster.cluster.data import scan
from memcluster.cluster.data.applied import AppliedOps
from memcluster.cluster.data.contract import EXPORT_PAGE, EXPORT_PAGE_BYTES, ShardLink
from memcluster.cluster.data.placement import Placement
from memcluster.cluster.data.primary import ReplicatingPrimary, Where
from memcluster.errors import (
    FencedOut,
    MemclusterError,
    ShardRecovering,
    ShardUnavailable,
    StaleRing,
)
from memcluster.metrics import OpStats
from memcluster.model import Record
from memcluster.ops import (
    DeleteOp,
    ReplicateOp,
    RetrieveOp,
)

_PAGE = 1000
_READS = frozenset({"retrieve", "exists"})
_KEYED_WRITES = frozenset({"store", "update", "delete"})
_WRITES = frozenset({"store", "update", "delete", "clear"})
_INTERNAL = frozenset({"match_keys", "list_after"})
_kind = attrgetter("kind")


class Peers(Protocol):
    """How a primary reaches the other shards of its source (by shard id)."""

    def link(self, shard_id: str) -> ShardLink: ...

    def forget(self, shard_id: str) -> None:
        """The shard died: resolve it afresh next time."""


class ShardCore(ReplicatingPrimary):
    """One shard (see the module docstring)."""

    def __init__(self, backend: Any, opts: Mapping[str, Any] | None, *, prefix: str,
                 shard_id: str, placement: Placement | None = None, ring_version: int = 1,
                 epoch: int = 0, hydrating: bool = False, incarnation: str | None = None,
                 heartbeat: Callable[[dict[str, Any]], None] | None = None,
                 heartbeat_interval: float = 1.0, replica_timeout: float = 10.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.backend_spec = backend
        self.opts = dict(opts or {})
        self.prefix = prefix
        self.shard_id = shard_id
        self.placement = placement
        self._ring_version = placement.ring.version if placement is not None else ring_version
        self.epoch = epoch
        self.hydrating = hydrating
        self.frozen = False
        self.incarnation = incarnation or f"{time.time():.6f}"
        self.backend: MemoryBackend | None = None
        self.peers: Peers | None = None      # set by whoever runs the shard (N > 1)
        self.replica_timeout = replica_timeout
        self.clock = clock
        self.op_stats = OpStats()
        self._lock = threading.Lock()         # the backend: one caller at a time
        self.applied = AppliedOps()           # op id -> result: a retry applies once
        # Writes short of W that a replica may hold: key -> (record or None for a delete,
        # [(op id, result)] of the ops that made it), finished by `_settle`.
        self._pending: dict[Where, tuple[Record | None, list[tuple[str, Any]]]] = {}
        self._deleted_while_hydrating: set[Where] = set()
        # shard id -> its incarnation now, told by that incarnation's hydration: a
        # primary's replicates from an older incarnation (in flight when it died) are
        # refused, so none lands after its replacement copied this shard.
        self._peer_incarnations: dict[str, str] = {}
        # False while this shard may hold keys its placement does not give it (after a
        # ring switch, a handoff, or a start on stored data); pings report it, and the
        # manager then collects the garbage, so the duty outlives a manager that crashed.
        self._tidy = True
        self.heartbeat = heartbeat
        self.heartbeat_interval = heartbeat_interval
        self._beating = threading.Event()

    @property
    def ring_version(self) -> int:
        return self._ring_version

    # ---- lifecycle ------------------------------------------------------------------

    def open(self) -> dict[str, Any]:
        """Create and open the backend (I/O lives here, not in the constructor)."""
        with self._lock:
            if self.backend is None:
                self.backend = create_backend(self.backend_spec, self.opts, prefix=self.prefix)
                self._tidy = self._empty()
        if self.heartbeat is not None and not self._beating.is_set():
            self._beating.set()
            threading.Thread(target=self._beat, name="memcluster-heartbeat",
                             daemon=True).start()
        return self.ping()

    def _beat(self) -> None:
        """Call the heartbeat on a thread of its own (outside the mailbox), so a frozen or
        wedged process lapses; a failing beat is advisory and only retried next time."""
        while self._beating.is_set() and self.heartbeat is not None:
            with contextlib.suppress(Exception):
                self.heartbeat({"incarnation": self.incarnation, "pid": os.getpid()})
            time.sleep(self.heartbeat_interval)

    def close(self) -> None:
        self._beating.clear()
        with self._lock:
            if self.backend is not None:
                self.backend.close()
                self.backend = None

    def ping(self) -> dict[str, Any]:
        return {"shard_id": self.shard_id, "incarnation": self.incarnation,
                "ring_version": self.ring_version, "epoch": self.epoch,
                "hydrating": self.hydrating, "frozen": self.frozen,
                "pending": len(self._pending), "tidy": self._tidy, "pid": os.getpid()}

    def _empty(self) -> bool:
        return self.backend is None or not self.backend.export(limit=1)[0]

    # ---- data path: client ops ---------------------------------------------------------

    def apply_batch(self, ring_version: int, ops: Sequence[Any]) -> list[Any] | MemclusterError:
        """Apply `ops` in order; per-op errors in the list, call-level refusals returned."""
        refusal = self._refusal(ring_version, ops)
        if refusal is not None:
            return refusal
        if any(op.kind in _INTERNAL for op in ops):
            with self._lock:
                return [self._apply_one(op) for op in ops]
        placement = self.placement
        if placement is not None and placement.replicas > 1 and any(
                op.kind in _KEYED_WRITES for op in ops):
            return self._apply_replicated(ops, placement)
        start = time.perf_counter()
        with self._lock:
            if self.applied.any_of(ops):
                return [self._apply_one(op) for op in ops]
            results = self.backend.apply_batch(ops)  # type: ignore[union-attr]
            self.applied.remember(ops, results)
        self._observe(ops, results, time.perf_counter() - start)
        return results

    def _refusal(self, ring_version: int, ops: Sequence[Any]) -> MemclusterError | None:
        if ring_version < self.ring_version:
            return StaleRing(f"shard {self.shard_id} is on ring {self.ring_version}, "
                             f"caller on {ring_version}", current=self.ring_version)
        if self.backend is None:
            return ShardRecovering(f"shard {self.shard_id} is starting")
        if self.hydrating and any(op.kind != "replicate" for op in ops):
            return ShardRecovering(f"shard {self.shard_id} is hydrating")
        writes = any(op.kind in _WRITES for op in ops)
        if writes and self.frozen:
            return ShardUnavailable(f"shard {self.shard_id} is rebalancing")
        if writes and ring_version > self.ring_version:
            return ShardUnavailable(f"shard {self.shard_id} is still on ring "
                                    f"{self.ring_version}, caller on {ring_version}")
        return None

    # ---- data path: the replica side ----------------------------------------------------

    def replicate_batch(self, ring_version: int, ops: Sequence[Any],
                        sender: tuple[str, str] | None = None) -> list[bool] | MemclusterError:
        """Install what a primary forwards: ReplicateOps (True if this shard now holds that
        version: installed, or an equal copy was already here; False if it holds a newer
        one) and DeleteOps (True). Accepted while hydrating; refused (`FencedOut`) only
        from a `sender` (shard id, incarnation) that a newer incarnation replaced."""
        if sender is not None:
            current = self._peer_incarnations.get(sender[0])
            if current is not None and current != sender[1]:
                return FencedOut(f"shard {sender[0]} incarnation {sender[1]} was replaced")
        if ring_version < self.ring_version:
            return StaleRing(f"shard {self.shard_id} is on ring {self.ring_version}, "
                             f"caller on {ring_version}", current=self.ring_version)
        start = time.perf_counter()
        with self._lock:
            backend = self.backend
            if backend is None:
                return ShardRecovering(f"shard {self.shard_id} is starting")
            out: list[bool] = []
            for op in ops:
                if op.kind == "delete":
                    backend.delete(op)
                    if self.hydrating:
                        self._deleted_while_hydrating.add((op.namespace, op.key))
                    out.append(True)
                elif backend.replicate(op):
                    out.append(True)
                else:   # not installed: an equal copy is an acknowledgement, a newer not
                    held = backend.retrieve(RetrieveOp(op.key, op.namespace))
                    out.append(held is not None and held.version == op.record.version)
        self._observe(ops, [True] * len(ops), time.perf_counter() - start)
        return out

    # ---- bookkeeping ------------------------------------------------------------------

    def _observe(self, ops: Sequence[Any], results: Sequence[Any], seconds: float) -> None:
        """Count a batch by (op kind, outcome) for the metrics; outcome is "ok" or the
        error's class name (a small fixed set), never anything from the key or value."""
        total = len(ops) or 1
        if not any(isinstance(r, MemclusterError) for r in results):  # the usual batch
            for kind, n in Counter(map(_kind, ops)).items():
                self.op_stats.observe(kind, "ok", seconds * n / total, n)
            return
        groups: dict[tuple[str, str], int] = {}
        for op, result in zip(ops, results, strict=False):
            outcome = type(result).__name__ if isinstance(result, MemclusterError) else "ok"
            groups[(op.kind, outcome)] = groups.get((op.kind, outcome), 0) + 1
        for (kind, outcome), n in groups.items():
            self.op_stats.observe(kind, outcome, seconds * n / total, n)

    def _apply_one(self, op: Any) -> Any:
        """One op straight on the backend (caller holds the lock)."""
        op_id = getattr(op, "op_id", None)
        if op_id is not None and op_id in self.applied:
            return self.applied.recall(op)
        try:
            if op.kind == "match_keys":
                return scan.match_keys(self.backend, op)
            if op.kind == "list_after":
                return scan.list_after(self.backend, op)
            result = self.backend.apply(op)  # type: ignore[union-attr]
        except MemclusterError as exc:
            result = exc
        self.applied.remember((op,), (result,))
        return result

    # ---- control path (carries the manager's fencing epoch) ----------------------------

    def _fence(self, epoch: int) -> None:
        if epoch < self.epoch:
            raise FencedOut(f"shard {self.shard_id} has seen epoch {self.epoch}, got {epoch}",
                            epoch=epoch, current=self.epoch)
        self.epoch = epoch

    def _opened(self) -> MemoryBackend:
        if self.backend is None:
            raise ShardRecovering(f"shard {self.shard_id} is not open")
        return self.backend

    def set_placement(self, epoch: int, placement: Placement, force: bool = False
                      ) -> dict[str, Any]:
        """Adopt `placement` unless its ring is older than ours (`force`: even then, for a
        manager putting back a shard that adopted a switch it rolled back); lift a
        rebalance freeze."""
        self._fence(epoch)
        if force or placement.ring.version >= self.ring_version:
            if placement.ring.version != self._ring_version and self._tidy:
                with self._lock:
                    self._tidy = self._empty()
            self.placement = placement
            self._ring_version = placement.ring.version
        self.frozen = False
        return self.ping()

    def freeze(self, epoch: int) -> None:
        """Refuse writes (transiently) while a rebalance copies the last changes."""
        self._fence(epoch)
        self.frozen = True

    def export(self, cursor: str | None = None, limit: int = EXPORT_PAGE,
               max_bytes: int = EXPORT_PAGE_BYTES, fence: tuple[str, str] | None = None
               ) -> tuple[list[Record], str | None]:
        """A page of every live record (all namespaces), at most `limit` records and about
        `max_bytes` encoded bytes (a page over it is asked again, smaller, from the same
        cursor; a single record larger than `max_bytes` still travels alone). `fence`:
        (shard id, incarnation) of the hydrating shard this page is for; replicates from
        its earlier incarnations are refused from now on."""
        if fence is not None:
            self._peer_incarnations[fence[0]] = fence[1]
        with self._lock:
            backend = self._opened()
            while True:
                records, nxt = backend.export(cursor=cursor, limit=limit)
                if limit == 1 or sum(len(codec.encode(r.value)) for r in records) <= max_bytes:
                    return records, nxt
                limit = max(1, limit // 2)

    def accept_handoff(self, epoch: int, records: Sequence[Record]) -> int:
        """Install copied records (keeping higher versions); skip keys deleted meanwhile."""
        self._fence(epoch)
        with self._lock:
            backend = self._opened()
            skip = self._deleted_while_hydrating
            ops = [ReplicateOp(r) for r in records
                   if not skip or (r.namespace, r.key) not in skip]
            if ops and not self.hydrating:   # a rebalance's copy: garbage if it aborts
                self._tidy = False
            return sum(backend.replicate_many(ops)) if ops else 0

    def holds(self, keys: Sequence[tuple[str, str, int]]) -> list[tuple[str, str]]:
        """Of (namespace, key, version)s, those NOT held at that version or newer."""
        with self._lock:
            backend = self._opened()
            held = backend.apply_batch([RetrieveOp(k, ns) for ns, k, _ in keys],
                                       return_exceptions=False)
        return [(ns, k) for (ns, k, v), r in zip(keys, held, strict=True)
                if (r is None and (ns, k) not in self._deleted_while_hydrating)
                or (r is not None and r.version < v)]

    def finish_hydration(self, epoch: int) -> dict[str, Any]:
        self._fence(epoch)
        self.hydrating = False
        self._deleted_while_hydrating.clear()
        return self.ping()

    def drop_unowned(self, epoch: int, placement: Placement) -> int:
        """Delete what this shard no longer holds under `placement` (after a rebalance).
        A placement older than the shard's own ring drops nothing: what it would drop may
        be this shard's under the ring it serves."""
        self._fence(epoch)
        if placement.ring.version < self.ring_version:
            return 0
        with self._lock:
            backend = self._opened()
            gone: list[DeleteOp] = []
            cursor = None
            while True:
                records, cursor = backend.export(cursor=cursor, limit=_PAGE)
                gone.extend(DeleteOp(r.key, r.namespace) for r in records
                            if self.shard_id not in placement.preference(r.key, r.namespace))
                if cursor is None:
                    break
            dropped = backend.delete_many(gone) if gone else 0
            if placement.ring.version == self.ring_version:
                self._tidy = True
            return dropped

    def drop_keys(self, epoch: int, keys: Sequence[tuple[str, str]]) -> int:
        """Delete (namespace, key) pairs handed off earlier but deleted at the source since."""
        self._fence(epoch)
        with self._lock:
            return self._opened().delete_many([DeleteOp(k, ns) for ns, k in keys])

    def stats(self) -> dict[str, Any]:
        """Ping fields plus live records, their encoded bytes (None when the backend does
        not count them), evictions, state and op counters. A backend whose `info()` counts
        its records answers at once; any other is scanned page by page."""
        info: dict[str, Any] = {}
        with self._lock:
            if self.backend is not None:
                info = self.backend.info()
        count, size = info.get("records"), info.get("bytes")
        if not isinstance(count, int):
            count, size, cursor = 0, 0, None
            while self.backend is not None:
                with self._lock:
                    if self.backend is None:
                        break
                    records, cursor = self.backend.export(cursor=cursor, limit=_PAGE)
                count += len(records)
                size += sum(len(codec.encode(r.value)) for r in records)
                if cursor is None:
                    break
        state = "recovering" if self.hydrating else "serving"
        return {**self.ping(), "records": count, "bytes": size,
                "evictions": info.get("evictions", 0), "state": state,
                "hydration": 0.0 if self.hydrating else 1.0, "ops": self.op_stats.snapshot()}


__all__ = ["Peers", "ShardCore"]
