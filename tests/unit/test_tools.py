"""The LLM tools: valid schemas in every format, applied TTL and tags, bound namespaces,
JSON-safe results, and errors returned instead of raised."""

from __future__ import annotations

import json

import pytest
from jsonschema import Draft202012Validator

import memcluster as mc
from memcluster.manager.tools import TOOLS
from memcluster.testing import FakeClock

TOOL_NAMES = {"memory_list_sources", "memory_store", "memory_retrieve", "memory_search",
              "memory_delete", "memory_list_keys", "memory_count", "memory_clear"}


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def mem(clock):
    manager = mc.MemoryManager([
        mc.memory_source("cache", "memory", description="Fast session cache", default=True,
                         opts={"cleanup_interval": 0}),
        mc.memory_source("notes", "memory", description="Long-term notes",
                         opts={"cleanup_interval": 0}),
    ], clock=clock)
    yield manager
    manager.close()


def params(schema: dict, fmt: str) -> dict:
    if fmt == "openai":
        return schema["function"]["parameters"]
    return schema["input_schema" if fmt == "anthropic" else "inputSchema"]


def name_of(schema: dict, fmt: str) -> str:
    return schema["function"]["name"] if fmt == "openai" else schema["name"]


@pytest.mark.parametrize("fmt", ["openai", "anthropic", "mcp"])
@pytest.mark.parametrize("namespace", [None, "agent-7"])
def test_schemas_are_valid_json_schema_in_every_format(mem, fmt, namespace):
    schemas = mem.tools(fmt=fmt, namespace=namespace)
    assert {name_of(s, fmt) for s in schemas} == TOOL_NAMES
    for schema in schemas:
        p = params(schema, fmt)
        Draft202012Validator.check_schema(p)
        assert p["type"] == "object" and p["additionalProperties"] is False
        assert ("namespace" in p["properties"]) == (
            namespace is None and name_of(schema, fmt) != "memory_list_sources")
        if "memory_source" in p["properties"]:
            source = p["properties"]["memory_source"]
            assert source["enum"] == ["cache", "notes"]
            assert "Fast session cache" in source["description"]
            assert "Long-term notes" in source["description"]
    if fmt == "openai":
        assert all(s["type"] == "function" for s in schemas)
    json.dumps(schemas)


def test_unknown_format_is_rejected(mem):
    with pytest.raises(mc.errors.InvalidValue):
        mem.tools(fmt="gemini")


def test_store_applies_ttl_and_tags_from_the_llm(mem, clock):
    out = mem.call_tool("memory_store", {"key": "k", "value": {"x": 1}, "ttl": 30,
                                         "tags": ["profile", "vip"], "memory_source": "notes"})
    assert out["ok"] and out["version"] == 1 and out["expires_at"] == clock() + 30
    rec = mem.retrieve("k", source="notes")
    assert rec.metadata == {"tags": ["profile", "vip"]}
    hits = mem.call_tool("memory_search", {"tags": ["vip"], "memory_source": "notes"})
    assert [r["key"] for r in hits["results"]] == ["k"]
    assert mem.call_tool("memory_count", {"tags": ["nope"], "memory_source": "notes"})["count"] == 0
    clock.advance(31)
    assert mem.call_tool("memory_retrieve", {"key": "k", "memory_source": "notes"}) == {
        "ok": True, "found": False, "record": None}


def test_every_tool_works_through_json_string_arguments(mem):
    def call(name, **args):
        return mem.call_tool(name, json.dumps(args))

    assert call("memory_store", key="a", value="alpha")["ok"]
    assert call("memory_store", key="b", value="beta", namespace="n")["ok"]
    assert call("memory_retrieve", key="a")["record"]["value"] == "alpha"
    assert call("memory_list_keys")["keys"] == ["a"]
    assert call("memory_list_keys", namespace="n")["keys"] == ["b"]
    assert call("memory_search", query="ALPH")["count"] == 1
    assert call("memory_count")["count"] == 1
    assert call("memory_delete", key="a") == {"ok": True, "deleted": True}
    assert call("memory_delete", key="a") == {"ok": True, "deleted": False}
    assert call("memory_clear", confirm=True, namespace="n") == {"ok": True, "removed": 1}
    listed = call("memory_list_sources")["sources"]
    assert [(s["name"], s["default"], s["description"]) for s in listed] == [
        ("cache", True, "Fast session cache"), ("notes", False, "Long-term notes")]


def test_bytes_come_back_base64_tagged_and_round_trip(mem):
    mem.store("bin", {"blob": b"\x00\xff"})
    out = mem.call_tool("memory_retrieve", {"key": "bin"})
    assert out["record"]["value"] == {"blob": {"$bytes": "AP8="}}
    json.dumps(out)
    assert mem.call_tool("memory_store", {"key": "copy", "value": out["record"]["value"]})["ok"]
    assert mem.retrieve("copy").value == {"blob": b"\x00\xff"}


def test_bound_namespace_is_applied_and_cannot_be_overridden(mem):
    assert mem.call_tool("memory_store", {"key": "k", "value": 1}, namespace="agent-1")["ok"]
    assert mem.retrieve("k", namespace="agent-1").value == 1
    assert mem.retrieve("k") is None
    escape = mem.call_tool("memory_retrieve", {"key": "k", "namespace": "agent-2"},
                           namespace="agent-1")
    assert escape["ok"] is False and escape["error"]["type"] == "InvalidArguments"
    assert "namespace" in escape["error"]["message"]
    assert mem.call_tool("memory_retrieve", {"key": "k"}, namespace="agent-2")["found"] is False
    assert mem.call_tool("memory_clear", {"confirm": True}, namespace="agent-2")["removed"] == 0
    assert mem.retrieve("k", namespace="agent-1") is not None


@pytest.mark.parametrize(("name", "arguments", "kind"), [
    ("memory_fly", {}, "UnknownTool"),
    ("memory_store", "{not json", "InvalidArguments"),
    ("memory_store", "[1, 2]", "InvalidArguments"),
    ("memory_store", {"value": 1}, "InvalidArguments"),
    ("memory_store", {"key": "k", "value": 1, "ttl": -5}, "InvalidArguments"),
    ("memory_store", {"key": "k", "value": 1, "tags": "x"}, "InvalidArguments"),
    ("memory_store", {"key": "k", "value": 1, "extra": True}, "InvalidArguments"),
    ("memory_store", {"key": "k", "value": {"$bytes": "***"}}, "InvalidValue"),
    ("memory_store", {"key": "k", "value": 1, "memory_source": "nope"}, "UnknownSource"),
    ("memory_store", {"key": "k", "value": 1, "if_version": 3}, "VersionConflict"),
    ("memory_store", {"key": "x" * 600, "value": 1}, "InvalidKey"),
    ("memory_search", {"filter": {"n": {"$regex": "a"}}}, "UnsupportedQuery"),
    ("memory_search", {"limit": 0}, "InvalidArguments"),
    ("memory_clear", {}, "InvalidArguments"),
    ("memory_clear", {"confirm": False}, "InvalidArguments"),
])
def test_bad_calls_return_errors_and_change_nothing(mem, name, arguments, kind):
    out = mem.call_tool(name, arguments)
    assert out["ok"] is False and out["error"]["type"] == kind, out
    assert isinstance(out["error"]["message"], str) and out["error"]["message"]
    assert mem.count() == 0


def test_clear_without_confirm_keeps_the_memories(mem):
    mem.store("k", 1)
    assert mem.call_tool("memory_clear", {"confirm": False})["ok"] is False
    assert mem.exists("k")


def test_an_unexpected_backend_failure_is_reported_not_raised(mem, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("password=hunter2 leaked?")

    monkeypatch.setattr(type(mem), "_execute", boom)
    out = mem.call_tool("memory_retrieve", {"key": "k"})
    assert out["ok"] is False and out["error"]["type"] == "InternalError"
    assert "hunter2" not in json.dumps(out)


def test_every_declared_tool_has_a_unique_name():
    assert len({t.name for t in TOOLS}) == len(TOOLS) == len(TOOL_NAMES)
