"""The vector backend runs the conformance suite with the hashing embedder, in memory and
persisted under a path (snapshot + append log). Its semantic text search is compared by
ranking in tests/unit/test_vector.py and tests/unit/test_minilm.py, not here."""

from __future__ import annotations

from memcluster.testing import BackendConformance


class TestVectorInMemoryConformance(BackendConformance):
    backend = "vector"
    persistent = False

    def backend_opts(self, tmp_path):
        return {"embedder": "hashing"}


class TestVectorPersistentConformance(BackendConformance):
    backend = "vector"

    def backend_opts(self, tmp_path):
        return {"embedder": "hashing", "dimension": 128, "path": str(tmp_path / "vectors"),
                "compact_after": 50}
