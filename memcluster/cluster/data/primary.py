"""The replicating primary's write protocol: stage, replicate, then install.

Core type: `ReplicatingPrimary`, the part of `shard.ShardCore` (its base class) that runs
a batch for a source with N > 1 (`_apply_replicated`): compute each write's record against
committed state (CAS checked), let a bounded backend evict for the new records
(`_make_room`; victims staged as deletes), forward the records and deletes to each key's
other replicas (`Peers`, their `replicate` path), wait until W - 1 acknowledged, then
install locally and answer. A write short of W is not installed: it stays *pending* on
its key when a replica may hold it, and `_settle` sends the same record again (the next
op on the key, its retry, or the manager's `settle()`), so it takes effect once or, if
the primary dies first, its replacement hydrates it from the replica that holds it. The
`shard` module docstring says why (and what the rejected alternative was).

It reads the shard's fields: backend, lock, applied op ids, pending writes, peers,
placement, shard id, incarnation and clock.

Why no client-driven parallel fast path (CURP, Fast Paxos: the client sends a write to
all N replicas at once with the version it expects to replace, and it is done when all
agree). Judged unsafe or no faster here, so replication stops at this primary-driven
path (one client round trip, two sequential hops: about 0.4x a bare actor call for W=2):
  * Most agent writes are unconditional stores: the client knows no version to expect
    without a read first (another round trip), and replicas that each accept "whatever
    is there" from two concurrent writers install different values under one version.
  * Each replica would assign the version, timestamps and (for a bounded source) the
    eviction victims itself: copies diverge unless all of that travels from the client,
    and `update` (a function) is not deterministic across processes at all.
  * A disagreement after some replicas installed needs a repair that can undo an
    installed record, which breaks "versions never go back" for a reader who saw it;
    CURP avoids this with witnesses that only record and a primary that still orders,
    a protocol (witness replay on failover, in hydration) larger than this module.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from memcluster.cluster.data.placement import Placement
from memcluster.errors import (
    MemclusterError,
    QuorumNotReached,
    ShardDied,
    ShardUnavailable,
    in_flight,
)
from memcluster.model import Record
from memcluster.ops import DeleteOp, ReplicateOp, RetrieveOp

Where = tuple[str, str]  # (namespace, key)
_READS = frozenset({"retrieve", "exists"})
_KEYED_WRITES = frozenset({"store", "update", "delete"})


class ReplicatingPrimary:
    """The write protocol of a primary with replicas (see the module docstring)."""

    backend: Any
    peers: Any
    placement: Placement | None
    shard_id: str
    incarnation: str
    hydrating: bool
    applied: Any
    _lock: Any
    _pending: dict[Where, tuple[Record | None, list[tuple[str, Any]]]]

    def _observe(self, ops: Sequence[Any], results: Sequence[Any], seconds: float) -> None:
        raise NotImplementedError

    def _apply_one(self, op: Any) -> Any:
        raise NotImplementedError

    def clock(self) -> float:
        raise NotImplementedError

    def _apply_replicated(self, ops: Sequence[Any], placement: Placement) -> list[Any]:
        """The primary's path for N > 1: settle pending keys, stage, replicate, then
        install (module docstring)."""
        start = time.perf_counter()
        if self._pending:
            touched = {(op.namespace, op.key) for op in ops if op.key is not None}
            if not touched.isdisjoint(self._pending):
                self._settle(touched & set(self._pending), placement)
        with self._lock:
            results, staged, observed = self._stage(ops)
        committed, maybe_sent, failure = self._replicate(staged, placement)
        failed = set(staged) - committed
        with self._lock:
            self._install(staged, committed)
        if failed:
            why = (f"fewer than {placement.write_quorum} copies acknowledged ({failure})")
            made: dict[Where, list[tuple[str, Any]]] = {}
            for i, op in enumerate(ops):
                where = (op.namespace, op.key) if op.key is not None else None
                if where in failed and (op.kind in _KEYED_WRITES or i in observed):
                    op_id = getattr(op, "op_id", None)
                    if op.kind in _KEYED_WRITES and op_id is not None:
                        made.setdefault(where, []).append((op_id, results[i]))
                    results[i] = QuorumNotReached(f"{op.key!r}: {why}")
            with self._lock:
                for where in failed & maybe_sent:
                    self._pending[where] = (staged[where], made.get(where, []))
        with self._lock:
            self.applied.remember(ops, results)
        self._observe(ops, results, time.perf_counter() - start)
        return results

    def _settle(self, wheres: set[Where], placement: Placement) -> None:
        """Send pending writes of `wheres` again; those W copies now hold are installed
        and their ops' results remembered (a retry gets them); the rest stay pending."""
        with self._lock:
            batch = {w: self._pending[w][0] for w in wheres if w in self._pending}
            owned = {w for w in batch
                     if placement.preference(w[1], w[0])[0] == self.shard_id}
            for w in set(batch) - owned:    # no longer our key (a ring switch): not ours
                del self._pending[w], batch[w]
        if not batch:
            return
        committed, _maybe, _why = self._replicate(batch, placement)
        with self._lock:
            self._install(batch, committed)
            for where in committed:
                _record, made = self._pending.pop(where)
                for op_id, result in made:
                    self.applied.put(op_id, result)

    def settle(self) -> int:
        """Finish the pending writes whose replicas answer now; -> how many stay pending."""
        if self._pending and self.placement is not None and not self.hydrating:
            self._settle(set(self._pending), self.placement)
        return len(self._pending)

    def _stage(self, ops: Sequence[Any]) -> tuple[list[Any], dict[Where, Record | None],
                                                 set[int]]:
        """Every op's result against committed state plus this batch's earlier writes,
        writing nothing. -> (results, the final record (None: deleted) of each written
        key, the indexes of reads that saw a staged write)."""
        backend = self.backend
        assert backend is not None
        now = self.clock()
        wanted = list(dict.fromkeys((op.namespace, op.key) for op in ops
                                    if op.kind in _READS or op.kind in _KEYED_WRITES))
        live = dict(zip(wanted, backend.apply_batch([RetrieveOp(k, ns) for ns, k in wanted],
                                                    return_exceptions=False), strict=True))
        staged: dict[Where, Record | None] = {}
        results: list[Any] = []
        observed: set[int] = set()
        for i, op in enumerate(ops):
            kind = op.kind
            op_id = getattr(op, "op_id", None)
            if op_id is not None and op_id in self.applied:
                results.append(self.applied.recall(op))
                continue
            if kind not in _READS and kind not in _KEYED_WRITES:
                results.append(self._apply_one(op))
                continue
            where = (op.namespace, op.key)
            if kind in _KEYED_WRITES and where in self._pending:
                results.append(QuorumNotReached(f"{op.key!r}: an earlier write of the key "
                                                "is still short of its replicas"))
                continue
            current = staged[where] if where in staged else live[where]
            try:
                if kind == "retrieve":
                    results.append(current)
                elif kind == "exists":
                    results.append(current is not None)
                elif kind == "delete":
                    staged[where] = None
                    results.append(current is not None)
                else:
                    store = op if kind == "store" else backend.update_store_op(op, current)
                    record = store.record_after(current, now)
                    staged[where] = record
                    results.append(record)
            except MemclusterError as exc:
                results.append(exc)
                continue
            if kind in _READS and where in staged:
                observed.add(i)
        self._make_room(ops, results, staged, live)
        return results, staged, observed

    def _make_room(self, ops: Sequence[Any], results: list[Any],
                   staged: dict[Where, Record | None],
                   live: Mapping[Where, Record | None]) -> None:
        """A bounded backend evicts now for the staged new records; the victims are
        staged as deletes, so the replicas evict exactly them in the same round. If the
        new records cannot fit (the `reject` policy, or nothing evictable), their writes
        fail with `CapacityExceeded` and are not replicated."""
        new = [r for w, r in staged.items() if r is not None and live.get(w) is None]
        if not new:
            return
        try:
            victims = self.backend.make_room(new)  # type: ignore[union-attr]
        except MemclusterError as exc:
            for r in new:
                del staged[(r.namespace, r.key)]
            for i, op in enumerate(ops):
                if op.key is not None and op.kind in _KEYED_WRITES and \
                        (op.namespace, op.key) not in staged and isinstance(results[i], Record):
                    results[i] = exc
            return
        for where in victims:
            staged.setdefault(where, None)

    def _replicate(self, staged: Mapping[Where, Record | None], placement: Placement
                   ) -> tuple[set[Where], set[Where], str]:
        """Forward `staged` to each key's other replicas; -> (the keys with at least W - 1
        acknowledgements, the keys a replica may hold now (acknowledged, in flight when
        the call failed, or not awaited), why the others fell short). With W < N the rest
        complete in the background: their answers are not awaited."""
        need = placement.write_quorum - 1
        by_replica: dict[str, list[Where]] = {}
        for where in staged:
            for sid in placement.preference(where[1], where[0]):
                if sid != self.shard_id:
                    by_replica.setdefault(sid, []).append(where)
        calls = self._send(by_replica, staged, placement.ring.version)
        if need <= 0 or not by_replica:
            return set(staged), set(staged), ""
        acks = dict.fromkeys(staged, 0)
        maybe: set[Where] = set()
        why = ""
        retried: set[str] = set()
        while calls:
            again: dict[str, list[Where]] = {}
            for sid, wheres, call in calls:
                if all(acks[w] >= need for w in wheres):
                    maybe.update(wheres)    # every key it holds has W copies: not awaited
                    continue
                try:
                    answers = call.result()
                except MemclusterError as exc:
                    if in_flight(exc):
                        maybe.update(wheres)
                    if isinstance(exc, ShardDied) and self.peers is not None:
                        self.peers.forget(sid)
                        if sid not in retried:  # a cached handle of a dead incarnation:
                            retried.add(sid)    # its replacement gets one more try
                            again[sid] = wheres
                            continue
                    why = why or f"replica {sid}: {type(exc).__name__}"
                    continue
                for where, ok in zip(wheres, answers, strict=True):
                    if ok is True:
                        acks[where] += 1
                        maybe.add(where)
                    else:
                        why = why or f"replica {sid} holds a newer copy"
            calls = self._send(again, staged, placement.ring.version) if again else []
        committed = {w for w, n in acks.items() if n >= need}
        return committed, maybe, why or "no replica answered"

    def _send(self, by_replica: Mapping[str, list[Where]], staged: Mapping[Where, Record | None],
              ring_version: int) -> list[tuple[str, list[Where], Any]]:
        """One `replicate` call per replica, all in flight at once."""
        if self.peers is None:
            if by_replica:
                raise ShardUnavailable(f"shard {self.shard_id} has no way to reach its "
                                       "replicas")
            return []
        calls = []
        for sid, wheres in by_replica.items():
            batch = [DeleteOp(w[1], w[0]) if staged[w] is None else ReplicateOp(staged[w])
                     for w in wheres]
            try:
                calls.append((sid, wheres, self.peers.link(sid).replicate(
                    ring_version, batch, (self.shard_id, self.incarnation))))
            except MemclusterError as exc:
                calls.append((sid, wheres, _Failed(exc)))
        return calls

    def _install(self, staged: Mapping[Where, Record | None], committed: set[Where]) -> None:
        """Apply the committed keys locally (caller holds the lock)."""
        batch = [DeleteOp(where[1], where[0]) if record is None else ReplicateOp(record)
                 for where, record in staged.items() if where in committed]
        if batch:
            self.backend.apply_batch(batch, return_exceptions=False)  # type: ignore[union-attr]


class _Failed:
    """A call that failed before it was sent (its peer could not be resolved)."""

    def __init__(self, error: MemclusterError) -> None:
        self.error = error

    def result(self) -> Any:
        raise self.error


__all__ = ["ReplicatingPrimary", "Where"]
