"""Model test: random sequences of operations on the memory backend agree with a plain dict.

The model is the contract written as the simplest code that could meet it: a dict from
(namespace, key) to (value, version, expires_at), versions +1 per write and back to 1 for a
new or expired key, CAS on the live version, replicate keeping the higher version, and a
fake clock deciding expiry. After every operation every key's retrieve/exists, each
namespace's list_keys and count, and info()'s record count must match the model.
Seeded from MEMCLUSTER_TEST_SEED (printed in the pytest header) for replay.
"""

from __future__ import annotations

import os
from typing import Any

from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from memcluster.backends.registry import create_backend
from memcluster.errors import VersionConflict
from memcluster.model import Record
from memcluster.ops import (
    ClearOp,
    CountOp,
    DeleteOp,
    ExistsOp,
    ListKeysOp,
    ReplicateOp,
    RetrieveOp,
    StoreOp,
    UpdateOp,
)
from memcluster.testing import FakeClock

SEED = int(os.environ.get("MEMCLUSTER_TEST_SEED", "0"))
NAMESPACES = ["", "n"]
KEYS = ["a", "b", "c"]

slots = st.tuples(st.sampled_from(NAMESPACES), st.sampled_from(KEYS))
ttls = st.sampled_from([None, None, 1.0, 3.0])
operations = st.one_of(
    st.tuples(st.just("store"), slots, st.integers(0, 9), ttls,
              st.sampled_from([None, "absent", "current", "stale"])),
    st.tuples(st.just("store_many"), st.lists(st.tuples(slots, st.integers(0, 9)), max_size=4)),
    st.tuples(st.just("delete"), slots),
    st.tuples(st.just("update"), slots, ttls),
    st.tuples(st.just("replicate"), slots, st.integers(-1, 2), ttls),
    st.tuples(st.just("advance"), st.sampled_from([0.5, 1.0, 2.0])),
    st.tuples(st.just("clear"), st.sampled_from([*NAMESPACES, None])),
)

Model = dict[tuple[str, str], tuple[Any, int, "float | None"]]


def _live(model: Model, slot: tuple[str, str], now: float) -> tuple[Any, int, float | None] | None:
    row = model.get(slot)
    if row is not None and row[2] is not None and row[2] <= now:
        del model[slot]
        return None
    return row


def _apply(backend: Any, model: Model, clock: FakeClock, op: tuple[Any, ...]) -> None:
    kind, now = op[0], clock()
    if kind == "store":
        _, slot, value, ttl, cas = op
        row = _live(model, slot, now)
        version = row[1] if row else 0
        expected = {None: None, "absent": 0, "current": version, "stale": version + 1}[cas]
        store = StoreOp.make(slot[1], value, namespace=slot[0], ttl=ttl,
                             if_version=expected)
        if expected is not None and expected != version:
            try:
                backend.store(store)
            except VersionConflict:
                return
            raise AssertionError(f"CAS {cas} on version {version} was accepted")
        rec = backend.store(store)
        model[slot] = (value, version + 1, None if ttl is None else now + ttl)
        assert rec.version == version + 1
    elif kind == "store_many":
        recs = backend.store_many([StoreOp.make(k, v, namespace=ns) for (ns, k), v in op[1]])
        for ((ns, k), v), rec in zip(op[1], recs, strict=True):
            row = _live(model, (ns, k), now)
            model[ns, k] = (v, (row[1] if row else 0) + 1, None)
            assert rec.version == model[ns, k][1]
    elif kind == "delete":
        existed = _live(model, op[1], now) is not None
        model.pop(op[1], None)
        assert backend.delete(DeleteOp.make(op[1][1], namespace=op[1][0])) is existed
    elif kind == "update":
        _, slot, ttl = op
        row = _live(model, slot, now)
        rec = backend.update(UpdateOp.make(slot[1], lambda v: (v or 0) + 1, namespace=slot[0],
                                           ttl=ttl))
        expires = now + ttl if ttl is not None else (row[2] if row else None)
        model[slot] = ((row[0] if row else 0) + 1, (row[1] if row else 0) + 1, expires)
        assert (rec.value, rec.version) == model[slot][:2]
    elif kind == "replicate":
        _, slot, delta, ttl = op
        row = _live(model, slot, now)
        version = max(1, (row[1] if row else 0) + delta)
        expires = None if ttl is None else now + ttl
        installed = backend.replicate(ReplicateOp(Record(
            slot[1], -version, slot[0], version=version, created_at=now, updated_at=now,
            expires_at=expires)))
        assert installed is (row is None or row[1] < version)
        if installed:
            model[slot] = (-version, version, expires)
    elif kind == "advance":
        clock.advance(op[1])
    elif kind == "clear":
        now_live = [s for s in list(model) if _live(model, s, now) is not None]
        gone = [s for s in now_live if op[1] is None or s[0] == op[1]]
        for s in gone:
            del model[s]
        assert backend.clear(ClearOp.make(namespace=op[1])) == len(gone)


def _check(backend: Any, model: Model, now: float) -> None:
    for ns in NAMESPACES:
        live = sorted(k for (n, k) in list(model) if n == ns and _live(model, (n, k), now))
        assert backend.list_keys(ListKeysOp.make(namespace=ns, limit=2)).keys == live[:2]
        assert backend.count(CountOp.make(namespace=ns)) == len(live)
        for key in KEYS:
            row = model.get((ns, key))
            rec = backend.retrieve(RetrieveOp.make(key, namespace=ns))
            assert backend.exists(ExistsOp.make(key, namespace=ns)) is (row is not None)
            if row is None:
                assert rec is None, (ns, key)
            else:
                assert rec is not None, (ns, key)
                assert (rec.value, rec.version) == row[:2], (ns, key)
                assert rec.expires_at == row[2], (ns, key)
    assert backend.info()["records"] == len(model)


@seed(SEED)
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(operations, max_size=30))
def test_memory_backend_agrees_with_a_dict_model(ops):
    clock = FakeClock()
    backend = create_backend("memory", {"cleanup_interval": 0}, prefix="model", clock=clock)
    model: Model = {}
    try:
        for op in ops:
            _apply(backend, model, clock, op)
            _check(backend, model, clock())
    finally:
        backend.close()
