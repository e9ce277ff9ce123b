"""The retrieval pieces: tokenizer, BM25 index and statistics, ranking, and the vector
backend's search modes (with the deterministic hashing embedder: fast, no model)."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import memcluster as mc
from memcluster.backends.registry import create_backend
from memcluster.cluster.data.placement import Placement
from memcluster.cluster.data.ring import Ring, routing_key
from memcluster.cluster.data.scatter import plan_for
from memcluster.errors import ConfigError, InvalidValue, UnsupportedQuery
from memcluster.model import Query, Ranking
from memcluster.ops import ReplicateOp, SearchOp, StoreOp
from memcluster.retrieval.bm25 import BM25Index, CorpusStats, bm25, upper_bound
from memcluster.retrieval.rank import Settings
from memcluster.retrieval.tokenizer import tokenize
from memcluster.testing.clock import FakeClock

# ---- tokenizer ----------------------------------------------------------------------------


def test_identifiers_split_at_punctuation_and_fold_case():
    assert tokenize("Invoice INV-20931 (paid)") == ["invoice", "inv", "20931", "paid"]
    assert tokenize("max_items=100") == ["max", "item", "100"]


def test_unicode_is_normalised_and_case_folded():
    full_width = "\uff29\uff2e\uff36\uff0d\uff12\uff10\uff19\uff13\uff11"  # INV-20931
    assert tokenize(full_width, "plain") == ["inv", "20931"]
    assert tokenize("Straße STRASSE", "plain") == ["strasse", "strasse"]
    assert tokenize("ﬁle Café", "plain") == ["file", "café"]


def test_spaceless_scripts_become_bigrams():
    assert tokenize("東京大学の研究") == ["東京", "京大", "大学", "学の", "の研", "研究"]
    assert tokenize("v2版本") == ["v2", "版本"]
    assert tokenize("猫") == ["猫"]


def test_english_drops_function_words_and_plural_s():
    assert tokenize("What are the queries about invoices and cats?") == \
        ["query", "invoice", "cat"]
    assert tokenize("What are the queries", "plain") == ["what", "are", "the", "queries"]
    assert tokenize("bus glass status 2cats") == ["bus", "glass", "status", "2cats"]


# ---- BM25 ---------------------------------------------------------------------------------


def test_index_scores_match_the_formula_and_stay_below_the_bound():
    index = BM25Index()
    docs = {"a": "red fox red fox jumps", "b": "lazy dog", "c": "red dog barks at fox"}
    for doc, text in docs.items():
        index.put(doc, tokenize(text))
    terms = ["red", "fox"]
    stats = index.stats(terms)
    # 11 terms: "at" is a stopword
    assert (stats.docs, stats.total_length, dict(stats.df)) == (3, 11, {"red": 2, "fox": 2})
    scores = index.scores(terms)
    assert set(scores) == {"a", "c"}
    for doc in scores:
        assert scores[doc] == pytest.approx(
            bm25(index.freqs(doc, terms), index.length(doc), terms, stats))
        assert 0 < scores[doc] < upper_bound(terms, stats)
    assert scores["a"] > scores["c"]           # more occurrences in a shorter document


def test_replacing_and_removing_documents_keeps_statistics_exact():
    index = BM25Index()
    index.put("a", ["x", "y"])
    index.put("a", ["y", "z", "z"])
    index.put("b", ["x"])
    index.remove("b")
    index.remove("missing")
    stats = index.stats(["x", "y", "z"])
    assert (stats.docs, stats.total_length, dict(stats.df)) == (1, 3, {"x": 0, "y": 1, "z": 1})
    assert index.scores(["x"]) == {}


def test_merged_statistics_divide_replicated_counts():
    one = CorpusStats(4, 40, {"t": 2})
    two = CorpusStats(6, 20, {"t": 2, "u": 1})
    merged = CorpusStats.merged([one, two], scale=0.5)
    assert (merged.docs, merged.total_length, dict(merged.df)) == (5, 30, {"t": 2, "u": 0.5})
    assert merged.idf("t") == pytest.approx(math.log(1 + (5 - 2 + 0.5) / 2.5))


# ---- settings and validation --------------------------------------------------------------


def test_bad_retrieval_options_name_the_option():
    for opts, name in (({"search_mode": "fuzzy"}, "search_mode"), ({"fusion": "max"}, "fusion"),
                       ({"rrf_k": 0}, "rrf_k"), ({"hybrid_alpha": 2}, "hybrid_alpha"),
                       ({"ranking": {"recency": -1}}, "ranking"),
                       ({"ranking": {"half_lfe": 3}}, "ranking"),
                       ({"tokenizer": "klingon"}, "tokenizer")):
        with pytest.raises(ConfigError, match=name):
            create_backend("vector", opts)
    assert Settings.from_opts({}).mode == "vector"


def test_bad_search_arguments_are_typed_errors():
    with pytest.raises(InvalidValue):
        SearchOp.make("x", mode="semantic")
    with pytest.raises(InvalidValue):
        SearchOp.make("x", ranking={"recency": float("nan")})
    with pytest.raises(InvalidValue):
        Ranking(relevance=0, recency=0, importance=0)
    with pytest.raises(InvalidValue):
        SearchOp.make("x", ranking="recent")


def test_modes_need_a_backend_that_has_them_and_a_text_query():
    with mc.MemoryManager([mc.memory_source("kv", "memory"),
                           mc.memory_source("v", "vector")]) as mem:
        mem.store("k", "a red fox", source="v")
        with pytest.raises(UnsupportedQuery, match="hybrid"):
            mem.search("fox", source="kv", mode="hybrid")
        with pytest.raises(UnsupportedQuery, match="recency"):
            mem.search("fox", source="kv", ranking={"recency": 1})
        with pytest.raises(UnsupportedQuery, match="text"):
            mem.search(pattern="k*", source="v", mode="keyword")
        assert [r.key for r in mem.search("fox", source="v", mode="keyword")] == ["k"]
        assert mem.info()["v"]["capabilities"]["modes"] == ["vector", "keyword", "hybrid"]


# ---- the modes on the vector backend ------------------------------------------------------


@pytest.fixture
def notes():
    clock = FakeClock()
    backend = create_backend("vector", {"embedder": "hashing", "dimension": 128}, prefix="n",
                             clock=clock)
    texts = {"inv:1": "Invoice INV-20931 from Acme was paid",
             "inv:2": "Invoice INV-20913 from Acme is overdue",
             "tea": "Ada drinks green tea every morning",
             "err": "Deploy failed with error E1042 on node seven"}
    for i, (key, text) in enumerate(texts.items()):
        backend.store(StoreOp.make(key, {"text": text}, metadata={"importance": i}))
        clock.advance(3600)
    return backend, clock


def keys(backend, text, **kw):
    limit = kw.pop("limit", 10)
    return [r.key for r in backend.search(SearchOp.make(Query(text=text, limit=limit), **kw))]


def test_keyword_mode_finds_exact_terms_only(notes):
    backend, _ = notes
    assert keys(backend, "INV-20931", mode="keyword") == ["inv:1", "inv:2"]  # "inv" in both
    assert keys(backend, "e1042", mode="keyword") == ["err"]
    assert keys(backend, "nothing matches this", mode="keyword") == []
    hits = backend.search(SearchOp.make("invoice acme", mode="keyword"))
    assert {h.key for h in hits} == {"inv:1", "inv:2"}
    assert all(0 < h.score <= 1 for h in hits)


def test_hybrid_puts_the_exact_identifier_first(notes):
    backend, _ = notes
    assert keys(backend, "invoice INV-20931", mode="hybrid", limit=1) == ["inv:1"]
    rrf = create_backend("vector", {"embedder": "hashing", "dimension": 128, "fusion": "rrf"})
    for r in backend.export()[0]:
        rrf.replicate(ReplicateOp(r))
    assert keys(rrf, "invoice INV-20931", mode="hybrid", limit=1) == ["inv:1"]


def test_the_source_default_mode_applies_when_a_search_gives_none():
    backend = create_backend("vector", {"embedder": "hashing", "search_mode": "keyword"})
    backend.store(StoreOp.make("a", "alpha beta"))
    backend.store(StoreOp.make("b", "gamma delta"))
    assert keys(backend, "beta") == ["a"]                 # keyword: only the term's holder
    assert set(keys(backend, "beta", mode="vector")) == {"a", "b"}


def test_recency_and_importance_reorder_equally_relevant_records(notes):
    backend, clock = notes
    text = "Invoice from Acme"
    newest_first = keys(backend, text, mode="keyword",
                        ranking=Ranking(relevance=0.001, recency=1.0, half_life=3600))
    assert newest_first == ["inv:2", "inv:1"]
    important = keys(backend, "anything at all", mode="vector",
                     ranking={"relevance": 0.0001, "importance": 1, "importance_scale": 3})
    assert important[:2] == ["err", "tea"]
    scored = backend.search(SearchOp.make(Query(text=text, limit=1), mode="keyword",
                                          ranking={"recency": 1, "half_life": 3600}))
    clock.advance(3600)
    later = backend.search(SearchOp.make(Query(text=text, limit=1), mode="keyword",
                                         ranking={"recency": 1, "half_life": 3600}))
    assert later[0].score < scored[0].score               # an hour older: recency halves


def test_min_score_applies_to_the_final_score(notes):
    backend, _ = notes
    all_hits = backend.search(SearchOp.make("invoice acme", mode="hybrid"))
    floor = all_hits[1].score
    strict = backend.search(SearchOp.make(Query(text="invoice acme", min_score=floor),
                                          mode="hybrid"))
    assert [h.key for h in strict] == [h.key for h in all_hits[:2]]


def test_count_follows_the_source_mode():
    backend = create_backend("vector", {"embedder": "hashing", "search_mode": "keyword"})
    backend.store_many([StoreOp.make("a", "red fox"), StoreOp.make("b", "red dog"),
                        StoreOp.make("c", "blue whale")])
    assert backend.apply(mc.ops.CountOp.make("red")) == 2


# ---- sharded merges equal one store (property) --------------------------------------------

WORDS = ["alpha", "beta", "gamma", "delta", "fox", "dog", "inv", "20931", "red", "blue"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(docs=st.lists(st.lists(st.sampled_from(WORDS), min_size=1, max_size=6),
                     min_size=1, max_size=30),
       query=st.lists(st.sampled_from(WORDS), min_size=1, max_size=3),
       shards=st.integers(1, 4), replicas=st.integers(1, 2), limit=st.integers(1, 6),
       mode=st.sampled_from(["vector", "keyword", "hybrid"]),
       fusion=st.sampled_from(["weighted", "rrf"]), ranked=st.booleans())
def test_sharded_search_equals_one_store(docs, query, shards, replicas, limit, mode, fusion,
                                         ranked):
    replicas = min(replicas, shards)
    clock = FakeClock()
    opts = {"embedder": "hashing", "dimension": 32, "fusion": fusion}
    single = create_backend("vector", opts, prefix="one", clock=clock)
    ring = Ring(1, [f"s{i}" for i in range(shards)])
    stores = {sid: create_backend("vector", opts, prefix=sid, clock=clock)
              for sid in ring.shard_ids}
    for i, words in enumerate(docs):
        record = single.store(StoreOp.make(f"d{i:02d}", " ".join(words),
                                           metadata={"importance": i % 3}))
        clock.advance(10)
        for sid in ring.preference(routing_key(record.key, ""), replicas):
            stores[sid].replicate(ReplicateOp(record))
    ranking = Ranking(relevance=1, recency=0.3, importance=0.3, half_life=60,
                      importance_scale=2) if ranked else None
    op = SearchOp.make(Query(text=" ".join(query), limit=limit), mode=mode, ranking=ranking)
    plan = plan_for(op, Placement("p", ring, replicas, replicas))
    for sid, store in stores.items():
        plan.collect(sid, [store.apply(o) for o in plan.shard_ops(sid)])
    merged, one = plan.merge(), single.search(op)
    assert [(r.key, round(r.score, 5)) for r in merged] == \
        [(r.key, round(r.score, 5)) for r in one]
