"""The memory tools as an MCP server, over stdio or streamable HTTP.

    serve_stdio(memory, namespace="agent-7")                  # an MCP host spawns us
    serve_http(memory, "127.0.0.1", 8765, tokens=TokenTable.parse(text))
    app = http_app(memory, tokens=tokens)                     # mount in your own ASGI server

Core pieces: `build_server(memory, namespace)` (an `mcp.server.lowlevel.Server` with
`tools/list` and `tools/call`), `serve_stdio`, `http_app` / `serve_http` (the streamable
HTTP transport at `/mcp`, with bearer tokens from `memcluster.integrations.auth`) and
`parse_address`. Every function takes a memory surface the caller opened (a
`MemoryManager` or a connected cluster) and leaves closing it to the caller; the
`memcluster mcp` command is one such caller.

Decisions:

- The server is a thin shell around `MemorySurface.tools(fmt="mcp")` and `call_tool`, so
  an MCP client sees the schemas, validation, error shapes and namespace binding an
  in-process agent gets, plus MCP's annotations and output schemas (`mcp_tools`). A bound
  namespace removes the tools' `namespace` parameter and a call that still passes one is
  refused. A tool failure is a normal result with `isError: true` and the
  `{"ok": false, "error": ...}` body, so the model can read it and correct itself; only a
  malformed request is a JSON-RPC error. Each result carries the dict both as
  `structuredContent` and as JSON text, for clients that read only one of them. Rejected:
  `FastMCP` decorators, which derive schemas from Python signatures and would make a
  second definition of the tools.
- Over HTTP with tokens, the namespace comes from the request's token, never from the
  client: every request must carry `Authorization: Bearer <token>` (else 401), tools are
  scoped to that token's namespace, and the SDK's session manager ties each session to
  the token that opened it (another token gets 404 for it). Without tokens the server
  listens only on a loopback address, where it trusts local processes as stdio does.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import mcp_types as types
import uvicorn
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server
from starlette.types import ASGIApp, Receive, Scope, Send

from memcluster import __version__, codec
from memcluster.errors import ConfigError
from memcluster.integrations.auth import Principal, TokenTable
from memcluster.integrations.mcp_tools import mcp_tools
from memcluster.manager.surface import MemorySurface

SERVER_NAME = "memcluster"
INSTRUCTIONS = ("Shared memory for agents: store, retrieve, search and delete memories by "
                "key. Call memory_list_sources first to see which sources exist.")
MCP_PATH = "/mcp"
PRINCIPAL = "memcluster.principal"   # the ASGI scope key holding the request's Principal
Namespace = str | tuple[str, ...] | None


def build_server(memory: MemorySurface, namespace: Namespace = None, *,
                 bind: Callable[[Any], Namespace] | None = None) -> Server[Any]:
    """An MCP server exposing `memory`'s tools, bound to `namespace` if given.

    `bind(ctx)`, if given, decides the namespace per request instead (the HTTP transport
    reads it from the request's token).
    """
    if namespace is not None:
        if bind is not None:
            raise ConfigError("give a namespace or a per-request bind, not both")
        codec.check_namespace(namespace)
    scope_of = bind or (lambda ctx: namespace)

    async def list_tools(ctx: Any, params: types.PaginatedRequestParams | None
                         ) -> types.ListToolsResult:
        tools = await mcp_tools(memory, scope_of(ctx))
        return types.ListToolsResult(tools=[types.Tool.model_validate(t) for t in tools])

    async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        result = await memory.acall_tool(params.name, params.arguments or {},
                                         namespace=scope_of(ctx))
        text = json.dumps(result, ensure_ascii=False)
        return types.CallToolResult(content=[types.TextContent(text=text)],
                                    structured_content=result,
                                    is_error=not result.get("ok", False))

    return Server(SERVER_NAME, version=__version__, instructions=INSTRUCTIONS,
                  on_list_tools=list_tools, on_call_tool=call_tool)


def serve_stdio(memory: MemorySurface, *, namespace: Namespace = None) -> None:
    """Serve the tools on this process's stdin/stdout until the client closes stdin."""
    server = build_server(memory, namespace)

    async def run() -> None:
        async with stdio_server() as (read_stream, write_stream):
            await server.run(read_stream, write_stream, server.create_initialization_options())

    anyio.run(run)


# ---- streamable HTTP ----------------------------------------------------------------------


class BearerAuth:
    """ASGI middleware: every HTTP request needs a valid bearer token (else 401).

    It records the token's `Principal` in the scope, and presents it to the MCP SDK as the
    authenticated user (labelled, never the token), so the SDK binds each session to it.
    """

    def __init__(self, app: ASGIApp, tokens: TokenTable) -> None:
        self.app = app
        self.tokens = tokens

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header = next((v.decode("latin-1") for k, v in scope.get("headers", ())
                       if k == b"authorization"), None)
        principal = self.tokens.check(header)
        if principal is None:
            body = json.dumps({"error": "invalid_token",
                               "error_description": "a valid bearer token is required"}).encode()
            await send({"type": "http.response.start", "status": 401, "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"www-authenticate", b'Bearer error="invalid_token"')]})
            await send({"type": "http.response.body", "body": body})
            return
        token = AccessToken(token=principal.label, client_id=principal.label, scopes=[])
        await self.app({**scope, PRINCIPAL: principal, "user": AuthenticatedUser(token)},
                       receive, send)


def _request_namespace(ctx: Any) -> str:
    request = getattr(ctx, "request", None)
    principal = None if request is None else request.scope.get(PRINCIPAL)
    if not isinstance(principal, Principal):  # BearerAuth lets no such request through
        raise PermissionError("request without an authenticated principal")
    return principal.namespace


def http_app(memory: MemorySurface, *, tokens: TokenTable | None = None,
             namespace: Namespace = None, host: str = "127.0.0.1") -> ASGIApp:
    """The streamable HTTP app serving the tools at /mcp (`host`: the address it is
    reached by, for the SDK's DNS-rebinding check on loopback). With `tokens`, each
    request is scoped to its token's namespace; `namespace` is for the token-less case."""
    if tokens is not None and namespace is not None:
        raise ConfigError("give tokens (each bound to a namespace) or one namespace, not both")
    if tokens is None:
        return build_server(memory, namespace).streamable_http_app(
            streamable_http_path=MCP_PATH, host=host)
    server = build_server(memory, bind=_request_namespace)
    return BearerAuth(server.streamable_http_app(streamable_http_path=MCP_PATH, host=host),
                      tokens)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def parse_address(address: str) -> tuple[str, int]:
    """`HOST:PORT` (IPv6 as `[::1]:PORT`) -> (host, port); ConfigError if malformed."""
    host, sep, port = address.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"--http: expected HOST:PORT (e.g. 127.0.0.1:8765), got {address!r}")
    return host, int(port)


def serve_http(memory: MemorySurface, host: str, port: int, *,
               tokens: TokenTable | None = None, namespace: Namespace = None,
               announce: Callable[[str], None] | None = None) -> None:
    """Serve the tools over streamable HTTP on host:port until interrupted (SIGINT/SIGTERM).

    Without `tokens` only a loopback host is allowed. Port 0 picks a free port; the URL
    is passed to `announce` (default: one line on stderr) once the socket is bound.
    """
    if tokens is None and not _is_loopback(host):
        raise ConfigError(f"refusing to serve on {host} without bearer tokens: give a token "
                          "file or $MEMCLUSTER_TOKENS (or listen on 127.0.0.1)")
    app = http_app(memory, tokens=tokens, namespace=namespace, host=host)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = socket.create_server((host, port), family=family)
    except OSError as exc:
        raise ConfigError(f"--http: cannot listen on {host}:{port}: "
                          f"{exc.strerror or type(exc).__name__}") from None
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if family == socket.AF_INET6 else host
    (announce or _announce)(f"memcluster MCP server on http://{shown}:{bound}{MCP_PATH}"
                            + (f" ({len(tokens)} bearer tokens)" if tokens else ""))
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
    _StopOnSignal(config).run(sockets=[sock])


class _StopOnSignal(uvicorn.Server):
    """uvicorn's server, except that SIGINT/SIGTERM end it normally: it shuts down
    gracefully and returns, instead of re-raising the signal once done (for a server, a
    stop signal is the normal way to end, so `memcluster mcp --http` then exits 0)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit)
                    for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _announce(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


__all__ = ["BearerAuth", "build_server", "http_app", "parse_address", "serve_http",
           "serve_stdio"]
