"""The cluster commands of `memcluster` against a real cluster on the session's Ray: up is
idempotent and reconciles shard counts, status/scale/bench/down, data commands and JSONL
migration between clusters, one-line errors, and a Redis password that never shows."""

from __future__ import annotations

import json
import logging
import os
import urllib.request
from pathlib import Path

import pytest
import redis

from memcluster import cli
from tests.support import RedisServer, free_port

pytestmark = pytest.mark.cluster
PASSWORD = "s3cret-pw-4417"


def run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def write_config(path, name, *, shards=2, metrics_port=None):
    path.write_text(f"""
name: {name}
redis_url: "${{MC_TEST_REDIS_URL}}"
metrics_port: {metrics_port if metrics_port else "null"}
sources:
  - name: cache
    backend: memory
    default: true
    shards: {shards}
    replicas: 2
    write_quorum: 2
  - name: notes
    backend: memory
    shards: 1
    replicas: 1
""")
    return str(path)


@pytest.fixture(scope="module")
def secured(ray_session, tmp_path_factory):
    """A password-protected redis-server, and a cluster started by `memcluster up`."""
    tmp = tmp_path_factory.mktemp("cli-cluster")
    server = RedisServer(tmp / "redis", port=free_port(), password=PASSWORD)
    server.start()
    mp = pytest.MonkeyPatch()
    mp.setenv("MC_TEST_REDIS_URL", server.url)
    mp.delenv(cli.ENV_CLUSTER, raising=False)
    name = f"cli{os.getpid()}"
    port = free_port()
    config = write_config(tmp / "memcluster.yaml", name, metrics_port=port)
    assert cli.main(["up", config, "--json", "--log-level", "DEBUG",
                     "--log-format", "json"]) == 0
    yield {"name": name, "config": config, "server": server, "tmp": tmp, "port": port}
    cli.main(["--cluster", name, "down"])
    logging.getLogger("memcluster").handlers.clear()
    mp.undo()
    server.close()


def test_status_shows_sources_shards_ring_epoch_and_redis(capsys, secured):
    code, out, err = run(capsys, "--cluster", secured["name"], "status", "--json")
    assert code == 0, err
    state = json.loads(out)
    cache = state["sources"]["cache"]
    assert (cache["backend"], cache["shards"], cache["replicas"], cache["write_quorum"]) == \
        ("memory", 2, 2, 2)
    assert cache["ring"]["version"] >= 1 and state["epoch"] >= 1 and state["leading"]
    assert state["redis"]["ok"] is True
    assert set(state["shards"]) == {"cache/0", "cache/1", "notes/0"}
    assert all(s["state"] == "serving" and s["records"] == 0 for s in state["shards"].values())
    code, out, _ = run(capsys, "--cluster", secured["name"], "status")
    assert code == 0 and "cache/1" in out and "SHARD" in out and "serving" in out


def test_up_again_is_idempotent_and_reconciles_shards(capsys, secured, monkeypatch):
    name, config = secured["name"], secured["config"]
    monkeypatch.setenv(cli.ENV_CLUSTER, name)
    assert run(capsys, "put", "k1", '{"v": 1}')[0] == 0
    code, out, err = run(capsys, "up", config, "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["scaled"] == {} and report["status"]["epoch"] == 1   # same manager
    write_config(secured["tmp"] / "three.yaml", name, shards=3,
                 metrics_port=secured["port"])
    code, out, err = run(capsys, "up", str(secured["tmp"] / "three.yaml"), "--json")
    assert code == 0, err
    assert json.loads(out)["scaled"] == {"cache": 3}
    code, out, _ = run(capsys, "status", "--json")
    assert json.loads(out)["sources"]["cache"]["shards"] == 3
    assert json.loads(run(capsys, "get", "k1", "--json")[1])["value"] == {"v": 1}
    code, out, _ = run(capsys, "scale", "cache", "--shards", "2", "--json")
    assert code == 0 and json.loads(out)["shards"] == 2
    assert run(capsys, "del", "k1")[0] == 0


def test_bench_prints_a_table(capsys, secured):
    code, out, err = run(capsys, "--cluster", secured["name"], "bench", "--seconds", "0.8")
    assert code == 0, err
    assert "OPERATION" in out and "retrieve_many x100" in out
    code, out, _ = run(capsys, "--cluster", secured["name"], "count", "-n", "bench")
    assert out.strip() == "0"   # bench cleans up after itself


@pytest.mark.parametrize(("argv", "code", "message"), [
    (["scale", "nope", "--shards", "2"], 2, "UnknownSource"),
    (["scale", "cache", "--shards", "1"], 2, "needs at least 2 shards"),
    (["get", "missing"], 1, "key 'missing' not found"),
    (["put", "k", "{oops"], 2, "not valid JSON"),
    (["put", "k", "1", "--source", "nope"], 2, "unknown source"),
])
def test_cluster_errors_are_one_line(capsys, secured, argv, code, message):
    got, _, err = run(capsys, "--cluster", secured["name"], *argv)
    assert got == code, err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err


def test_no_such_cluster_is_one_line(capsys, secured):
    code, _, err = run(capsys, "--cluster", "no-such-cluster", "status")
    assert code == 1 and "no memcluster cluster named 'no-such-cluster'" in err
    assert err.count("\n") == 1


def test_export_import_migrates_between_cluster_and_local(capsys, secured, tmp_path):
    name = secured["name"]
    for i in range(30):
        assert run(capsys, "--cluster", name, "put", f"m:{i}", json.dumps({"i": i}),
                   "-n", f"mig/{i % 3}", "--tag", "t", "--ttl", "3600")[0] == 0
    dump = tmp_path / "dump.jsonl"
    code, _, err = run(capsys, "--cluster", name, "export", "-o", str(dump))
    assert code == 0 and "exported 30 records" in err
    local = tmp_path / "local.yaml"
    local.write_text(f"sources:\n  - {{name: db, backend: sqlite, "
                     f"opts: {{path: '{tmp_path / 'l.db'}'}}}}\n")
    assert run(capsys, "--config", str(local), "import", str(dump))[0] == 0
    back = tmp_path / "back.jsonl"
    assert run(capsys, "--config", str(local), "export", "-o", str(back))[0] == 0
    assert run(capsys, "--cluster", name, "import", str(back), "-s", "notes")[0] == 0

    def rows(path):
        out = {}
        for line in path.read_text().splitlines():
            r = json.loads(line)
            assert 3500 < r.pop("ttl") <= 3600
            out[(r["namespace"], r["key"])] = r
        return out

    assert rows(dump) == rows(back) and len(rows(dump)) == 30
    code, out, _ = run(capsys, "--cluster", name, "get", "m:4", "-n", "mig/1", "-s", "notes",
                       "--json")
    rec = json.loads(out)
    assert rec["value"] == {"i": 4} and rec["metadata"] == {"tags": ["t"]} and rec["ttl"] > 3500


def test_redis_password_never_shows(capsys, secured, caplog):
    name, server = secured["name"], secured["server"]
    # 1. Redis holds the spec with the ${VAR} reference, not the password.
    client = redis.Redis.from_url(server.url)
    stored = b" ".join(client.get(k) or b"" for k in client.keys(f"memcluster:{name}:*")
                       if client.type(k) == b"string")
    assert b"${MC_TEST_REDIS_URL}" in stored and PASSWORD.encode() not in stored
    # 2. Status (human and JSON).
    for argv in (["status"], ["status", "--json"]):
        code, out, err = run(capsys, "--cluster", name, *argv)
        assert code == 0 and PASSWORD not in out + err and "***" in out
    # 3. Metrics.
    body = urllib.request.urlopen(f"http://127.0.0.1:{secured['port']}/metrics",
                                  timeout=10).read().decode()
    assert "memcluster_ring_version" in body and PASSWORD not in body
    # 4. Errors: a wrong password, and a Redis that is down.
    bad = server.url.replace(PASSWORD, PASSWORD + "-wrong")
    os.environ["MC_TEST_REDIS_URL"] = bad
    try:
        with caplog.at_level(logging.DEBUG, logger="memcluster"):
            code, out, err = run(capsys, "up", secured["config"], "--name", "other-" + name,
                                 "--log-level", "DEBUG", "--log-format", "json")
    finally:
        os.environ["MC_TEST_REDIS_URL"] = server.url
    assert code == 1 and err.strip().splitlines()[-1].startswith("memcluster: error: ")
    assert PASSWORD not in out + err + caplog.text
    # 5. Logs: nothing the manager, the shards or Ray wrote in this session holds it.
    import ray

    logs_dir = ray._private.worker._global_node.get_logs_dir_path()
    for path in Path(logs_dir).rglob("*"):
        if path.is_file():
            assert PASSWORD.encode() not in path.read_bytes(), path
