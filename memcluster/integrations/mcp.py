"""The memory tools as an MCP server over stdio: `memcluster mcp --config FILE | --cluster NAME`.

Core pieces: `build_server(memory, namespace=None)` (an `mcp.server.lowlevel.Server` with
`tools/list` and `tools/call` handlers), `serve(memory, namespace=None)` (run it on this
process's stdin/stdout); the `memcluster mcp` command (`memcluster.cli.mcp`) calls `serve`.

    memcluster mcp --config memory.yaml --namespace agent-7     # in an MCP client's config

Decision: the server is a thin shell around `MemorySurface.tools(fmt="mcp")` and
`MemorySurface.call_tool`, so an MCP client sees exactly the schemas, validation, error
shapes and namespace binding an in-process agent gets: with `--namespace` the tools lose
their `namespace` parameter and a call that still passes one is refused. A tool failure
(bad arguments, unknown key, a backend error) is a normal result with `isError: true`
and the `{"ok": false, "error": ...}` body, so the model can read it and correct
itself; only a malformed request is a JSON-RPC error. Each result carries the dict both
as `structuredContent` and as JSON text, for clients that read only one of them.
Rejected: `FastMCP` decorators, which derive schemas from Python signatures and would
make a second definition of the tools to keep in step with `tools.py`.
"""

from __future__ import annotations

import json
from typing import Any

import mcp_types as types
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server

from memcluster import __version__, codec
from memcluster.manager.surface import MemorySurface

SERVER_NAME = "memcluster"
INSTRUCTIONS = ("Shared memory for agents: store, retrieve, search and delete memories by "
                "key. Call memory_list_sources first to see which sources exist.")


def build_server(memory: MemorySurface, namespace: str | tuple[str, ...] | None = None
                 ) -> Server[Any]:
    """An MCP server exposing `memory`'s tools, bound to `namespace` if given."""
    if namespace is not None:
        codec.check_namespace(namespace)

    async def list_tools(ctx: Any, params: types.PaginatedRequestParams | None
                         ) -> types.ListToolsResult:
        schemas = await memory.atools(fmt="mcp", namespace=namespace)
        return types.ListToolsResult(tools=[types.Tool.model_validate(s) for s in schemas])

    async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        result = await memory.acall_tool(params.name, params.arguments or {},
                                         namespace=namespace)
        text = json.dumps(result, ensure_ascii=False)
        return types.CallToolResult(content=[types.TextContent(text=text)],
                                    structured_content=result,
                                    is_error=not result.get("ok", False))

    return Server(SERVER_NAME, version=__version__, instructions=INSTRUCTIONS,
                  on_list_tools=list_tools, on_call_tool=call_tool)


async def serve(memory: MemorySurface, namespace: str | tuple[str, ...] | None = None) -> None:
    """Serve the tools on stdin/stdout until the client closes stdin."""
    server = build_server(memory, namespace)
    async with stdio_server() as (read_stream, write_stream):
        await server.run(read_stream, write_stream, server.create_initialization_options())


__all__ = ["build_server", "serve"]
