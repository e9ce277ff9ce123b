"""`memcluster mcp` through the official MCP SDK's client, over both transports.

stdio: the SDK spawns `memcluster mcp` and talks over its stdin/stdout. Streamable HTTP:
`memcluster mcp --http 127.0.0.1:0` in a subprocess, reached with the SDK's HTTP client,
with bearer tokens each bound to a namespace. The SDK client validates every successful
result against the tool's `outputSchema`, so each call here also checks the schemas.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
from typing import Any

import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

TOKEN_A = "tokA-0123456789abcdefghij"
TOKEN_B = "tokB-0123456789abcdefghij"
PROTOCOL = "2025-06-18"
pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    root = tmp_path_factory.mktemp("mcp")
    path = root / "memory.yaml"
    path.write_text(f"""
sources:
  - name: cache
    backend: memory
    default: true
    description: Fast session cache
  - name: persistent
    backend: sqlite
    description: Long-term facts
    opts: {{path: "{root / 'm.db'}"}}
""")
    (root / "tokens.txt").write_text(f"# two agents\n{TOKEN_A} agent-a\n{TOKEN_B} agent-b\n")
    return root


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MEMCLUSTER_TOKENS"}
    return {**env, **extra}


class HttpServer:
    """`memcluster mcp --http 127.0.0.1:0 ...` in a subprocess; `url` once it listens."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "memcluster.cli", "mcp", "--http", "127.0.0.1:0", *args],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env=child_env())
        self.stderr: list[str] = []
        found = threading.Event()
        self.url = ""

        def read() -> None:
            for line in self.proc.stderr:
                self.stderr.append(line)
                match = re.search(r"(http://\S+/mcp)", line)
                if match and not found.is_set():
                    self.url = match.group(1)
                    found.set()
            found.set()

        threading.Thread(target=read, daemon=True).start()
        if not found.wait(60) or not self.url:
            self.stop()
            raise AssertionError(f"server did not start: {''.join(self.stderr)[-2000:]}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()
        return self.proc.returncode


def http_client(url: str, token: str | None, mode: str = "auto") -> Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return Client(streamable_http_client(url, http_client=httpx2.AsyncClient(headers=headers)),
                  mode=mode)


async def call(client: Client, name: str, arguments: dict[str, Any]) -> tuple[bool, dict]:
    result = await client.call_tool(name, arguments)
    (content,) = result.content
    assert json.loads(content.text) == result.structured_content
    return result.is_error, result.structured_content


def check_tool_list(tools, *, bound: bool) -> None:
    by_name = {t.name: t for t in tools}
    assert {"memory_store", "memory_retrieve", "memory_delete", "memory_clear"} <= set(by_name)
    for tool in tools:
        assert tool.annotations is not None and tool.annotations.open_world_hint is False
        assert tool.output_schema is not None and tool.output_schema["type"] == "object"
        if tool.name != "memory_list_sources":
            assert ("namespace" in tool.input_schema["properties"]) is not bound
    assert by_name["memory_delete"].annotations.destructive_hint is True
    assert by_name["memory_clear"].annotations.destructive_hint is True
    assert by_name["memory_retrieve"].annotations.read_only_hint is True
    assert by_name["memory_store"].annotations.read_only_hint is False


# ---- stdio ----------------------------------------------------------------------------------


def test_stdio_with_the_sdk_client(config):
    env = {"PYTHONPATH": os.environ["PYTHONPATH"]} if os.environ.get("PYTHONPATH") else None
    params = StdioServerParameters(command=sys.executable, env=env, args=[
        "-m", "memcluster.cli", "mcp", "--config", str(config / "memory.yaml"),
        "--namespace", "agent-s"])

    async def scenario() -> None:
        async with Client(params) as client:
            check_tool_list((await client.list_tools()).tools, bound=True)
            err, body = await call(client, "memory_store", {
                "key": "fact", "value": {"text": "stdio works"}, "tags": ["t"],
                "memory_source": "persistent"})
            assert not err and body["version"] == 1
            err, body = await call(client, "memory_retrieve", {"key": "fact",
                                                               "memory_source": "persistent"})
            assert body["record"]["namespace"] == "agent-s"
            err, body = await call(client, "memory_search", {"query": "stdio",
                                                             "memory_source": "persistent"})
            assert [r["key"] for r in body["results"]] == ["fact"]
            err, body = await call(client, "memory_retrieve", {"key": "fact", "namespace": "x"})
            assert err and "namespace" in body["error"]["message"]
            err, body = await call(client, "memory_clear", {"confirm": True,
                                                            "memory_source": "persistent"})
            assert not err and body["removed"] == 1

    asyncio.run(scenario())


# ---- streamable HTTP ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def token_server(config):
    server = HttpServer("--config", str(config / "memory.yaml"),
                        "--token-file", str(config / "tokens.txt"))
    yield server
    assert server.stop() == 0, "".join(server.stderr)[-2000:]
    log = "".join(server.stderr)
    assert TOKEN_A not in log and TOKEN_B not in log


def test_http_tokens_bind_each_client_to_its_namespace(token_server):
    async def scenario() -> None:
        async with http_client(token_server.url, TOKEN_A) as a, \
                http_client(token_server.url, TOKEN_B, mode="legacy") as b:
            check_tool_list((await a.list_tools()).tools, bound=True)
            check_tool_list((await b.list_tools()).tools, bound=True)
            for client, who in ((a, "a"), (b, "b")):
                err, body = await call(client, "memory_store", {
                    "key": "me", "value": {"who": who}, "memory_source": "persistent"})
                assert not err
            err, body = await call(a, "memory_retrieve", {"key": "me",
                                                          "memory_source": "persistent"})
            assert body["record"]["value"] == {"who": "a"}
            assert body["record"]["namespace"] == "agent-a"
            err, body = await call(b, "memory_list_keys", {"memory_source": "persistent"})
            assert body["keys"] == ["me"]
            err, body = await call(b, "memory_retrieve", {"key": "me",
                                                          "memory_source": "persistent"})
            assert body["record"]["value"] == {"who": "b"}
            err, body = await call(b, "memory_retrieve", {"key": "me", "namespace": "agent-a"})
            assert err and body["error"]["type"] == "InvalidArguments"
            err, body = await call(a, "memory_delete", {"key": "me",
                                                        "memory_source": "persistent"})
            assert body["deleted"] is True
        async with http_client(token_server.url, TOKEN_B) as b_again:   # a new session
            err, body = await call(b_again, "memory_retrieve", {"key": "me",
                                                                "memory_source": "persistent"})
            assert body["found"] is True and body["record"]["value"] == {"who": "b"}

    asyncio.run(scenario())


def test_http_refuses_missing_wrong_and_borrowed_credentials(token_server):
    url = token_server.url
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": PROTOCOL, "capabilities": {},
        "clientInfo": {"name": "raw", "version": "1"}}}
    accept = {"Accept": "application/json, text/event-stream"}
    with httpx2.Client(timeout=30) as http:
        for headers in ({}, {"Authorization": f"Bearer {TOKEN_A}x"},
                        {"Authorization": f"Basic {TOKEN_A}"}):
            reply = http.post(url, json=init, headers={**accept, **headers})
            assert reply.status_code == 401
            assert reply.headers["www-authenticate"].startswith("Bearer")
            assert TOKEN_A not in reply.text
        opened = http.post(url, json=init, headers={**accept, "Authorization": f"Bearer {TOKEN_A}"})
        assert opened.status_code == 200
        session = opened.headers["mcp-session-id"]
        listing = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
        common = {**accept, "mcp-session-id": session, "mcp-protocol-version": PROTOCOL}
        borrowed = http.post(url, json=listing,
                             headers={**common, "Authorization": f"Bearer {TOKEN_B}"})
        assert borrowed.status_code == 404       # A's session does not exist for B
        http.post(url, json={"jsonrpc": "2.0", "method": "notifications/initialized"},
                  headers={**common, "Authorization": f"Bearer {TOKEN_A}"})
        own = http.post(url, json=listing, headers={**common, "Authorization": f"Bearer {TOKEN_A}"})
        assert own.status_code == 200 and "memory_store" in own.text


def test_http_without_tokens_on_loopback_and_clean_shutdown(config):
    server = HttpServer("--config", str(config / "memory.yaml"))
    try:
        async def scenario() -> None:
            async with http_client(server.url, None) as client:
                check_tool_list((await client.list_tools()).tools, bound=False)
                err, body = await call(client, "memory_store", {"key": "k", "value": 1,
                                                                "namespace": "open"})
                assert not err
                err, body = await call(client, "memory_retrieve", {"key": "k",
                                                                   "namespace": "open"})
                assert body["record"]["value"] == 1

        asyncio.run(scenario())
    finally:
        assert server.stop() == 0, "".join(server.stderr)[-2000:]


@pytest.mark.parametrize("args, env, message", [
    (["--http", "0.0.0.0:0"], {}, "without bearer tokens"),
    (["--http", "127.0.0.1:0", "--token-file", "{root}/missing.txt"], {}, "cannot be read"),
    (["--http", "127.0.0.1:0"], {"MEMCLUSTER_TOKENS": "shorttoken agent-a"}, "at least 16"),
    (["--http", "127.0.0.1:0", "--token-file", "{root}/tokens.txt", "--namespace", "x"], {},
     "--namespace conflicts"),
    (["--token-file", "{root}/tokens.txt"], {}, "--token-file needs --http"),
    (["--http", "nonsense"], {}, "expected HOST:PORT"),
])
def test_bad_http_setups_exit_2_with_one_clear_line(config, args, env, message, monkeypatch,
                                                    capsys):
    from memcluster.cli import main

    monkeypatch.delenv("MEMCLUSTER_TOKENS", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    argv = [a.format(root=config) for a in args]
    assert main(["mcp", "--config", str(config / "memory.yaml"), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.splitlines()) == 1
    assert "shorttoken" not in err and TOKEN_A not in err
