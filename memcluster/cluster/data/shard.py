"""The shard: one backend instance behind one mailbox, and the handle that calls it.

Core types: `ShardCore` (the shard's logic, a plain class testable without Ray),
`ShardActor` (the same class made a Ray actor, in exactly one place), `ShardHandle` (the
one object that knows the remote method names and translates Ray's errors into ours) and
`Pending` (an in-flight call).

The contract (riak_core's vnode behaviour, handoff included): apply a batch of ops in
arrival order (`apply_batch`, the fast path; a key's primary therefore serialises its
writes and CAS), `export` for hydration and rebalancing, `accept_handoff` of records
copied in, `drop_unowned` after a ring change, `is_empty`. Every data call carries the
caller's ring version; an older one is refused with `StaleRing(current=...)` so the
caller refreshes. Every control call carries the manager's fencing epoch; an older epoch
is refused, so a deposed manager cannot change anything.

Call-level refusals (stale ring, hydrating, frozen for a rebalance, fenced) are returned
as an exception object instead of raised: Ray wraps raised exceptions in costly
`RayTaskError`s with formatted tracebacks, and these are normal, frequent outcomes. Per-op
errors (VersionConflict, ...) come back in the result list, so one bad op never fails
its neighbours. A restarted shard is `hydrating`: it takes replicas and deletes at once,
but refuses reads and primary writes until the manager has copied its keys back;
keys deleted meanwhile are remembered so a late handoff cannot resurrect them.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import os
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from operator import attrgetter
from typing import Any

from memcluster.backends.base import MemoryBackend
from memcluster.backends.registry import create_backend
from memcluster.cluster.data import wire
from memcluster.errors import (
    FencedOut,
    MemclusterError,
    ShardUnavailable,
    StaleRing,
)
from memcluster.metrics import OpStats
from memcluster.model import Query, Record
from memcluster.ops import ListAfterOp, ListKeysOp, MatchKeysOp, ReplicateOp, SearchOp
from memcluster.query import matches

RECENT_OP_IDS = 10_000
_PAGE = 1000
_HYDRATING_OK = frozenset({"replicate", "delete"})
_WRITES = frozenset({"store", "update", "delete", "clear"})
_kind = attrgetter("kind")


class ShardCore:
    """One shard: a backend scoped to the shard's prefix, its ring version and incarnation."""

    def __init__(self, backend: Any, opts: Mapping[str, Any] | None, *, prefix: str,
                 shard_id: str, ring_version: int = 1, epoch: int = 0,
                 hydrating: bool = False, incarnation: str | None = None,
                 heartbeat: Mapping[str, Any] | None = None) -> None:
        self.backend_spec = backend
        self.opts = dict(opts or {})
        self.prefix = prefix
        self.shard_id = shard_id
        self.ring_version = ring_version
        self.epoch = epoch
        self.hydrating = hydrating
        self.frozen = False
        self.incarnation = incarnation or f"{time.time():.6f}"
        self.backend: MemoryBackend | None = None
        self._recent: dict[str, Any] = {}  # op id -> result, oldest first
        self._deleted_while_hydrating: set[tuple[str, str]] = set()
        self.op_stats = OpStats()
        # {redis_url, cluster, interval, ttl_ms}: beat into Redis membership (advisory).
        self.heartbeat = dict(heartbeat) if heartbeat else None
        self._beating = threading.Event()

    # ---- lifecycle ------------------------------------------------------------------

    def open(self) -> dict[str, Any]:
        """Create and open the backend (I/O lives here, not in the constructor)."""
        if self.backend is None:
            self.backend = create_backend(self.backend_spec, self.opts, prefix=self.prefix)
        if self.heartbeat and not self._beating.is_set():
            self._beating.set()
            threading.Thread(target=self._beat, name="memcluster-heartbeat",
                             daemon=True).start()
        return self.ping()

    def _beat(self) -> None:
        """Heartbeat into Redis membership on a thread of its own (outside the mailbox), so
        a frozen or wedged process lapses there; Redis being down is only logged by omission."""
        from memcluster.cluster.coord.coordinator import Coordinator

        hb = self.heartbeat or {}
        coord = Coordinator(hb["redis_url"], hb["cluster"])
        info = {"incarnation": self.incarnation, "pid": os.getpid()}
        while self._beating.is_set():
            # Redis unreachable: membership is advisory, the next beat retries.
            with contextlib.suppress(MemclusterError):
                coord.membership.heartbeat(self.shard_id, info, ttl_ms=int(hb["ttl_ms"]))
            time.sleep(float(hb["interval"]))

    def close(self) -> None:
        self._beating.clear()
        if self.backend is not None:
            self.backend.close()
            self.backend = None

    def ping(self) -> dict[str, Any]:
        return {"shard_id": self.shard_id, "incarnation": self.incarnation,
                "ring_version": self.ring_version, "epoch": self.epoch,
                "hydrating": self.hydrating, "frozen": self.frozen, "pid": os.getpid()}

    # ---- data path --------------------------------------------------------------------

    def apply_batch(self, ring_version: int, ops: Sequence[Any]) -> list[Any] | MemclusterError:
        """Apply `ops` in order; per-op errors in the list, call-level refusals returned."""
        if ring_version < self.ring_version:
            return StaleRing(f"shard {self.shard_id} is on ring {self.ring_version}, "
                             f"caller on {ring_version}", current=self.ring_version)
        if self.backend is None:
            return ShardUnavailable(f"shard {self.shard_id} is starting")
        if self.hydrating:
            for op in ops:
                if op.kind not in _HYDRATING_OK:
                    return ShardUnavailable(f"shard {self.shard_id} is hydrating")
        if self.frozen:
            for op in ops:
                if op.kind in _WRITES:
                    return ShardUnavailable(f"shard {self.shard_id} is rebalancing")
        backend = self.backend
        first = ops[0].kind if ops else None
        if first in ("match_keys", "list_after") or any(
                op.kind in ("match_keys", "list_after") for op in ops):
            return [self._apply_one(op) for op in ops]
        if self._recent and not self._recent.keys().isdisjoint(
                [getattr(op, "op_id", None) for op in ops]):
            return [self._apply_one(op) for op in ops]
        start = time.perf_counter()
        results = backend.apply_batch(ops)
        self._observe(ops, results, time.perf_counter() - start)
        self._remember(ops, results)
        return results

    def apply_wire(self, ring_version: int, payload: bytes) -> bytes | MemclusterError:
        """`apply_batch` for a batch in the compact wire format (`memcluster.cluster.data.wire`)."""
        out = self.apply_batch(ring_version, wire.decode_ops(payload))
        return out if isinstance(out, MemclusterError) else wire.encode_results(out)

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
        op_id = getattr(op, "op_id", None)
        if op_id is not None and op_id in self._recent:
            done = self._recent[op_id]
            if type(done) is tuple:  # a store's record, kept compact (see `_remember`)
                return Record(op.key, op.value, op.namespace, dict(op.metadata), *done)
            return done
        try:
            if op.kind == "match_keys":
                return self._match_keys(op)
            if op.kind == "list_after":
                return self._list_after(op)
            result = self.backend.apply(op)  # type: ignore[union-attr]
        except MemclusterError as exc:
            result = exc
        self._remember((op,), (result,))
        return result

    def _remember(self, ops: Iterable[Any], results: Iterable[Any]) -> None:
        """Keep the results of ops with an id (at least the last `RECENT_OP_IDS`), so a
        retried op is answered, not applied twice; trimmed in bulk, not per op.

        A store's Record is kept as its (version, created, updated, expires): the rest is
        the retried op's own, and a tuple of numbers is one object the garbage collector
        ignores, where thousands of kept Records (and their dicts) made every full
        collection of the shard slower."""
        hydrating = self.hydrating
        recent = self._recent
        for op, result in zip(ops, results, strict=True):
            if hydrating and op.kind == "delete":
                self._deleted_while_hydrating.add((op.namespace, op.key))
            op_id = getattr(op, "op_id", None)
            if op_id is None or isinstance(result, MemclusterError):
                continue
            if type(result) is Record and op.kind == "store":
                result = (result.version, result.created_at, result.updated_at,
                          result.expires_at)
            recent[op_id] = result
        if len(recent) > 2 * RECENT_OP_IDS:
            self._recent = dict(itertools.islice(recent.items(), len(recent) - RECENT_OP_IDS,
                                                 None))

    def _match_keys(self, op: MatchKeysOp) -> list[tuple[str, str]]:
        backend = self.backend
        assert backend is not None
        q = op.query
        if op.namespace is None:
            found: list[tuple[str, str]] = []
            cursor = None
            while True:
                records, cursor = backend.export(cursor=cursor, limit=_PAGE)
                found.extend((r.namespace, r.key) for r in records if matches(r, q))
                if cursor is None:
                    return found
        if q.text is None and not q.filter:  # keys alone decide: page through list_keys
            keys: list[tuple[str, str]] = []
            cursor = None
            while True:
                page = backend.list_keys(ListKeysOp(op.namespace, q.pattern, _PAGE, cursor))
                keys.extend((op.namespace, k) for k in page.keys)
                if page.cursor is None:
                    return keys
                cursor = page.cursor
        backend.check_query(q)
        out: list[tuple[str, str]] = []
        offset = 0
        while True:
            page_q = Query(text=q.text, pattern=q.pattern, filter=q.filter, limit=_PAGE,
                           offset=offset, order_by="key", min_score=q.min_score)
            records = backend.search(SearchOp(page_q, op.namespace))
            out.extend((r.namespace, r.key) for r in records)
            if len(records) < _PAGE:
                return out
            offset += _PAGE

    def _list_after(self, op: ListAfterOp) -> tuple[list[str], str | None, bool]:
        backend = self.backend
        assert backend is not None
        cursor = op.cursor
        base = cursor  # the cursor of the page holding the first key returned
        out: list[str] = []
        after = op.after
        while True:
            page = backend.list_keys(ListKeysOp(op.namespace, op.pattern, op.limit, cursor))
            if not out:
                base = cursor
            out.extend(k for k in page.keys if after is None or k > after)
            if len(out) >= op.limit or page.cursor is None:
                exhausted = page.cursor is None and len(out) <= op.limit
                return out[:op.limit], base, exhausted
            cursor = page.cursor

    # ---- control path (carries the manager's fencing epoch) ----------------------------

    def _fence(self, epoch: int) -> None:
        if epoch < self.epoch:
            raise FencedOut(f"shard {self.shard_id} has seen epoch {self.epoch}, got {epoch}",
                            epoch=epoch, current=self.epoch)
        self.epoch = epoch

    def set_ring(self, epoch: int, ring_version: int) -> dict[str, Any]:
        """Adopt a ring version (never going back) and lift a rebalance freeze."""
        self._fence(epoch)
        self.ring_version = max(self.ring_version, ring_version)
        self.frozen = False
        return self.ping()

    def freeze(self, epoch: int) -> None:
        """Refuse writes (transiently) while a rebalance copies the last changes."""
        self._fence(epoch)
        self.frozen = True

    def export(self, cursor: str | None = None, limit: int = _PAGE
               ) -> tuple[list[Record], str | None]:
        """A page of every live record under this shard's prefix (all namespaces)."""
        assert self.backend is not None
        return self.backend.export(cursor=cursor, limit=limit)

    def accept_handoff(self, epoch: int, records: Sequence[Record]) -> int:
        """Install copied records (keeping higher versions); skip keys deleted meanwhile."""
        self._fence(epoch)
        assert self.backend is not None
        skip = self._deleted_while_hydrating
        installed = 0
        for record in records:
            if skip and (record.namespace, record.key) in skip:
                continue
            if self.backend.replicate(ReplicateOp(record)):
                installed += 1
        return installed

    def finish_hydration(self, epoch: int) -> dict[str, Any]:
        self._fence(epoch)
        self.hydrating = False
        self._deleted_while_hydrating.clear()
        return self.ping()

    def drop_unowned(self, epoch: int, ring: Any, replicas: int) -> int:
        """Delete what this shard no longer owns under `ring` (garbage after a rebalance)."""
        from memcluster.cluster.data.ring import routing_key
        from memcluster.ops import DeleteOp

        self._fence(epoch)
        assert self.backend is not None
        gone: list[DeleteOp] = []
        cursor = None
        while True:
            records, cursor = self.backend.export(cursor=cursor, limit=_PAGE)
            for r in records:
                if self.shard_id not in ring.preference(routing_key(r.key, r.namespace),
                                                        replicas):
                    gone.append(DeleteOp(r.key, r.namespace))
            if cursor is None:
                break
        return self.backend.delete_many(gone) if gone else 0

    def drop_keys(self, epoch: int, keys: Sequence[tuple[str, str]]) -> int:
        """Delete (namespace, key) pairs handed off earlier but deleted at the source since."""
        from memcluster.ops import DeleteOp

        self._fence(epoch)
        assert self.backend is not None
        return self.backend.delete_many([DeleteOp(k, ns) for ns, k in keys])

    def is_empty(self) -> bool:
        records, _ = self.export(None, 1)
        return not records

    def stats(self) -> dict[str, Any]:
        """Ping fields plus live records, their encoded bytes, state and op counters."""
        from memcluster import codec

        count, size, cursor = 0, 0, None
        while self.backend is not None:
            records, cursor = self.export(cursor, _PAGE)
            count += len(records)
            size += sum(len(codec.encode(r.value)) for r in records)
            if cursor is None:
                break
        state = "recovering" if self.hydrating else "serving"
        return {**self.ping(), "records": count, "bytes": size, "state": state,
                "hydration": 0.0 if self.hydrating else 1.0, "ops": self.op_stats.snapshot()}


# ---- Ray: the class made remote in one place, and the handle ------------------------


class ShardActor(ShardCore):
    """`ShardCore` as it runs in its own actor process."""

    def open(self) -> dict[str, Any]:
        info = super().open()
        # The worker's start-up heap (Ray's own ~100k objects) moves out of the collector's
        # reach: otherwise every full collection rescans it, a ~40% tax on batch throughput.
        gc.freeze()
        return info


def shard_actor_class() -> Any:
    """`ShardActor` as a Ray actor class (imported lazily so the core needs no Ray)."""
    import ray

    # `ping` runs in its own concurrency group: a long batch or export in the mailbox must
    # not look like a dead shard, while a frozen (SIGSTOP) process still misses its pings.
    return ray.remote(num_cpus=0, max_restarts=0, max_concurrency=1,
                      concurrency_groups={"health": 1})(ShardActor)


