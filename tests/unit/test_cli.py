"""The `memcluster` command: data commands, JSONL export/import, exit codes, one-line errors,
delegated cluster commands, and the demo (in-process and as the real console script)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import memcluster as mc
from memcluster import cli


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "memory.yaml"
    path.write_text(f"""
sources:
  - name: db
    backend: sqlite
    description: Long-term
    default: true
    opts: {{path: "{tmp_path / 'm.db'}"}}
  - name: other
    backend: sqlite
    opts: {{path: "{tmp_path / 'o.db'}"}}
""")
    return str(path)


def run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_put_get_search_keys_count_del(capsys, config):
    code, _, _ = run(capsys, "--config", config, "put", "user:1", '{"name": "Ada"}', "--tag", "vip")
    assert code == 0
    assert run(capsys, "put", "user:2", '"Alan"', "--config", config, "--ttl", "60")[0] == 0
    code, out, _ = run(capsys, "--config", config, "get", "user:1")
    assert code == 0 and json.loads(out) == {"name": "Ada"}
    code, out, _ = run(capsys, "--config", config, "get", "user:1", "--json")
    rec = json.loads(out)
    assert rec["metadata"] == {"tags": ["vip"]} and rec["version"] == 1 and rec["ttl"] is None
    code, out, _ = run(capsys, "--config", config, "search", "ada")
    assert code == 0 and "user:1" in out and "user:2" not in out
    code, out, _ = run(capsys, "--config", config, "--json", "search", "--tag", "vip")
    assert [r["key"] for r in json.loads(out)] == ["user:1"]
    code, out, _ = run(capsys, "--config", config, "keys", "--pattern", "user:*")
    assert out.split() == ["user:1", "user:2"]
    assert run(capsys, "--config", config, "count")[1].strip() == "2"
    assert run(capsys, "--config", config, "count", "--source", "other")[1].strip() == "0"
    assert run(capsys, "--config", config, "del", "user:1")[0] == 0
    code, _, err = run(capsys, "--config", config, "del", "user:1")
    assert code == 1 and err == "memcluster: error: key 'user:1' not found\n"


def test_namespaces_and_sources_are_separate(capsys, config):
    run(capsys, "--config", config, "put", "k", "1", "-n", "a")
    run(capsys, "--config", config, "put", "k", "2", "-s", "other")
    assert run(capsys, "--config", config, "get", "k", "-n", "a")[1].strip() == "1"
    assert run(capsys, "--config", config, "get", "k", "-s", "other")[1].strip() == "2"
    assert run(capsys, "--config", config, "get", "k")[0] == 1


@pytest.mark.parametrize(("argv", "code", "message"), [
    (["get", "nope"], 1, "key 'nope' not found"),
    (["put", "k", "{bad json"], 2, "JSON: not valid JSON"),
    (["get", "k", "--source", "nope"], 2, "UnknownSource: unknown source 'nope'"),
    (["search"], 2, "search needs TEXT, --pattern, --tag or --filter"),
    (["put", "", "1"], 1, "InvalidKey: key must not be empty"),
    (["put", "k", "1", "--ttl", "-1"], 1, "InvalidValue: ttl must be a positive number"),
    (["frobnicate"], 2, "invalid choice: 'frobnicate'"),
    (["get"], 2, "the following arguments are required: KEY"),
    (["search", "--filter", '{"a": {"$regex": 1}}'], 1, "UnsupportedQuery"),
])
def test_errors_are_one_line_with_the_right_exit_status(capsys, config, argv, code, message):
    got, _, err = run(capsys, "--config", config, *argv)
    assert got == code
    assert err.count("\n") == 1 and err.startswith("memcluster: error: ") and message in err
    assert "Traceback" not in err


def test_missing_or_conflicting_memory_is_bad_usage(capsys, config, monkeypatch):
    monkeypatch.delenv(cli.ENV_CLUSTER, raising=False)
    code, _, err = run(capsys, "keys")
    assert code == 2 and "give --config FILE or --cluster NAME" in err
    code, _, err = run(capsys, "--config", config, "--cluster", "x", "keys")
    assert code == 2 and "not both" in err
    code, _, err = run(capsys, "--config", "/no/such.yaml", "keys")
    assert code == 2 and "does not exist" in err


def test_cluster_name_from_flag_or_env_uses_connect(capsys, monkeypatch):
    import memcluster.cluster

    opened = []

    def fake_connect(name):
        opened.append(name)
        return mc.MemoryManager([mc.memory_source("cache", "memory")])

    monkeypatch.setattr(memcluster.cluster, "connect", fake_connect, raising=False)
    assert run(capsys, "--cluster", "agents", "put", "k", "1")[0] == 0
    monkeypatch.setenv(cli.ENV_CLUSTER, "from-env")
    assert run(capsys, "count")[0] == 0
    assert opened == ["agents", "from-env"]


def test_unexpected_errors_show_a_traceback_only_with_debug(capsys, config, monkeypatch):
    def broken(args, mem):
        raise RuntimeError("boom")

    monkeypatch.setitem(cli.SURFACE_COMMANDS, "keys", broken)
    code, _, err = run(capsys, "--config", config, "keys")
    assert code == 1 and err == "memcluster: error: unexpected RuntimeError: boom\n"
    code, _, err = run(capsys, "--config", config, "keys", "--debug")
    assert code == 1 and "Traceback" in err


def test_export_import_round_trip_with_bytes_namespaces_and_ttl(capsys, config, tmp_path):
    with mc.MemoryManager.from_config(config) as mem:
        mem.store("a", {"blob": b"\x00\x01", "n": 1}, namespace="x", metadata={"tags": ["t"]})
        mem.store("b", [1, "two"], namespace="y", ttl=3600)
        mem.store("c", {"$bytes": "not a tag"}, namespace="x")
    dump = tmp_path / "dump.jsonl"
    code, _, err = run(capsys, "--config", config, "export", "-o", str(dump))
    assert code == 0 and "exported 3 records" in err
    lines = [json.loads(line) for line in dump.read_text().splitlines()]
    assert {(r["namespace"], r["key"]) for r in lines} == {("x", "a"), ("y", "b"), ("x", "c")}
    assert all(set(r) == {"key", "value", "namespace", "metadata", "ttl"} for r in lines)
    assert 0 < next(r for r in lines if r["key"] == "b")["ttl"] <= 3600
    assert run(capsys, "--config", config, "import", str(dump), "-s", "other")[0] == 0
    with mc.MemoryManager.from_config(config) as mem:
        a = mem.retrieve("a", source="other", namespace="x")
        assert a.value == {"blob": b"\x00\x01", "n": 1} and a.metadata == {"tags": ["t"]}
        assert mem.retrieve("c", source="other", namespace="x").value == {"$bytes": "not a tag"}
        b = mem.retrieve("b", source="other", namespace="y")
        assert b.value == [1, "two"] and b.expires_at is not None


def test_import_with_a_bad_line_imports_nothing(capsys, config, tmp_path):
    dump = tmp_path / "bad.jsonl"
    dump.write_text('{"key": "ok", "value": 1}\n{"key": "", "value": 2}\n')
    code, _, err = run(capsys, "--config", config, "import", str(dump))
    assert code == 1 and "line 2:" in err
    assert run(capsys, "--config", config, "count")[1].strip() == "0"


def test_tools_prints_valid_schemas(capsys, config):
    code, out, _ = run(capsys, "--config", config, "tools", "--format", "anthropic",
                       "--namespace", "agent-1")
    tools = json.loads(out)
    assert code == 0 and {t["name"] for t in tools} >= {"memory_store", "memory_search"}
    assert all("namespace" not in t["input_schema"]["properties"] for t in tools)


def _fake_status(args):
    print(f"status of {args.cluster}")
    return 0


def _broken_down(args):
    raise RuntimeError("first line\nsecond line")


def test_cluster_commands_run_or_fail_with_one_line(capsys, monkeypatch):
    monkeypatch.setitem(cli.COMMANDS, "status", _fake_status)
    assert run(capsys, "--cluster", "agents", "status") == (0, "status of agents\n", "")
    monkeypatch.setitem(cli.COMMANDS, "down", _broken_down)
    code, _, err = run(capsys, "down")
    assert code == 1 and err.count("\n") == 1 and "first line second line" in err


def test_demo_in_process_reports_isolated_agents(capsys):
    code, out, _ = run(capsys, "demo", "--local", "--agents", "3", "--facts", "2", "--json")
    report = json.loads(out)
    assert code == 0 and report["ok"] is True
    assert [a["agent"] for a in report["agents"]] == ["agent-0", "agent-1", "agent-2"]
    for agent in report["agents"]:
        assert agent["stored"] == 3 and agent["found"] == 2 and agent["keys"] == 2
        assert agent["isolated"] and agent["retrieved"] and agent["errors"] == []


def test_demo_as_the_installed_console_script():
    script = Path(sys.executable).parent / "memcluster"
    if not script.exists():
        pytest.skip("the memcluster console script is not installed next to this Python")
    proc = subprocess.run([str(script), "demo", "--local", "--agents", "2"], capture_output=True,
                          text=True, timeout=120, env={"PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    assert "agent-0" in proc.stdout and "agent-1" in proc.stdout
    assert "none of the others'" in proc.stdout
