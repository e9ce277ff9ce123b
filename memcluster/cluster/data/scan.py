"""Cluster-internal scans a shard answers for the router's scatter plans.

Core functions: `match_keys(backend, op)` (the (namespace, key)s matching a query, so
count and clear can count each replicated key once) and `list_after(backend, op)` (keys
after a position, with the backend cursor to resume from, so list_keys pages over shards
cover every key exactly once). Both page through the backend in bounded steps.
"""

from __future__ import annotations

from memcluster.backends.base import MemoryBackend
from memcluster.model import Query
from memcluster.ops import ListAfterOp, ListKeysOp, MatchKeysOp, SearchOp
from memcluster.query import matches

_PAGE = 1000


def match_keys(backend: MemoryBackend, op: MatchKeysOp) -> list[tuple[str, str]]:
    """The (namespace, key) pairs matching `op.query` (every namespace if None)."""
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


def list_after(backend: MemoryBackend, op: ListAfterOp) -> tuple[list[str], str | None, bool]:
    """Keys strictly after `op.after`, resuming at `op.cursor` (see `ops.ListAfterOp`)."""
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


__all__ = ["list_after", "match_keys"]
