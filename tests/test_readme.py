"""The README's promises: its Quickstart runs as written, its configuration example loads,
and the custom backend it points to passes the conformance suite."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

from memcluster.config import load_config
from memcluster.testing import BackendConformance

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def section(title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", README, re.M | re.S)
    assert match, f"README has no '## {title}' section"
    return match.group(1)


def blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", text, re.M | re.S)


def test_setup_commands_are_the_documented_ones():
    assert "./scripts/setup.sh && .venv/bin/memcluster demo" in README
    assert "./scripts/setup.sh --test && .venv/bin/python -m pytest -q" in README


def test_quickstart_runs_as_written(tmp_path, monkeypatch):
    code = blocks(section("Quickstart"), "python")
    assert len(code) >= 3
    monkeypatch.chdir(tmp_path)
    scope: dict = {"__name__": "readme"}
    for block in code:
        exec(compile(block, "README.md:Quickstart", "exec"), scope)
    assert (tmp_path / "memory.db").exists()


def test_configuration_example_loads(monkeypatch):
    (yaml_text,) = blocks(section("Configuration"), "yaml")
    import yaml

    data = yaml.safe_load(yaml_text)
    monkeypatch.setenv("PGPASSWORD", "pw")
    cfg = load_config(data)
    assert [s.name for s in cfg.sources] == ["cache", "persistent"]
    assert cfg.sources[1].opts["dsn"] == "postgresql://app:pw@db:5432/agents"
    assert "${PGPASSWORD}" in cfg.raw["sources"][1]["opts"]["dsn"]


def test_error_table_lists_real_errors():
    from memcluster import errors

    names = re.findall(r"^\| `(\w+)` \|", section("Errors"), re.M)
    assert len(names) >= 10
    for name in names:
        assert issubclass(getattr(errors, name), errors.MemclusterError), name


def _load_example():
    path = ROOT / "examples" / "custom_backend.py"
    spec = importlib.util.spec_from_file_location("custom_backend", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("custom_backend", module)
    spec.loader.exec_module(module)
    return module


DictBackend = _load_example().DictBackend


def test_custom_backend_excerpt_matches_the_example_file():
    """The README's excerpt of examples/custom_backend.py has not drifted from the file."""
    excerpt, suite = blocks(section("Writing your own backend"), "python")
    source = (ROOT / "examples" / "custom_backend.py").read_text(encoding="utf-8")
    lines = [line for line in excerpt.splitlines() if line.strip() not in ("", "...")]
    assert len(lines) >= 8
    for line in lines:
        assert line in source.splitlines(), line
    assert "BackendConformance" in suite and "DictBackend" in suite


class TestCustomBackendConformance(BackendConformance):
    """examples/custom_backend.py keeps the same contract as the built-in backends."""

    backend = DictBackend
    persistent = False
    thread_safe = False


def test_custom_backend_works_in_a_memory_manager():
    import memcluster as mc

    with mc.MemoryManager([mc.memory_source("notes", DictBackend)]) as mem:
        mem.store("k", {"v": 1}, namespace="n", metadata={"tags": ["x"]})
        assert mem.search(filter={"tags": {"$contains": "x"}}, namespace="n")[0].key == "k"
        with pytest.raises(mc.errors.ConfigError):
            mc.MemoryManager([mc.memory_source("bad", DictBackend, opts={"path": "x"})])
