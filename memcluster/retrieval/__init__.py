"""Retrieval beyond one similarity score: keywords (BM25), hybrid fusion, recency and
importance, written once for every backend that searches text and for the cluster's merge.

Modules: `tokenizer` (text -> terms), `bm25` (an incremental index and statistics that
merge across shards), `rank` (search modes, fusion and `finish`, which ranks candidates
into records). Nothing here stores data or imports a backend: a backend keeps a
`BM25Index` beside its records, returns `Candidates`, and `finish` does the rest, in the
backend for a single store and in the scatter merge for a cluster.
"""

from memcluster.retrieval.bm25 import BM25Index, CorpusStats
from memcluster.retrieval.rank import Candidate, Candidates, Settings, finish
from memcluster.retrieval.tokenizer import tokenize

__all__ = ["BM25Index", "Candidate", "Candidates", "CorpusStats", "Settings", "finish",
           "tokenize"]
