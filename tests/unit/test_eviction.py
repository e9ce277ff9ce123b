"""Bounded memory sources evict by policy (lru, lfu, ttl-first) or reject, count what
they evict, and let a replica that follows the primary's writes and evictions stay equal."""

from __future__ import annotations

import os
import random
import zlib

import pytest

import memcluster as mc
from memcluster.backends.registry import create_backend
from memcluster.errors import CapacityExceeded, ConfigError
from memcluster.model import Record
from memcluster.ops import DeleteOp, ReplicateOp, RetrieveOp, StoreOp, UpdateOp
from memcluster.testing.clock import FakeClock


def bounded(clock: FakeClock | None = None, **opts):
    return create_backend("memory", {"cleanup_interval": 0, **opts}, prefix="m",
                          clock=clock or FakeClock())


def put(backend, key: str, value=1, **kw):
    return backend.store(StoreOp.make(key, value, **kw))


def get(backend, key: str):
    return backend.retrieve(RetrieveOp.make(key))


def keys(backend) -> list[str]:
    return sorted(r.key for r in backend.export()[0])


def test_lru_evicts_the_least_recently_used():
    backend = bounded(max_items=3, eviction="lru")
    for key in "abc":
        put(backend, key)
    get(backend, "a")                       # a read is a use: b is now the oldest
    put(backend, "d")
    assert keys(backend) == ["a", "c", "d"]
    assert backend.drain_evicted() == [("", "b")]
    assert backend.drain_evicted() == []
    put(backend, "c", 2)                    # an overwrite is a use; a full store still
    backend.retrieve_many([RetrieveOp.make("a")])  # takes overwrites without evicting
    put(backend, "e")
    assert keys(backend) == ["a", "c", "e"]
    info = backend.info()
    assert (info["evictions"], info["eviction"], info["records"]) == (2, "lru", 3)


def test_lfu_evicts_the_least_frequently_used_ties_by_age():
    backend = bounded(max_items=3, eviction="lfu")
    for key in "abc":
        put(backend, key)
    for key in ("a", "a", "b"):
        get(backend, key)
    put(backend, "d")                       # c: 1 use; a: 3, b: 2
    assert keys(backend) == ["a", "b", "d"]
    put(backend, "e")                       # b has 2 uses, d has 1
    assert keys(backend) == ["a", "b", "e"]
    assert backend.drain_evicted() == [("", "c"), ("", "d")]


def test_ttl_first_evicts_the_soonest_to_expire_and_only_records_with_a_ttl():
    clock = FakeClock()
    backend = bounded(clock, max_items=3, eviction="ttl-first")
    put(backend, "slow", ttl=100)
    put(backend, "forever")
    put(backend, "soon", ttl=50)
    put(backend, "d")
    assert keys(backend) == ["d", "forever", "slow"]
    put(backend, "e")
    assert keys(backend) == ["d", "e", "forever"]
    with pytest.raises(CapacityExceeded, match="ttl-first"):
        put(backend, "f")                   # nobody left with a TTL: nothing evicted
    assert keys(backend) == ["d", "e", "forever"]
    assert backend.info()["evictions"] == 2


def test_expired_records_make_room_before_anything_is_evicted():
    clock = FakeClock()
    backend = bounded(clock, max_items=2, eviction="lru")
    put(backend, "a", ttl=1)
    put(backend, "b")
    clock.advance(2)
    put(backend, "c")
    assert keys(backend) == ["b", "c"]
    assert backend.drain_evicted() == [] and backend.info()["evictions"] == 0


def test_max_bytes_bounds_encoded_keys_values_and_metadata():
    backend = bounded(max_bytes=100, eviction="lru")
    put(backend, "a", "x" * 30)
    put(backend, "b", "y" * 30, metadata={"tag": "t"})
    info = backend.info()
    assert 60 < info["bytes"] <= 100
    put(backend, "c", "z" * 60)             # needs both a and b gone
    assert keys(backend) == ["c"]
    assert backend.drain_evicted() == [("", "a"), ("", "b")]
    with pytest.raises(CapacityExceeded):   # bigger than the bound: nothing evicted
        put(backend, "huge", "w" * 200)
    assert keys(backend) == ["c"]
    backend.delete(DeleteOp.make("c"))
    assert backend.info()["bytes"] == 0


def test_a_write_never_evicts_what_it_writes_and_is_all_or_nothing():
    backend = bounded(max_items=2, eviction="lru")
    put(backend, "a")
    put(backend, "b")
    with pytest.raises(CapacityExceeded):   # three new keys cannot fit in two
        backend.store_many([StoreOp.make(k, 1) for k in ("c", "d", "e")])
    assert keys(backend) == ["a", "b"] and backend.drain_evicted() == []
    backend.store_many([StoreOp.make("a", 2), StoreOp.make("c", 1)])
    assert keys(backend) == ["a", "c"]      # b went; a (written here) stayed
    backend.update(UpdateOp.make("new", lambda v: 5))
    assert keys(backend) == ["c", "new"]    # update of a new key makes room too


def test_reject_refuses_and_replicate_never_evicts_nor_refuses():
    backend = bounded(max_items=1)
    put(backend, "a")
    with pytest.raises(CapacityExceeded):
        put(backend, "b")
    evicting = bounded(max_items=1, eviction="lru")
    put(evicting, "a")
    assert evicting.replicate(ReplicateOp(Record("z", 1, version=3))) is True
    assert keys(evicting) == ["a", "z"] and evicting.drain_evicted() == []


def test_a_batch_never_evicts_its_own_writes_and_starts_a_fresh_eviction_list():
    """So the shard can forward a batch's evictions (as deletes) before its writes."""
    backend = bounded(max_items=1, eviction="lru")
    first, second = backend.apply_batch([StoreOp.make("a", 1), StoreOp.make("b", 1)])
    assert first.key == "a" and isinstance(second, CapacityExceeded)
    assert backend.drain_evicted() == []
    backend.apply_batch([StoreOp.make("b", 1)])
    assert backend.drain_evicted() == [("", "a")]
    put(backend, "c")                        # outside apply_batch: kept until drained
    put(backend, "d")
    assert keys(backend) == ["d"]
    backend.apply_batch([RetrieveOp.make("d")])
    assert backend.drain_evicted() == []


def test_bad_bounds_and_policies_are_config_errors():
    for opts, field in (({"eviction": "lru"}, "eviction"), ({"max_items": 1, "eviction": "fifo"},
                                                            "eviction"),
                        ({"max_bytes": 0}, "max_bytes"), ({"max_items": True}, "max_items")):
        with pytest.raises(ConfigError, match=field):
            bounded(**opts)
    with mc.MemoryManager([mc.memory_source("c", "memory", opts={"max_items": 2,
                                                                 "eviction": "lru"})]) as mem:
        for key in "abc":
            mem.store(key, 1)
        assert sorted(mem.list_keys()) == ["b", "c"]
        assert mem.info()["c"]["evictions"] == 1


# ---- a replica that follows its primary stays equal ------------------------------------


@pytest.mark.parametrize("policy", ["lru", "lfu", "ttl-first"])
@pytest.mark.parametrize("bound", [{"max_items": 3}, {"max_bytes": 60}])
def test_a_replica_fed_writes_and_evictions_stays_equal_to_its_primary(policy, bound):
    """What the shard does: after each primary batch, forward the written records as
    ReplicateOps and the drained evictions as deletes; the replica then holds exactly
    what the primary holds. Random operations (seed printed on failure)."""
    seed = int(os.environ.get("MEMCLUSTER_TEST_SEED", "0")) ^ zlib.crc32(
        f"{policy}{bound}".encode())
    rng = random.Random(seed)
    clock = FakeClock()
    primary = bounded(clock, eviction=policy, **bound)
    replica = bounded(clock, eviction=policy, **bound)
    for step in range(300):
        key, roll = rng.choice("abcdefgh"), rng.random()
        if roll < 0.55:
            ops = [StoreOp.make(k, "v" * rng.randrange(30), ttl=rng.choice([None, 5.0, 50.0]))
                   for k in rng.sample("abcdefgh", rng.choice([1, 1, 2]))]
        elif roll < 0.75:
            ops = [RetrieveOp.make(key)]
        elif roll < 0.85:
            ops = [DeleteOp.make(key)]
        else:
            clock.advance(rng.randrange(1, 10))
            continue
        results = primary.apply_batch(ops)
        forwarded: list = [DeleteOp(k, ns) for ns, k in primary.drain_evicted()]
        for op, result in zip(ops, results, strict=True):
            if isinstance(result, Record) and op.kind == "store":
                forwarded.append(ReplicateOp(result))
            elif op.kind == "delete":
                forwarded.append(op)
        failed = [r for r in replica.apply_batch(forwarded) if isinstance(r, Exception)]
        assert not failed and replica.drain_evicted() == [], f"seed {seed}, step {step}"
        assert primary.export() == replica.export(), f"seed {seed}, step {step}"
    assert primary.info()["evictions"] > 10, f"seed {seed}: too few evictions to test"
