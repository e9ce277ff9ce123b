"""BM25 over a set of documents, with statistics that merge across shards.

Core types: `BM25Index` (an incremental inverted index: term -> {doc: term frequency},
plus each document's length), `CorpusStats` (document count, total length and the
document frequency of the query's terms: everything BM25 needs beyond one document) and
the pure scoring functions `bm25` and `upper_bound`.

The score is Okapi BM25 with Lucene's non-negative IDF:

    idf(t)  = ln(1 + (N - df(t) + 0.5) / (df(t) + 0.5))
    score   = sum over query terms t in the document of
              idf(t) * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len / avglen))

with k1 = 1.2 and b = 0.75. Query terms count once each (a repeated query word does not
weigh double). `upper_bound` is the score no document can reach, sum of idf(t) * (k1 + 1),
so score / upper_bound is a relevance in [0, 1] that depends only on the document and the
corpus statistics, never on the other candidates of one search.

Decision: statistics travel apart from the index. A sharded source computes BM25 per
shard with that shard's statistics to pick candidates, and a merge sums the shards'
`CorpusStats` (divided by the replication factor, since every record sits on N shards)
and rescores every candidate from its term frequencies and length. That makes the merged
scores exactly those of one index holding everything; only the choice of candidates used
per-shard IDF (an approximation that over-fetching makes harmless for shards of similar
content). The rejected alternative, a second round trip that first gathers global
document frequencies, doubles the latency of every keyword search.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

K1 = 1.2
B = 0.75


@dataclass(frozen=True, slots=True)
class CorpusStats:
    """What BM25 needs beyond one document: N, the total length, df of the query terms."""

    docs: float = 0
    total_length: float = 0
    df: Mapping[str, float] = field(default_factory=dict)

    @property
    def avg_length(self) -> float:
        return self.total_length / self.docs if self.docs else 0.0

    def idf(self, term: str) -> float:
        df = min(self.df.get(term, 0), self.docs)
        return math.log(1.0 + (self.docs - df + 0.5) / (df + 0.5))

    @classmethod
    def merged(cls, parts: Iterable[CorpusStats], scale: float = 1.0) -> CorpusStats:
        """The sum of `parts`, times `scale` (1 / replicas, when each record sits on N of
        the shards that answered)."""
        docs = total = 0.0
        df: Counter[str] = Counter()
        for part in parts:
            docs += part.docs
            total += part.total_length
            df.update(part.df)
        return cls(docs * scale, total * scale, {t: n * scale for t, n in df.items()})


def bm25(freqs: Mapping[str, int], length: int, terms: Sequence[str],
         stats: CorpusStats) -> float:
    """The BM25 score of one document (its frequencies of the query `terms`, its length)."""
    avg = stats.avg_length or 1.0
    norm = K1 * (1.0 - B + B * length / avg)
    score = 0.0
    for term in terms:
        tf = freqs.get(term, 0)
        if tf:
            score += stats.idf(term) * tf * (K1 + 1.0) / (tf + norm)
    return score


def upper_bound(terms: Sequence[str], stats: CorpusStats) -> float:
    """A score no document reaches: sum of idf(t) * (k1 + 1) over the query terms."""
    return sum(stats.idf(t) for t in terms) * (K1 + 1.0)


def query_terms(tokens: Iterable[str]) -> list[str]:
    """The distinct terms of a tokenized query, in first-seen order."""
    return list(dict.fromkeys(tokens))


class BM25Index:
    """An inverted index over documents named by str ids; `put` replaces a document.

    Memory: one dict entry per distinct (term, document) pair plus one length per
    document. Not thread-safe on its own: its owner's lock guards it.
    """

    __slots__ = ("_docs", "_postings", "_total")

    def __init__(self) -> None:
        self._postings: dict[str, dict[str, int]] = {}
        self._docs: dict[str, tuple[int, tuple[str, ...]]] = {}  # doc -> (length, terms)
        self._total = 0

    def __len__(self) -> int:
        return len(self._docs)

    def put(self, doc: str, tokens: Sequence[str]) -> None:
        """Index `doc` as the term sequence `tokens` (replacing what it was)."""
        self.remove(doc)
        counts = Counter(tokens)
        for term, tf in counts.items():
            posting = self._postings.get(term)
            if posting is None:
                posting = self._postings[term] = {}
            posting[doc] = tf
        self._docs[doc] = (len(tokens), tuple(counts))
        self._total += len(tokens)

    def remove(self, doc: str) -> None:
        entry = self._docs.pop(doc, None)
        if entry is None:
            return
        self._total -= entry[0]
        for term in entry[1]:
            posting = self._postings[term]
            del posting[doc]
            if not posting:
                del self._postings[term]

    def clear(self) -> None:
        self._postings.clear()
        self._docs.clear()
        self._total = 0

    def length(self, doc: str) -> int:
        entry = self._docs.get(doc)
        return entry[0] if entry is not None else 0

    def freqs(self, doc: str, terms: Sequence[str]) -> dict[str, int]:
        """`doc`'s frequencies of those `terms` it contains."""
        out = {}
        for term in terms:
            tf = self._postings.get(term, {}).get(doc)
            if tf:
                out[term] = tf
        return out

    def stats(self, terms: Sequence[str]) -> CorpusStats:
        return CorpusStats(len(self._docs), self._total,
                           {t: len(self._postings.get(t, ())) for t in terms})

    def scores(self, terms: Sequence[str], stats: CorpusStats | None = None
               ) -> dict[str, float]:
        """{doc: BM25 score} for every document holding a query term (local statistics
        unless `stats` is given)."""
        stats = stats or self.stats(terms)
        avg = stats.avg_length or 1.0
        out: dict[str, float] = {}
        lengths = self._docs
        for term in terms:
            posting = self._postings.get(term)
            if not posting:
                continue
            idf = stats.idf(term) * (K1 + 1.0)
            for doc, tf in posting.items():
                norm = K1 * (1.0 - B + B * lengths[doc][0] / avg)
                out[doc] = out.get(doc, 0.0) + idf * tf / (tf + norm)
        return out


__all__ = ["K1", "B", "BM25Index", "CorpusStats", "bm25", "query_terms", "upper_bound"]
