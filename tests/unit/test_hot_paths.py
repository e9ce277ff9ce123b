"""The batch fast paths build the same values and reject the same input as the plain ones."""

from __future__ import annotations

import pytest

from memcluster import MemoryManager, codec, memory_source
from memcluster.cluster.data.shard import ShardCore
from memcluster.errors import InvalidKey, InvalidValue
from memcluster.model import Record, new_record
from memcluster.ops import StoreOp, new_op_id, new_store_op


def test_fast_constructors_build_equal_objects():
    fields = ("k", {"a": [1]}, "ns", {"m": 1}, 3, 1.5, 2.5, 9.0, 0.25)
    fast, plain = new_record(*fields), Record(*fields)
    assert fast == plain and type(fast) is Record and repr(fast) == repr(plain)
    with pytest.raises(AttributeError):  # still frozen
        fast.version = 4  # type: ignore[misc]
    op = StoreOp.make("k", {"x": 1}, namespace="ns", metadata={"t": 1}, ttl=5, op_id="c:1")
    assert new_store_op(*(getattr(op, f) for f in op.__slots__)) == op
    assert StoreOp.make_plain("k", {"x": 1}, "ns", 1 << 20, "c:1") == StoreOp.make(
        "k", {"x": 1}, namespace="ns", op_id="c:1")


@pytest.mark.parametrize("value", [
    {1: "int key"}, {"n": 1 << 64}, {"t": (1, 2)}, {"o": object()}, {"deep": {"x": {1: 2}}},
])
def test_flat_value_fast_path_still_rejects(value):
    with pytest.raises(InvalidValue):
        codec.encode_value(value)


def test_depth_limit_applies_to_flat_dicts():
    with pytest.raises(InvalidValue):
        codec.check_native({"a": 1}, depth=0)
    codec.check_native("scalar", depth=0)


def test_encoder_recovers_after_a_failed_encode():
    with pytest.raises((TypeError, OverflowError)):
        codec.encode({"n": 1 << 70})
    assert codec.decode(codec.encode({"ok": [1, "two"]})) == {"ok": [1, "two"]}


def test_a_replayed_store_answers_the_same_record_without_writing_again():
    core = ShardCore("memory", {"cleanup_interval": 0}, prefix="hot", shard_id="s0")
    core.open()
    try:
        op = StoreOp.make("k", {"v": 1}, namespace="ns", metadata={"m": 2}, ttl=60,
                          op_id=new_op_id())
        (first,) = core.apply_batch(1, [op])
        (again,) = core.apply_batch(1, [op])
        assert again == first and again.version == 1 and again.metadata == {"m": 2}
    finally:
        core.close()


def test_store_many_item_checks():
    with MemoryManager([memory_source("m", "memory", default=True)]) as mem:
        recs = mem.store_many([("a", 1), ["b", 2], ("c", 3, {"ttl": 60})])
        assert [(r.key, r.value, r.version) for r in recs] == [("a", 1, 1), ("b", 2, 1),
                                                               ("c", 3, 1)]
        for bad in ([("k", 1, None)], [("k",)], [("k", 1, {"nope": 1})], [("", 1)]):
            with pytest.raises((InvalidKey, InvalidValue), match=r"items\[0\]"):
                mem.store_many(bad)
        with pytest.raises(InvalidValue, match=r"items\[1\]"):
            mem.store_many([("ok", 1), ("bad", (1, 2))])
        assert mem.retrieve("ok") is None  # one bad item writes nothing
