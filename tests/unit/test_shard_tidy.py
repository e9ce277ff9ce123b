"""A shard says when it may hold keys its placement does not give it ("tidy" in its
ping), so a manager that starts after another crashed still collects that garbage."""

from __future__ import annotations

from memcluster.cluster.data.placement import Placement
from memcluster.cluster.data.ring import Ring
from memcluster.model import Record
from memcluster.ops import StoreOp


def _placement(version: int, ids: list[str]) -> Placement:
    return Placement("c", Ring(version, ids), 1, 1)


def _core(sid: str, placement: Placement, path: str | None = None):  # type: ignore[no-untyped-def]
    from memcluster.cluster.data.shard import ShardCore
    backend, opts = ("sqlite", {"path": path}) if path else ("memory", {})
    core = ShardCore(backend, opts, prefix=f"t/{sid}", shard_id=sid, placement=placement)
    core.open()
    return core


def test_an_empty_shard_is_tidy_and_stays_so_across_a_switch():
    core = _core("c/0", _placement(1, ["c/0", "c/1"]))
    assert core.ping()["tidy"] is True
    core.set_placement(0, _placement(2, ["c/0", "c/1", "c/2"]))
    assert core.ping()["tidy"] is True


def test_a_switch_with_data_needs_collection_and_collecting_under_it_clears_it():
    ids = ["c/0", "c/1"]
    core = _core("c/0", _placement(1, ids))
    keys = [k for k in (f"k{i}" for i in range(80))
            if "c/0" in _placement(1, ids).preference(k, "")]
    core.apply_batch(1, [StoreOp.make(k, i) for i, k in enumerate(keys)])
    assert core.ping()["tidy"] is True
    wider = _placement(2, ["c/0", "c/1", "c/2", "c/3"])
    core.set_placement(0, wider)
    assert core.ping()["tidy"] is False
    # an older placement than the shard's own drops nothing and leaves the duty open
    assert core.drop_unowned(0, _placement(1, ["c/1"])) == 0
    assert core.ping()["tidy"] is False
    dropped = core.drop_unowned(0, wider)
    owned = [k for k in keys if "c/0" in wider.preference(k, "")]
    assert dropped == len(keys) - len(owned) > 0
    assert core.ping()["tidy"] is True
    assert sorted(r.key for r in core.backend.export(limit=100)[0]) == sorted(owned)


def test_a_rebalance_handoff_is_garbage_until_collected():
    core = _core("c/2", _placement(1, ["c/0", "c/1", "c/2"]))
    core.accept_handoff(0, [Record(key="moved", value=1, version=3)])
    assert core.ping()["tidy"] is False


def test_a_shard_started_on_stored_data_is_not_known_tidy(tmp_path):
    path = str(tmp_path / "shard.db")
    first = _core("c/0", _placement(1, ["c/0"]), path)
    first.apply_batch(1, [StoreOp.make("k", 1)])
    first.close()
    again = _core("c/0", _placement(1, ["c/0"]), path)
    assert again.ping()["tidy"] is False
    assert again.drop_unowned(0, _placement(1, ["c/0"])) == 0
    assert again.ping()["tidy"] is True
    again.close()
