"""Round trips, scatter-gather, paging and CAS through a real cluster on a local Ray."""

from __future__ import annotations

import pytest

import memcluster as mc
from memcluster.errors import VersionConflict

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def mem(cluster):
    client = mc.connect(cluster.name)
    yield client
    client.close()


@pytest.mark.parametrize("source", ["cache", "single"])
def test_bulk_round_trip(mem, source):
    items = [(f"bulk:{i:04d}", {"i": i, "pad": "x" * 50}) for i in range(500)]
    records = mem.store_many(items, source=source, namespace="bulk")
    assert [r.version for r in records] == [1] * 500
    found = mem.retrieve_many([k for k, _ in items] + ["missing"], source=source,
                              namespace="bulk")
    assert len(found) == 500 and found["bulk:0123"].value == {"i": 123, "pad": "x" * 50}
    assert mem.count(source=source, namespace="bulk") == 500
    assert mem.delete_many([k for k, _ in items[:100]], source=source, namespace="bulk") == 100
    assert mem.count(source=source, namespace="bulk") == 400


def test_single_ops_cas_and_update(mem):
    rec = mem.store("user:1", {"name": "Ada"}, namespace="cas", metadata={"tags": ["p"]})
    assert rec.version == 1
    assert mem.retrieve("user:1", namespace="cas").value == {"name": "Ada"}
    assert mem.exists("user:1", namespace="cas")
    with pytest.raises(VersionConflict):
        mem.store("user:1", "x", namespace="cas", if_version=7)
    with pytest.raises(VersionConflict):
        mem.store("user:1", "x", namespace="cas", overwrite=False)
    assert mem.store("user:1", "y", namespace="cas", if_version=1).version == 2
    for _ in range(5):
        mem.update("counter", lambda v: (v or 0) + 1, namespace="cas")
    assert mem.retrieve("counter", namespace="cas").value == 5
    assert mem.delete("user:1", namespace="cas") is True
    assert mem.retrieve("user:1", namespace="cas") is None


def test_scatter_search_and_paging(mem):
    mem.store_many([(f"doc:{i:03d}", {"text": f"note {i}"}, {"metadata": {"n": i}})
                    for i in range(120)], namespace="scatter")
    top = mem.search(mc.Query(filter={"n": {"$gte": 100}}, order_by="-key", limit=5),
                     namespace="scatter")
    assert [r.key for r in top] == [f"doc:{i:03d}" for i in range(119, 114, -1)]
    assert mem.count("note 1", namespace="scatter") == 31  # 1, 10-19, 100-119
    seen, cursor = [], None
    while True:
        page = mem.list_keys(namespace="scatter", limit=7, cursor=cursor)
        seen.extend(page.keys)
        cursor = page.cursor
        if cursor is None:
            break
    assert seen == [f"doc:{i:03d}" for i in range(120)]


def test_via_manager_sees_the_same_data(cluster, mem):
    mem.store("shared", 42, namespace="vm")
    slow = mc.connect(cluster.name, via_manager=True)
    assert slow.retrieve("shared", namespace="vm").value == 42
    slow.store("shared", 43, namespace="vm")
    assert mem.retrieve("shared", namespace="vm").version == 2


def test_tools_and_async_twins(mem):
    import asyncio

    out = mem.call_tool("memory_store", {"key": "t", "value": {"x": 1}, "namespace": "tools"})
    assert out.get("ok", True) and "error" not in out
    assert mem.retrieve("t", namespace="tools").value == {"x": 1}

    async def go():  # type: ignore[no-untyped-def]
        await mem.astore("a", 1, namespace="tools")
        return await mem.aretrieve("a", namespace="tools")

    assert asyncio.run(go()).value == 1
    assert any(t["function"]["name"] == "memory_store" for t in mem.tools(fmt="openai"))


def test_info_tools_and_list_sources_call_no_shard_and_no_manager(cluster, monkeypatch):
    """The hot paths an agent framework hits on every turn (`tools()`, `info()`, the
    `memory_list_sources` tool) answer from the cached routing table: no shard call, no
    manager call, however many records the cluster holds."""
    client = mc.connect(cluster.name)
    try:
        client.store_many([(f"scan:{i}", i) for i in range(200)], namespace="noscan")
        before = client.directory.calls

        def refuse(*_args, **_kwargs):
            raise AssertionError("the manager was called")

        monkeypatch.setattr(client.directory.manager, "call", refuse)
        info = client.info()
        assert {"cache", "single"} <= set(info) and info["cache"]["replicas"] >= 1
        assert any(t["function"]["name"] == "memory_search" for t in client.tools())
        listed = client.call_tool("memory_list_sources", {})
        assert "error" not in listed and {"cache", "single"} <= {
            s["name"] for s in listed["sources"]}
        assert client.directory.calls == before
    finally:
        monkeypatch.undo()
        client.close()
