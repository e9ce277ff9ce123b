"""A user's backend that implements only the required operations gets correct optional ones.

`DictBackend` is the smallest honest backend: a dict, `query.run` for search, no
overrides. The conformance suite runs against it (so update, count, clear, exists and the
*_many defaults meet the same contract as native implementations), and the tests below
pin the defaults' own behaviour: the CAS retry loop under races, paging past one page,
and per-op outcomes in `apply_batch`.
"""

from __future__ import annotations

import bisect
from typing import Any

import pytest

from memcluster.backends.base import UPDATE_RETRIES, Capabilities, MemoryBackend
from memcluster.errors import (
    CapacityExceeded,
    ConfigError,
    InvalidValue,
    UnsupportedOperation,
    VersionConflict,
)
from memcluster.model import Page, Query, Record
from memcluster.ops import (
    ClearOp,
    CountOp,
    DeleteOp,
    ExistsOp,
    ListKeysOp,
    ReplicateOp,
    RetrieveOp,
    SearchOp,
    StoreOp,
    UpdateOp,
)
from memcluster.query import match_pattern, run
from memcluster.testing import BackendConformance, FakeClock


class DictBackend(MemoryBackend):
    """Only the six required operations; not thread-safe, no handoff."""

    name = "dict-minimal"
    capabilities = Capabilities(handoff=False)

    def open(self, opts: Any) -> None:
        if opts:
            raise ConfigError(f"unknown option {next(iter(opts))!r}")
        self.rows: dict[tuple[str, str], Record] = {}

    def _live(self, namespace: str, key: str) -> Record | None:
        rec = self.rows.get((namespace, key))
        if rec is not None and rec.expired(self.clock()):
            del self.rows[namespace, key]
            return None
        return rec

    def store(self, op: StoreOp) -> Record:
        current = self._live(op.namespace, op.key)
        version = current.version if current else 0
        if op.expected_version is not None and op.expected_version != version:
            raise VersionConflict(f"{op.key!r} is at {version}", key=op.key)
        now = self.clock()
        rec = Record(op.key, op.value, op.namespace, op.metadata, version + 1,
                     current.created_at if current else now, now,
                     None if op.ttl is None else now + op.ttl)
        self.rows[op.namespace, op.key] = rec
        return rec

    def retrieve(self, op: RetrieveOp) -> Record | None:
        return self._live(op.namespace, op.key)

    def search(self, op: SearchOp) -> list[Record]:
        live = [self._live(ns, key) for ns, key in list(self.rows) if ns == op.namespace]
        return run([r for r in live if r is not None], op.query)

    def delete(self, op: DeleteOp) -> bool:
        return self._live(op.namespace, op.key) is not None and bool(
            self.rows.pop((op.namespace, op.key)))

    def list_keys(self, op: ListKeysOp) -> Page:
        keys = sorted(k for ns, k in list(self.rows)
                      if ns == op.namespace and self._live(ns, k) is not None
                      and match_pattern(k, op.pattern))
        start = 0 if op.cursor is None else bisect.bisect_right(keys, op.cursor)
        page = keys[start:start + op.limit]
        return Page(page, page[-1] if start + op.limit < len(keys) else None)


class TestDictBackendConformance(BackendConformance):
    backend = DictBackend
    persistent = False
    thread_safe = False


class RacyBackend(DictBackend):
    """Another writer slips in after each of the next `races` reads."""

    races = 0
    fn_calls = 0

    def retrieve(self, op: RetrieveOp) -> Record | None:
        rec = super().retrieve(op)
        if self.races:
            self.races -= 1
            self.store(StoreOp.make(op.key, (rec.value if rec else 0) + 100,
                                    namespace=op.namespace))
        return rec


def make(cls: type[DictBackend] = DictBackend) -> DictBackend:
    backend = cls(prefix="t", clock=FakeClock())
    backend.open({})
    return backend


def test_update_retries_its_compare_and_set_when_another_write_wins():
    backend = make(RacyBackend)
    backend.races = 2
    calls: list[Any] = []

    def add_one(value: Any) -> int:
        calls.append(value)
        return (value or 0) + 1

    rec = backend.update(UpdateOp.make("n", add_one))
    assert calls == [None, 100, 200]  # each retry sees the write that beat it
    assert (rec.value, rec.version) == (201, 3)


def test_update_gives_up_after_a_bounded_number_of_lost_races():
    backend = make(RacyBackend)
    backend.races = 10 * UPDATE_RETRIES
    calls = []
    with pytest.raises(VersionConflict, match="lost the race"):
        backend.update(UpdateOp.make("n", lambda v: calls.append(v) or 1))
    assert len(calls) == UPDATE_RETRIES


def test_count_and_clear_page_past_one_page():
    backend = make()
    for i in range(2345):
        backend.store(StoreOp.make(f"k{i:05d}", i, namespace="big", metadata={"odd": i % 2}))
    backend.store(StoreOp.make("k", 1, namespace="other"))
    assert backend.count(CountOp.make(namespace="big")) == 2345
    assert backend.count(CountOp(Query(filter={"odd": 1}), "big")) == 1172
    assert backend.clear(ClearOp.make(namespace="big")) == 2345
    assert backend.count(CountOp.make(namespace="big")) == 0
    assert backend.exists(ExistsOp.make("k", namespace="other"))


def test_handoff_and_clear_of_every_namespace_need_export():
    backend = make()
    backend.store(StoreOp.make("k", 1))
    with pytest.raises(UnsupportedOperation):
        backend.replicate(ReplicateOp(Record("k", 2, version=5)))
    with pytest.raises(UnsupportedOperation):
        backend.export()
    with pytest.raises(UnsupportedOperation):
        backend.apply(ClearOp.make(namespace=None))
    assert backend.retrieve(RetrieveOp.make("k")) is not None


class FlakyStoreBackend(DictBackend):
    """Refuses writes of keys starting with "full"; counts calls."""

    stores = 0

    def store(self, op: StoreOp) -> Record:
        self.stores += 1
        if op.key.startswith("full"):
            raise CapacityExceeded("no room")
        return super().store(op)


def test_apply_batch_gives_per_op_outcomes_without_replaying_writes():
    backend = make(FlakyStoreBackend)
    results = backend.apply_batch([
        StoreOp.make("a", 1), StoreOp.make("full", 1), StoreOp.make("b", 1),
        StoreOp.make("a", 2, if_version=9), DeleteOp.make("b"), DeleteOp.make("b"),
        RetrieveOp.make("a"), RetrieveOp.make("zz")])
    assert isinstance(results[0], Record) and results[0].version == 1
    assert isinstance(results[1], CapacityExceeded)
    assert results[2].version == 1
    assert isinstance(results[3], VersionConflict)
    assert results[4:6] == [True, False]
    assert results[6].value == 1 and results[7] is None
    assert backend.stores == 4  # every store ran once: nothing was replayed
    with pytest.raises(CapacityExceeded):
        backend.apply_batch([StoreOp.make("c", 1), StoreOp.make("full2", 1)],
                            return_exceptions=False)
    assert backend.retrieve(RetrieveOp.make("c")).version == 1


def test_update_validates_the_new_value_before_writing():
    backend = make()
    backend.store(StoreOp.make("k", 1, metadata={"m": 1}))
    with pytest.raises(InvalidValue):
        backend.update(UpdateOp.make("k", lambda v: (v, v)))
    rec = backend.retrieve(RetrieveOp.make("k"))
    assert (rec.value, rec.version, rec.metadata) == (1, 1, {"m": 1})
