"""`memcluster mcp` as an MCP client sees it: raw JSON-RPC over the server's stdin/stdout."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from memcluster.manager.tools import tool_schemas

PROTOCOL = "2025-06-18"


class StdioClient:
    """A minimal MCP client: newline-delimited JSON-RPC to a subprocess."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "memcluster.cli", "mcp", *args],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.next_id = 0

    def notify(self, method: str, params: dict[str, Any] | None = None) -> None:
        msg: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            msg["params"] = params
        self._send(msg)

    def request(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        self.next_id += 1
        msg: dict[str, Any] = {"jsonrpc": "2.0", "id": self.next_id, "method": method}
        if params is not None:
            msg["params"] = params
        self._send(msg)
        line = self.proc.stdout.readline()
        assert line, f"server closed stdout; stderr: {self.proc.stderr.read()[-2000:]}"
        reply = json.loads(line)
        assert reply["id"] == self.next_id
        return reply

    def _send(self, msg: dict[str, Any]) -> None:
        self.proc.stdin.write(json.dumps(msg) + "\n")
        self.proc.stdin.flush()

    def initialize(self) -> dict[str, Any]:
        reply = self.request("initialize", {"protocolVersion": PROTOCOL, "capabilities": {},
                                            "clientInfo": {"name": "test", "version": "1"}})
        self.notify("notifications/initialized")
        return reply

    def call(self, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        return self.request("tools/call", {"name": name, "arguments": arguments})["result"]

    def close(self) -> int:
        self.proc.stdin.close()
        try:
            return self.proc.wait(timeout=15)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.stdout.close()
            self.proc.stderr.close()


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "memory.yaml"
    path.write_text(f"""
sources:
  - name: cache
    backend: memory
    default: true
    description: Fast session cache
  - name: persistent
    backend: sqlite
    description: Long-term facts
    opts: {{path: "{tmp_path / 'm.db'}"}}
""")
    return str(path)


@pytest.fixture
def client(config):
    clients: list[StdioClient] = []

    def start(*args: str) -> StdioClient:
        c = StdioClient("--config", config, *args)
        clients.append(c)
        return c

    yield start
    for c in clients:
        if c.proc.poll() is None:
            c.close()


def body(result: dict[str, Any]) -> dict[str, Any]:
    """The tool's dict, which must be the same as structured content and as JSON text."""
    (content,) = result["content"]
    assert content["type"] == "text"
    assert json.loads(content["text"]) == result["structuredContent"]
    return result["structuredContent"]


def test_initialize_list_and_call_tools(client, config):
    mcp = client()
    init = mcp.initialize()["result"]
    assert init["serverInfo"]["name"] == "memcluster"
    assert "tools" in init["capabilities"]

    tools = mcp.request("tools/list")["result"]["tools"]
    from memcluster import MemoryManager

    with MemoryManager.from_config(config) as local:
        expected = tool_schemas(local, fmt="mcp")
    assert [t["name"] for t in tools] == [t["name"] for t in expected]
    assert [t["inputSchema"] for t in tools] == [t["inputSchema"] for t in expected]
    store_tool = next(t for t in tools if t["name"] == "memory_store")
    assert "namespace" in store_tool["inputSchema"]["properties"]

    stored = mcp.call("memory_store", {"key": "user:1", "value": {"name": "Ada"},
                                       "tags": ["profile"], "memory_source": "persistent",
                                       "namespace": "agent-7"})
    assert stored["isError"] is False and body(stored)["version"] == 1
    got = body(mcp.call("memory_retrieve", {"key": "user:1", "memory_source": "persistent",
                                            "namespace": "agent-7"}))
    assert got["found"] and got["record"]["value"] == {"name": "Ada"}
    assert got["record"]["metadata"] == {"tags": ["profile"]}
    assert body(mcp.call("memory_retrieve", {"key": "user:1",
                                             "memory_source": "persistent"}))["found"] is False
    found = body(mcp.call("memory_search", {"query": "ada", "memory_source": "persistent",
                                            "namespace": "agent-7"}))
    assert [r["key"] for r in found["results"]] == ["user:1"]
    assert mcp.close() == 0


def test_bad_calls_are_error_results_and_the_server_keeps_serving(client):
    mcp = client()
    mcp.initialize()
    missing = mcp.call("memory_store", {"key": "k"})
    assert missing["isError"] is True
    assert body(missing)["error"]["type"] == "InvalidArguments"
    unknown_source = mcp.call("memory_retrieve", {"key": "k", "memory_source": "nope"})
    assert unknown_source["isError"] and body(unknown_source)["error"]["type"] in (
        "InvalidArguments", "UnknownSource")
    no_tool = mcp.call("memory_fly", {})
    assert no_tool["isError"] and body(no_tool)["error"]["type"] == "UnknownTool"
    # still alive and consistent after the failures: nothing was written
    assert body(mcp.call("memory_retrieve", {"key": "k"}))["found"] is False
    assert mcp.close() == 0


def test_a_bound_namespace_scopes_every_call(client):
    bound = client("--namespace", "agent-1")
    bound.initialize()
    tools = bound.request("tools/list")["result"]["tools"]
    assert all("namespace" not in t["inputSchema"]["properties"] for t in tools)
    assert body(bound.call("memory_store", {"key": "k", "value": 1}))["ok"]
    refused = bound.call("memory_retrieve", {"key": "k", "namespace": "agent-2"})
    assert refused["isError"] and "namespace" in body(refused)["error"]["message"]
    got = body(bound.call("memory_retrieve", {"key": "k"}))
    assert got["record"]["namespace"] == "agent-1" and got["record"]["value"] == 1
    assert bound.close() == 0


def test_usage_errors_exit_2_without_a_traceback(tmp_path):
    done = subprocess.run([sys.executable, "-m", "memcluster.cli", "mcp"], capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and "--config" in done.stderr
