"""The REST API over real HTTP (uvicorn on a free port, httpx as the client): every
operation, bearer tokens bound to namespaces, typed errors as statuses, the OpenAPI
schema, the tools endpoint, NDJSON export, and `memcluster serve` as a process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import pytest

pytest.importorskip("fastapi", reason="the rest extra is not installed")
httpx = pytest.importorskip("httpx")

import memcluster as mc  # noqa: E402
from memcluster.backends.memory import MemoryStoreBackend  # noqa: E402
from memcluster.errors import ConfigError, SourceUnavailable  # noqa: E402
from memcluster.integrations.auth import TokenTable  # noqa: E402
from memcluster.rest.server import build, start  # noqa: E402
from tests.support import free_port, wait_until  # noqa: E402

TOKEN_A = "token-a-0123456789abcdef"
TOKEN_B = "token-b-0123456789abcdef"
TOKENS = TokenTable.parse(f"{TOKEN_A} agent-a\n{TOKEN_B} agent-b")


class FlakyBackend(MemoryStoreBackend):
    """A memory backend whose store is "down" for the key "down"."""

    name = "flaky"

    def retrieve(self, op):
        if op.key == "down":
            raise SourceUnavailable("the store is restarting")
        return super().retrieve(op)


def sources():
    return [mc.memory_source("cache", "memory", default=True),
            mc.memory_source("vec", "vector", opts={"embedder": "hashing", "dimension": 128},
                             consolidation={"policy": "threshold", "update_above": 0.8,
                                            "skip_above": 0.99}),
            mc.memory_source("tiny", "memory", opts={"max_items": 1}),
            mc.memory_source("flaky", FlakyBackend)]


@pytest.fixture(scope="module")
def server():
    mem = mc.MemoryManager(sources())
    running = start(mem, "127.0.0.1", free_port(), tokens=TOKENS)
    yield running
    running.stop()
    mem.close()


@pytest.fixture
def a(server):
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {TOKEN_A}"},
                      timeout=30) as client:
        yield client
        client.post("/v1/clear", json={"confirm": True})


@pytest.fixture
def b(server):
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {TOKEN_B}"},
                      timeout=30) as client:
        yield client


def error(response) -> tuple[int, str]:
    return response.status_code, response.json()["error"]["type"]


def test_single_record_operations(a):
    put = a.put("/v1/records/user:1", json={"value": {"name": "Ada", "raw": {"$bytes": "AAE="}},
                                             "metadata": {"tags": ["profile"]}, "ttl": 600})
    assert put.status_code == 200
    record = put.json()
    assert (record["key"], record["namespace"], record["version"]) == ("user:1", "agent-a", 1)
    assert record["value"]["raw"] == {"$bytes": "AAE="}      # bytes survive, tagged
    assert a.get("/v1/records/user:1").json()["value"]["name"] == "Ada"
    assert a.head("/v1/records/user:1").status_code == 200
    assert a.head("/v1/records/nobody").status_code == 404
    patched = a.patch("/v1/records/user:1", json={"patch": {"name": None, "age": 36}}).json()
    assert patched["value"] == {"raw": {"$bytes": "AAE="}, "age": 36}
    assert patched["version"] == 2 and patched["expires_at"] == record["expires_at"]
    odd = "notes/2024 ü?#"
    assert a.put(f"/v1/records/{quote(odd, safe='/')}", json={"value": 1}).json()["key"] == odd
    assert a.get(f"/v1/records/{quote(odd, safe='')}").json()["key"] == odd
    assert a.delete("/v1/records/user:1").json() == {"deleted": 1}
    assert a.delete("/v1/records/user:1").json() == {"deleted": 0}
    assert error(a.get("/v1/records/user:1")) == (404, "NotFound")


def test_queries_batches_and_paging(a):
    items = [{"key": f"k{i:02d}", "value": {"n": i}, "metadata": {"n": i}} for i in range(25)]
    assert len(a.post("/v1/records:batch-store", json={"items": items}).json()["records"]) == 25
    found = a.post("/v1/search", json={"filter": {"n": {"$gte": 20}}, "order_by": "-key",
                                       "limit": 3}).json()["results"]
    assert [r["key"] for r in found] == ["k24", "k23", "k22"]
    assert a.post("/v1/count", json={"pattern": "k1*"}).json() == {"count": 10}
    keys, cursor = [], None
    while True:
        page = a.get("/v1/keys", params={"limit": 10, **({"cursor": cursor} if cursor else {})})
        keys += page.json()["keys"]
        cursor = page.json()["cursor"]
        if cursor is None:
            break
    assert keys == [f"k{i:02d}" for i in range(25)]
    got = a.post("/v1/records:batch-get", json={"keys": ["k01", "zz"]}).json()["records"]
    assert list(got) == ["k01"]
    assert a.post("/v1/records:batch-delete", json={"keys": ["k01", "k02", "zz"]}).json() \
        == {"deleted": 2}
    assert error(a.post("/v1/clear", json={})) == (400, "ConfirmationRequired")
    assert a.post("/v1/clear", json={"confirm": True}).json() == {"deleted": 23}


def test_each_token_sees_only_its_namespace(a, b, server):
    a.put("/v1/records/secret", json={"value": "a's"})
    assert error(b.get("/v1/records/secret")) == (404, "NotFound")
    assert b.post("/v1/count", json={}).json() == {"count": 0}
    assert error(b.get("/v1/records/secret", params={"namespace": "agent-a"})) \
        == (403, "Forbidden")
    assert a.get("/v1/records/secret", params={"namespace": "agent-a"}).status_code == 200
    anonymous = httpx.get(f"{server.url}/v1/records/secret")
    assert error(anonymous) == (401, "Unauthorized")
    assert anonymous.headers["www-authenticate"].startswith("Bearer")
    forged = httpx.get(f"{server.url}/v1/records/secret",
                       headers={"Authorization": "Bearer token-c-0123456789abcdef"})
    assert error(forged) == (401, "Unauthorized")
    assert httpx.get(f"{server.url}/v1/health").json() == {"ok": True}


def test_typed_errors_map_to_statuses(a):
    a.put("/v1/records/k", json={"value": 1})
    conflict = a.put("/v1/records/k", json={"value": 2, "if_version": 5})
    assert error(conflict) == (409, "VersionConflict")
    assert (conflict.json()["error"]["expected"], conflict.json()["error"]["actual"]) == (5, 1)
    assert error(a.put("/v1/records/" + "x" * 600, json={"value": 1})) == (400, "InvalidKey")
    assert error(a.put("/v1/records/k", json={"value": 1, "ttl": "5"})) == (400, "InvalidValue")
    assert error(a.put("/v1/records/k", json={"valu": 1})) == (400, "InvalidValue")
    assert error(a.put("/v1/records/k", json={"value": {"$bytes": "%%"}})) \
        == (400, "InvalidValue")
    assert error(a.get("/v1/records/k", params={"source": "nope"})) == (404, "UnknownSource")
    assert error(a.post("/v1/search", json={"text": "x", "mode": "hybrid"})) \
        == (400, "UnsupportedQuery")
    assert error(a.post("/v1/search", json={"filter": {"n": {"$regex": "x"}}})) \
        == (400, "UnsupportedQuery")
    a.put("/v1/records/one", params={"source": "tiny"}, json={"value": 1})
    assert error(a.put("/v1/records/two", params={"source": "tiny"}, json={"value": 1})) \
        == (507, "CapacityExceeded")
    a.delete("/v1/records/one", params={"source": "tiny"})
    down = a.get("/v1/records/down", params={"source": "flaky"})
    assert error(down) == (503, "SourceUnavailable")
    assert down.json()["error"]["retryable"] is True and down.headers["retry-after"] == "1"


def test_hybrid_search_and_consolidation_over_http(a):
    for key, text in (("inv1", "Invoice INV-20931 from Acme was paid"),
                      ("inv2", "Invoice INV-20913 from Acme is overdue"),
                      ("tea", "Ada drinks green tea every morning")):
        a.put(f"/v1/records/{key}", params={"source": "vec"},
              json={"value": {"text": text}, "consolidate": False})
    hits = a.post("/v1/search", params={"source": "vec"},
                  json={"text": "INV-20931", "mode": "hybrid", "limit": 2}).json()["results"]
    assert hits[0]["key"] == "inv1" and hits[0]["score"] > hits[1]["score"]
    ranked = a.post("/v1/search", params={"source": "vec"}, json={
        "text": "invoice", "mode": "keyword",
        "ranking": {"recency": 1.0, "half_life": 60}}).json()["results"]
    assert {r["key"] for r in ranked} == {"inv1", "inv2"}
    done = a.post("/v1/remember", params={"source": "vec"},
                  json={"key": "tea2", "value": {"text": "Ada drinks green tea every morning"}})
    assert (done.json()["action"], done.json()["record"]["key"]) == ("skip", "tea")
    assert a.post("/v1/count", params={"source": "vec"}, json={}).json() == {"count": 3}
    a.post("/v1/clear", params={"source": "vec"}, json={"confirm": True})


def test_the_tools_endpoint_is_bound_to_the_token(a, b):
    tools = a.get("/v1/tools", params={"fmt": "openai"}).json()
    store = next(t for t in tools if t["function"]["name"] == "memory_store")
    assert "namespace" not in store["function"]["parameters"]["properties"]
    result = a.post("/v1/tools/memory_store", json={"key": "todo", "value": "milk"}).json()
    assert result["ok"] is True
    assert a.get("/v1/records/todo").json()["value"] == "milk"
    assert b.post("/v1/tools/memory_retrieve", json={"key": "todo"}).json()["found"] is False
    bad = a.post("/v1/tools/memory_store", json={"key": ""})
    assert bad.status_code == 200 and bad.json()["ok"] is False


def test_openapi_describes_every_route_and_the_bearer_scheme(server):
    schema = httpx.get(f"{server.url}/openapi.json").json()
    paths = set(schema["paths"])
    assert {"/v1/records/{key}", "/v1/search", "/v1/count", "/v1/keys", "/v1/export",
            "/v1/records:batch-store", "/v1/remember", "/v1/tools/{name}"} <= paths
    assert set(schema["paths"]["/v1/records/{key}"]) == {"put", "get", "head", "patch",
                                                          "delete"}
    schemes = schema["components"]["securitySchemes"]
    assert any(s.get("scheme") == "bearer" for s in schemes.values())
    search = schema["components"]["schemas"]["SearchBody"]["properties"]
    assert {"mode", "ranking", "min_score"} <= set(search)
    assert httpx.get(f"{server.url}/docs").status_code == 200


def test_export_streams_ndjson_that_import_reads_back(a, tmp_path):
    items = [{"key": f"r{i:04d}", "value": {"i": i, "pad": "x" * 50}} for i in range(1200)]
    for start_at in range(0, 1200, 600):
        a.post("/v1/records:batch-store", json={"items": items[start_at:start_at + 600]})
    dump = tmp_path / "dump.jsonl"
    with a.stream("GET", "/v1/export") as response:
        assert response.headers["content-type"].startswith("application/x-ndjson")
        with dump.open("w", encoding="utf-8") as out:
            for line in response.iter_lines():
                out.write(line + "\n")
    lines = dump.read_text().splitlines()
    assert len(lines) == 1200                   # more than one page of the export
    assert set(json.loads(lines[0])) == {"key", "value", "namespace", "metadata", "ttl"}
    from memcluster.cli import main

    config = tmp_path / "copy.yaml"
    config.write_text(f"sources: [{{name: c, backend: sqlite, opts: {{path: {tmp_path}/c.db}}}}]\n")
    assert main(["--config", str(config), "import", str(dump)]) == 0
    with mc.MemoryManager.from_config(config) as copy:
        assert copy.count(namespace="agent-a") == 1200
        assert copy.retrieve("r0042", namespace="agent-a").value == items[42]["value"]


def test_without_tokens_only_loopback_and_the_request_namespace():
    with mc.MemoryManager([mc.memory_source("m", "memory")]) as mem:
        with pytest.raises(ConfigError, match="loopback"):
            build(mem, "0.0.0.0", tokens=None, namespace=None)
        with start(mem, "127.0.0.1", free_port()) as running:
            httpx.put(f"{running.url}/v1/records/k", params={"namespace": "team"},
                      json={"value": 1})
        assert mem.retrieve("k", namespace="team").value == 1


def test_memcluster_serve_runs_as_a_process(tmp_path):
    config = tmp_path / "memory.yaml"
    config.write_text("sources: [{name: cache, backend: memory}]\n")
    tokens = tmp_path / "tokens.txt"
    tokens.write_text(f"# one token per agent\n{TOKEN_A} agent-a\n")
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen([sys.executable, "-m", "memcluster.cli", "--config", str(config),
                             "serve", "--http", f"127.0.0.1:{port}", "--token-file",
                             str(tokens)], env=env, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: httpx.get(f"{url}/v1/health").status_code == 200, timeout=30,
                   message="memcluster serve to answer")
        headers = {"Authorization": f"Bearer {TOKEN_A}"}
        assert httpx.put(f"{url}/v1/records/k", headers=headers,
                         json={"value": 7}).json()["namespace"] == "agent-a"
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0, proc.stderr.read()



def test_memcluster_serve_refuses_a_public_address_without_tokens(tmp_path, monkeypatch,
                                                                   capsys):
    from memcluster.cli import main

    config = tmp_path / "memory.yaml"
    config.write_text("sources: [{name: cache, backend: memory}]\n")
    monkeypatch.delenv("MEMCLUSTER_TOKENS", raising=False)
    assert main(["--config", str(config), "serve", "--http", "0.0.0.0:1"]) == 2
    assert "loopback" in capsys.readouterr().err
