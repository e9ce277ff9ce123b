"""The memory backend: the conformance suite, plus its sweeper and its `max_items` bound."""

from __future__ import annotations

import gc
import weakref

import pytest

from memcluster.backends.memory import MemoryStoreBackend
from memcluster.backends.registry import create_backend
from memcluster.errors import CapacityExceeded, ConfigError
from memcluster.model import Record
from memcluster.ops import ReplicateOp, RetrieveOp, StoreOp, UpdateOp
from memcluster.testing import BackendConformance, FakeClock
from tests.support import wait_until


class TestMemoryConformance(BackendConformance):
    backend = "memory"
    persistent = False

    def backend_opts(self, tmp_path):
        return {"cleanup_interval": 0}


class TestMemoryWithSweeperConformance(BackendConformance):
    """The same contract with a sweeper racing every test (it must never change results)."""

    backend = MemoryStoreBackend
    persistent = False

    def backend_opts(self, tmp_path):
        return {"cleanup_interval": 0.001, "max_items": 100_000}


def open_memory(clock, **opts) -> MemoryStoreBackend:
    backend = create_backend("memory", opts, prefix="t", clock=clock)
    assert isinstance(backend, MemoryStoreBackend)
    return backend


def test_sweeper_removes_expired_entries_physically():
    clock = FakeClock()
    backend = open_memory(clock, cleanup_interval=0.01)
    try:
        for i in range(2500):  # more than one sweep slice
            backend.store(StoreOp.make(f"k{i}", i, namespace=f"n{i % 3}", ttl=5))
        backend.store(StoreOp.make("keep", 1, ttl=50))
        backend.store(StoreOp.make("forever", 1))
        for _ in range(3):  # overwrites leave stale heap entries behind
            backend.store(StoreOp.make("k0", 0, namespace="n0", ttl=5))
        assert backend.held() == 2502
        clock.advance(5)
        wait_until(lambda: backend.held() == 2, message="the sweeper to remove 2500 entries")
        assert backend.info()["records"] == 2
        assert backend.retrieve(RetrieveOp.make("keep")) is not None
        clock.advance(50)
        wait_until(lambda: backend.held() == 1, message="the sweeper to remove 'keep'")
    finally:
        backend.close()
    assert backend._sweeper is None


def test_without_a_sweeper_expired_entries_go_lazily_or_on_info():
    clock = FakeClock()
    backend = open_memory(clock, cleanup_interval=0)
    try:
        backend.store(StoreOp.make("a", 1, ttl=1))
        backend.store(StoreOp.make("b", 1, ttl=1))
        clock.advance(1)
        assert backend.held() == 2
        assert backend.retrieve(RetrieveOp.make("a")) is None
        assert backend.held() == 1
        assert backend.info()["records"] == 0 and backend.held() == 0
    finally:
        backend.close()


def test_sweeper_stops_when_the_backend_is_collected():
    backend = open_memory(FakeClock(), cleanup_interval=0.01)
    thread = backend._sweeper
    assert thread is not None and thread.is_alive()
    ref = weakref.ref(backend)
    del backend
    gc.collect()
    assert ref() is None
    thread.join(timeout=5)
    assert not thread.is_alive()


def test_max_items_refuses_new_keys_but_allows_overwrites():
    clock = FakeClock()
    backend = open_memory(clock, cleanup_interval=0, max_items=3)
    try:
        for key in ("a", "b"):
            backend.store(StoreOp.make(key, 1))
        backend.store(StoreOp.make("c", 1, ttl=1))
        with pytest.raises(CapacityExceeded):
            backend.store(StoreOp.make("d", 1))
        with pytest.raises(CapacityExceeded):  # all or nothing
            backend.store_many([StoreOp.make("a", 2), StoreOp.make("e", 1)])
        assert backend.retrieve(RetrieveOp.make("a")).version == 1
        with pytest.raises(CapacityExceeded):
            backend.update(UpdateOp.make("new", lambda v: 1))
        assert backend.store(StoreOp.make("a", 3)).version == 2
        assert backend.update(UpdateOp.make("b", lambda v: v + 1)).value == 2
        clock.advance(1)  # "c" expires: its room is free again
        assert backend.store(StoreOp.make("d", 1)).version == 1
        # a replica follows its primary: replicate never refuses for capacity
        assert backend.replicate(ReplicateOp(Record("z", 1, version=4))) is True
        assert backend.replicate(ReplicateOp(Record("d", 2, version=4))) is True
        assert backend.info()["records"] == 4
        assert backend.drain_evicted() == []
    finally:
        backend.close()


@pytest.mark.parametrize("opts, field", [
    ({"cleanup_intervall": 1}, "cleanup_intervall"),
    ({"cleanup_interval": -1}, "cleanup_interval"),
    ({"cleanup_interval": "1"}, "cleanup_interval"),
    ({"max_items": 0}, "max_items"),
    ({"max_items": 2.5}, "max_items"),
    ({"max_items": True}, "max_items"),
])
def test_bad_options_raise_config_error_naming_the_option(opts, field):
    with pytest.raises(ConfigError, match=field):
        create_backend("memory", opts)
