"""Hostile input at the surfaces above the stores (issue 15): the LLM tools, the command line,
the wire format and the status. Random tool calls always get `{"ok": ...}` and never leave
their bound namespace; random command lines always exit 0, 1 or 2 with at most one error
line. Seeded from MEMCLUSTER_TEST_SEED (printed in the pytest header) for replay.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

import memcluster as mc
from memcluster import cli, codec
from memcluster.cluster.data import wire
from memcluster.errors import InvalidValue
from memcluster.metrics import OpStats
from memcluster.ops import StoreOp, new_store_op

SEED = int(os.environ.get("MEMCLUSTER_TEST_SEED", "0"))
WHERE = f"(MEMCLUSTER_TEST_SEED={SEED})"
TOOL_NAMES = ["memory_list_sources", "memory_store", "memory_retrieve", "memory_search",
              "memory_delete", "memory_list_keys", "memory_count", "memory_clear"]


# ---- the tools --------------------------------------------------------------------------------

json_text = st.text(st.sampled_from(["a", "k", "é", "\x00", "\ud800", "*", "$", ".", " "]),
                    max_size=4)
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 5),
                         st.sampled_from([1 << 64, -(1 << 70), 10 ** 30, 2.0, 1e308]),
                         st.floats(allow_nan=True, allow_infinity=True), json_text)
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3),
    st.dictionaries(st.one_of(json_text, st.sampled_from(["$bytes", "$float", "$dict", "$gt",
                                                          "$in", "ttl", "tags"])),
                    inner, max_size=3)), max_leaves=8)
def _arg(good: list[Any], odd: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly (4 in 6) an argument a model would send, else an odd one or any JSON."""
    return st.integers(0, 5).flatmap(
        lambda i: st.sampled_from(good) if i < 4 else odd if i == 4 else json_values)


ARGUMENTS: dict[str, st.SearchStrategy[Any]] = {
    "key": _arg(["k", "k2", "mine", "secret"], st.sampled_from(["x" * 600, "", "\ud800"])),
    "value": _arg(["v", 1, {"n": 1}, [1, "a"]], st.sampled_from(
        ["\ud800", {"t": "x\udfff"}, ["a\ud800"], {"k\ud800": 1}, 1 << 64,
         {"$bytes": "!!"}, {"$float": "x"}, {"$dict": 5}])),
    "ttl": _arg([60, 3.5, 2.0], st.sampled_from([1e17, 0, -1, 1e300, 3155760001])),
    "tags": _arg([["a"], ["a", "b"], []], st.lists(json_text, max_size=2)),
    "metadata": _arg([{"n": 1}, {"note": "x"}, {"tags": ["a"]}], st.sampled_from(
        [{"ttl": 5}, {"tags": "a"}, {"namespace": "other"}, {"$bytes": "AA=="},
         {"n": {"$float": "nan"}}, {"k": "\ud800"}])),
    "if_version": _arg([0, 1, 2], st.sampled_from([2.0, 1 << 63, 1 << 64, -1])),
    "query": _arg(["k", "mine", "secret", ""], json_text),
    "pattern": _arg(["*", "k*", "s*"], st.sampled_from(["[", "k\x00", "\ud800"])),
    "filter": _arg([{"n": {"$gte": 1}}, {"tags": {"$contains": "a"}}],
                   st.sampled_from([{"$or": []}, {"a": {"$x": 1}}, {"n": {"$in": 1}}])),
    "limit": _arg([1, 2, 10], st.sampled_from([2.0, 0, 100, 1000, 1 << 63])),
    "cursor": _arg(["k", None], st.sampled_from(["secret", "k\x00"])),
    "confirm": _arg([True], st.just(False)),
    "namespace": st.sampled_from(["other", "", "agent", "../other"]),
    "memory_source": _arg(["cache", "notes"], st.sampled_from(["nope", 5])),
    "extra": json_values,
}


@st.composite
def tool_call(draw: st.DrawFn) -> tuple[Any, Any]:
    """A tool name and arguments: mostly the tool's own (schema) arguments, sometimes an
    unknown one, the namespace it may not choose, a non-object, or JSON text."""
    from memcluster.manager.tools import TOOLS

    name = draw(st.sampled_from(["memory_fly", "", None, 5]) if draw(st.integers(0, 9)) == 0
                else st.sampled_from(TOOL_NAMES))
    tool = next((t for t in TOOLS if t.name == name), None)
    own = list(tool.properties) if tool else list(ARGUMENTS)
    own += ["memory_source"] if tool is not None and tool.sourced else []
    chosen = set(draw(st.lists(st.sampled_from(own), unique=True, max_size=4))) if own \
        else set()
    if tool is not None and draw(st.integers(0, 3)):
        chosen |= set(tool.required)
    if draw(st.integers(0, 9)) == 0:
        chosen.add(draw(st.sampled_from(["namespace", "extra"])))
    args = {k: draw(ARGUMENTS[k]) for k in sorted(chosen)}
    form = draw(st.integers(0, 9))
    if form == 0:
        return name, draw(st.one_of(json_values, st.sampled_from(
            ["{not json", "", "[1]", "null", '{"key": "\\ud800", "value": 1}',
             '{"key": "k", "value": NaN}'])))
    return name, (json.dumps(args) if form == 1 else args)


@pytest.fixture(scope="module")
def tool_memory(tmp_path_factory):
    path = tmp_path_factory.mktemp("tools") / "notes.db"
    with mc.MemoryManager([
        mc.memory_source("cache", "memory", default=True, opts={"cleanup_interval": 0}),
        mc.memory_source("notes", "sqlite", opts={"path": str(path)}),
    ]) as mem:
        yield mem


def _namespace(mem: mc.MemoryManager, ns: str) -> list[tuple[str, str, Any, int]]:
    return sorted((src, r.key, json.dumps(codec.to_json_safe(r.value)), r.version)
                  for src in mem.sources for r in mem.export(source=src, namespace=ns))


@seed(SEED)
@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(calls=st.lists(tool_call(), min_size=1, max_size=6))
def test_random_tool_calls_answer_ok_or_an_error_and_stay_in_their_namespace(tool_memory,
                                                                            calls):
    mem = tool_memory
    for src in mem.sources:
        mem.clear(source=src, all_namespaces=True, confirm=True)
        mem.store("secret", {"owner": "other"}, source=src, namespace="other",
                  metadata={"tags": ["a"], "n": 1})
        mem.store("k", "mine", source=src, namespace="agent", metadata={"tags": ["a"]})
    before = _namespace(mem, "other")
    for name, arguments in calls:
        out = mem.call_tool(name, arguments, namespace="agent")
        json.dumps(out, allow_nan=False)  # JSON-safe, NaN and bytes tagged
        assert out.get("ok") in (True, False), (name, arguments, out, WHERE)
        if out["ok"] is False:
            error = out["error"]
            assert isinstance(error["type"], str) and isinstance(error["message"], str)
            assert error["type"] != "InternalError", (name, arguments, out, WHERE)
        for rec in [out.get("record"), *list(out.get("results") or [])]:
            assert rec is None or rec["namespace"] == "agent", (name, arguments, out, WHERE)
        assert "secret" not in (out.get("keys") or []), (name, arguments, out, WHERE)
    assert _namespace(mem, "other") == before, WHERE


def test_9_reserved_metadata_names_are_refused_not_stored_inert():
    """Item 9: `metadata: {"ttl": 60}` was stored as a field and no TTL applied."""
    with mc.MemoryManager([mc.memory_source("m", "memory")]) as mem:
        for name in ("ttl", "expires_at", "version", "if_version", "namespace",
                     "memory_source"):
            out = mem.call_tool("memory_store", {"key": "k", "value": 1,
                                                 "metadata": {name: 60}})
            assert out["ok"] is False and out["error"]["type"] == "InvalidArguments", out
            assert f"metadata.{name}" in out["error"]["message"]
        assert mem.retrieve("k") is None
        both = mem.call_tool("memory_store", {"key": "k", "value": 1, "tags": ["a"],
                                              "metadata": {"tags": ["b"]}})
        assert both["ok"] is False and "give once" in both["error"]["message"]
        shaped = mem.call_tool("memory_store", {"key": "k", "value": 1,
                                                "metadata": {"tags": "b"}})
        assert shaped["ok"] is False and shaped["error"]["type"] == "InvalidArguments"
        assert mem.call_tool("memory_store", {"key": "k", "value": 1, "ttl": 60,
                                              "metadata": {"tags": ["b"], "note": "x"}})["ok"]
        assert mem.retrieve("k").expires_at is not None
        found = mem.call_tool("memory_search", {"tags": ["b"], "limit": 2.0})
        assert found["ok"] and [r["key"] for r in found["results"]] == ["k"]


# ---- the command line -------------------------------------------------------------------------

CLI_WORDS = ["put", "get", "search", "keys", "del", "count", "tools", "export", "import",
             "/no/such/file.jsonl",
             "down", "status", "scale", "frobnicate", "k", "user:1", "", "\udcff", "x\x00",
             "1", "-3", "0", "2147483648", "1e999", "nan", "-", "[1]", "{}", '{"a": 1}',
             '{"a": {"$gt": {}}}', '{"$or": []}', "{bad", '"s"', "null", "--json", "--limit",
             "--pattern", "--filter", "--tag", "--ttl", "--metadata", "--if-version",
             "--source", "-n", "--namespace", "--format", "--order-by", "--log-format",
             "--log-level", "bogus-level", "a\nb", "--shards", "-o", "--help", "--force",
             "--name", "*", "[", "openai", "anthropic"]  # not mcp: it serves stdin


@pytest.fixture
def cli_env(tmp_path, monkeypatch):
    config = tmp_path / "memory.yaml"
    config.write_text("sources:\n  - name: cache\n    backend: memory\n    default: true\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text("sources: [1, 2\n")
    monkeypatch.setenv("MEMCLUSTER_STATE_DIR", str(tmp_path / "state"))
    for var in (cli.ENV_CLUSTER, "RAY_ADDRESS", "MEMCLUSTER_LOG_LEVEL"):
        monkeypatch.delenv(var, raising=False)
    return {"config": str(config), "bad": str(bad), "out": str(tmp_path / "dump.jsonl"),
            "dir": str(tmp_path)}


CLI_PHRASES = [["search", "x"], ["keys"], ["count"], ["put", "k", "1"], ["get", "k"],
               ["del", "k"], ["export", "-o", "out"], ["import", "/no/such/file.jsonl"],
               ["--filter", "[1]"], ["--filter", '{"n": {"$gt": {}}}'], ["--limit", "-3"],
               ["--limit", "0"], ["--ttl", "1e17"], ["--if-version", "18446744073709551616"],
               ["--metadata", "[1]"], ["--tag", "\udcff"], ["-n", "a\udcffb"],
               ["--pattern", "a\x00*"], ["put", "\udcff", "1"], ["put", "k", '"\\ud800"']]


@st.composite
def argvs(draw: st.DrawFn, env: dict[str, str]) -> list[str]:
    words: list[str] = []
    for _ in range(draw(st.integers(0, 4))):
        words += draw(st.sampled_from(CLI_PHRASES)) if draw(st.booleans()) else [
            draw(st.sampled_from(CLI_WORDS))]
    config = draw(st.sampled_from([env["config"], env["config"], env["bad"], env["dir"],
                                   "/no/such.yaml", None]))
    head = ["--config", config] if config else []
    if draw(st.integers(0, 9)) == 0:
        head = ["--cluster", "no-such-cluster"]
    argv = head + words
    for i in range(len(argv) - 1):  # export writes only where the test says
        if argv[i] == "-o":
            argv[i + 1] = env["out"]
    return argv


@settings(max_examples=80, deadline=None, suppress_health_check=[
    HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@seed(SEED)
@given(data=st.data())
def test_random_command_lines_exit_0_1_or_2_with_at_most_one_error_line(capsys, cli_env,
                                                                        data):
    argv = data.draw(argvs(cli_env))
    code = cli.main(argv)
    _out, err = capsys.readouterr()
    assert code in (0, 1, 2), (argv, code, err, WHERE)
    assert err.count("\n") <= 1 and "Traceback" not in err, (argv, err, WHERE)
    assert "unexpected" not in err, (argv, err, WHERE)  # an unexpected error is a bug
    if code == 0:
        assert "error" not in err, (argv, err, WHERE)


def test_6_a_filter_that_is_not_an_object_and_a_negative_limit_are_usage_errors(capsys,
                                                                                cli_env):
    """Item 6: `--filter '[1]'` printed "unexpected TypeError" and exited 1; `--limit -3`
    printed "no keys" and exited 0."""
    config = ["--config", cli_env["config"]]
    for argv in (["search", "x", "--filter", "[1]"], ["count", "--filter", '"s"'],
                 ["keys", "--limit", "-3"], ["search", "x", "--limit", "0"],
                 ["scale", "cache", "--shards", "0"]):
        code = cli.main(config + argv)
        _, err = capsys.readouterr()
        assert code == 2, (argv, err)
        assert err.count("\n") == 1 and "unexpected" not in err, (argv, err)


def test_7_an_unreachable_postgres_is_one_error_line_with_the_password_masked(capsys,
                                                                             tmp_path):
    """Item 7: psycopg_pool printed its own warning lines (with the server's address) next
    to memcluster's error; the CLI shows only the one line (the pool's with --debug)."""
    pytest.importorskip("psycopg_pool")
    config = tmp_path / "pg.yaml"
    config.write_text('sources:\n  - name: p\n    backend: postgres\n    opts: {dsn: '
                      '"postgresql://app:pa#ss@w0rd@127.0.0.1:1/x", pool_timeout: 0.5}\n')
    code = cli.main(["--config", str(config), "get", "k"])
    _out, err = capsys.readouterr()
    assert code == 1 and err.count("\n") == 1, err
    assert "SourceUnavailable" in err and "w0rd" not in err and "pa#ss" not in err


# ---- the wire format and the status -------------------------------------------------------------

def test_5_an_if_version_beyond_64_bits_is_refused_before_the_wire():
    """Item 5: `if_version` >= 2**64 overflowed the cluster's wire encoder (a raw error)."""
    with pytest.raises(InvalidValue, match="if_version"):
        StoreOp.make("k", 1, if_version=1 << 64)
    blob = StoreOp.make("k", 1).blob
    for version in (1 << 64, 1 << 70):
        op = new_store_op("k", blob, "", {}, None, version, True, None)  # past the edge
        with pytest.raises(InvalidValue, match="wire"):
            wire.encode_ops([op])
    edge = new_store_op("k", blob, "", {}, None, (1 << 63) - 1, True, None)
    assert wire.decode_ops(wire.encode_ops([edge]))[0].if_version == (1 << 63) - 1


def test_8_op_stats_snapshots_are_json_safe_and_still_merge_and_render():
    """Item 8: `cluster.status()` held dicts keyed by (op, outcome) tuples, so
    `json.dumps(status)` failed for API users."""
    from memcluster.cli.cluster import _json_status
    from memcluster.metrics import op_families

    a, b = OpStats(), OpStats()
    a.observe("store", "ok", 0.001, 3)
    a.observe("replicate", "ShardUnavailable", 0.002)
    b.observe("store", "ok", 0.004)
    snap = json.loads(json.dumps(a.snapshot()))
    assert snap["counts"] == {"store": {"ok": 3}, "replicate": {"ShardUnavailable": 1}}
    merged = OpStats.merge([snap, b.snapshot()])
    assert merged["counts"]["store"] == {"ok": 4}
    assert OpStats.total(merged) == 5 and OpStats.total(merged, "replicate", failed=True) == 1
    (ops, _latency) = op_families("memcluster", {"cache": merged})
    assert {(s.labels["op"], s.labels["outcome"]): s.value for s in ops.samples} == {
        ("replicate", "ShardUnavailable"): 1, ("store", "ok"): 4}
    status = {"shards": {"cache/0": {"ops": a.snapshot(), "records": 1}}}
    json.dumps(status)
    assert _json_status(status)["shards"]["cache/0"]["operations"] == 4
    assert math.isclose(merged["hist"]["store"][-2], 0.005)
