"""Configuration loading: the YAML format, strict checks naming the field, ${ENV} secrets."""

from __future__ import annotations

import pytest

from memcluster.backends.base import MemoryBackend
from memcluster.config import DEFAULT_SUPERVISION, load_config, memory_source
from memcluster.errors import ConfigError

YAML = """
name: agents
redis_url: redis://:${MC_TEST_PW}@redis:6379/0
metrics_port: 9000
sources:
  - name: cache
    backend: memory
    description: Fast session cache
    default: true
    shards: 4
    replicas: 2
    write_quorum: 2
    opts: {cleanup_interval: 30}
    supervision: {strategy: rest_for_one, intensity: 3, period: 10}
  - name: persistent
    backend: postgres
    opts: {dsn: "postgresql://app:${MC_TEST_PW}@db/test"}
"""


def base(**source: object) -> dict:
    return {"sources": [{"name": "cache", "backend": "memory", **source}]}


def test_yaml_file_loads_with_defaults_and_expands_env(tmp_path, monkeypatch):
    monkeypatch.setenv("MC_TEST_PW", "s3cret")
    path = tmp_path / "memory.yaml"
    path.write_text(YAML)
    cfg = load_config(path)
    assert cfg.name == "agents" and cfg.metrics_port == 9000 and cfg.ray_address is None
    assert cfg.redis_url == "redis://:s3cret@redis:6379/0"
    cache, persistent = cfg.sources
    assert (cache.name, cache.backend, cache.default, cache.shards, cache.replicas,
            cache.write_quorum) == ("cache", "memory", True, 4, 2, 2)
    assert cache.opts == {"cleanup_interval": 30}
    assert cache.supervision == {"strategy": "rest_for_one", "intensity": 3, "period": 10}
    assert persistent.supervision == DEFAULT_SUPERVISION
    assert persistent.opts["dsn"] == "postgresql://app:s3cret@db/test"
    assert cfg.source("persistent") is persistent


def test_raw_keeps_secrets_unexpanded_and_reloads(tmp_path, monkeypatch):
    monkeypatch.setenv("MC_TEST_PW", "s3cret")
    path = tmp_path / "memory.yaml"
    path.write_text(YAML)
    cfg = load_config(path)
    assert "s3cret" not in repr(cfg.raw) and "s3cret" not in repr(cfg)
    assert cfg.raw["sources"][1]["opts"]["dsn"] == "postgresql://app:${MC_TEST_PW}@db/test"
    monkeypatch.setenv("MC_TEST_PW", "rotated")
    again = load_config(cfg.raw)
    assert again.redis_url == "redis://:rotated@redis:6379/0"
    assert again.raw == cfg.raw


def test_missing_env_var_names_field_and_variable_not_value(monkeypatch):
    monkeypatch.delenv("MC_TEST_MISSING", raising=False)
    monkeypatch.setenv("MC_TEST_OTHER", "visible-secret")
    with pytest.raises(ConfigError) as err:
        load_config(base(opts={"dsn": "x://${MC_TEST_OTHER}@${MC_TEST_MISSING}"}))
    assert str(err.value) == "sources[0].opts.dsn: environment variable MC_TEST_MISSING is not set"


@pytest.mark.parametrize(("source", "message"), [
    ({"replicas": 0}, "sources[0].replicas: must be >= 1"),
    ({"shards": 0}, "sources[0].shards: must be >= 1"),
    ({"shards": "4"}, "sources[0].shards: must be an integer, got str"),
    ({"shards": True}, "sources[0].shards: must be an integer, got bool"),
    ({"shards": 2, "replicas": 2, "write_quorum": 3},
     "sources[0].write_quorum: must be <= replicas (2)"),
    ({"shards": 1, "replicas": 2}, "sources[0].replicas: must be <= shards (1)"),
    ({"replica": 2}, "sources[0].replica: unknown key"),
    ({"default": "yes"}, "sources[0].default: must be true or false, got str"),
    ({"name": "has space"}, "sources[0].name: must be letters, digits"),
    ({"name": ""}, "sources[0].name: must be letters, digits"),
    ({"backend": 3}, "sources[0].backend: must be a backend name"),
    ({"opts": [1]}, "sources[0].opts: must be a mapping"),
    ({"supervision": {"strategy": "one_for_some"}},
     "sources[0].supervision.strategy: must be one of one_for_one, one_for_all, rest_for_one"),
    ({"supervision": {"intensity": -1}}, "sources[0].supervision.intensity: must be >= 0"),
    ({"supervision": {"period": 0}}, "sources[0].supervision.period: must be a number > 0"),
    ({"supervision": {"restarts": 1}}, "sources[0].supervision.restarts: unknown key"),
])
def test_bad_source_fields_are_named(source, message):
    with pytest.raises(ConfigError) as err:
        load_config(base(**source))
    assert str(err.value).startswith(message)


@pytest.mark.parametrize(("data", "message"), [
    ({"sources": []}, "sources: must not be empty"),
    ({}, "sources: must be a non-empty list, got null"),
    ({"sorces": []}, "sorces: unknown key"),
    ({**base(), "metrics_port": 70000}, "metrics_port: must be <= 65535"),
    ({**base(), "redis_url": 5}, "redis_url: must be a string or null, got int"),
    ({**base(), "name": "a/b"}, "name: must be letters, digits"),
    ({**base(), "max_value_bytes": 0}, "max_value_bytes: must be >= 1"),
    ({"sources": [{"name": "a", "backend": "memory"}, {"backend": "memory"}]},
     "sources[1].name: is required"),
    ({"sources": [{"name": "a", "backend": "memory"}, {"name": "a", "backend": "memory"}]},
     "sources[1].name: duplicate source name 'a'"),
    ({"sources": [{"name": "a", "backend": "memory", "default": True},
                  {"name": "b", "backend": "memory", "default": True}]},
     "sources[1].default: at most one source may be the default"),
])
def test_bad_top_level_is_named(data, message):
    with pytest.raises(ConfigError) as err:
        load_config(data)
    assert str(err.value).startswith(message)


def test_bad_files_fail_cleanly(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("sources: [\n")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load_config(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("just text\n")
    with pytest.raises(ConfigError, match="mapping at the top level"):
        load_config(scalar)


def test_type_errors_never_echo_values():
    with pytest.raises(ConfigError) as err:
        load_config({**base(), "ray_address": ["hunter2"]})
    assert "hunter2" not in str(err.value)


class _Custom(MemoryBackend):  # only its identity matters here; never opened
    pass


def test_backend_class_in_dict_is_kept_and_raw_holds_its_path():
    cfg = load_config(base(backend=_Custom))
    assert cfg.sources[0].backend is _Custom
    assert cfg.raw["sources"][0]["backend"] == f"{__name__}:_Custom"
    with pytest.raises(ConfigError, match=r"sources\[0\].backend: int is not a MemoryBackend"):
        load_config(base(backend=int))


def test_memory_source_validates_like_the_file():
    spec = memory_source("cache", "memory", description="d", default=True, opts={"x": 1},
                         shards=3, replicas=2, write_quorum=1,
                         supervision={"strategy": "one_for_all"})
    assert (spec.name, spec.backend, spec.default, spec.shards, spec.replicas) == (
        "cache", "memory", True, 3, 2)
    assert spec.supervision == {**DEFAULT_SUPERVISION, "strategy": "one_for_all"}
    with pytest.raises(ConfigError, match=r"memory_source\('c'\).replicas: must be >= 1"):
        memory_source("c", "memory", replicas=0)
    with pytest.raises(ConfigError, match=r"write_quorum: must be <= replicas"):
        memory_source("c", "memory", shards=2, replicas=1, write_quorum=2)


class _LockedEmbedder:
    """An embedder object that holds a lock (as a model wrapper does): not deep-copyable."""

    def __init__(self) -> None:
        import threading

        self.lock = threading.Lock()
        self.calls = 0

    def embed(self, texts):
        with self.lock:
            self.calls += 1
        return [[float(len(t)), 1.0] for t in texts]


def test_callables_in_opts_are_kept_not_deep_copied():
    import memcluster as mc

    model = _LockedEmbedder()
    opts = {"embedder": model.embed, "nested": {"hooks": [model.embed]}}
    spec = memory_source("vectors", "vector", opts=opts)
    assert spec.opts["embedder"].__self__ is model          # the same bound method's object
    assert spec.opts["nested"]["hooks"][0].__self__ is model
    opts["nested"]["hooks"].append("later")                 # the caller's containers are copied
    assert spec.opts["nested"]["hooks"] == [model.embed]
    loaded = load_config({"sources": [{"name": "v", "backend": "vector",
                                       "opts": {"embedder": model.embed}}]})
    assert loaded.sources[0].opts["embedder"].__self__ is model
    with mc.MemoryManager([memory_source("v", "vector", default=True,
                                         opts={"embedder": model.embed})]) as mem:
        mem.store("k", {"text": "hello"})
        assert [r.key for r in mem.search("hello")] == ["k"]
    assert model.calls >= 2                                  # the user's own object embedded
