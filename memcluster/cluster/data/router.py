"""Routing and replication: one implementation for the manager actor and the client.

Core types: `Placement` (a source's ring with its N and W: a pure value), `Directory`
(the protocol of whoever owns the current placement and the links to shards) and
`Router` (the engine). Placement is a pure function of the ring (`Ring.preference`);
the router holds no state between calls beyond what the directory caches, so the manager
actor and a smart client run the very same code.

Keyed ops:
- reads (retrieve, exists) go to the first shard of the key's preference list and fall
  back along it when a shard is dead, unreachable or still hydrating;
- writes (store, update) go to the primary (the first shard that accepts), which
  assigns the version; the resulting record then goes to the other N-1 shards as a
  `ReplicateOp` in parallel (idempotent: a replica keeps the higher version). A write is
  acknowledged once W shards hold it; otherwise its result is `QuorumNotReached`.
  Replica answers are awaited in preference order, and no longer once every record has
  W copies: with W < N the remaining copies complete in the background (a replica that
  misses one is caught up by read repair or hydration);
- deletes (and caller-supplied ReplicateOps) go to all N shards in parallel.
Every op is grouped by shard: one call per shard per phase, all shards in parallel.

Scatter ops (search, count, list_keys, clear) go to every shard and are merged: search
asks each shard for offset+limit records and merges top-k (deduplicating replicas, the
higher version wins); count and clear deduplicate replicas by key when N > 1; list_keys
cursors record the last key returned and a per-shard resume point, so paging covers every
key exactly once. Up to N-1 unavailable shards are tolerated by reads: every key still
has a live copy. Read-only scatter ops are sent before the keyed phase and collected
after it, so a mixed batch (the async client's coalesced flush) costs one round trip.

Hot path: a key's preference list is memoised per placement (a hit hashes nothing and
allocates nothing), N=1 writes finish on the primary's answer without a replication
phase, and shard handles ship keyed batches in the compact `wire` format.

Retries are the `Retry` object's business: an attempt leaves unfinished ops pending and
raises the transient error that stopped them; `on_retry` refreshes the directory after a
`StaleRing` or a dead shard; finished ops keep their results (a write whose primary
applied it but whose replication hit a ring change only replays the replication). The
rejected alternative, retrying whole batches, would apply an `update` twice.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any, Protocol

from memcluster.cluster.data.placement import Placement
from memcluster.cluster.data.repair import repair_plan
from memcluster.cluster.data.scatter import Plan, plan_for
from memcluster.cluster.retry import Retry
from memcluster.errors import (
    MemclusterError,
    QuorumNotReached,
    ShardDied,
    ShardUnavailable,
    SourceUnavailable,
    StaleRing,
    Timeout,
    TransientError,
    UnknownOutcome,
    in_flight,
)
from memcluster.model import Record
from memcluster.ops import DeleteOp, Op, ReplicateOp, new_op_id, new_store_op

# Errors after which the next shard of the preference list is tried.
_SKIP = (ShardDied, ShardUnavailable, Timeout)
_READS = frozenset({"retrieve", "exists"})
_PRIMARY = frozenset({"store", "update"})
_FANOUT = frozenset({"delete", "replicate"})
# A dead shard is replaced by its supervisor within seconds, so the router waits for it.
DEFAULT_RETRY = Retry(deadline=15.0, retry_on=(TransientError, ShardDied))



class Link(Protocol):
    """How the router reaches one shard (`ShardHandle`, `LocalShard` or a test fake)."""

    shard_id: str

    def submit(self, ring_version: int, ops: Sequence[Op]) -> Any:
        """Start a batch call; the returned object's `result()` waits for it."""


class Directory(Protocol):
    """Who owns the current placements and the links (client cache or manager actor)."""

    def placement(self, source: str) -> Placement: ...

    def link(self, shard_id: str) -> Link: ...

    def refresh(self, source: str, error: BaseException) -> None:
        """Called before a retry: re-read the ring after StaleRing."""

    def forget(self, shard_id: str) -> None:
        """The shard died: drop its cached link so the next one is resolved afresh."""


class _Unset:
    __slots__ = ()


UNSET: Any = _Unset()


class Router:
    """Routes batches of ops for any source of a `Directory` (see the module docstring)."""

    def __init__(self, directory: Directory, *, retry: Retry | None = None) -> None:
        self.directory = directory
        self.retry = retry or DEFAULT_RETRY

    # ---- entry point ------------------------------------------------------------------

    def execute(self, source: str, ops: Sequence[Op]) -> list[Any]:
        """One result per op (a MemclusterError instance for an op that failed)."""
        ops = [_with_op_id(op) for op in ops]
        state = _Batch(ops)

        def attempt() -> None:
            placement = self.directory.placement(source)
            error: BaseException | None = None
            sent = None
            if state.scatter and not any(state.ops[i].kind == "clear" for i in state.scatter):
                sent = self._scatter_send(placement, state)  # reads overlap the keyed phase
            if state.keyed_pending():
                error = self._keyed(placement, state)
            if state.scatter:
                error = self._scatter_collect(
                    placement, state, sent or self._scatter_send(placement, state)) or error
            if state.keyed_pending() or state.scatter:
                raise error or SourceUnavailable(f"source {source!r}: ops left unfinished")

        def on_retry(exc: BaseException) -> None:
            self.directory.refresh(source, exc)

        try:
            self.retry.run(attempt, on_retry=on_retry)
        except (TransientError, ShardDied) as exc:
            state.fail_pending(exc)
        return state.results

    # ---- keyed ops ----------------------------------------------------------------------

    def _keyed(self, placement: Placement, st: _Batch) -> BaseException | None:
        """One attempt at every pending keyed op; returns the error that left some pending."""
        version = placement.ring.version
        failed: set[str] = set()
        error: BaseException | None = None
        quorum = placement.read_quorum > 1
        single = placement.replicas == 1
        if quorum:
            error = self._quorum_reads(placement, st)
        # Phase 1: reads and primary writes (with fallback), fan-out ops to all N.
        first_phase = [i for i in st.primary_pending
                       if not (quorum and st.ops[i].kind == "retrieve")]
        while first_phase:
            groups: dict[str, list[int]] = {}
            fanout: dict[str, list[int]] = {}
            ops, preference = st.ops, placement.preference
            for i in first_phase:
                op = ops[i]
                prefs = preference(op.key, op.namespace)
                if op.kind in _FANOUT:
                    for sid in prefs:
                        fanout.setdefault(sid, []).append(i)
                    continue
                sid = next((s for s in prefs if s not in failed), None) if failed else prefs[0]
                if sid is None:
                    error = error or SourceUnavailable(
                        f"no live shard for key {op.key!r} of {placement.source!r}")
                    continue
                groups.setdefault(sid, []).append(i)
            calls = self._send(version, groups, st.ops, fanout)
            retry_next: list[int] = []
            acks: dict[int, int] = {}
            for sid, idxs, fan_idxs, outcome in calls:
                if isinstance(outcome, BaseException):
                    if isinstance(outcome, StaleRing) or not isinstance(outcome, _SKIP):
                        error = outcome
                    else:
                        self._lost(sid, outcome, failed)
                        error = error if isinstance(error, StaleRing) else outcome
                        retry_next.extend(i for i in idxs if not _unknown(st, i, outcome))
                    continue
                if single:  # N=1: the primary's copy is the quorum
                    st.finish_all(idxs, outcome)
                else:
                    for i, result in zip(idxs, outcome[:len(idxs)], strict=True):
                        if ops[i].kind in _READS or isinstance(result, MemclusterError):
                            st.finish(i, result)
                        else:  # a primary write: replicate what it returned
                            st.replicate_pending[i] = (result, sid)
                for i, result in zip(fan_idxs, outcome[len(idxs):], strict=True):
                    acks[i] = acks.get(i, 0) + 1
                    if result is True:
                        st.found.add(i)
            for i, count in acks.items():
                st.acks[i] = max(st.acks.get(i, 0), count)
            for i in {i for ids in fanout.values() for i in ids}:
                if st.acks.get(i, 0) >= placement.write_quorum:
                    st.finish(i, i in st.found if st.ops[i].kind == "delete" else True)
                else:
                    error = error or QuorumNotReached(
                        f"{st.acks.get(i, 0)} of {placement.write_quorum} copies of "
                        f"{st.ops[i].key!r} acknowledged")
            st.primary_pending = [i for i in st.primary_pending if i not in st.done
                                  and i not in st.replicate_pending]
            first_phase = [i for i in retry_next if i not in st.done]
        # Phase 2: replicate the primaries' records to the other N-1 shards.
        if st.replicate_pending:
            error = self._replicate(placement, st, failed) or error
        return error

    def _quorum_reads(self, placement: Placement, st: _Batch) -> BaseException | None:
        """Retrieve from every replica, answer the newest copy once `read_quorum` replicas
        answered, and write it back to the stale ones (read repair)."""
        reads = [i for i in st.primary_pending if st.ops[i].kind == "retrieve"]
        if not reads:
            return None
        version = placement.ring.version
        groups: dict[str, list[int]] = {}
        for i in reads:
            op = st.ops[i]
            for sid in placement.preference(op.key, op.namespace):
                groups.setdefault(sid, []).append(i)
        pendings = [(sid, idxs, self.directory.link(sid).submit(
            version, [st.ops[i] for i in idxs])) for sid, idxs in groups.items()]
        answers: dict[int, dict[str, Record | None]] = {i: {} for i in reads}
        error: BaseException | None = None
        for sid, idxs, pending in pendings:
            try:
                results = pending.result()
            except MemclusterError as exc:
                self._lost(sid, exc, set())
                error = exc if isinstance(exc, StaleRing) else (error or exc)
                continue
            for i, result in zip(idxs, results, strict=True):
                if not isinstance(result, MemclusterError):
                    answers[i][sid] = result
        repairs: dict[str, list[ReplicateOp]] = {}
        for i in reads:
            if len(answers[i]) < placement.read_quorum:
                error = error if isinstance(error, StaleRing) else QuorumNotReached(
                    f"{len(answers[i])} of {placement.read_quorum} replicas of "
                    f"{st.ops[i].key!r} answered")
                continue
            winner, stale = repair_plan(answers[i])
            for sid in stale:
                repairs.setdefault(sid, []).append(ReplicateOp(winner))
            st.finish(i, winner)
        for pending in [self.directory.link(sid).submit(version, ops)
                        for sid, ops in repairs.items()]:
            with contextlib.suppress(MemclusterError):  # best effort: the next read repairs
                pending.result()
        st.primary_pending = [i for i in st.primary_pending if i not in st.done]
        return error

    def _replicate(self, placement: Placement, st: _Batch,
                   failed: set[str]) -> BaseException | None:
        version = placement.ring.version
        groups: dict[str, list[int]] = {}
        for i, (record, primary) in st.replicate_pending.items():
            for sid in placement.preference(record.key, record.namespace):
                if sid != primary:
                    groups.setdefault(sid, []).append(i)
        error: BaseException | None = None
        acks = dict.fromkeys(st.replicate_pending, 1)
        if groups:
            ops = {i: ReplicateOp(rec) for i, (rec, _) in st.replicate_pending.items()}
            pendings = [(sid, idxs, self.directory.link(sid).submit(
                version, [ops[i] for i in idxs])) for sid, idxs in groups.items()]
            for sid, idxs, pending in pendings:
                if min(acks.values()) >= placement.write_quorum:
                    break  # W copies of every record: the rest replicate in the background
                try:
                    pending.result()
                except MemclusterError as exc:
                    self._lost(sid, exc, failed)
                    error = exc if isinstance(exc, (StaleRing, TransientError)) else (
                        error or exc)
                    continue
                for i in idxs:
                    acks[i] += 1
        for i, count in acks.items():
            record, _ = st.replicate_pending[i]
            if count >= placement.write_quorum:
                st.finish(i, record)
            elif error is None or isinstance(error, ShardDied):
                error = QuorumNotReached(f"{count} of {placement.write_quorum} copies of "
                                         f"{record.key!r} acknowledged")
        for i in st.done:
            st.replicate_pending.pop(i, None)
        return error

    def _send(self, version: int, groups: dict[str, list[int]], ops: list[Op],
              fanout: dict[str, list[int]]) -> list[tuple[str, list[int], list[int], Any]]:
        """One call per shard, all in flight at once; outcome = results or the error."""
        calls = []
        for sid in dict.fromkeys([*groups, *fanout]):
            idxs = groups.get(sid, [])
            fan = fanout.get(sid, [])
            calls.append((sid, idxs, fan, self.directory.link(sid).submit(
                version, [ops[i] for i in idxs] + [ops[i] for i in fan])))
        out = []
        for sid, idxs, fan, pending in calls:
            try:
                out.append((sid, idxs, fan, pending.result()))
            except MemclusterError as exc:
                out.append((sid, idxs, fan, exc))
        return out

    def _lost(self, sid: str, exc: BaseException, failed: set[str]) -> None:
        if isinstance(exc, _SKIP):
            failed.add(sid)
        if isinstance(exc, ShardDied):
            self.directory.forget(sid)

    # ---- scatter ops ------------------------------------------------------------------------

    def _scatter_send(self, placement: Placement, st: _Batch) -> tuple[dict[int, Plan], list]:
        """Send every pending scatter op to every shard (one call each)."""
        ring = placement.ring
        plans = {i: plan_for(st.ops[i], placement) for i in st.scatter}
        pendings = []
        for sid in ring.shard_ids:
            batch: list[Any] = []
            for plan in plans.values():
                batch.extend(plan.shard_ops(sid))
            pendings.append((sid, self.directory.link(sid).submit(ring.version, batch)))
        return plans, pendings

    def _scatter_collect(self, placement: Placement, st: _Batch,
                         sent: tuple[dict[int, Plan], list]) -> BaseException | None:
        """Wait for the answers of `_scatter_send` and merge them per op."""
        ring = placement.ring
        n = placement.replicas
        plans, pendings = sent
        answers: dict[str, list[Any]] = {}
        error: BaseException | None = None
        writes = any(st.ops[i].kind == "clear" for i in st.scatter)
        for sid, pending in pendings:
            try:
                answers[sid] = pending.result()
            except MemclusterError as exc:
                if isinstance(exc, _SKIP) and not isinstance(exc, StaleRing):
                    self._lost(sid, exc, set())
                    error = error or exc
                else:
                    return exc
        missing = len(ring.shard_ids) - len(answers)
        if missing and (writes or missing > n - 1):
            return error
        for sid, results in answers.items():
            pos = 0
            for plan in plans.values():
                count = len(plan.shard_ops(sid))
                plan.collect(sid, results[pos:pos + count])
                pos += count
        for i, plan in plans.items():
            st.finish(i, plan.merge())
        st.scatter = []
        return None


# ---- per-batch bookkeeping ----------------------------------------------------------------


class _Batch:
    """Where each op of one `execute` stands across retries."""

    def __init__(self, ops: list[Op]) -> None:
        self.ops = ops
        self.results: list[Any] = [UNSET] * len(ops)
        self.done: set[int] = set()
        self.primary_pending = [i for i, op in enumerate(ops) if op.key is not None]
        self.scatter = [i for i, op in enumerate(ops) if op.key is None]
        self.replicate_pending: dict[int, tuple[Record, str]] = {}
        self.acks: dict[int, int] = {}
        self.found: set[int] = set()

    def keyed_pending(self) -> bool:
        return bool(self.primary_pending or self.replicate_pending)

    def finish(self, i: int, result: Any) -> None:
        self.results[i] = result
        self.done.add(i)

    def finish_all(self, idxs: list[int], results: list[Any]) -> None:
        """`finish` for ops `idxs` with the first len(idxs) `results`, in one pass."""
        out = self.results
        for i, result in zip(idxs, results, strict=False):
            out[i] = result
        self.done.update(idxs)

    def fail_pending(self, exc: BaseException) -> None:
        for i, result in enumerate(self.results):
            if result is UNSET:
                self.results[i] = exc


def _unknown(st: _Batch, i: int, exc: BaseException) -> bool:
    """Finish op `i` with `UnknownOutcome` if it is not idempotent (an `update` has no
    operation id) and the failed call may have reached the shard: a retry elsewhere could
    apply it twice. -> True if it was finished."""
    if st.ops[i].kind != "update" or not in_flight(exc):
        return False
    st.finish(i, UnknownOutcome(f"update of {st.ops[i].key!r}: {exc} after the call was "
                                "sent; it may or may not have been applied"))
    return True


def _with_op_id(op: Op) -> Op:
    """`op` with an operation id if it is a write without one (built directly: `replace`
    costs twice as much, and this runs once per op of every batch)."""
    kind = op.kind
    if kind == "store" and op.op_id is None:  # type: ignore[union-attr]
        return new_store_op(op.key, op.blob, op.namespace, op.metadata, op.ttl,  # type: ignore
                            op.if_version, op.overwrite, new_op_id())  # type: ignore[union-attr]
    if kind == "delete" and op.op_id is None:  # type: ignore[union-attr]
        return DeleteOp(op.key, op.namespace, new_op_id())  # type: ignore[union-attr]
    return op


