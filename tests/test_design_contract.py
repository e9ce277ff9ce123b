"""The DESIGN's public API, run as written: its local lines against a real MemoryManager
(memory + SQLite sources), its Record/Query/error names, and its configuration promises.

Tests outside the repository use exactly these names and call shapes, so a rename or a
changed default here is a broken contract, not a refactoring.
"""

from __future__ import annotations

import builtins
import dataclasses
import json
import subprocess
import sys
import textwrap

import pytest

import memcluster as mc
from memcluster.testing import FakeClock

ERROR_NAMES = ("NotFound", "InvalidKey", "InvalidValue", "VersionConflict", "UnsupportedQuery",
               "UnknownSource", "SourceUnavailable", "QuorumNotReached", "StaleRing", "Timeout",
               "ConfigError")
SIX_TOOLS = ("memory_list_sources", "memory_store", "memory_retrieve", "memory_search",
             "memory_delete", "memory_list_keys")


def design_sources(tmp_path) -> list[mc.SourceSpec]:
    """The two sources of the DESIGN's example, the SQLite file in `tmp_path`."""
    return [
        mc.memory_source("cache", "memory", description="Fast session cache", default=True,
                         opts={"cleanup_interval": 30}),
        mc.memory_source("persistent", "sqlite", description="Long-term facts",
                         opts={"path": str(tmp_path / "memory.db")}),
    ]


def test_local_api_lines_work_as_written(tmp_path):
    clock = FakeClock(1_000.0)
    mem = mc.MemoryManager(design_sources(tmp_path), clock=clock)

    rec = mem.store("user:1", {"name": "Ada"}, source="persistent", namespace="agent-7",
                    metadata={"tags": ["profile"]}, ttl=3600)
    assert isinstance(rec, mc.Record)
    assert (rec.key, rec.value, rec.namespace, rec.version) == ("user:1", {"name": "Ada"},
                                                                 "agent-7", 1)
    assert rec.expires_at == pytest.approx(1_000.0 + 3600)

    got = mem.retrieve("user:1", source="persistent", namespace="agent-7")
    assert isinstance(got, mc.Record) and got.value == {"name": "Ada"}
    assert mem.retrieve("user:1", source="persistent", namespace="agent-8") is None

    hits = mem.search("Ada", source="persistent", namespace="agent-7", limit=5)
    assert isinstance(hits, list) and [r.key for r in hits] == ["user:1"]
    query = mc.Query(pattern="user:*", filter={"tags": {"$contains": "profile"}})
    assert mem.search(query) == []                    # the default source holds nothing yet
    assert [r.key for r in mem.search(query, source="persistent", namespace="agent-7")] \
        == ["user:1"]
    assert mem.search(mc.Query(pattern="user:*", filter={"tags": {"$contains": "other"}}),
                      source="persistent", namespace="agent-7") == []

    assert mem.delete("user:1") is False              # default source, namespace ""
    mem.store("user:1", "cached")
    assert mem.delete("user:1") is True

    mem.store("user:2", 2)
    page = mem.list_keys(pattern="user:*", limit=100, cursor=None)
    assert isinstance(page, mc.Page) and page.keys == ["user:2"] and page.cursor is None

    stored = mem.store_many([("a", 1), ("b", 2, {"ttl": 5})])
    assert [(r.key, r.value, r.expires_at) for r in stored] == [("a", 1, None),
                                                                ("b", 2, 1_005.0)]
    found = mem.retrieve_many(["a", "b", "zz"])
    assert isinstance(found, dict) and sorted(found) == ["a", "b"]
    assert found["b"].value == 2
    clock.advance(5)                                  # b's TTL has run out
    assert sorted(mem.retrieve_many(["a", "b", "zz"])) == ["a"]
    mem.store("b", 2)

    assert mem.count(mc.Query(pattern="user:*")) == 1
    updated = mem.update("a", lambda v: (v or 0) + 1)
    assert isinstance(updated, mc.Record) and (updated.value, updated.version) == (2, 2)
    assert mem.update("fresh", lambda v: (v or 0) + 1).value == 1
    assert mem.delete_many(["a", "b"]) == 2
    assert mem.exists("a") is False and mem.exists("fresh") is True

    with pytest.raises(mc.errors.ConfirmationRequired):
        mem.clear(namespace="agent-7", source="persistent")
    assert mem.retrieve("user:1", source="persistent", namespace="agent-7") is not None
    assert mem.clear(namespace="agent-7", source="persistent", confirm=True) == 1
    assert mem.clear(namespace="agent-7", confirm=True) == 0

    info = mem.info()
    assert set(info) == {"cache", "persistent"}
    assert info["cache"]["default"] is True and info["persistent"]["default"] is False
    assert info["persistent"]["description"] == "Long-term facts"
    assert info["persistent"]["capabilities"]["text"] == "substring"

    tools = mem.tools(fmt="openai", namespace="agent-7")
    names = [t["function"]["name"] for t in tools]
    assert set(SIX_TOOLS) <= set(names)
    for tool in tools:                                # the agent is bound to its namespace
        assert "namespace" not in tool["function"]["parameters"]["properties"]
    unbound = {t["function"]["name"]: t for t in mem.tools(fmt="openai")}
    assert "namespace" in unbound["memory_store"]["function"]["parameters"]["properties"]

    result = mem.call_tool("memory_store", {"key": "k", "value": {"x": 1}})
    assert isinstance(result, dict) and result["ok"] is True
    assert mem.retrieve("k").value == {"x": 1}
    assert mem.call_tool("no_such_tool", {})["ok"] is False      # never raises
    assert mem.call_tool("memory_store", "not json")["ok"] is False

    mem.close()
    with pytest.raises(mc.errors.SourceUnavailable):
        mem.retrieve("k")
    mem.close()                                       # idempotent


def test_manager_is_a_context_manager_and_data_outlives_it(tmp_path):
    with mc.MemoryManager(design_sources(tmp_path)) as mem:
        mem.store("fact", "kept", source="persistent")
        mem.store("note", "forgotten")
    with pytest.raises(mc.errors.SourceUnavailable):
        mem.store("x", 1)
    with mc.MemoryManager(design_sources(tmp_path)) as again:
        assert again.retrieve("fact", source="persistent").value == "kept"
        assert again.retrieve("note") is None         # the memory backend starts empty


def test_async_twins_exist_for_every_method(tmp_path):
    import asyncio

    async def run() -> None:
        with mc.MemoryManager(design_sources(tmp_path)) as mem:
            rec = await mem.astore("k", 1, namespace="agent-7")
            assert rec.version == 1
            assert (await mem.aretrieve("k", namespace="agent-7")).value == 1
            assert await mem.acount(namespace="agent-7") == 1

    asyncio.run(run())
    for name in ("store", "retrieve", "search", "delete", "list_keys", "store_many",
                 "retrieve_many", "count", "update", "delete_many", "exists", "clear", "info",
                 "tools", "call_tool", "close"):
        assert callable(getattr(mc.MemoryManager, f"a{name}")), name


def test_record_and_query_fields_and_defaults():
    record_fields = [f.name for f in dataclasses.fields(mc.Record)]
    assert record_fields == ["key", "value", "namespace", "metadata", "version", "created_at",
                             "updated_at", "expires_at", "score"]
    rec = mc.Record("k", 1)
    assert (rec.namespace, rec.expires_at, rec.score) == ("", None, None)

    query_defaults = {f.name: f.default for f in dataclasses.fields(mc.Query)}
    assert query_defaults == {"text": None, "pattern": None, "filter": None, "limit": 10,
                              "offset": 0, "order_by": None, "min_score": None}
    assert mc.Query.of("ada") == mc.Query(text="ada")     # a plain str means Query(text=...)
    with pytest.raises(mc.errors.InvalidValue):
        mc.Query(limit=-1)
    assert [f.name for f in dataclasses.fields(mc.Page)] == ["keys", "cursor"]


def test_error_names_derive_from_the_root_and_shadow_no_builtin():
    for name in ERROR_NAMES:
        cls = getattr(mc.errors, name)
        assert issubclass(cls, mc.errors.MemclusterError), name
        assert not hasattr(builtins, name), name
    assert mc.MemclusterError is mc.errors.MemclusterError
    for name in mc.errors.__all__:
        assert not hasattr(builtins, name), name


def test_namespace_tuple_is_joined_with_slash(tmp_path):
    with mc.MemoryManager(design_sources(tmp_path)) as mem:
        mem.store("k", 1, namespace=("team", "agent-7"))
        assert mem.retrieve("k", namespace="team/agent-7").value == 1


CONFIG_YAML = """\
name: agents
redis_url: null
ray_address: null
metrics_port: 9464
sources:
  - name: cache
    backend: memory
    description: Fast session cache
    default: true
    shards: 4
    replicas: 2
    write_quorum: 2
    opts: {cleanup_interval: 30}
  - name: persistent
    backend: sqlite
    description: Long-term facts
    opts: {path: "${MC_DESIGN_DIR}/memory.db"}
"""


def test_from_config_reads_the_design_file_and_resolves_env_at_start(tmp_path, monkeypatch):
    path = tmp_path / "memory.yaml"
    path.write_text(CONFIG_YAML, encoding="utf-8")
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    monkeypatch.setenv("MC_DESIGN_DIR", str(data_dir))
    with mc.MemoryManager.from_config(str(path)) as mem:
        assert mem.sources == ["cache", "persistent"] and mem.default_source == "cache"
        mem.store("k", 1, source="persistent")
    assert (data_dir / "memory.db").exists()

    import yaml

    with mc.MemoryManager.from_config(yaml.safe_load(CONFIG_YAML)) as mem:  # the same dict
        assert mem.retrieve("k", source="persistent").value == 1

    monkeypatch.delenv("MC_DESIGN_DIR")
    with pytest.raises(mc.errors.ConfigError) as missing:
        mc.MemoryManager.from_config(str(path))
    assert "sources[1].opts.path" in str(missing.value)
    assert "MC_DESIGN_DIR" in str(missing.value)


def test_a_bad_file_names_the_field_as_the_design_shows(tmp_path):
    path = tmp_path / "memory.yaml"
    path.write_text(CONFIG_YAML.replace('opts: {path: "${MC_DESIGN_DIR}/memory.db"}',
                                        "replicas: 0"), encoding="utf-8")
    with pytest.raises(mc.errors.ConfigError) as bad:
        mc.MemoryManager.from_config(str(path))
    assert str(bad.value) == "sources[1].replicas: must be >= 1"


def test_cluster_entry_points_exist_without_importing_ray():
    """`import memcluster` never imports Ray; start_cluster checks the config first."""
    code = textwrap.dedent("""
        import json, sys
        import memcluster as mc
        before = "ray" in sys.modules
        names = {n: callable(getattr(mc, n)) for n in ("start_cluster", "connect")}
        try:
            mc.start_cluster({"sources": [{"name": "c", "backend": "memory",
                                           "replicas": 0}]}, name="never-started")
            error = None
        except mc.errors.ConfigError as exc:
            error = str(exc)
        print(json.dumps({"ray_at_import": before, "callables": names, "error": error}))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["ray_at_import"] is False
    assert result["callables"] == {"start_cluster": True, "connect": True}
    assert result["error"] == "sources[0].replicas: must be >= 1"


def test_a_bad_backend_option_names_the_source(tmp_path):
    with pytest.raises(mc.errors.ConfigError) as bad:
        mc.MemoryManager([*design_sources(tmp_path),
                          mc.memory_source("archive", "sqlite", opts={"pth": "x.db"})])
    assert str(bad.value).startswith("source 'archive': sqlite: unknown option(s) pth")
