"""Routing: one implementation for the manager actor and the client.

Core types: `Directory` (the protocol of whoever owns the current placements and the links
to shards: the client's cache or the manager), `Link` (one shard's data path) and `Router`
(the engine). Placement is a pure value (`placement.Placement`); the router holds no state
between calls beyond what the directory caches, so the manager and a smart client run the
very same code. Replication is not the router's business: the primary shard forwards each
write to its replicas before it applies it (`shard.py`).

Keyed ops:
- writes (store, update, delete) go to the key's primary (the first shard of its
  preference list) and only there: there is one version assigner per key. When the
  primary is down, the write waits (retries) until the supervisor's replacement has
  hydrated; it never moves to another shard.
- reads (retrieve, exists) go to the primary too, and to the next replica only while the
  primary is dead or recovering (`ShardDied`, `ShardRecovering`); a slow primary is waited
  for, not bypassed.
- read quorum (R > 1) reads R replicas, answers the newest copy and writes it back to the
  stale replicas other than the primary (read repair).

What holds, per setting (N replicas, W write quorum; reads as above):
- W = N, N <= 2: linearizable per key, CAS and `update` included. Every acknowledged write
  is on all N shards before the primary applies it; a replica answers only while the
  primary is dead or recovering, and the replacement is rebuilt from that replica.
- W = N, N >= 3: linearizable while the primary lives; while it is down, two replicas can
  differ on a write that was in flight when it died, so reads from them may disagree until
  the replacement has hydrated.
- W < N: acknowledged writes survive the loss of N - W shards; reads that fall back to a
  replica may miss a write acknowledged without it (not linearizable during a failover).
- Scatter ops (search, count, list_keys) read every shard's committed state: never
  linearizable with respect to concurrent writes.
What can go wrong: a partition that leaves a dead-declared primary running on an isolated
node (Ray kills it once the node is declared dead; until then a caller on that node could
still reach it). Writes in flight when a shard died are reported `UnknownOutcome`.

Retries are the `Retry` object's business: an attempt leaves unfinished ops pending and
raises the transient error that stopped them; `on_retry` refreshes the directory after a
`StaleRing`. A write that may have reached its primary (a transport error after sending,
or `QuorumNotReached`) is retried only on the very same shard incarnation (the same link),
whose op-id memory answers a duplicate instead of applying it twice; if the link changed
(the primary died and was replaced) it finishes `UnknownOutcome`. The rejected
alternative, retrying it wherever the key lives now, would apply a CAS or `update` twice.

Scatter ops (search, count, list_keys, clear) go to every shard and are merged
(`scatter.py`); up to N-1 unavailable shards are tolerated by reads. Read-only scatter ops
are sent before the keyed phase and collected after it, so a mixed batch (the async
client's coalesced flush) costs one round trip.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Protocol

from memcluster.cluster.data.contract import ShardLink
from memcluster.cluster.data.placement import Placement
from memcluster.cluster.data.repair import repair_plan
from memcluster.cluster.data.scatter import Plan, plan_for
from memcluster.cluster.retry import Retry
from memcluster.errors import (
    MemclusterError,
    QuorumNotReached,
    ShardDied,
    ShardRecovering,
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

# A primary in one of these states is down: reads may use the next replica.
_DOWN = (ShardDied, ShardRecovering)
# Scatter reads tolerate up to N-1 shards answering with one of these.
_SKIP = (ShardDied, ShardUnavailable, Timeout)
_READS = frozenset({"retrieve", "exists"})
_WRITES = frozenset({"store", "update", "delete"})
# A dead shard is replaced by its supervisor within seconds, so the router waits for it.
DEFAULT_RETRY = Retry(deadline=15.0, retry_on=(TransientError, ShardDied))

Link = ShardLink


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
        state = _Batch([_with_op_id(op) for op in ops])

        def attempt() -> None:
            placement = self.directory.placement(source)
            error: BaseException | None = None
            sent = None
            if state.scatter and not any(state.ops[i].kind == "clear" for i in state.scatter):
                sent = self._scatter_send(placement, state)  # reads overlap the keyed phase
            if state.keyed:
                error = self._keyed(placement, state)
            if state.scatter:
                error = self._scatter_collect(
                    placement, state, sent or self._scatter_send(placement, state)) or error
            if state.keyed or state.scatter:
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
        """One attempt at every pending keyed op; returns the error that left some pending.
        Reads whose primary is down go to the next replica within the same attempt."""
        error: BaseException | None = None
        if placement.read_quorum > 1:
            error = self._quorum_reads(placement, st)
        down: set[str] = set()
        while True:
            groups, error = self._group(placement, st, down, error)
            if not groups:
                return error
            rerouted = False
            for sid, idxs, link, call in self._send(placement.ring.version, groups, st.ops):
                try:
                    results = call.result()
                except MemclusterError as exc:
                    error = self._failed(sid, idxs, link, exc, st, error)
                    if isinstance(exc, _DOWN) and sid not in down:
                        down.add(sid)
                        rerouted = rerouted or any(st.ops[i].kind in _READS for i in idxs)
                    continue
                for i, result in zip(idxs, results, strict=True):
                    if isinstance(result, QuorumNotReached) and st.ops[i].kind in _WRITES:
                        st.sent_to[i] = link    # the replicas may hold it: same link only
                        st.partial[i] = result
                        error = result
                    else:
                        st.finish(i, result)
            st.keyed = [i for i in st.keyed if i not in st.done]
            if not rerouted:
                return error

    def _group(self, placement: Placement, st: _Batch, down: set[str],
               error: BaseException | None
               ) -> tuple[dict[str, list[int]], BaseException | None]:
        """Which shard each pending keyed op goes to in this pass."""
        groups: dict[str, list[int]] = {}
        quorum = placement.read_quorum > 1
        for i in st.keyed:
            op = st.ops[i]
            kind = op.kind
            if quorum and kind == "retrieve":
                continue
            prefs = placement.preference(op.key, op.namespace)
            if kind == "replicate":            # a caller's own copy (read repair): all N
                for sid in prefs:
                    groups.setdefault(sid, []).append(i)
                continue
            if kind in _READS:
                sid = next((s for s in prefs if s not in down), None)
                if sid is None:
                    error = error or SourceUnavailable(
                        f"no live replica of {op.key!r} in {placement.source!r}")
                    continue
            else:
                sid = prefs[0]
                if sid in down:
                    continue                    # its primary is down: wait for the next try
                sent = st.sent_to.get(i)
                if sent is not None and sent is not self.directory.link(sid):
                    st.finish(i, UnknownOutcome(
                        f"{kind} of {op.key!r}: its primary was lost after the call was sent;"
                        " it may or may not have been applied"))
                    continue
            groups.setdefault(sid, []).append(i)
        st.keyed = [i for i in st.keyed if i not in st.done]
        return groups, error

    def _send(self, version: int, groups: dict[str, list[int]], ops: list[Op]
              ) -> list[tuple[str, list[int], Link, Any]]:
        """One call per shard, all in flight at once."""
        calls = []
        for sid, idxs in groups.items():
            link = self.directory.link(sid)
            calls.append((sid, idxs, link, link.submit(version, [ops[i] for i in idxs])))
        return calls

    def _failed(self, sid: str, idxs: list[int], link: Link, exc: MemclusterError,
                st: _Batch, error: BaseException | None) -> BaseException | None:
        """A whole call failed: which of its ops stay pending, which finish, and the error
        to report if the attempt leaves ops pending."""
        if isinstance(exc, ShardDied):
            self.directory.forget(sid)
        if not isinstance(exc, (TransientError, ShardDied)):
            for i in idxs:           # permanent (a bug, a fenced caller): no retry helps
                st.finish(i, exc)
            return error
        if in_flight(exc):           # it may have been applied: retry on this link only
            for i in idxs:
                if st.ops[i].kind in _WRITES:
                    st.sent_to.setdefault(i, link)
        if error is None or isinstance(exc, StaleRing):
            return exc
        return error

    def _quorum_reads(self, placement: Placement, st: _Batch) -> BaseException | None:
        """Retrieve from every replica, answer the newest copy once `read_quorum` replicas
        answered, and write it back to the stale replicas (never to the primary, which is
        the authority for its keys: read repair)."""
        reads = [i for i in st.keyed if st.ops[i].kind == "retrieve"]
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
                if isinstance(exc, ShardDied):
                    self.directory.forget(sid)
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
            op = st.ops[i]
            primary = placement.preference(op.key, op.namespace)[0]
            winner, stale = repair_plan(answers[i])
            for sid in stale:
                if sid != primary and winner is not None:
                    repairs.setdefault(sid, []).append(ReplicateOp(winner))
            st.finish(i, winner)
        for pending in [self.directory.link(sid).submit(version, ops)
                        for sid, ops in repairs.items()]:
            with contextlib.suppress(MemclusterError):  # best effort: the next read repairs
                pending.result()
        st.keyed = [i for i in st.keyed if i not in st.done]
        return error

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
                    if isinstance(exc, ShardDied):
                        self.directory.forget(sid)
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
        self.keyed = [i for i, op in enumerate(ops) if op.key is not None]
        self.scatter = [i for i, op in enumerate(ops) if op.key is None]
        self.sent_to: dict[int, Link] = {}   # writes that may have reached this link
        self.partial: dict[int, QuorumNotReached] = {}  # primary answered: short of W

    def finish(self, i: int, result: Any) -> None:
        self.results[i] = result
        self.done.add(i)

    def fail_pending(self, exc: BaseException) -> None:
        """The retry deadline passed: what is still pending fails with `exc`, or with
        `UnknownOutcome` if it may have been applied."""
        for i, result in enumerate(self.results):
            if result is not UNSET:
                continue
            if i in self.partial:
                self.results[i] = self.partial[i]
            elif i in self.sent_to:
                op = self.ops[i]
                self.results[i] = UnknownOutcome(
                    f"{op.kind} of {op.key!r}: {exc} after the call was sent; it may or may "
                    "not have been applied")
            else:
                self.results[i] = exc


def _with_op_id(op: Op) -> Op:
    """`op` with an operation id if it is a write without one (built directly: `replace`
    costs twice as much, and this runs once per op of every batch)."""
    kind = op.kind
    if kind == "store" and op.op_id is None:  # type: ignore[union-attr]
        return new_store_op(op.key, op.blob, op.namespace, op.metadata, op.ttl,  # type: ignore
                            op.if_version, op.overwrite, new_op_id())  # type: ignore[union-attr]
    if kind == "delete" and op.op_id is None:  # type: ignore[union-attr]
        return DeleteOp(op.key, op.namespace, new_op_id())  # type: ignore[union-attr]
    if kind == "update" and op.op_id is None:  # type: ignore[union-attr]
        return replace(op, op_id=new_op_id())  # type: ignore[type-var]
    return op


__all__ = ["DEFAULT_RETRY", "Directory", "Link", "Router"]
