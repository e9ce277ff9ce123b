"""The ring: placement is a pure, stable, balanced function of (version, shard ids)."""

from __future__ import annotations

import os
import pickle
import random
from collections import Counter

import pytest

from memcluster.cluster.data.ring import Ring, routing_key
from memcluster.errors import ConfigError

SEED = int(os.environ.get("MEMCLUSTER_TEST_SEED", "0"))


def _keys(n: int) -> list[str]:
    rng = random.Random(SEED)
    print(f"seed {SEED}")
    return [f"k{rng.randrange(1 << 40)}" for _ in range(n)]


def test_preference_gives_distinct_shards_primary_first():
    ring = Ring(1, ["s/0", "s/1", "s/2", "s/3"])
    for key in _keys(200):
        prefs = ring.preference(key, 3)
        assert len(prefs) == len(set(prefs)) == 3
        assert prefs[0] == ring.primary(key)
        assert ring.preference(key, 4)[:3] == prefs  # ring order: a prefix of the full list


def test_too_few_shards_is_an_error():
    ring = Ring(1, ["s/0", "s/1"])
    with pytest.raises(ConfigError):
        ring.preference("k", 3)


def test_same_ids_same_placement_across_processes_and_pickle():
    a = Ring(3, ["s/0", "s/1", "s/2"])
    b = pickle.loads(pickle.dumps(a))
    assert a == b and b.version == 3
    assert all(a.preference(k, 2) == b.preference(k, 2) for k in _keys(100))
    assert Ring.from_dict(a.to_dict()) == a


def test_adding_a_shard_moves_only_keys_to_the_new_shard():
    old = Ring(1, ["s/0", "s/1", "s/2"])
    new = old.next(["s/0", "s/1", "s/2", "s/3"])
    assert new.version == 2
    keys = _keys(2000)
    moved = [k for k in keys if old.primary(k) != new.primary(k)]
    assert all(new.primary(k) == "s/3" for k in moved)
    assert 0.1 < len(moved) / len(keys) < 0.45


def test_load_is_roughly_balanced():
    ring = Ring(1, [f"s/{i}" for i in range(4)])
    counts = Counter(ring.primary(k) for k in _keys(4000))
    assert min(counts.values()) > 4000 / 4 * 0.6


def test_ring_is_immutable_and_validated():
    ring = Ring(1, ["a"])
    with pytest.raises(AttributeError):
        ring.version = 2
    with pytest.raises(ConfigError):
        Ring(1, [])
    with pytest.raises(ConfigError):
        Ring(1, ["a", "a"])
    with pytest.raises(ConfigError):
        Ring(0, ["a"])


def test_routing_key_separates_namespaces():
    assert routing_key("k", "") == "k"
    assert routing_key("k", "t1") != routing_key("k", "t2")
