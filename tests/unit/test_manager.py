"""MemoryManager and the shared MemorySurface: named sources, every operation, async twins."""

from __future__ import annotations

import asyncio
import threading

import pytest

import memcluster as mc
from memcluster.backends.memory import MemoryStoreBackend
from memcluster.errors import (
    ConfigError,
    ConfirmationRequired,
    InvalidKey,
    InvalidValue,
    SourceUnavailable,
    UnknownSource,
    UnsupportedQuery,
    VersionConflict,
)
from memcluster.manager.surface import MemorySurface
from memcluster.testing import FakeClock


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def mem(tmp_path, clock):
    manager = mc.MemoryManager([
        mc.memory_source("cache", "memory", description="Fast cache",
                         opts={"cleanup_interval": 0}),
        mc.memory_source("persistent", "sqlite", description="Long-term", default=True,
                         opts={"path": str(tmp_path / "m.db")}),
    ], clock=clock)
    yield manager
    manager.close()


def test_default_source_is_the_marked_one_else_the_first(mem):
    assert mem.sources == ["cache", "persistent"]
    assert mem.default_source == "persistent"
    mem.store("k", 1)
    assert mem.retrieve("k", source="persistent").value == 1
    assert mem.retrieve("k", source="cache") is None
    mem.set_default("cache")
    assert mem.retrieve("k") is None
    with mc.MemoryManager([mc.memory_source("a", "memory"), mc.memory_source("b", "memory")]) as m:
        assert m.default_source == "a"


def test_unknown_source_is_a_typed_error_listing_the_configured_ones(mem):
    with pytest.raises(UnknownSource, match="configured: cache, persistent"):
        mem.store("k", 1, source="nope")
    with pytest.raises(UnknownSource):
        mem.set_default("nope")


def test_namespaces_isolate_and_tuples_join_with_slash(mem):
    mem.store("k", "a", namespace=("team", "agent-1"))
    mem.store("k", "b", namespace="team/agent-2")
    assert mem.retrieve("k", namespace="team/agent-1").value == "a"
    assert mem.retrieve("k", namespace=("team", "agent-2")).value == "b"
    assert mem.retrieve("k") is None
    assert mem.search("a", namespace="team/agent-2") == []


def test_ttl_hides_expired_records_at_once(mem, clock):
    rec = mem.store("k", 1, ttl=10, source="cache")
    assert rec.expires_at == clock() + 10
    clock.advance(9.5)
    assert mem.exists("k", source="cache")
    clock.advance(1)
    assert mem.retrieve("k", source="cache") is None
    assert not mem.exists("k", source="cache")
    assert mem.count(source="cache") == 0


def test_versions_and_compare_and_set(mem):
    assert mem.store("k", 1).version == 1
    assert mem.store("k", 2).version == 2
    with pytest.raises(VersionConflict) as err:
        mem.store("k", 3, if_version=1)
    assert (err.value.expected, err.value.actual) == (1, 2)
    with pytest.raises(VersionConflict):
        mem.store("k", 3, overwrite=False)
    assert mem.store("k", 3, if_version=2).value == 3
    assert mem.store("new", 1, if_version=0).version == 1


def test_search_and_count_with_text_pattern_filter_and_limit(mem):
    mem.store("user:1", {"name": "Ada"}, metadata={"tags": ["profile"], "rank": 9})
    mem.store("user:2", {"name": "Alan"}, metadata={"tags": ["profile"], "rank": 10})
    mem.store("note:1", "Ada wrote the first program", metadata={"tags": ["note"]})
    assert [r.key for r in mem.search("ada")] == ["note:1", "user:1"]
    assert [r.key for r in mem.search("ada", limit=1)] == ["note:1"]
    q = mc.Query(pattern="user:*", filter={"tags": {"$contains": "profile"}})
    assert [r.key for r in mem.search(q)] == ["user:1", "user:2"]
    assert [r.key for r in mem.search(filter={"rank": {"$gt": 9}})] == ["user:2"]
    assert mem.count(mc.Query(pattern="user:*")) == 2
    assert mem.count("ada", pattern="note:*") == 1
    with pytest.raises(UnsupportedQuery):
        mem.search(filter={"rank": {"$regex": "x"}})
    with pytest.raises(UnsupportedQuery):
        mem.search("ada", min_score=0.5)


def test_list_keys_pages_cover_every_key_once(mem):
    keys = [f"k{i:03d}" for i in range(25)]
    mem.store_many([(k, i) for i, k in enumerate(keys)])
    seen, cursor = [], None
    while True:
        page = mem.list_keys(limit=7, cursor=cursor)
        seen.extend(page.keys)
        cursor = page.cursor
        if cursor is None:
            break
    assert seen == keys
    assert list(mem.list_keys("k00*")) == [f"k00{i}" for i in range(10)]


def test_store_many_validates_every_item_before_writing(mem):
    bad_items = [
        [("a", 1), ("b", {1, 2})],
        [("a", 1), ("", 2)],
        [("a", 1), ("b", 2, {"ttl": -1})],
        [("a", 1), ("b", 2, {"tags": ["x"]})],
        [("a", 1), ("b",)],
    ]
    for items in bad_items:
        with pytest.raises((InvalidValue, InvalidKey), match=r"items\[1\]"):
            mem.store_many(items)
    assert mem.count() == 0
    recs = mem.store_many([("a", 1), ("b", 2, {"ttl": 5, "metadata": {"m": 1}})])
    assert [(r.key, r.value, r.version) for r in recs] == [("a", 1, 1), ("b", 2, 1)]
    assert recs[1].metadata == {"m": 1} and recs[1].expires_at is not None
    assert mem.store_many([]) == []


def test_retrieve_many_exists_delete_many(mem):
    mem.store_many([("a", 1), ("b", 2)])
    found = mem.retrieve_many(["a", "b", "zz", "a"])
    assert {k: r.value for k, r in found.items()} == {"a": 1, "b": 2}
    with pytest.raises(InvalidKey):
        mem.retrieve_many("ab")
    assert mem.exists("a") and not mem.exists("zz")
    assert mem.delete_many(["a", "zz"]) == 1
    assert mem.delete("b") is True and mem.delete("b") is False
    assert mem.retrieve_many([]) == {} and mem.delete_many([]) == 0


def test_update_is_atomic_across_threads(mem):
    def bump(n):
        for _ in range(n):
            mem.update("counter", lambda v: (v or 0) + 1, source="cache")

    threads = [threading.Thread(target=bump, args=(40,)) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rec = mem.retrieve("counter", source="cache")
    assert rec.value == 240 and rec.version == 240


def test_update_keeps_metadata_unless_given_and_rejects_bad_values(mem):
    mem.store("k", 1, metadata={"tags": ["x"]})
    assert mem.update("k", lambda v: v + 1).metadata == {"tags": ["x"]}
    assert mem.update("k", lambda v: v, metadata={"m": 2}).metadata == {"m": 2}
    with pytest.raises(InvalidValue):
        mem.update("k", lambda v: {1, 2})
    assert mem.retrieve("k").value == 2


def test_clear_requires_confirm_and_removes_one_namespace_or_all(mem):
    mem.store("a", 1, namespace="x")
    mem.store("b", 1, namespace="x")
    mem.store("c", 1, namespace="y")
    with pytest.raises(ConfirmationRequired):
        mem.clear(namespace="x")
    assert mem.count(namespace="x") == 2
    assert mem.clear(namespace="x", confirm=True) == 2
    assert mem.count(namespace="x") == 0 and mem.count(namespace="y") == 1
    assert mem.clear(all_namespaces=True, confirm=True) == 1
    assert mem.count(namespace="y") == 0


def test_max_value_bytes_is_enforced_before_writing():
    with mc.MemoryManager([mc.memory_source("c", "memory")], max_value_bytes=64) as m:
        with pytest.raises(InvalidValue, match="over the limit of 64"):
            m.store("k", "x" * 100)
        with pytest.raises(InvalidValue):
            m.store_many([("ok", 1), ("big", "x" * 100)])
        assert m.count() == 0


def test_info_reports_backend_description_and_default(mem):
    info = mem.info()
    assert set(info) == {"cache", "persistent"}
    assert info["cache"]["backend"] == "memory" and info["cache"]["default"] is False
    assert info["persistent"]["description"] == "Long-term" and info["persistent"]["default"]
    assert "text" in info["cache"]["capabilities"]


def test_add_remove_sources(mem):
    mem.add_source(mc.memory_source("extra", "memory", default=True))
    assert mem.default_source == "extra"
    with pytest.raises(ConfigError, match="already exists"):
        mem.add_source(mc.memory_source("extra", "memory"))
    mem.store("k", 1)
    mem.remove_source("extra")
    assert mem.default_source == "cache" and "extra" not in mem.sources
    with pytest.raises(UnknownSource):
        mem.retrieve("k", source="extra")
    with pytest.raises(UnknownSource):
        mem.remove_source("extra")


def test_constructor_rejects_bad_source_lists():
    with pytest.raises(ConfigError, match="duplicate source name 'a'"):
        mc.MemoryManager([mc.memory_source("a", "memory"), mc.memory_source("a", "memory")])
    with pytest.raises(ConfigError, match="at most one source may be the default"):
        mc.MemoryManager([mc.memory_source("a", "memory", default=True),
                          mc.memory_source("b", "memory", default=True)])


class _Tracked(MemoryStoreBackend):
    closed: list[str] = []

    def close(self) -> None:
        _Tracked.closed.append(self.prefix)
        super().close()


def test_a_source_that_fails_to_open_closes_the_ones_already_open():
    _Tracked.closed.clear()
    with pytest.raises(ConfigError, match="unknown backend"):
        mc.MemoryManager([mc.memory_source("first", _Tracked),
                          mc.memory_source("second", "no-such-backend")])
    assert _Tracked.closed == ["first"]


def test_close_is_idempotent_and_later_calls_fail_cleanly():
    m = mc.MemoryManager([mc.memory_source("c", _Tracked)])
    _Tracked.closed.clear()
    with m:
        m.store("k", 1)
    m.close()
    assert _Tracked.closed == ["c"]
    with pytest.raises(SourceUnavailable):
        m.store("k", 1)


def test_from_config_dict(tmp_path):
    cfg = {"max_value_bytes": 1000, "sources": [
        {"name": "cache", "backend": "memory"},
        {"name": "db", "backend": "sqlite", "default": True,
         "opts": {"path": str(tmp_path / "c.db")}}]}
    with mc.MemoryManager.from_config(cfg) as m:
        assert m.default_source == "db" and m.max_value_bytes == 1000
        m.store("k", 1)
    with mc.MemoryManager.from_config(cfg) as m:
        assert m.retrieve("k").value == 1


def test_export_one_namespace_or_all(mem):
    mem.store("a", 1, namespace="x")
    mem.store("b", 2, namespace="y")
    assert [(r.namespace, r.key) for r in mem.export(namespace="x")] == [("x", "a")]
    assert sorted((r.namespace, r.key) for r in mem.export(batch=1)) == [("x", "a"), ("y", "b")]


def test_async_twins_run_the_same_operations(mem):
    async def main():
        rec = await mem.astore("k", {"v": "hello"}, namespace="n")
        got = await mem.aretrieve("k", namespace="n")
        many = await mem.astore_many([("a", 1), ("b", 2)], namespace="n")
        found = await mem.asearch("hell", namespace="n")
        return rec, got, many, found, await mem.acount(namespace="n"), await mem.ainfo()

    rec, got, many, found, count, info = asyncio.run(main())
    assert got == rec and [r.key for r in many] == ["a", "b"]
    assert [r.key for r in found] == ["k"] and count == 3 and set(info) == set(mem.sources)
    with pytest.raises(UnknownSource):
        asyncio.run(mem.aretrieve("k", source="nope"))
    assert mem.astore.__name__ == "astore" and mem.astore.__doc__


class _Recording(MemorySurface):
    """A surface that records what it is asked to execute (what the cluster client sees)."""

    def __init__(self):
        self.calls = []

    def _source_names(self):
        return ["s"]

    def _default_source_name(self):
        return "s"

    def _describe(self):
        return {"s": {"backend": "fake", "description": "", "default": True}}

    def _execute(self, source, ops):
        self.calls.append((source, [op.kind for op in ops]))
        return [None if op.kind == "retrieve" else True for op in ops]


def test_each_call_is_one_batch_of_ops():
    surface = _Recording()
    surface.retrieve_many(["a", "b", "c"])
    surface.delete_many(["a", "b"])
    surface.store("k", 1)
    assert surface.calls == [("s", ["retrieve"] * 3), ("s", ["delete"] * 2), ("s", ["store"])]


def test_importing_memcluster_and_its_cli_does_not_import_ray():
    import subprocess
    import sys

    code = ("import sys, memcluster, memcluster.cli; "
            "assert callable(memcluster.MemoryManager); "
            "sys.exit(1 if 'ray' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0
