"""What a shard has applied, by operation id: the memory that makes a retried write apply
once.

Core type: `AppliedOps`. A write carries an op id (`ops.new_op_id`); its primary records
the result here, and a retry of the same id (after a lost reply, to the same incarnation)
is answered from this record instead of being applied again. At least the last
`RECENT_OP_IDS` results are kept, trimmed in bulk, not per op.

Decision: a store's Record is kept as its (version, created, updated, expires): the rest is
the retried op's own, and a tuple of numbers is one object the garbage collector ignores,
where thousands of kept Records (and their dicts) made every full collection of the shard
slower. The memory lives in the incarnation: a replacement starts empty, which is why the
router reports `UnknownOutcome` rather than retry on a new incarnation.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any

from memcluster.errors import MemclusterError
from memcluster.model import Record

RECENT_OP_IDS = 10_000


class AppliedOps:
    """Op id -> result, oldest first (see the module docstring)."""

    __slots__ = ("_results",)

    def __init__(self) -> None:
        self._results: dict[str, Any] = {}

    def __contains__(self, op_id: object) -> bool:
        return op_id in self._results

    def __bool__(self) -> bool:
        return bool(self._results)

    def any_of(self, ops: Iterable[Any]) -> bool:
        """True if any of `ops` has an id recorded here."""
        return bool(self._results) and not self._results.keys().isdisjoint(
            [getattr(op, "op_id", None) for op in ops])

    def recall(self, op: Any) -> Any:
        """The recorded result of `op` (applied before under the same id)."""
        done = self._results[op.op_id]
        if type(done) is tuple:  # a store's record, kept compact
            return Record(op.key, op.value, op.namespace, dict(op.metadata), *done)
        return done

    def put(self, op_id: str, result: Any) -> None:
        self._results[op_id] = result

    def remember(self, ops: Iterable[Any], results: Iterable[Any]) -> None:
        """Record the results of `ops` that have an id and did not fail."""
        recent = self._results
        for op, result in zip(ops, results, strict=True):
            op_id = getattr(op, "op_id", None)
            if op_id is None or isinstance(result, MemclusterError):
                continue
            if type(result) is Record and op.kind == "store":
                result = (result.version, result.created_at, result.updated_at,
                          result.expires_at)
            recent[op_id] = result
        if len(recent) > 2 * RECENT_OP_IDS:
            self._results = dict(itertools.islice(recent.items(),
                                                  len(recent) - RECENT_OP_IDS, None))


__all__ = ["RECENT_OP_IDS", "AppliedOps"]
