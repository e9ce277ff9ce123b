"""MCP annotations and output schemas: complete, and true of what every tool returns.

The schemas live beside the MCP server while the tools live in `manager/tools.py`; this
runs every tool, on its success and error paths, and validates each result, so the two
cannot drift apart.
"""

from __future__ import annotations

import mcp_types as types
import pytest
from jsonschema import Draft202012Validator

import memcluster as mc
from memcluster.integrations.mcp_tools import (
    ANNOTATIONS,
    OUTPUT_SCHEMAS,
    mcp_tools,
    missing_tools,
)
from memcluster.manager.tools import TOOLS


@pytest.fixture
def mem():
    with mc.MemoryManager([
            mc.memory_source("cache", "memory", default=True, description="Fast cache"),
            mc.memory_source("vectors", "vector", opts={"embedder": "hashing"})]) as m:
        yield m


def calls(ns_bound: bool):
    """(tool, arguments) covering every tool's success and failure."""
    extra = {} if ns_bound else {"namespace": "n1"}
    return [
        ("memory_list_sources", {}),
        ("memory_store", {"key": "a", "value": {"t": "hello", "b": {"$bytes": "AAE="}},
                          "tags": ["x"], "ttl": 60, **extra}),
        ("memory_store", {"key": "b", "value": [1, "two", None], **extra}),
        ("memory_store", {"key": "a", "value": 1, "if_version": 7, **extra}),  # conflict
        ("memory_store", {"key": "", "value": 1, **extra}),                     # invalid
        ("memory_retrieve", {"key": "a", **extra}),
        ("memory_retrieve", {"key": "zz", **extra}),
        ("memory_search", {"query": "hello", **extra}),
        ("memory_search", {"query": "hello", "memory_source": "vectors", **extra}),
        ("memory_search", {"filter": {"x": {"$regex": "."}}, **extra}),        # unsupported
        ("memory_list_keys", {"limit": 1, **extra}),
        ("memory_count", {"tags": ["x"], **extra}),
        ("memory_delete", {"key": "b", **extra}),
        ("memory_delete", {"key": "b", **extra}),
        ("memory_clear", {"confirm": True, **extra}),
        ("memory_clear", {"confirm": False, **extra}),                           # invalid
        ("memory_fly", {}),                                                      # unknown
    ]


def test_every_tool_has_annotations_and_an_output_schema():
    assert missing_tools() == set()
    assert set(ANNOTATIONS) == set(OUTPUT_SCHEMAS) == {t.name for t in TOOLS}
    for name, hints in ANNOTATIONS.items():
        types.ToolAnnotations.model_validate(hints)
        assert hints["openWorldHint"] is False
        Draft202012Validator.check_schema(OUTPUT_SCHEMAS[name])
    destructive = {n for n, h in ANNOTATIONS.items() if h.get("destructiveHint")}
    assert destructive == {"memory_delete", "memory_clear"}
    read_only = {n for n, h in ANNOTATIONS.items() if h["readOnlyHint"]}
    assert read_only == {"memory_list_sources", "memory_retrieve", "memory_search",
                         "memory_list_keys", "memory_count"}


@pytest.mark.parametrize("bound", [False, True])
def test_every_result_matches_its_output_schema(mem, bound):
    namespace = "agent-1" if bound else None
    seen_ok, seen_error = set(), set()
    for name, args in calls(bound):
        result = mem.call_tool(name, args, namespace=namespace)
        if name not in OUTPUT_SCHEMAS:
            assert result["ok"] is False and result["error"]["type"] == "UnknownTool"
            continue
        problems = list(Draft202012Validator(OUTPUT_SCHEMAS[name]).iter_errors(result))
        assert not problems, (name, args, result, problems[0].message)
        (seen_ok if result["ok"] else seen_error).add(name)
    assert seen_ok == set(OUTPUT_SCHEMAS)                   # every success shape checked
    assert {"memory_store", "memory_search", "memory_clear"} <= seen_error


def test_tools_list_entries_are_valid_mcp_tools(mem):
    import asyncio

    for namespace in (None, "agent-1"):
        entries = asyncio.run(mcp_tools(mem, namespace))
        tools = [types.Tool.model_validate(e) for e in entries]
        assert [t.name for t in tools] == [t.name for t in TOOLS]
        for tool in tools:
            assert tool.annotations is not None and tool.output_schema is not None
            assert ("namespace" in tool.input_schema["properties"]) == (
                namespace is None and tool.name != "memory_list_sources")
