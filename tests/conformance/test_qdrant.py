"""The qdrant backend runs the conformance suite in qdrant-client's embedded local mode (no
server here), on disk, with the hashing embedder. The in-memory location, the euclid and dot
distances and semantic ranking with MiniLM are checked in tests/unit/test_qdrant.py; the
whole suite in memory passes too, but CI runs it once (qdrant-client's embedded store
commits every write to SQLite, which makes it the slowest local backend)."""

from __future__ import annotations

from memcluster.testing import BackendConformance


class TestQdrantLocalConformance(BackendConformance):
    backend = "qdrant"

    def backend_opts(self, tmp_path):
        return {"path": str(tmp_path / "qdrant"), "embedder": "hashing", "dimension": 64}
