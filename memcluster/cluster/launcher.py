"""Starting and stopping a cluster: `start_cluster(config)` and the `ClusterHandle` it returns.

With addresses given (or a Ray already initialised in this process), the cluster's manager
actor is created there. With none, the embedded mode (`memcluster.cluster.embedded`)
starts a local Ray head and a private redis-server as daemons first. `stop_cluster(name)`
removes the actors, the cluster's Redis keys and exactly the processes the embedded mode
started.

Decisions (what a failure leaves behind):
- **A failed start undoes what it started**, and only that: a manager actor it created
  (with the shards that manager made, found by the cluster's Ray namespace, and the Redis
  keys they wrote), and the embedded Ray head and redis-server it launched in this call.
  A manager, head or redis-server that was already running is left alone, so a failed
  `up` against a running cluster never takes it down. The error is raised after the
  clean-up.
- **`stop_cluster` always stops what it can**: a manager that cannot clean up (its Redis is
  gone, or it does not answer within `timeout`) does not stop the rest. Its actors are
  killed by name, the recorded embedded processes are stopped, and what could not be done
  (typically the cluster's Redis keys) is reported as one line in `out["notes"]`. `force`
  skips asking the manager at all, for a manager that does not answer.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from memcluster.cluster import names
from memcluster.cluster.control.manager import manager_actor_class
from memcluster.cluster.data.client import ClusterMemory
from memcluster.cluster.embedded import (
    EmbeddedState,
    pid_alive,
    ray_head_alive,
    start_ray_head,
    start_redis,
    stop_embedded,
    use_ray_auth,
)
from memcluster.cluster.session import (
    ENV_RAY_ADDRESS,
    ManagerHandle,
    join,
    ray_address_for,
)
from memcluster.config import ENV_RE, load_config
from memcluster.errors import MemclusterError, NotFound, SourceUnavailable
from memcluster.secrets import redact_text


class ClusterHandle:
    """What `start_cluster` returns: status, scale, connect, stop."""

    def __init__(self, name: str, manager: Any, state: EmbeddedState | None) -> None:
        self.name = name
        self.manager = manager
        self.state = state

    def __repr__(self) -> str:
        return f"ClusterHandle({self.name!r})"

    def status(self) -> dict[str, Any]:
        """The manager's view: sources, shards and their states, epoch, Redis health."""
        return ManagerHandle(self.manager, self.name).call("status")

    def scale(self, source: str, shards: int) -> dict[str, Any]:
        """Move `source` to `shards` shards; UnknownOutcome if the manager dies meanwhile."""
        return ManagerHandle(self.manager, self.name).call("scale", source, shards,
                                                            idempotent=False)

    def rebalance(self) -> dict[str, Any]:
        """Spread every source over the eligible failure domains (see `memcluster
        rebalance`); UnknownOutcome if the manager dies meanwhile."""
        return ManagerHandle(self.manager, self.name).call("rebalance", idempotent=False)

    def connect(self, **kwargs: Any) -> ClusterMemory:
        return ClusterMemory(self.name, **kwargs)

    def stop(self) -> dict[str, Any]:
        """Remove the actors and the Redis keys, then what the embedded mode started."""
        return stop_cluster(self.name, manager=self.manager)


def stop_cluster(name: str, *, manager: Any = None, force: bool = False,
                 timeout: float = 60.0) -> dict[str, Any]:
    """Stop the cluster `name`: shards, manager, Redis keys, embedded processes.

    -> {"cluster", "shards_killed", "redis_keys_removed", "processes_stopped", "notes"}
    ("manager": "not running" when there was none). See the module docstring for what
    happens when the manager cannot clean up, and for `force`.
    """
    import ray

    out: dict[str, Any] = {"cluster": name, "notes": []}
    state = EmbeddedState.load(name)
    if not ray.is_initialized() and ray_address_for(name) is not None:
        try:
            join(name)
        except MemclusterError as exc:
            out["notes"].append(f"Ray cannot be reached ({_line(exc)})")
    if ray.is_initialized():
        try:
            manager = manager or ManagerHandle.find(name).actor
        except NotFound:
            out["manager"] = "not running"
            manager = None
        if manager is not None and not force:
            try:
                out.update(ManagerHandle(manager, name).call("shutdown", timeout=timeout))
            except MemclusterError as exc:
                out["notes"].append(f"the manager could not clean up ({_line(exc)}); the "
                                    f"cluster's Redis keys (memcluster:{name}:*) may remain")
        elif manager is not None:
            out["notes"].append(f"--force: the manager was not asked to clean up; the "
                                f"cluster's Redis keys (memcluster:{name}:*) may remain")
        killed = kill_cluster_actors(name)
        out["shards_killed"] = max(out.get("shards_killed", 0), killed - (manager is not None))
    if state is not None:
        if state.ray_temp_dir and ray.is_initialized():
            ray.shutdown()
        out["processes_stopped"] = len(stop_embedded(state))
    return out


def kill_cluster_actors(name: str) -> int:
    """Kill every actor left in the cluster's Ray namespace (its manager and shards, found
    by name, without asking the manager); -> how many were killed."""
    import ray
    from ray.util import list_named_actors

    namespace = names.ray_namespace(name)
    killed = 0
    for entry in list_named_actors(all_namespaces=True):
        if entry.get("namespace") != namespace:
            continue
        try:
            ray.kill(ray.get_actor(entry["name"], namespace=namespace), no_restart=True)
        except Exception:  # gone meanwhile, or its node is: nothing to kill
            continue
        killed += 1
    return killed


def _line(exc: BaseException) -> str:
    """An error as one short line (its type and first line, secrets masked)."""
    first = (redact_text(str(exc)).splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first}"[:300]


def referenced_env(raw: Any) -> dict[str, str]:
    """The `${VAR}`s the spec refers to, with this process's values.

    The spec goes to Redis unexpanded; the manager expands it itself (and hands shards
    their expanded options), so it gets these values as an actor argument: never through
    Redis, and not through a Ray runtime env, whose agent logs its variables in clear.
    Missing ones were already refused by `load_config`.
    """
    found: dict[str, str] = {}

    def walk(value: Any) -> None:
        if isinstance(value, str):
            for var in ENV_RE.findall(value):
                if var in os.environ:
                    found[var] = os.environ[var]
        elif isinstance(value, Mapping):
            for v in value.values():
                walk(v)
        elif isinstance(value, (list, tuple)):
            for v in value:
                walk(v)

    walk(raw)
    return found


def unwrap(exc: BaseException) -> BaseException:
    """The memcluster error inside a Ray task error (one clean line), else `exc`."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, MemclusterError) else exc


def start_cluster(config: str | Path | Mapping[str, Any] | Any, *, name: str | None = None,
                  redis_url: str | None = None, ray_address: str | None = None,
                  timeout: float = 60.0) -> ClusterHandle:
    """Start (or join) the cluster described by `config`; see the module docstring."""
    import ray

    cfg = load_config(config)
    name = names.check_cluster_name(name or cfg.name)
    redis_url = redis_url or cfg.redis_url
    ray_address = ray_address or cfg.ray_address or os.environ.get(ENV_RAY_ADDRESS)
    namespace = names.ray_namespace(name)
    state = EmbeddedState.load(name)
    embedded = state or EmbeddedState(name)
    started = _Started(embedded)
    try:
        if not ray.is_initialized():
            if ray_address is None:
                if not ray_head_alive(embedded):
                    embedded.ray_address = embedded.ray_temp_dir = None
                    started.head = True
                    start_ray_head(embedded)
                    embedded.save()
                use_ray_auth(embedded)
                ray_address = embedded.ray_address
            started.joined = True
            ray.init(address=ray_address, namespace=namespace, log_to_driver=False,
                     configure_logging=False)
        if redis_url is None:
            if not (pid_alive(embedded.redis_pid) and embedded.redis_url):
                started.redis = True
                start_redis(embedded)
                embedded.save()
            redis_url = embedded.redis_url
        if embedded.ray_temp_dir or embedded.redis_pid:
            embedded.save()
        started.manager = not _manager_exists(name)
        started.redis_url = redis_url
        try:
            manager = manager_actor_class(cfg.placement).options(
                name=names.manager_name(name), namespace=namespace, lifetime="detached",
                get_if_exists=True).remote(name, redis_url, cfg.raw, exit_on_lost_lease=True,
                                           env=referenced_env(cfg.raw))
            ray.get(manager.ready.remote(timeout), timeout=timeout + 10)
        except ray.exceptions.GetTimeoutError as exc:
            raise SourceUnavailable(f"the manager of {name!r} did not start in "
                                    f"{timeout}s") from exc
        except ray.exceptions.RayTaskError as exc:
            raise unwrap(exc) from None
    except BaseException:
        started.undo(name)
        raise
    return ClusterHandle(name, manager, embedded if (embedded.ray_temp_dir or
                                                      embedded.redis_pid) else None)


class _Started:
    """What one `start_cluster` call started, so that a failure undoes exactly that."""

    def __init__(self, state: EmbeddedState) -> None:
        self.state = state
        self.head = self.redis = self.joined = self.manager = False
        self.redis_url: str | None = None

    def undo(self, name: str) -> None:
        """Kill the manager and shards this call created and remove the Redis keys they
        wrote, leave the Ray it joined, stop the embedded processes it launched; never
        raises (the start's error is the one to see)."""
        import ray

        with contextlib.suppress(Exception):
            if self.manager and ray.is_initialized():
                kill_cluster_actors(name)
        with contextlib.suppress(Exception):
            if self.manager and self.redis_url and not self.redis:
                from memcluster.cluster.coord.coordinator import Coordinator

                coord = Coordinator(self.redis_url, name)
                try:
                    coord.destroy()
                finally:
                    coord.close()
        with contextlib.suppress(Exception):
            if self.joined and ray.is_initialized():
                ray.shutdown()
        if not (self.head or self.redis):
            return
        with contextlib.suppress(Exception):
            stop_embedded(self.state, ray=self.head, redis=self.redis)


def _manager_exists(name: str) -> bool:
    import ray

    try:
        ray.get_actor(names.manager_name(name), namespace=names.ray_namespace(name))
    except ValueError:
        return False
    return True
