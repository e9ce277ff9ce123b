"""Configuration: the YAML file (or dict) that describes a memory, and `memory_source`.

Core types: `Config` (the validated, frozen result of `load_config`) and the `SourceSpec`s
it holds. One file serves local use (`MemoryManager.from_config`) and the cluster
(`start_cluster`); a local manager ignores the cluster-only fields.

Decisions:
- Strict. Unknown keys are rejected and every type is checked, because a typo such as
  `replica: 3` silently running with the default is worse than a failed start. Every error
  is a `ConfigError` whose message starts with the field's path (`sources[1].replicas:
  must be >= 1`) and never contains the field's value (it may be a secret).
- Secrets are `${ENV_VAR}` references, expanded at load. `Config.raw` keeps the
  validated file in its unexpanded form: that is what the cluster stores in Redis, so a
  password never lands there; whoever loads it again expands it from its own environment.
  Rejected alternative: storing the expanded spec and redacting on read, which leaves the
  secret at rest in Redis.
- `memory_source` (the Python form) shares the per-source validation with the file, so a
  source is equally valid however it was written. It does not expand `${...}`: Python
  callers pass real values.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from memcluster.consolidation import check_config as check_consolidation
from memcluster.errors import ConfigError
from memcluster.model import SourceSpec

NAME_RE = re.compile(r"[A-Za-z0-9_-]+")
ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
STRATEGIES = ("one_for_one", "one_for_all", "rest_for_one")
DEFAULT_SUPERVISION: dict[str, Any] = {"strategy": "one_for_one", "intensity": 5, "period": 30}
DEFAULT_NAME = "memcluster"
DEFAULT_METRICS_PORT = 9464

_TOP_KEYS = ("name", "redis_url", "ray_address", "metrics_port", "max_value_bytes", "sources",
             "health", "placement")
_SOURCE_KEYS = ("name", "backend", "description", "default", "shards", "replicas",
                "write_quorum", "read_quorum", "opts", "supervision", "consolidation")
_SUPERVISION_KEYS = ("strategy", "intensity", "period")
# Cluster health checks and timeouts (seconds; lease_ttl in seconds too). Tests shorten them.
# open_timeout bounds a new shard's open (a backend may load a model or a big file);
# copy_timeout how long one page of a handoff or hydration copy may keep failing.
DEFAULT_HEALTH: dict[str, Any] = {"interval": 1.0, "ping_timeout": 0.5, "misses": 3,
                                  "call_timeout": 10.0, "lease_ttl": 5.0,
                                  "open_timeout": 60.0, "copy_timeout": 60.0}
NODE = "node"
# The manager asks for this much CPU so that, by default, a 0-CPU head never hosts it.
MANAGER_CPU = 0.001


@dataclass(frozen=True)
class PlacementPolicy:
    """The `placement:` config: failure domain key and the resources that make a node
    eligible (None: any node with CPU > 0)."""

    domain: str = NODE
    resources: Mapping[str, float] | None = None
    auto_rebalance: bool = False

    @classmethod
    def from_config(cls, raw: Any) -> PlacementPolicy:
        """Parse and check the section (ConfigError naming the field)."""
        if raw is not None and not isinstance(raw, Mapping):
            raise ConfigError(f"placement: must be a mapping, got {_kind(raw)}")
        raw = dict(raw or {})
        unknown = sorted(set(raw) - {"domain", "resources", "auto_rebalance"})
        if unknown:
            raise ConfigError(f"placement: unknown key(s) {', '.join(unknown)}")
        domain = raw.get("domain", NODE)
        if not isinstance(domain, str) or not domain:
            raise ConfigError("placement.domain: must be 'node' or a node label name")
        resources = raw.get("resources")
        if resources is not None:
            if not isinstance(resources, Mapping) or not resources or not all(
                    isinstance(k, str) and k and isinstance(v, (int, float))
                    and not isinstance(v, bool) and v > 0 for k, v in resources.items()):
                raise ConfigError("placement.resources: must map resource names to "
                                  "positive amounts")
            resources = {k: float(v) for k, v in resources.items()}
        auto = raw.get("auto_rebalance", False)
        if not isinstance(auto, bool):
            raise ConfigError("placement.auto_rebalance: must be true or false")
        return cls(domain, resources, auto)

    def actor_options(self) -> dict[str, Any]:
        """The Ray actor options that keep the manager on an eligible node (a tiny share
        of the eligibility resource, so Ray restarts it on another eligible node if its
        own dies)."""
        if self.resources:
            return {"resources": {k: min(v, MANAGER_CPU) for k, v in self.resources.items()}}
        return {"num_cpus": MANAGER_CPU}

    def as_config(self) -> dict[str, Any]:
        """The `placement:` section that loads back as this policy."""
        return {"domain": self.domain, "resources": None if self.resources is None
                else dict(self.resources), "auto_rebalance": self.auto_rebalance}


@dataclass(frozen=True)
class Config:
    """A validated configuration. `raw` is the same content with `${VAR}`s unexpanded.

    `redis_url` and source `opts` may hold expanded secrets, so the repr shows neither.
    """

    name: str = DEFAULT_NAME
    redis_url: str | None = field(default=None, repr=False)
    ray_address: str | None = None
    metrics_port: int | None = DEFAULT_METRICS_PORT
    sources: tuple[SourceSpec, ...] = field(default=(), repr=False)
    max_value_bytes: int | None = None
    health: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_HEALTH))
    placement: PlacementPolicy = field(default_factory=PlacementPolicy)
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def __repr__(self) -> str:
        names = ", ".join(s.name for s in self.sources)
        return f"Config(name={self.name!r}, sources=[{names}])"

    @property
    def source_names(self) -> list[str]:
        return [s.name for s in self.sources]

    def source(self, name: str) -> SourceSpec:
        """The source called `name`; `ConfigError` if there is none."""
        for spec in self.sources:
            if spec.name == name:
                return spec
        raise ConfigError(f"sources: no source named {name!r}")


# ---- public entry points ----------------------------------------------------------------


def load_config(source: str | Path | Mapping[str, Any] | Config) -> Config:
    """Load and validate a configuration from a YAML file path or a dict (or pass a Config)."""
    if isinstance(source, Config):
        return source
    if isinstance(source, (str, Path)):
        data = _read_yaml(Path(source))
    elif isinstance(source, Mapping):
        data = dict(source)
    else:
        raise ConfigError(f"config must be a path or a dict, got {type(source).__name__}")
    checked = _validate_top(data)
    expanded = _expand(checked, "")
    raw = {**checked, "sources": [
        {**s, "backend": _class_path(s["backend"], f"sources[{i}].backend")}
        if isinstance(s["backend"], type) else s for i, s in enumerate(checked["sources"])]}
    sources = tuple(_make_spec(s) for s in expanded["sources"])
    return Config(name=expanded["name"], redis_url=expanded["redis_url"],
                  ray_address=expanded["ray_address"], metrics_port=expanded["metrics_port"],
                  sources=sources, max_value_bytes=expanded["max_value_bytes"],
                  health=expanded["health"],
                  placement=PlacementPolicy.from_config(expanded.get("placement")), raw=raw)


def memory_source(name: str, backend: Any, *, description: str = "", default: bool = False,
                  opts: Mapping[str, Any] | None = None, shards: int = 1,
                  replicas: int | None = None, write_quorum: int | None = None,
                  supervision: Mapping[str, Any] | None = None,
                  consolidation: Mapping[str, Any] | None = None) -> SourceSpec:
    """Describe one named memory source (the Python form of a `sources:` entry).

    `backend` is a registered name (`memory`, `sqlite`, ...), a dotted path, or a
    MemoryBackend subclass. `consolidation`: see `memcluster.consolidation.check_config`.
    Raises `ConfigError` naming the bad field.
    """
    entry: dict[str, Any] = {"name": name, "backend": backend, "description": description,
                             "default": default, "opts": {} if opts is None else opts,
                             "shards": shards, "replicas": replicas,
                             "write_quorum": write_quorum}
    if supervision is not None:
        entry["supervision"] = supervision
    if consolidation is not None:
        entry["consolidation"] = consolidation
    path = f"memory_source({name!r})" if isinstance(name, str) else "memory_source"
    return _make_spec(_validate_source(entry, path))


def check_sources(sources: Any, path: str = "sources") -> list[SourceSpec]:
    """Check a list of SourceSpecs as a whole: unique names, at most one default."""
    if not isinstance(sources, (list, tuple)):
        raise ConfigError(f"{path}: must be a list of sources, got {type(sources).__name__}")
    for i, spec in enumerate(sources):
        if not isinstance(spec, SourceSpec):
            raise ConfigError(f"{path}[{i}]: must be a SourceSpec (use memory_source()), "
                              f"got {type(spec).__name__}")
    _check_unique([(s.name, s.default) for s in sources], path)
    return list(sources)


def _check_unique(sources: list[tuple[str, bool]], path: str) -> None:
    """Source names are unique and at most one source is the default (`(name, default)`s)."""
    seen: dict[str, int] = {}
    default: int | None = None
    for i, (name, is_default) in enumerate(sources):
        if name in seen:
            raise ConfigError(f"{path}[{i}].name: duplicate source name {name!r} "
                              f"(also {path}[{seen[name]}])")
        seen[name] = i
        if is_default:
            if default is not None:
                raise ConfigError(f"{path}[{i}].default: at most one source may be the "
                                  f"default ({path}[{default}] already is)")
            default = i


# ---- reading and validating ------------------------------------------------------------


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"config file {str(path)!r} cannot be read: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"config file {str(path)!r} is not valid YAML{where}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping at the top level")
    return data


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _check_keys(data: Mapping[str, Any], allowed: tuple[str, ...], path: str) -> None:
    for key in data:
        if key not in allowed:
            where = f"{path}.{key}" if path else str(key)
            raise ConfigError(f"{where}: unknown key (allowed: {', '.join(allowed)})")


def _str(value: Any, path: str, *, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{path}: must be a string{' or null' if optional else ''}, "
                          f"got {_kind(value)}")
    return value


def _name(value: Any, path: str) -> str:
    _str(value, path)
    if not NAME_RE.fullmatch(value):
        raise ConfigError(f"{path}: must be letters, digits, '_' or '-' (non-empty)")
    return value


def _int(value: Any, path: str, *, minimum: int, maximum: int | None = None,
         optional: bool = False) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{path}: must be an integer{' or null' if optional else ''}, "
                          f"got {_kind(value)}")
    if value < minimum:
        raise ConfigError(f"{path}: must be >= {minimum}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{path}: must be <= {maximum}")
    return value


def _bool(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{path}: must be true or false, got {_kind(value)}")
    return value


def _validate_top(data: dict[str, Any]) -> dict[str, Any]:
    """Check the top level and every source; return a normalised, unexpanded deep copy."""
    _check_keys(data, _TOP_KEYS, "")
    out: dict[str, Any] = {
        "name": _name(data.get("name", DEFAULT_NAME), "name"),
        "redis_url": _str(data.get("redis_url"), "redis_url", optional=True),
        "ray_address": _str(data.get("ray_address"), "ray_address", optional=True),
        "metrics_port": _int(data.get("metrics_port", DEFAULT_METRICS_PORT), "metrics_port",
                             minimum=0, maximum=65535, optional=True),
        "max_value_bytes": _int(data.get("max_value_bytes"), "max_value_bytes", minimum=1,
                                optional=True),
    }
    out["health"] = _validate_health(data.get("health"), "health")
    if data.get("placement") is not None:
        out["placement"] = PlacementPolicy.from_config(data["placement"]).as_config()
    sources = data.get("sources")
    if not isinstance(sources, list) or not sources:
        raise ConfigError(f"sources: must be a non-empty list, got {_kind(sources)}"
                          if not isinstance(sources, list) else "sources: must not be empty")
    out["sources"] = [_validate_source(s, f"sources[{i}]") for i, s in enumerate(sources)]
    _check_unique([(s["name"], s["default"]) for s in out["sources"]], "sources")
    return out


def _validate_source(entry: Any, path: str) -> dict[str, Any]:
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{path}: must be a mapping, got {_kind(entry)}")
    _check_keys(entry, _SOURCE_KEYS, path)
    if "name" not in entry:
        raise ConfigError(f"{path}.name: is required")
    if "backend" not in entry:
        raise ConfigError(f"{path}.backend: is required")
    backend = entry["backend"]
    if isinstance(backend, type):
        _class_path(backend, f"{path}.backend")  # checks it is a MemoryBackend subclass
    elif not isinstance(backend, str) or not backend:
        raise ConfigError(f"{path}.backend: must be a backend name, a dotted path or a "
                          f"MemoryBackend class, got {_kind(backend)}")
    out: dict[str, Any] = {
        "name": _name(entry["name"], f"{path}.name"),
        "backend": backend,
        "description": _str(entry.get("description", ""), f"{path}.description"),
        "default": _bool(entry.get("default", False), f"{path}.default"),
        "shards": _int(entry.get("shards", 1), f"{path}.shards", minimum=1),
        "replicas": _int(entry.get("replicas"), f"{path}.replicas", minimum=1, optional=True),
        "write_quorum": _int(entry.get("write_quorum"), f"{path}.write_quorum", minimum=1,
                             optional=True),
    }
    if out["replicas"] is not None:
        if out["replicas"] > out["shards"]:
            raise ConfigError(f"{path}.replicas: must be <= shards ({out['shards']}); each "
                              "replica lives on a different shard")
        if out["write_quorum"] is not None and out["write_quorum"] > out["replicas"]:
            raise ConfigError(f"{path}.write_quorum: must be <= replicas ({out['replicas']})")
    elif out["write_quorum"] is not None and out["write_quorum"] > out["shards"]:
        raise ConfigError(f"{path}.write_quorum: must be <= shards ({out['shards']})")
    out["read_quorum"] = _int(entry.get("read_quorum"), f"{path}.read_quorum", minimum=1,
                              maximum=out["replicas"] or out["shards"], optional=True)
    opts = entry.get("opts", {})
    if opts is None:
        opts = {}
    if not isinstance(opts, Mapping) or not all(isinstance(k, str) for k in opts):
        raise ConfigError(f"{path}.opts: must be a mapping with string keys, got {_kind(opts)}")
    out["opts"] = _copy_plain(dict(opts))
    out["supervision"] = _validate_supervision(entry.get("supervision"), f"{path}.supervision")
    if entry.get("consolidation") is not None:
        check_consolidation(entry["consolidation"], f"{path}.consolidation")
        out["consolidation"] = _copy_plain(dict(entry["consolidation"]))
    return out


def _copy_plain(value: Any) -> Any:
    """A copy of the dicts, lists and tuples in `value`; anything else kept as the same object.

    Opts may hold a user's embedder (a function, a bound method whose object holds a lock
    or a model): a deep copy would copy that object, or fail on it with a raw TypeError.
    Only the containers are copied, so later edits to the caller's dict do not leak in.
    """
    if isinstance(value, dict):
        return {k: _copy_plain(v) for k, v in value.items()}
    if type(value) is list:
        return [_copy_plain(v) for v in value]
    if type(value) is tuple:
        return tuple(_copy_plain(v) for v in value)
    return value


def _validate_supervision(value: Any, path: str) -> dict[str, Any]:
    if value is None:
        return dict(DEFAULT_SUPERVISION)
    if not isinstance(value, Mapping):
        raise ConfigError(f"{path}: must be a mapping, got {_kind(value)}")
    _check_keys(value, _SUPERVISION_KEYS, path)
    merged = {**DEFAULT_SUPERVISION, **value}
    if merged["strategy"] not in STRATEGIES:
        raise ConfigError(f"{path}.strategy: must be one of {', '.join(STRATEGIES)}")
    _int(merged["intensity"], f"{path}.intensity", minimum=0)
    period = merged["period"]
    if isinstance(period, bool) or not isinstance(period, (int, float)) or not period > 0:
        raise ConfigError(f"{path}.period: must be a number > 0")
    return merged


def _validate_health(value: Any, path: str) -> dict[str, Any]:
    if value is None:
        return dict(DEFAULT_HEALTH)
    if not isinstance(value, Mapping):
        raise ConfigError(f"{path}: must be a mapping, got {_kind(value)}")
    _check_keys(value, tuple(DEFAULT_HEALTH), path)
    merged = {**DEFAULT_HEALTH, **value}
    _int(merged["misses"], f"{path}.misses", minimum=1)
    for key in ("interval", "ping_timeout", "call_timeout", "lease_ttl", "open_timeout",
                "copy_timeout"):
        number = merged[key]
        if isinstance(number, bool) or not isinstance(number, (int, float)) or not number > 0:
            raise ConfigError(f"{path}.{key}: must be a number of seconds > 0")
    return merged


def _class_path(cls: type, path: str) -> str:
    """A MemoryBackend class as an importable `module:QualName` (what `raw` can carry)."""
    from memcluster.backends.base import MemoryBackend

    if not issubclass(cls, MemoryBackend):
        raise ConfigError(f"{path}: {cls.__name__} is not a MemoryBackend subclass")
    return f"{cls.__module__}:{cls.__qualname__}"


def _expand(value: Any, path: str) -> Any:
    """Deep copy of `value` with `${VAR}` in every string replaced from the environment."""
    if isinstance(value, str):
        def sub(match: re.Match[str]) -> str:
            var = match.group(1)
            if var not in os.environ:
                raise ConfigError(f"{path or 'config'}: environment variable {var} is not set")
            return os.environ[var]
        return ENV_RE.sub(sub, value)
    if isinstance(value, dict):
        return {k: _expand(v, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, f"{path}[{i}]") for i, v in enumerate(value)]
    return value


def _make_spec(src: dict[str, Any]) -> SourceSpec:
    return SourceSpec(name=src["name"], backend=src["backend"], description=src["description"],
                      default=src["default"], opts=src["opts"], shards=src["shards"],
                      replicas=src["replicas"], write_quorum=src["write_quorum"],
                      supervision=src["supervision"], read_quorum=src.get("read_quorum"),
                      consolidation=src.get("consolidation"))
