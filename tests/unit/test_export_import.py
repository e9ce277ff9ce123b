"""JSONL export/import: a randomised round trip loses and changes nothing (values of every
msgpack type, namespaces, metadata, TTL left), and progress goes to a terminal only."""

from __future__ import annotations

import json
import os
import random

import pytest

import memcluster as mc
from memcluster import cli


def random_value(rng: random.Random, depth: int = 0):
    kinds = ["none", "bool", "int", "float", "str", "bytes"] + (["list", "dict"] if depth < 3
                                                                 else [])
    kind = rng.choice(kinds)
    if kind == "none":
        return None
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "int":
        return rng.randint(-(2 ** 63), 2 ** 63 - 1)
    if kind == "float":
        return rng.uniform(-1e9, 1e9)
    if kind == "str":
        return "".join(rng.choice("aé€😀 \"\\\n$") for _ in range(rng.randint(0, 12)))
    if kind == "bytes":
        return rng.randbytes(rng.randint(0, 16))
    if kind == "list":
        return [random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {rng.choice(["a", "$bytes", "k", "é", "x.y"]) + str(i): random_value(rng, depth + 1)
            for i in range(rng.randint(0, 4))}


def config_file(tmp_path, name):
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"sources:\n  - {{name: db, backend: sqlite, default: true, "
                    f"opts: {{path: '{tmp_path / (name + '.db')}'}}}}\n")
    return str(path)


def test_round_trip_loses_and_changes_nothing(tmp_path, capsys):
    seed = int(os.environ.get("MEMCLUSTER_TEST_SEED", "0"))
    print(f"seed {seed}")
    rng = random.Random(seed)
    src, dst = config_file(tmp_path, "src"), config_file(tmp_path, "dst")
    with mc.MemoryManager.from_config(src) as mem:
        for i in range(300):
            ns = rng.choice(["", "a", "a/b", "ü-tenant"])
            meta = {"tags": [rng.choice(["x", "y"])], "n": rng.randint(0, 9)} \
                if rng.random() < 0.5 else {}
            ttl = rng.choice([None, None, 3600.0])
            suffix = rng.choice(["\u03b1", "b", " "])
            mem.store(f"key:{i}:{suffix}", random_value(rng),
                      namespace=ns, metadata=meta, ttl=ttl)
        before = {(r.namespace, r.key): r for r in mem.export()}
    dump = tmp_path / "dump.jsonl"
    assert cli.main(["--config", src, "export", "-o", str(dump)]) == 0
    assert cli.main(["--config", dst, "import", str(dump)]) == 0
    capsys.readouterr()
    with mc.MemoryManager.from_config(dst) as mem:
        after = {(r.namespace, r.key): r for r in mem.export()}
    assert after.keys() == before.keys() and len(after) == 300
    for k, old in before.items():
        new = after[k]
        assert (new.value, new.metadata) == (old.value, old.metadata), k
        assert type(new.value) is type(old.value)
        if old.expires_at is None:
            assert new.expires_at is None
        else:  # the TTL left travels; the clock moved on a little meanwhile
            assert old.expires_at - 1 <= new.expires_at <= old.expires_at + 60


def test_export_to_a_pipe_has_no_progress_and_lines_are_jsonl(tmp_path, capsys):
    src = config_file(tmp_path, "src")
    with mc.MemoryManager.from_config(src) as mem:
        mem.store_many([(f"k{i}", i) for i in range(5)])
    assert cli.main(["--config", src, "export"]) == 0
    out, err = capsys.readouterr()
    assert "\r" not in err and err == "exported 5 records\n"
    assert [json.loads(line)["value"] for line in out.splitlines()] == [0, 1, 2, 3, 4]


def test_progress_on_a_terminal(tmp_path, capsys, monkeypatch):
    src = config_file(tmp_path, "src")
    with mc.MemoryManager.from_config(src) as mem:
        mem.store_many([(f"k{i}", i) for i in range(3)])
    monkeypatch.setattr("sys.stderr.isatty", lambda: True, raising=False)
    assert cli.main(["--config", src, "export", "-o", str(tmp_path / "d.jsonl")]) == 0
    assert "\rexported 3" in capsys.readouterr().err


@pytest.mark.parametrize("line", ['{"key": "k"}', '{"key": "k", "value": 1, "extra": 2}',
                                  'not json', '{"key": "k", "value": {"$bytes": "!!"}}'])
def test_bad_lines_import_nothing(tmp_path, capsys, line):
    dst = config_file(tmp_path, "dst")
    dump = tmp_path / "bad.jsonl"
    dump.write_text('{"key": "good", "value": 1}\n' + line + "\n")
    assert cli.main(["--config", dst, "import", str(dump)]) == 1
    assert "line 2:" in capsys.readouterr().err
    with mc.MemoryManager.from_config(dst) as mem:
        assert mem.count() == 0
