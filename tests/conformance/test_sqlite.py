"""The sqlite backend: the conformance suite on a file and in memory, plus what SQLite adds
(prefixes sharing one file, atomic update across processes' connections, the sweep)."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from memcluster.backends.registry import create_backend
from memcluster.backends.sqlite import TABLE, SQLiteBackend
from memcluster.errors import ConfigError, VersionConflict
from memcluster.model import Query
from memcluster.ops import RetrieveOp, SearchOp, StoreOp, UpdateOp
from memcluster.testing import BackendConformance, FakeClock


class TestSQLiteFileConformance(BackendConformance):
    backend = "sqlite"

    def backend_opts(self, tmp_path):
        return {"path": str(tmp_path / "memory.db")}


class TestSQLiteMemoryConformance(BackendConformance):
    backend = SQLiteBackend
    persistent = False

    def backend_opts(self, tmp_path):
        return {"path": ":memory:", "sweep_every": 3}


def open_sqlite(path, prefix="p", clock=None, **opts) -> SQLiteBackend:
    backend = create_backend("sqlite", {"path": str(path), **opts}, prefix=prefix,
                             clock=clock or FakeClock())
    assert isinstance(backend, SQLiteBackend)
    return backend


def test_update_is_atomic_across_connections(tmp_path):
    """Two backends on one file (as two processes would be) increment one counter."""
    backends = [open_sqlite(tmp_path / "m.db") for _ in range(2)]
    try:
        def work(backend: SQLiteBackend) -> None:
            for _ in range(50):
                backend.update(UpdateOp.make("n", lambda v: (v or 0) + 1))

        threads = [threading.Thread(target=work, args=(b,)) for b in backends]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        record = backends[0].retrieve(RetrieveOp.make("n"))
        assert record.value == 100 and record.version == 100
    finally:
        for b in backends:
            b.close()


def test_a_failed_batch_leaves_nothing_behind(tmp_path):
    backend = open_sqlite(tmp_path / "m.db")
    try:
        backend.store(StoreOp.make("b", 1))
        with pytest.raises(VersionConflict):
            backend.store_many([StoreOp.make("a", 1), StoreOp.make("b", 2, if_version=7)])
        assert backend.retrieve(RetrieveOp.make("a")) is None
        assert backend.retrieve(RetrieveOp.make("b")).version == 1
    finally:
        backend.close()


def test_the_sweep_deletes_expired_rows_of_its_own_prefix_only(tmp_path):
    clock = FakeClock()
    mine = open_sqlite(tmp_path / "m.db", "mine", clock, sweep_every=2)
    other = open_sqlite(tmp_path / "m.db", "other", clock)
    try:
        mine.store(StoreOp.make("old", 1, ttl=1))
        other.store(StoreOp.make("old", 1, ttl=1))
        clock.advance(2)
        mine.store(StoreOp.make("x", 1))
        mine.store(StoreOp.make("y", 1))  # the second write triggers the sweep
        with sqlite3.connect(tmp_path / "m.db") as raw:
            rows = raw.execute(f'SELECT prefix, "key" FROM {TABLE} ORDER BY 1, 2').fetchall()
        assert rows == [("mine", "x"), ("mine", "y"), ("other", "old")]
    finally:
        mine.close()
        other.close()


def test_numbers_in_metadata_compare_as_numbers_in_sql(tmp_path):
    backend = open_sqlite(tmp_path / "m.db")
    try:
        for key, n in (("nine", 9), ("ten", 10), ("text", "9"), ("flag", True)):
            backend.store(StoreOp.make(key, 1, metadata={"n": n}))
        found = backend.search(SearchOp.make(Query(filter={"n": {"$lt": 10}})))
        assert [r.key for r in found] == ["nine"]
        assert [r.key for r in backend.search(SearchOp.make(Query(filter={"n": 1})))] == []
    finally:
        backend.close()


def test_file_databases_use_wal_and_full_sync(tmp_path):
    backend = open_sqlite(tmp_path / "m.db")
    try:
        info = backend.info()
        assert (info["journal_mode"], info["synchronous"]) == ("wal", "full")
    finally:
        backend.close()


@pytest.mark.parametrize("opts, field", [
    ({}, "sqlite.path"),
    ({"path": ":memory:", "synchronous": "off"}, "sqlite.synchronous"),
    ({"path": ":memory:", "sweep_every": 0}, "sqlite.sweep_every"),
    ({"path": ":memory:", "paht": "x"}, "paht"),
])
def test_bad_options_raise_config_error_naming_the_option(opts, field):
    with pytest.raises(ConfigError, match=field):
        create_backend("sqlite", opts)


def test_metadata_json_cannot_carry_is_exact_and_still_filterable(tmp_path):
    backend = open_sqlite(tmp_path / "m.db")
    odd = {"tag": {"$bytes": "AA=="}, "raw": b"\x00", "inf": float("inf"), "big": 1 << 64 - 1}
    try:
        backend.store(StoreOp.make("odd", 1, metadata=odd))
        backend.store(StoreOp.make("plain", 1, metadata={"inf": 5, "tag": {"$bytes": "x"}}))
        assert backend.retrieve(RetrieveOp.make("odd")).metadata == odd
        for flt, keys in [({"tag.$bytes": "AA=="}, ["odd"]), ({"inf": {"$gt": 6}}, ["odd"]),
                          ({"raw": {"$exists": True}}, ["odd"]), ({"inf": {"$lt": 6}}, ["plain"])]:
            found = backend.search(SearchOp.make(Query(filter=flt)))
            assert [r.key for r in found] == keys, flt
    finally:
        backend.close()
