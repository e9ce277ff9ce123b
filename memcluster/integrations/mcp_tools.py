"""The memory tools as MCP describes tools: annotations and output schemas.

Core pieces: `ANNOTATIONS` and `OUTPUT_SCHEMAS` (per tool name) and `mcp_tools(memory,
namespace)`, the `tools/list` entries: the schemas `MemorySurface.tools(fmt="mcp")` gives
(name, description, input schema, one definition in `memcluster.manager.tools`) plus what
only MCP has.

- **Annotations** are hints for the host: every tool is closed-world (it touches this
  memory only); reads are read-only; `memory_delete` and `memory_clear` are destructive
  (and idempotent: a second call changes nothing more); `memory_store` replaces a value
  but is not flagged destructive, as in the issue that asked for these hints, so hosts do
  not ask for approval on every write; it is not idempotent (each call is a new version).
- **Output schemas** describe the `structuredContent` of a call: the tool's success
  body (`"ok": true`) or the error body every tool returns (`"ok": false` with `error`
  `{type, message}`, sent with `isError`), as a `oneOf` told apart by `ok`. So a client
  that validates every result, errors included, finds them valid.

Decision: these live beside the MCP server, not in `manager/tools.py`, because no other
format (openai, anthropic) has them; `tests/integrations/test_mcp_schemas.py` runs every
tool and validates its results against these schemas, so the two cannot drift apart.
"""

from __future__ import annotations

from typing import Any

from memcluster.manager.surface import MemorySurface
from memcluster.manager.tools import ANY_JSON, TOOLS

_NUMBER_OR_NULL = {"type": ["number", "null"]}
RECORD: dict[str, Any] = {
    "type": "object",
    "properties": {
        "key": {"type": "string"}, "value": ANY_JSON, "namespace": {"type": "string"},
        "metadata": {"type": "object"}, "version": {"type": "integer", "minimum": 1},
        "created_at": {"type": "number"}, "updated_at": {"type": "number"},
        "expires_at": _NUMBER_OR_NULL, "score": {"type": "number"},
    },
    "required": ["key", "value", "namespace", "metadata", "version", "created_at",
                 "updated_at", "expires_at"],
}
ERROR: dict[str, Any] = {
    "type": "object",
    "properties": {
        "ok": {"const": False},
        "error": {"type": "object", "properties": {"type": {"type": "string"},
                                                   "message": {"type": "string"}},
                  "required": ["type", "message"]},
    },
    "required": ["ok", "error"],
}


def _ok(properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": {"ok": {"const": True}, **properties},
            "required": ["ok", *properties]}


SUCCESS: dict[str, dict[str, Any]] = {
    "memory_list_sources": _ok({"sources": {"type": "array", "items": {
        "type": "object",
        "properties": {"name": {"type": "string"}, "description": {"type": "string"},
                       "default": {"type": "boolean"},
                       "backend": {"type": ["string", "null"]},
                       "text_search": {"type": ["string", "null"]}},
        "required": ["name", "description", "default"]}}}),
    "memory_store": _ok({"key": {"type": "string"}, "version": {"type": "integer"},
                         "expires_at": _NUMBER_OR_NULL}),
    "memory_retrieve": _ok({"found": {"type": "boolean"},
                            "record": {"anyOf": [RECORD, {"type": "null"}]}}),
    "memory_search": _ok({"count": {"type": "integer", "minimum": 0},
                          "results": {"type": "array", "items": RECORD}}),
    "memory_delete": _ok({"deleted": {"type": "boolean"}}),
    "memory_list_keys": _ok({"keys": {"type": "array", "items": {"type": "string"}},
                             "cursor": {"type": ["string", "null"]}}),
    "memory_count": _ok({"count": {"type": "integer", "minimum": 0}}),
    "memory_clear": _ok({"removed": {"type": "integer", "minimum": 0}}),
}
OUTPUT_SCHEMAS: dict[str, dict[str, Any]] = {
    name: {"type": "object", "oneOf": [schema, ERROR]} for name, schema in SUCCESS.items()}


def _hints(title: str, *, read_only: bool, destructive: bool = False,
           idempotent: bool = False) -> dict[str, Any]:
    hints: dict[str, Any] = {"title": title, "readOnlyHint": read_only, "openWorldHint": False}
    if not read_only:  # the other hints mean something only for a tool that writes
        hints.update(destructiveHint=destructive, idempotentHint=idempotent)
    return hints


ANNOTATIONS: dict[str, dict[str, Any]] = {
    "memory_list_sources": _hints("List memory sources", read_only=True),
    "memory_store": _hints("Store a memory", read_only=False),
    "memory_retrieve": _hints("Read a memory", read_only=True),
    "memory_search": _hints("Search memories", read_only=True),
    "memory_delete": _hints("Delete a memory", read_only=False, destructive=True,
                            idempotent=True),
    "memory_list_keys": _hints("List memory keys", read_only=True),
    "memory_count": _hints("Count memories", read_only=True),
    "memory_clear": _hints("Delete every memory in the namespace", read_only=False,
                           destructive=True, idempotent=True),
}


def missing_tools() -> set[str]:
    """Tools of `manager.tools` lacking annotations or an output schema (empty when in step)."""
    names = {tool.name for tool in TOOLS}
    return (names - set(ANNOTATIONS)) | (names - set(OUTPUT_SCHEMAS))


async def mcp_tools(memory: MemorySurface, namespace: str | tuple[str, ...] | None
                    ) -> list[dict[str, Any]]:
    """The `tools/list` entries for `memory`, bound to `namespace` if not None."""
    missing = missing_tools()
    if missing:
        raise LookupError(f"no MCP annotations/output schema for {', '.join(sorted(missing))}")
    schemas = await memory.atools(fmt="mcp", namespace=namespace)
    return [{**s, "annotations": ANNOTATIONS[s["name"]], "outputSchema": OUTPUT_SCHEMAS[s["name"]]}
            for s in schemas]


__all__ = ["ANNOTATIONS", "OUTPUT_SCHEMAS", "RECORD", "mcp_tools", "missing_tools"]
