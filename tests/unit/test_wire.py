"""The shard wire format: ops and results survive the trip exactly; other kinds opt out."""

from __future__ import annotations

from memcluster.cluster.data import wire
from memcluster.cluster.data.handle import ShardActor
from memcluster.cluster.data.shard import ShardCore
from memcluster.errors import StaleRing, VersionConflict
from memcluster.model import Query, Record
from memcluster.ops import (
    DeleteOp,
    ExistsOp,
    ReplicateOp,
    RetrieveOp,
    SearchOp,
    StoreOp,
    UpdateOp,
)

VALUE = {"text": "héllo", "n": [1, 2.5, None, True], "raw": b"\x00\xff", "deep": {"a": {}}}


def test_keyed_ops_round_trip_exactly():
    rec = Record("r", VALUE, "ns", {"tags": ["x"]}, 7, 1.5, 2.5, 99.0)
    ops = [StoreOp.make("k", VALUE, namespace="ns", metadata={"m": 1}, ttl=5, if_version=3,
                        op_id="c:1"),
           StoreOp.make("plain", []), RetrieveOp.make("k", namespace="a/b"),
           ExistsOp.make("e"), DeleteOp.make("d", namespace="ns", op_id="c:2"),
           ReplicateOp(rec)]
    back = wire.decode_ops(wire.encode_ops(ops))
    assert back == ops
    assert back[0].metadata == {"m": 1} and back[0].value == VALUE
    assert back[-1].record == rec


def test_batches_with_other_kinds_are_not_encoded():
    assert wire.encode_ops([RetrieveOp.make("k"), SearchOp.make(Query(text="x"))]) is None
    assert wire.encode_ops([UpdateOp.make("k", lambda v: v)]) is None


def test_results_round_trip_with_records_errors_and_bools():
    core = ShardActor("memory", {"cleanup_interval": 0}, prefix="wire", shard_id="s/0",
                      cluster="t")     # the actor class, run in-process (no Ray needed)
    ShardCore.open(core)
    ops = [StoreOp.make("k", VALUE, metadata={"tags": ["a"]}, ttl=60),
           StoreOp.make("k", 1, if_version=5), RetrieveOp.make("k"), RetrieveOp.make("zz"),
           ExistsOp.make("k"), DeleteOp.make("zz")]
    direct = ShardCore("memory", {"cleanup_interval": 0}, prefix="wire2", shard_id="s/1")
    direct.open()
    want = direct.apply_batch(1, ops)
    got = wire.decode_results(ops, core.apply_wire(1, wire.encode_ops(ops)))
    assert [type(r) for r in got] == [type(r) for r in want]
    stored, conflict, found, missing, exists, deleted = got
    assert stored.value == VALUE and stored.metadata == {"tags": ["a"]}
    assert stored.expires_at is not None and stored.version == 1
    assert isinstance(conflict, VersionConflict) and conflict.actual == 1
    assert found == stored and missing is None and exists is True and deleted is False
    refused = core.apply_wire(0, wire.encode_ops(ops))  # a stale ring is refused whole
    assert isinstance(refused, StaleRing) and refused.current == 1
