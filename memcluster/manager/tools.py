"""The LLM memory tools: their JSON schemas and a `call_tool` that never raises.

Core functions: `tool_schemas(surface, fmt, namespace)` and `call_tool(surface, name,
arguments, namespace)`, used through `MemorySurface.tools` / `.call_tool` by the local
manager and the cluster client alike. Tools: memory_list_sources, memory_store,
memory_retrieve, memory_search, memory_delete, memory_list_keys, memory_count and
memory_clear (which requires `confirm: true`).

Decisions:
- Arguments are validated against the same JSON Schema (2020-12) the model was shown,
  and the TTL and tags the model gives are applied (tags become `metadata["tags"]`,
  searchable with `tags`), fixing the original tools that accepted and dropped them.
- Results are JSON-safe dicts (bytes as `{"$bytes": base64}`, see `codec.to_json_safe`);
  every failure is `{"ok": false, "error": {"type", "message"}}` so an agent loop never
  crashes on a bad tool call and the model can read what went wrong.
- Metadata names that would look like they control the record are refused, never stored
  as inert fields: `ttl`, `expires_at`, `version`, `if_version`, `namespace` and
  `memory_source` in `metadata` get `InvalidArguments` pointing at the argument to use (a
  model that wrote `metadata: {"ttl": 60}` believed it set a TTL; storing it silently was
  the original no-op). `metadata.tags` is honoured, since tags live there: it must be a
  list of str and may not also be given as the `tags` argument (one would be dropped).
  Rejected alternative: honouring `ttl` from metadata too, which would give one setting
  two spellings and leave `version`/`namespace` ambiguous anyway.
- An argument the schema calls an integer may come as `2.0` (JSON Schema counts it as an
  integer); it is passed on as `2`.
- A namespace bound by the host (`tools(namespace=...)`) is removed from the schemas, and
  a call that still passes `namespace` is rejected with an error rather than ignored:
  ignoring it would let the model believe it read or wrote another tenant's memory;
  the error tells it plainly that its memory is scoped. Rejected alternative: honouring
  the model's namespace, which lets one prompt injection reach every tenant.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from memcluster import codec
from memcluster.errors import InvalidValue, MemclusterError
from memcluster.model import Record
from memcluster.secrets import redact_text

if TYPE_CHECKING:
    from memcluster.manager.surface import MemorySurface

log = logging.getLogger("memcluster.manager.tools")
FORMATS = ("openai", "anthropic", "mcp")
ANY_JSON: dict[str, Any] = {
    "type": ["string", "number", "integer", "boolean", "object", "array", "null"],
}


# ---- result shapes ------------------------------------------------------------------------


def record_json(record: Record, *, now: float | None = None) -> dict[str, Any]:
    """A Record as a JSON-safe dict; `score` only when set, `ttl` (seconds left) if `now`."""
    out = {"key": record.key, "value": codec.to_json_safe(record.value),
           "namespace": record.namespace, "metadata": codec.to_json_safe(record.metadata),
           "version": record.version, "created_at": record.created_at,
           "updated_at": record.updated_at, "expires_at": record.expires_at}
    if record.score is not None:
        out["score"] = record.score
    if now is not None:
        out["ttl"] = record.ttl_left(now)
    return out


def error_result(kind: str, message: str) -> dict[str, Any]:
    return {"ok": False, "error": {"type": kind, "message": redact_text(message)}}


class _BadArguments(Exception):
    """Arguments the schema allows but the tool refuses: reported as InvalidArguments."""


RESERVED_METADATA = {
    "ttl": "pass ttl as the 'ttl' argument", "expires_at": "pass a 'ttl' argument instead",
    "version": "pass 'if_version' as an argument", "if_version": "pass it as an argument",
    "namespace": "the namespace is not chosen through metadata",
    "memory_source": "pass it as the 'memory_source' argument",
}


# ---- the tools ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Tool:
    name: str
    description: str
    properties: dict[str, Any]
    required: tuple[str, ...]
    run: Callable[[MemorySurface, dict[str, Any], Any], dict[str, Any]]
    sourced: bool = True      # takes memory_source
    scoped: bool = True       # takes namespace


_KEY = {"type": "string", "minLength": 1, "description": "The memory's key, e.g. 'user:42'."}
_TTL = {"type": "number", "exclusiveMinimum": 0, "maximum": codec.MAX_TTL,
        "description": "Seconds until the memory expires; omit to keep it until deleted."}
_TAGS = {"type": "array", "items": {"type": "string"},
         "description": "Labels for the memory (stored in metadata.tags)."}
_TAGS_FILTER = {"type": "array", "items": {"type": "string"},
                "description": "Only memories carrying every one of these tags."}
_PATTERN = {"type": "string", "description": "Glob on keys: '*' any run, '?' one character."}
_FILTER = {"type": "object", "description": "Metadata filter, e.g. {\"priority\": {\"$gte\": 2}} "
           "(operators $eq $ne $gt $gte $lt $lte $in $nin $contains $exists $and $or $not)."}


def tags_filter(tags: Iterable[str] | None, extra: dict[str, Any] | None = None
                ) -> dict[str, Any] | None:
    """The metadata filter for "carries every one of `tags`" AND `extra` (None: no filter).

    Tags live in `metadata["tags"]` (see `memory_store`); the CLI's `--tag` uses the same.
    """
    parts: list[dict[str, Any]] = [{"tags": {"$contains": t}} for t in tags or ()]
    if extra:
        parts.append(extra)
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else {"$and": parts}


def _query_filter(args: dict[str, Any]) -> dict[str, Any] | None:
    return tags_filter(args.get("tags"), args.get("filter"))


def _list_sources(mem: MemorySurface, args: dict[str, Any], ns: Any) -> dict[str, Any]:
    return {"ok": True, "sources": [
        {"name": name, "description": d.get("description", ""),
         "default": bool(d.get("default")), "backend": d.get("backend"),
         "text_search": (d.get("capabilities") or {}).get("text")}
        for name, d in mem.info().items()]}


def _metadata(args: dict[str, Any]) -> dict[str, Any]:
    """The record's metadata from `metadata` and `tags` (see the module docstring)."""
    metadata = codec.from_json_arg(args.get("metadata") or {}, "metadata")
    if not isinstance(metadata, dict):
        raise _BadArguments(f"metadata: must be an object, got {type(metadata).__name__}")
    for name, hint in RESERVED_METADATA.items():
        if name in metadata:
            raise _BadArguments(f"metadata.{name}: reserved, it would not take effect as "
                                f"metadata; {hint}")
    if "tags" in metadata:
        tags = metadata["tags"]
        if "tags" in args:
            raise _BadArguments("tags: given both as an argument and in metadata; give once")
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise _BadArguments("metadata.tags: must be a list of strings (or use 'tags')")
    if "tags" in args:
        metadata["tags"] = list(dict.fromkeys(args["tags"]))
    return metadata


def _store(mem: MemorySurface, args: dict[str, Any], ns: Any) -> dict[str, Any]:
    metadata = _metadata(args)
    rec = mem.store(args["key"], codec.from_json_arg(args["value"], "value"),
                    source=args.get("memory_source"), namespace=ns, metadata=metadata,
                    ttl=args.get("ttl"), if_version=args.get("if_version"))
    return {"ok": True, "key": rec.key, "version": rec.version, "expires_at": rec.expires_at}


def _retrieve(mem: MemorySurface, args: dict[str, Any], ns: Any) -> dict[str, Any]:
    rec = mem.retrieve(args["key"], source=args.get("memory_source"), namespace=ns)
    return {"ok": True, "found": rec is not None,
            "record": None if rec is None else record_json(rec)}


def _search(mem: MemorySurface, args: dict[str, Any], ns: Any) -> dict[str, Any]:
    found = mem.search(args.get("query"), source=args.get("memory_source"), namespace=ns,
                       limit=args.get("limit", 10), pattern=args.get("pattern"),
                       filter=_query_filter(args))
    return {"ok": True, "count": len(found), "results": [record_json(r) for r in found]}


def _delete(mem: MemorySurface, args: dict[str, Any], ns: Any) -> dict[str, Any]:
    return {"ok": True, "deleted": mem.delete(args["key"], source=args.get("memory_source"),
                                              namespace=ns)}


def _list_keys(mem: MemorySurface, args: dict[str, Any], ns: Any) -> dict[str, Any]:
    page = mem.list_keys(args.get("pattern"), source=args.get("memory_source"), namespace=ns,
                         limit=args.get("limit", 100), cursor=args.get("cursor"))
    return {"ok": True, "keys": list(page.keys), "cursor": page.cursor}


def _count(mem: MemorySurface, args: dict[str, Any], ns: Any) -> dict[str, Any]:
    n = mem.count(args.get("query"), source=args.get("memory_source"), namespace=ns,
                  pattern=args.get("pattern"), filter=_query_filter(args))
    return {"ok": True, "count": n}


def _clear(mem: MemorySurface, args: dict[str, Any], ns: Any) -> dict[str, Any]:
    removed = mem.clear(source=args.get("memory_source"), namespace=ns, confirm=True)
    return {"ok": True, "removed": removed}


TOOLS: tuple[_Tool, ...] = (
    _Tool("memory_list_sources",
          "List the memory sources you can use, with what each is for.",
          {}, (), _list_sources, sourced=False, scoped=False),
    _Tool("memory_store",
          "Save a value in memory under a key (replaces an existing value). Use ttl for "
          "memories that should expire and tags to label them for later search.",
          {"key": _KEY, "value": {**ANY_JSON, "description": "Any JSON value to remember."},
           "ttl": _TTL, "tags": _TAGS,
           "metadata": {"type": "object", "description": "Extra fields to filter on later."},
           "if_version": {"type": "integer", "minimum": 0, "maximum": codec.MAX_VERSION,
                          "description": "Only write if the memory is at this version "
                                         "(0: only if the key is new)."}},
          ("key", "value"), _store),
    _Tool("memory_retrieve", "Read the value stored under a key.", {"key": _KEY}, ("key",),
          _retrieve),
    _Tool("memory_search",
          "Find memories whose key or value contains the query text (or, for a semantic "
          "source, that mean something similar), optionally narrowed by key pattern and tags.",
          {"query": {"type": "string", "description": "Text to look for."},
           "pattern": _PATTERN, "tags": _TAGS_FILTER, "filter": _FILTER,
           "limit": {"type": "integer", "minimum": 1, "maximum": 100, "default": 10}},
          (), _search),
    _Tool("memory_delete", "Delete the memory stored under a key.", {"key": _KEY}, ("key",),
          _delete),
    _Tool("memory_list_keys",
          "List stored keys in key order, a page at a time (pass the returned cursor back "
          "for the next page).",
          {"pattern": _PATTERN,
           "limit": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
           "cursor": {"type": ["string", "null"], "description": "From the previous page."}},
          (), _list_keys),
    _Tool("memory_count", "Count memories matching the query text, key pattern and tags.",
          {"query": {"type": "string"}, "pattern": _PATTERN, "tags": _TAGS_FILTER,
           "filter": _FILTER},
          (), _count),
    _Tool("memory_clear",
          "Delete EVERY memory in this namespace of the source. Irreversible; set confirm "
          "to true only when the user asked for it.",
          {"confirm": {"type": "boolean", "const": True,
                       "description": "Must be true to clear."}},
          ("confirm",), _clear),
)
_BY_NAME = {t.name: t for t in TOOLS}


def _sources_text(info: dict[str, dict[str, Any]]) -> str:
    lines = []
    for name, d in info.items():
        mark = " (default)" if d.get("default") else ""
        desc = f": {d['description']}" if d.get("description") else ""
        lines.append(f"{name}{mark}{desc}")
    return "; ".join(lines)


def _parameters(tool: _Tool, *, bound: bool, info: dict[str, dict[str, Any]] | None
                ) -> dict[str, Any]:
    """The tool's input schema; `info` adds the source enum and descriptions."""
    props = dict(tool.properties)
    if tool.sourced:
        prop: dict[str, Any] = {"type": "string"}
        if info:
            prop["enum"] = list(info)
            prop["description"] = f"Memory source to use. {_sources_text(info)}."
        props["memory_source"] = prop
    if tool.scoped and not bound:
        props["namespace"] = {"type": "string",
                              "description": "Namespace that isolates this memory (default '')."}
    return {"type": "object", "properties": props, "required": list(tool.required),
            "additionalProperties": False}


def tool_schemas(mem: MemorySurface, *, fmt: str = "openai",
                 namespace: str | tuple[str, ...] | None = None) -> list[dict[str, Any]]:
    """Every tool's schema in `fmt` (openai, anthropic or mcp) for `mem`'s sources."""
    if fmt not in FORMATS:
        raise InvalidValue(f"fmt must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if namespace is not None:
        codec.check_namespace(namespace)
    info = mem.info()
    out = []
    for tool in TOOLS:
        description = tool.description
        if tool.name == "memory_list_sources" and info:
            description += f" Sources: {_sources_text(info)}."
        params = _parameters(tool, bound=namespace is not None, info=info)
        if fmt == "openai":
            out.append({"type": "function", "function": {
                "name": tool.name, "description": description, "parameters": params}})
        elif fmt == "anthropic":
            out.append({"name": tool.name, "description": description, "input_schema": params})
        else:
            out.append({"name": tool.name, "description": description, "inputSchema": params})
    return out


_VALIDATORS: dict[tuple[str, bool], Draft202012Validator] = {}


def _validator(tool: _Tool, bound: bool) -> Draft202012Validator:
    """A cached validator of the tool's schema (sources checked by the surface instead)."""
    key = (tool.name, bound)
    if key not in _VALIDATORS:
        _VALIDATORS[key] = Draft202012Validator(_parameters(tool, bound=bound, info=None))
    return _VALIDATORS[key]


def call_tool(mem: MemorySurface, name: str, arguments: Mapping[str, Any] | str | None = None,
              *, namespace: str | tuple[str, ...] | None = None) -> dict[str, Any]:
    """Run one tool call; `arguments` is a dict or its JSON text. Never raises."""
    try:
        tool = _BY_NAME.get(name) if isinstance(name, str) else None
        if tool is None:
            return error_result("UnknownTool", f"no tool named {name!r}; tools: "
                                f"{', '.join(_BY_NAME)}")
        if arguments is None or arguments == "":
            args: Any = {}
        elif isinstance(arguments, (str, bytes)):
            try:
                args = json.loads(arguments)
            except ValueError as exc:
                return error_result("InvalidArguments", f"arguments are not valid JSON: {exc}")
        else:
            args = arguments
        if not isinstance(args, Mapping):
            return error_result("InvalidArguments", "arguments must be a JSON object")
        args = dict(args)
        bound = namespace is not None
        if bound and "namespace" in args:
            return error_result("InvalidArguments", "namespace is fixed for this agent and "
                                "cannot be chosen; call again without 'namespace'")
        problem = best_match(_validator(tool, bound).iter_errors(args))
        if problem is not None:
            where = ".".join(str(p) for p in problem.absolute_path)
            return error_result("InvalidArguments",
                                f"{where + ': ' if where else ''}{problem.message}")
        for name, prop in tool.properties.items():  # JSON Schema's integers include 2.0
            if prop.get("type") == "integer" and type(args.get(name)) is float:
                args[name] = int(args[name])
        ns = namespace if bound else args.get("namespace", "")
        return tool.run(mem, args, ns)
    except _BadArguments as exc:
        return error_result("InvalidArguments", str(exc))
    except MemclusterError as exc:
        return error_result(type(exc).__name__, str(exc))
    except Exception as exc:  # a tool call must never crash the agent loop
        log.warning("tool %s failed: %s", name, type(exc).__name__,
                    exc_info=log.isEnabledFor(logging.DEBUG))
        return error_result("InternalError", f"{name} failed unexpectedly "
                            f"({type(exc).__name__}); see the memcluster logs")
