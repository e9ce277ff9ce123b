"""The redis backend against the conformance suite, on the machine's Redis (or
MEMCLUSTER_TEST_REDIS_URL), plus the checks specific to its key layout."""

from __future__ import annotations

from typing import Any

import pytest

from memcluster.backends.redis import RedisBackend
from memcluster.backends.registry import create_backend
from memcluster.ops import ClearOp, ListKeysOp, RetrieveOp, StoreOp
from memcluster.testing import BackendConformance


class TestRedisConformance(BackendConformance):
    backend = "redis"
    fake_clock = False  # Redis expires keys itself, in real time

    @pytest.fixture(autouse=True)
    def _service(self, redis_url: str) -> None:
        self.url = redis_url

    def backend_opts(self, tmp_path: Any) -> dict[str, Any]:
        return {"url": self.url}


@pytest.fixture
def scoped(redis_url: str):
    """Open redis backends under test prefixes; clear and close them afterwards."""
    opened: list[RedisBackend] = []

    def _open(prefix: str) -> RedisBackend:
        backend = create_backend("redis", {"url": redis_url, "prefix": "memcluster-test"},
                                 prefix=prefix)
        assert isinstance(backend, RedisBackend)
        opened.append(backend)
        return backend

    yield _open
    for backend in opened:
        backend.clear(ClearOp(namespace=None))
        backend.close()


def test_colons_in_scopes_namespaces_and_keys_cannot_collide(scoped):
    """Every (scope, namespace, key) that differs gets its own record, even when the
    concatenations with ':' read the same."""
    triples = [("p", "a", "b:c"), ("p", "a:b", "c"), ("p", "", "a:b:c"), ("p", "a:b:c", "x"),
               ("p:1:a", "", "b"), ("p", "1:a", "b"), ("p:r:1:a", "", "k"), ("p", "a", "k"),
               ("p:0:", "", "x"), ("p", "0:", "x")]
    backends = {scope: scoped(scope) for scope, _, _ in triples}
    for i, (scope, ns, key) in enumerate(triples):
        backends[scope].store(StoreOp.make(key, i, namespace=ns))
    for i, (scope, ns, key) in enumerate(triples):
        rec = backends[scope].retrieve(RetrieveOp.make(key, namespace=ns))
        assert rec is not None and rec.value == i and rec.version == 1, (scope, ns, key)
        listed = backends[scope].list_keys(ListKeysOp.make(namespace=ns)).keys
        expected = sorted(k for s, n, k in triples if (s, n) == (scope, ns))
        assert listed == expected


def test_expired_members_are_pruned_from_the_key_index(scoped):
    backend = scoped("prune")
    backend.store(StoreOp.make("short", 1, ttl=0.05))
    backend.store(StoreOp.make("long", 2))
    index = backend._index_key("")
    assert backend.client.zcard(index) == 2
    from tests.support import wait_until

    wait_until(lambda: not backend.client.exists(backend._record_key("", "short")),
               timeout=5, message="Redis to expire the hash")
    assert backend.list_keys(ListKeysOp.make()).keys == ["long"]
    assert backend.client.zrange(index, 0, -1) == [b"long"]


def test_every_redis_key_lives_under_the_configured_prefix(scoped):
    backend = scoped("under")
    backend.store(StoreOp.make("*?[k]", 1, namespace="n*"))
    found = list(backend.client.scan_iter(match=b"memcluster-test:5:under:*"))
    assert len(found) == 3  # the record, the namespace's key index, the namespace set
