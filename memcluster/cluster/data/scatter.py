"""Scatter plans: what each shard is asked for a scatter op, and how the answers merge.

Core types: one `_Plan` per scatter kind (`search` merges top-k and deduplicates replicas,
the higher version winning; `count` and `clear` sum, or union keys when N > 1 so replicas
count once; `list_keys` pages with a cursor holding the last key returned and a per-shard
resume point, so paging covers every key exactly once) and `plan_for(op, placement)`.
The cursor codec (`encode_cursor`/`decode_cursor`) is msgpack in urlsafe base64.
"""

from __future__ import annotations

import base64
from dataclasses import replace
from typing import Any

import msgpack

from memcluster.cluster.data.placement import Placement
from memcluster.cluster.data.ring import Ring
from memcluster.errors import InvalidValue, MemclusterError
from memcluster.model import Page, Query, Record
from memcluster.ops import ClearOp, ListAfterOp, MatchKeysOp, SearchOp
from memcluster.query import sort_records
from memcluster.retrieval.rank import Candidates, finish


class Plan:
    def __init__(self) -> None:
        self.answers: dict[str, list[Any]] = {}

    def shard_ops(self, sid: str) -> list[Any]:
        raise NotImplementedError

    def collect(self, sid: str, results: list[Any]) -> None:
        for r in results:
            if isinstance(r, MemclusterError):
                raise r
        self.answers[sid] = results

    def merge(self) -> Any:
        raise NotImplementedError


class _SearchPlan(Plan):
    """Each shard answers offset + limit records; a text query asks for `parts`, so a
    backend that ranks by `memcluster.retrieval` (vector, keyword, hybrid, recency and
    importance) sends its candidates and `retrieval.finish` ranks them all at once, with
    the shards' BM25 statistics summed and divided by N (each record sits on N shards;
    scaled up by the share of shards that answered, when some did not)."""

    def __init__(self, op: SearchOp, placement: Placement) -> None:
        super().__init__()
        q = op.query
        self.query = q
        self.shards = len(placement.ring.shard_ids)
        self.replicas = placement.replicas
        self.op = replace(op, query=replace(q, limit=q.offset + q.limit, offset=0),
                          parts=q.text is not None)

    def shard_ops(self, sid: str) -> list[Any]:
        return [self.op]

    def merge(self) -> list[Record]:
        answers = [records for (records,) in self.answers.values()]
        if answers and all(isinstance(a, Candidates) for a in answers):
            scale = self.shards / len(answers) / max(self.replicas, 1)
            return finish(answers, self.query, scale=scale)
        best: dict[tuple[str, str], Record] = {}
        for records in answers:
            for r in records:
                k = (r.namespace, r.key)
                if k not in best or best[k].version < r.version:
                    best[k] = r
        q = self.query
        order = q.order_by
        if order is None and any(r.score is not None for r in best.values()):
            order = "-score"
        ranked = sort_records(best.values(), order)
        return ranked[q.offset:q.offset + q.limit]


class _CountPlan(Plan):
    """N=1 sums native counts; N>1 unions matching keys so replicas count once."""

    def __init__(self, op: Any, replicas: int) -> None:
        super().__init__()
        self.sum = replicas == 1
        self.op = op if self.sum else MatchKeysOp(op.query, op.namespace)

    def shard_ops(self, sid: str) -> list[Any]:
        return [self.op]

    def merge(self) -> int:
        if self.sum:
            return sum(r[0] for r in self.answers.values())
        return len({k for (keys,) in self.answers.values() for k in keys})


class _ClearPlan(_CountPlan):
    def __init__(self, op: ClearOp, replicas: int) -> None:
        Plan.__init__(self)
        self.sum = replicas == 1
        self.clear = op
        self.match = MatchKeysOp(Query(), op.namespace)

    def shard_ops(self, sid: str) -> list[Any]:
        return [self.clear] if self.sum else [self.match, self.clear]

    def merge(self) -> int:
        if self.sum:
            return sum(r[0] for r in self.answers.values())
        return len({tuple(k) for r in self.answers.values() for k in r[0]})


class _ListPlan(Plan):
    """list_keys over shards; the cursor holds the last key and per-shard resume points."""

    def __init__(self, op: Any, ring: Ring) -> None:
        super().__init__()
        self.op = op
        self.ring = ring
        state = decode_cursor(op.cursor)
        same_ring = state.get("v") == ring.version
        self.after: str | None = state.get("a")
        self.bases: dict[str, str | None] = state.get("c", {}) if same_ring else {}
        self.exhausted: set[str] = set(state.get("x", [])) if same_ring else set()

    def shard_ops(self, sid: str) -> list[Any]:
        if sid in self.exhausted:
            return []
        return [ListAfterOp(self.op.namespace, self.op.pattern, self.op.limit,
                            self.bases.get(sid), self.after)]

    def merge(self) -> Page:
        limit = self.op.limit
        answers = {sid: r[0] for sid, r in self.answers.items() if r}  # exhausted: no answer
        keys = sorted({k for shard_keys, _, _ in answers.values() for k in shard_keys})
        page = keys[:limit]
        more = len(keys) > limit or any(not done for _, _, done in answers.values())
        if not page:
            return Page([], None)
        last = page[-1]
        bases = dict(self.bases)
        exhausted = set(self.exhausted)
        for sid, (shard_keys, base, done) in answers.items():
            bases[sid] = base
            if done and (not shard_keys or shard_keys[-1] <= last):
                exhausted.add(sid)
        if not more and len(keys) <= limit:
            return Page(page, None)
        cursor = encode_cursor({"v": self.ring.version, "a": last,
                                "c": {s: b for s, b in bases.items() if s not in exhausted},
                                "x": sorted(exhausted)})
        return Page(page, cursor)


def encode_cursor(state: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(msgpack.packb(state, use_bin_type=True)).decode("ascii")


def decode_cursor(cursor: str | None) -> dict[str, Any]:
    if cursor is None:
        return {}
    try:
        state = msgpack.unpackb(base64.urlsafe_b64decode(cursor.encode("ascii")), raw=False)
    except Exception as exc:  # any garbage is an invalid cursor
        raise InvalidValue("cursor is not one this cluster returned") from exc
    if not isinstance(state, dict):
        raise InvalidValue("cursor is not one this cluster returned")
    return state


def plan_for(op: Any, placement: Placement) -> Plan:
    kind = op.kind
    if kind == "search":
        return _SearchPlan(op, placement)
    if kind == "count":
        return _CountPlan(op, placement.replicas)
    if kind == "clear":
        return _ClearPlan(op, placement.replicas)
    if kind == "list_keys":
        return _ListPlan(op, placement.ring)
    raise InvalidValue(f"cannot route op kind {kind!r}")

