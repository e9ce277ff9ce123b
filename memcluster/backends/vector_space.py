"""One namespace of the vector backend, and how a search picks its candidates from it.

Core types: `Space` (records by key, their unit vectors as rows of one contiguous float32
matrix, and, built on first use, a `BM25Index` of their text and the arrays of their
`updated_at` and importance that recency/importance ranking reads) and `collect`, which
returns the `memcluster.retrieval.Candidates` of one search over a space.

Rows: `rows` maps a key to its row and `row_keys` a row to its key; rows [0, size) are
in use; a delete moves the last row into the hole, so the matrix stays dense with no
mask, and capacity doubles when full and halves when a quarter full (amortised O(1)).

Decisions:

- **The keyword index is built when a keyword or hybrid search first needs it**, then
  kept up to date on every write. A source searched only by meaning never tokenizes a
  thing; rejected: indexing every source always, which taxes every write of the common
  pure-vector use for a feature it may never call.
- **Candidates, not pages.** `collect` picks what `retrieval.rank.finish` needs to rank
  exactly: the best `need` by the final score where that score depends on the record
  alone (vector mode, with or without ranking), the best `overfetch(need)` where
  per-shard BM25 statistics could reorder them (keyword, weighted hybrid), and each
  list's top `depth` for reciprocal rank fusion.
- **Filters after scoring, widening as needed** (`top_rows`): pattern and metadata
  filters run on the best candidates in score order; when they reject too many, the
  candidate set grows fourfold until enough hits are found or every row has been seen.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from memcluster import query
from memcluster.model import Query, Ranking, Record
from memcluster.retrieval.bm25 import BM25Index, query_terms, upper_bound
from memcluster.retrieval.rank import (
    Candidate,
    Candidates,
    Settings,
    combine,
    depth_for,
    importance_of,
    overfetch,
)

MIN_CAPACITY = 64
Tokens = Callable[[Any], list[str]]


class Space:
    """One namespace: records by key, their unit vectors as rows of a float32 matrix."""

    __slots__ = ("_signals", "_sorted", "_tokens", "index", "matrix", "records", "row_keys",
                 "rows")

    def __init__(self, dimension: int, tokens: Tokens) -> None:
        self.records: dict[str, Record] = {}
        self.matrix = np.zeros((MIN_CAPACITY, dimension), dtype=np.float32)
        self.row_keys: list[str] = []
        self.rows: dict[str, int] = {}
        self.index: BM25Index | None = None
        self._tokens = tokens
        self._sorted: list[str] | None = None
        self._signals: dict[tuple[str, float], tuple[np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self.row_keys)

    def put(self, record: Record, vector: np.ndarray) -> None:
        key = record.key
        row = self.rows.get(key)
        if row is None:
            row = len(self.row_keys)
            if row == self.matrix.shape[0]:
                grown = np.zeros((2 * row, self.matrix.shape[1]), dtype=np.float32)
                grown[:row] = self.matrix
                self.matrix = grown
            self.rows[key] = row
            self.row_keys.append(key)
            self._sorted = None
        self.matrix[row] = vector
        self.records[key] = record
        self._signals.clear()
        if self.index is not None:
            self.index.put(key, self._tokens(record.value))

    def remove(self, key: str) -> Record | None:
        record = self.records.pop(key, None)
        if record is None:
            return None
        row = self.rows.pop(key)
        last = len(self.row_keys) - 1
        if row != last:
            moved = self.row_keys[last]
            self.matrix[row] = self.matrix[last]
            self.row_keys[row] = moved
            self.rows[moved] = row
        self.row_keys.pop()
        self._sorted = None
        self._signals.clear()
        if self.index is not None:
            self.index.remove(key)
        capacity = self.matrix.shape[0]
        if capacity > MIN_CAPACITY and last < capacity // 4:
            self.matrix = self.matrix[:capacity // 2].copy()
        return record

    def vector(self, key: str) -> np.ndarray:
        """A copy of `key`'s unit vector (the matrix row itself moves on deletes)."""
        return self.matrix[self.rows[key]].copy()

    def scores(self, vector: np.ndarray) -> np.ndarray:
        return self.matrix[:len(self.row_keys)] @ vector

    def sorted_keys(self) -> list[str]:
        """Every key (live or not) in code-point order; cached until a key comes or goes."""
        if self._sorted is None:
            self._sorted = sorted(self.row_keys)
        return self._sorted

    def keyword_index(self) -> BM25Index:
        """The BM25 index of the space's text, built on first use and kept up to date."""
        if self.index is None:
            index = BM25Index()
            for key, record in self.records.items():
                index.put(key, self._tokens(record.value))
            self.index = index
        return self.index

    def signals(self, ranking: Ranking) -> tuple[np.ndarray, np.ndarray]:
        """Per row: `updated_at` and importance in [0, 1] (cached until the space changes)."""
        slot = (ranking.importance_field, ranking.importance_scale)
        cached = self._signals.get(slot)
        if cached is None:
            records = [self.records[k] for k in self.row_keys]
            cached = (np.fromiter((r.updated_at for r in records), np.float64, len(records)),
                      np.fromiter((importance_of(r.metadata, ranking) for r in records),
                                  np.float64, len(records)))
            self._signals[slot] = cached
        return cached


def top_rows(space: Space, scores: np.ndarray, rows: np.ndarray | None, q: Query,
             need: int | None, now: float) -> tuple[list[int], list[str]]:
    """The best `need` rows by `scores` (best first, ties by key) among `rows` (None: all)
    that hold a live record passing the query's pattern and filter, and the keys of the
    expired records met on the way. `need` None: every such row, in no order.

    The k best are found with `np.partition` (plus every row tied with the k-th, so ties
    break by key exactly as a full sort would); if pattern and filter leave fewer than
    `need` of them, k grows fourfold.
    """
    pool = scores if rows is None else scores[rows]
    total = len(pool)
    k = total if need is None else min(total, max(2 * need, need + 32))
    while True:
        if k >= total:
            chosen = np.arange(total)
        else:
            kth = np.partition(pool, total - k)[total - k]
            chosen = np.flatnonzero(pool >= kth)
        picked = chosen if rows is None else rows[chosen]
        hits, expired = _matching(space, picked.tolist(), q, now)
        if need is None or len(hits) >= need or len(chosen) >= total:
            break
        k = min(total, 4 * k)
    if need is not None:
        keys = space.row_keys
        hits.sort(key=lambda row: (-scores[row], keys[row]))
        del hits[need:]
    return hits, expired


def _matching(space: Space, rows: list[int], q: Query, now: float
              ) -> tuple[list[int], list[str]]:
    hits: list[int] = []
    expired: list[str] = []
    row_keys, records = space.row_keys, space.records
    for row in rows:
        key = row_keys[row]
        record = records[key]
        if record.expired(now):
            expired.append(key)
        elif query.match_pattern(key, q.pattern) and (
                not q.filter or query.match_filter(record.metadata, q.filter)):
            hits.append(row)
    return hits, expired


def collect(space: Space, q: Query, settings: Settings, need: int | None, now: float,
            embed_query: Callable[[str], np.ndarray], tokens: Callable[[str], list[str]]
            ) -> tuple[Candidates, list[str]]:
    """The candidates of one search over `space` (see the module docstring), and the keys
    of expired records met (the caller removes them). `need`: offset + limit, None: all."""
    text = q.text or ""
    mode, ranking, floor = settings.mode, settings.ranking, settings.threshold
    bundle = Candidates(settings, now)
    size = len(space)
    cos = space.scores(embed_query(text)) if settings.vector else None
    keyword = np.zeros(size)
    if settings.keyword:
        index = space.keyword_index()
        bundle.terms = query_terms(tokens(text))
        bundle.stats = index.stats(bundle.terms)
        bound = upper_bound(bundle.terms, bundle.stats) or 1.0
        for key, score in index.scores(bundle.terms, bundle.stats).items():
            keyword[space.rows[key]] = score / bound
    found = np.flatnonzero(keyword > 0)
    similar = None if cos is None else (
        np.arange(size) if floor is None else np.flatnonzero(cos >= floor))
    expired: list[str] = []

    def pick(scores: np.ndarray, rows: np.ndarray | None, want: int | None) -> list[int]:
        hits, gone = top_rows(space, scores, rows, q, want, now)
        expired.extend(gone)
        return hits

    def ranked(relevance: np.ndarray) -> np.ndarray:
        if ranking is None:
            return relevance
        updated, importance = space.signals(ranking)
        return combine(np.clip(relevance, 0.0, 1.0), updated, importance, ranking, now)

    if mode == "vector":  # the final score is the record's own: min_score applies here
        assert cos is not None
        final = ranked(cos)
        keep = np.ones(size, dtype=bool) if floor is None else cos >= floor
        if q.min_score is not None:
            keep &= final >= q.min_score
        chosen = pick(final, None if keep.all() else np.flatnonzero(keep), need)
    elif mode == "keyword":
        chosen = pick(ranked(keyword), found, overfetch(need))
    elif settings.fusion == "rrf":
        assert cos is not None and similar is not None
        depth = depth_for(settings, need)
        chosen = list(dict.fromkeys(pick(cos, similar, depth) + pick(keyword, found, depth)))
    else:
        assert cos is not None and similar is not None
        relevance = settings.alpha * np.maximum(cos, 0.0) + (1 - settings.alpha) * keyword
        if floor is not None:
            relevance = np.where(cos >= floor, relevance, (1 - settings.alpha) * keyword)
        rows = None if floor is None else np.union1d(similar, found)
        chosen = pick(ranked(relevance), rows, overfetch(need))
    index = space.index if settings.keyword else None
    for row in chosen:
        key = space.row_keys[row]
        bundle.items.append(Candidate(
            space.records[key], None if cos is None else float(cos[row]),
            None if index is None else index.freqs(key, bundle.terms),
            0 if index is None else index.length(key)))
    return bundle, expired


__all__ = ["Space", "collect", "top_rows"]
