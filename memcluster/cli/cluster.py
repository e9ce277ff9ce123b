"""The cluster's own commands for `memcluster`: up, down, status, scale, bench.

Core functions: `up`, `down`, `status`, `scale`, `bench` (each takes the parsed argparse
namespace and returns an exit status), `cluster_name` and `default_config`. Joining Ray and
calling the manager go through `memcluster.cluster.session`.

Decisions:
- `up` is idempotent and reconciling, because the Helm chart's bootstrap Job runs it on
  every install and upgrade: on a running cluster it changes each source's shard count to
  the config's (a rebalance, not a restart) and reports sources it cannot add or remove;
  then it exits, since the manager and shards are detached actors that outlive it.
- Errors are ours (`CommandFailed`, `MemclusterError`), so the CLI prints one line; the
  session translates Ray's errors (a manager lost mid-`scale` is `UnknownOutcome`).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from memcluster.cli.output import ENV_CLUSTER, PROG, emit, one_line, table
from memcluster.cluster import names
from memcluster.cluster.embedded import EmbeddedState, state_dir
from memcluster.cluster.session import ENV_RAY_ADDRESS, join, joined, ray_address_for
from memcluster.config import DEFAULT_METRICS_PORT, DEFAULT_NAME, Config, load_config
from memcluster.errors import MemclusterError, NotFound
from memcluster.metrics import OpStats
from memcluster.secrets import redact_text

# ---- names and configs -------------------------------------------------------------------


def cluster_name(args: argparse.Namespace, config: Config | None = None) -> str:
    """`up --name`, else `--cluster`, else $MEMCLUSTER_CLUSTER, else the config's, else default."""
    name = (getattr(args, "name", None) or getattr(args, "cluster", None)
            or os.environ.get(ENV_CLUSTER) or (config.name if config else None) or DEFAULT_NAME)
    return names.check_cluster_name(name)


def default_config(name: str = DEFAULT_NAME) -> dict[str, Any]:
    """What `up` runs without a config file: a replicated cache and a durable SQLite store."""
    db = state_dir() / name / "persistent.db"
    return {"name": name, "metrics_port": DEFAULT_METRICS_PORT, "sources": [
        {"name": "cache", "backend": "memory", "default": True, "shards": 4, "replicas": 2,
         "write_quorum": 2, "description": "Fast session cache for short-lived notes"},
        # On a node's own disk: 2 replicas in 2 failure domains survive losing a node.
        {"name": "persistent", "backend": "sqlite", "shards": 2, "replicas": 2,
         "write_quorum": 2, "opts": {"path": str(db)},
         "description": "Long-term facts that survive restarts"},
    ]}


# ---- up / down -------------------------------------------------------------------------------


def up(args: argparse.Namespace) -> int:
    """Start the cluster (embedded Ray/Redis if no addresses), or reconcile a running one;
    with `--watch`, stay and start it again whenever its manager is missing."""
    from memcluster.cluster.launcher import start_cluster

    path = getattr(args, "config_file", None) or getattr(args, "config", None)
    if path is not None:
        cfg = load_config(path)
        name = cluster_name(args, cfg)
    else:
        name = cluster_name(args)
        cfg = load_config(default_config(name))
        Path(cfg.sources[1].opts["path"]).parent.mkdir(parents=True, exist_ok=True)
    if cfg.redis_url is not None:   # fail in one line now, not after the manager's timeout
        from memcluster.cluster.coord.coordinator import Coordinator

        probe = Coordinator(cfg.redis_url, name)
        try:
            probe.ping()
        finally:
            probe.close()
    import ray

    was = ray.is_initialized()
    try:
        handle = start_cluster(cfg, name=name)
        report = reconcile(handle.status(), cfg, handle.scale)
        state = handle.status()
        report["status"] = state
        human = "\n".join([*report["changes"], render_status(state)])
        emit(args, _json_status(report), human)
        if getattr(args, "watch", False):
            return watch(cfg, name, float(args.interval))
    finally:
        if not was and ray.is_initialized():
            ray.shutdown()
    return 0


def watch(cfg: Config, name: str, interval: float, *,
          rounds: int | None = None) -> int:
    """Every `interval` seconds, make sure the cluster's manager runs (a head restart or a
    lost pod can take it); start it again from `cfg` when it is missing (the new manager
    recovers from Redis and re-attaches to live shards). One line per repair on stderr;
    runs until interrupted (or `rounds` checks, for tests)."""
    import ray

    from memcluster.cluster.launcher import start_cluster
    from memcluster.cluster.session import ManagerHandle

    checks = 0
    while rounds is None or checks < rounds:
        time.sleep(interval)
        checks += 1
        try:
            if not ray.is_initialized():
                join(name, cfg.ray_address)
            ManagerHandle.find(name).call("ping", timeout=max(interval, 5.0))
            continue
        except NotFound:
            reason = "its manager is not running"
        except MemclusterError as exc:
            reason = f"{type(exc).__name__}: {_first_line(exc)}"
        except Exception as exc:  # Ray itself lost (a head restart): join again next time
            reason = f"Ray is unreachable ({type(exc).__name__})"
            with contextlib.suppress(Exception):
                ray.shutdown()
        try:
            start_cluster(cfg, name=name)
            print(f"memcluster up --watch: {name!r}: {reason}; started it again",
                  file=sys.stderr, flush=True)
        except MemclusterError as exc:
            print(f"memcluster up --watch: {name!r}: {reason}; cannot start it yet: "
                  f"{_first_line(exc)}", file=sys.stderr, flush=True)
        except Exception as exc:  # Ray not reachable yet: try again next round
            print(f"memcluster up --watch: {name!r}: {reason}; cannot start it yet: "
                  f"{type(exc).__name__}", file=sys.stderr, flush=True)
            with contextlib.suppress(Exception):
                ray.shutdown()
    return 0


def reconcile(state: dict[str, Any], cfg: Config,
              scale: Callable[[str, int], Any]) -> dict[str, Any]:
    """Bring shard counts to the config's; -> {"changes": [...], "scaled": {...}}."""
    changes: list[str] = []
    scaled: dict[str, int] = {}
    running = state.get("sources", {})
    for spec in cfg.sources:
        have = running.get(spec.name)
        if have is None:
            changes.append(f"note: source {spec.name!r} is in the config but not in the "
                           f"running cluster; it is not added (run 'down' then 'up')")
        elif have["shards"] != spec.shards:
            scale(spec.name, spec.shards)
            scaled[spec.name] = spec.shards
            changes.append(f"scaled {spec.name!r} from {have['shards']} to {spec.shards} "
                           f"shards")
    for extra in sorted(set(running) - set(cfg.source_names)):
        changes.append(f"note: source {extra!r} runs but is not in the config; it is kept")
    return {"changes": changes, "scaled": scaled}


def down(args: argparse.Namespace) -> int:
    """Stop the cluster: shards, manager, its Redis keys and the embedded Ray/Redis.

    Always stops what it can (see `stop_cluster`): what could not be cleaned up, e.g. the
    Redis keys of a cluster whose Redis is gone, is one `note:` line on stderr, and the
    exit status is still 0 once the processes are stopped. `--force` kills the manager
    and shards without asking the manager (for one that does not answer).
    """
    import ray

    from memcluster.cluster.launcher import stop_cluster

    name = cluster_name(args)
    if (not ray.is_initialized() and EmbeddedState.load(name) is None
            and ray_address_for(name) is None):
        raise NotFound(f"no cluster named {name!r}: nothing running is recorded in "
                       f"{state_dir()} and {ENV_RAY_ADDRESS} is not set")
    out = stop_cluster(name, force=bool(getattr(args, "force", False)))
    if out.get("manager") == "not running" and not out.get("processes_stopped"):
        raise NotFound(f"no cluster named {name!r} is running")
    emit(args, out, f"stopped {name!r}: {out.get('shards_killed', 0)} shards, "
                    f"{out.get('redis_keys_removed', 0)} Redis keys, "
                    f"{out.get('processes_stopped', 0)} embedded processes")
    if out["notes"]:
        print(f"{PROG}: note: {one_line('; '.join(out['notes']))}", file=sys.stderr)
    return 0


# ---- status / scale ----------------------------------------------------------------------------


def status(args: argparse.Namespace) -> int:
    """Each source's backend, shards (state, records), N/W, ring version; epoch; Redis."""
    name = cluster_name(args)
    with joined(name) as manager:
        state = manager.call("status", timeout=60)
    emit(args, _json_status(state), lambda: render_status(state))
    return 0


def scale(args: argparse.Namespace) -> int:
    """Change a source's shard count, moving only the keys whose owners change."""
    name = cluster_name(args)
    with joined(name) as manager:
        out = manager.call("scale", args.scale_source, args.shards, timeout=600,
                           idempotent=False)
    emit(args, out, lambda: f"{args.scale_source}: {out.get('shards')} shards, ring version "
                            f"{out.get('ring_version')}, {out.get('moved', 0)} records moved")
    return 0


def rebalance(args: argparse.Namespace) -> int:
    """Spread every source over the eligible failure domains (e.g. after adding nodes)."""
    name = cluster_name(args)
    with joined(name) as manager:
        out = manager.call("rebalance", timeout=1800, idempotent=False)
    emit(args, out, lambda: "\n".join(
        f"{source}: " + ("ring unchanged" if r["ring"] is None else
                         f"ring {r['ring']['ring_version']} over {r['ring']['domains']} "
                         f"domains, {r['ring']['moved']} records moved")
        + (f"; moved shards {', '.join(r['moved_shards'])}" if r["moved_shards"] else "")
        for source, r in out.items()))
    return 0


def _first_line(exc: BaseException) -> str:
    """An error's first line, secrets masked ("" for an empty message)."""
    return one_line((redact_text(str(exc)).splitlines() or [""])[0])


def _json_status(state: dict[str, Any]) -> dict[str, Any]:
    """The status as JSON-safe data: per-shard op counters become one total."""
    def clean(value: Any) -> Any:
        if isinstance(value, dict):
            out = {k: clean(v) for k, v in value.items() if k != "ops"}
            if isinstance(value.get("ops"), dict):
                out["operations"] = OpStats.total(value["ops"])
            return out
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value
    return clean(state)


def render_status(state: dict[str, Any]) -> str:
    """The human form of a manager status."""
    redis = state.get("redis") or {}
    head = (f"cluster {state.get('cluster')}  epoch {state.get('epoch')}  "
            f"leader {state.get('leader')}{'' if state.get('leading') else ' (NOT leading)'}\n"
            f"redis {redis.get('url', '?')} {'ok' if redis.get('ok') else 'UNREACHABLE'}  "
            f"metrics {state.get('metrics') or 'off'}  restarts {state.get('restarts', 0)}")
    sources = state.get("sources", {})
    src_rows = [[n, s.get("backend"), s.get("shards"), s.get("replicas"),
                 s.get("write_quorum"), (s.get("ring") or {}).get("version"),
                 s.get("restarts", 0), "yes" if s.get("default") else ""]
                for n, s in sources.items()]
    shard_rows = []
    for sid, sh in sorted(state.get("shards", {}).items(),
                          key=lambda kv: (kv[0].rsplit("/", 1)[0], names.shard_index(kv[0]))):
        if "error" in sh:
            shard_rows.append([sid, f"failed ({sh['error']})", "-", "-", "-"])
        else:
            shard_rows.append([sid, sh.get("state", "serving"), sh.get("records", "-"),
                               sh.get("bytes", "-"), sh.get("ring_version", "-")])
    return "\n\n".join([
        head,
        table(["SOURCE", "BACKEND", "SHARDS", "N", "W", "RING", "RESTARTS", "DEFAULT"],
              src_rows),
        table(["SHARD", "STATE", "RECORDS", "BYTES", "RING"], shard_rows)])


# ---- bench ---------------------------------------------------------------------------------


def bench(args: argparse.Namespace) -> int:
    """Measure single and batch operations against the running cluster; print a table.

    Writes go to a private namespace that is cleared at the end, so a live cluster keeps
    its data. Each of the four phases runs for a quarter of `--seconds`.
    """
    from memcluster.cluster.data.client import ClusterMemory

    name = cluster_name(args)
    with joined(name):
        mem = ClusterMemory(name)
        try:
            rows = _bench_rows(mem, getattr(args, "source", None) or mem.default_source,
                               args.seconds)
        finally:
            mem.close()
    emit(args, {"cluster": name, "rows": rows}, lambda: table(
        ["OPERATION", "CALLS", "RECORDS/S", "P50 MS", "P99 MS"],
        [[r["op"], r["calls"], f"{r['records_per_s']:.0f}", f"{r['p50_ms']:.2f}",
          f"{r['p99_ms']:.2f}"] for r in rows]))
    return 0


def _bench_rows(mem: Any, source: str, seconds: float) -> list[dict[str, Any]]:
    ns = f"bench/{uuid.uuid4().hex[:8]}"
    phase = max(0.2, seconds / 4)
    value = {"text": "x" * 80}
    rows: list[dict[str, Any]] = []
    try:
        rows.append(_measure("store", phase, 1, lambda i: mem.store(
            f"k{i % 1000}", value, source=source, namespace=ns)))
        rows.append(_measure("retrieve", phase, 1, lambda i: mem.retrieve(
            f"k{i % 1000}", source=source, namespace=ns)))
        items = [(f"b{i}", value) for i in range(100)]
        rows.append(_measure("store_many x100", phase, 100, lambda i: mem.store_many(
            items, source=source, namespace=ns)))
        keys = [k for k, _ in items]
        rows.append(_measure("retrieve_many x100", phase, 100, lambda i: mem.retrieve_many(
            keys, source=source, namespace=ns)))
    finally:
        mem.clear(source=source, namespace=ns, confirm=True)
    return [{**r, "source": source} for r in rows]


def _measure(op: str, seconds: float, per_call: int, fn: Callable[[int], Any]
             ) -> dict[str, Any]:
    fn(0)  # warm up (routing tables, connections)
    latencies: list[float] = []
    end = time.perf_counter() + seconds
    i = 0
    start = time.perf_counter()
    while time.perf_counter() < end:
        t = time.perf_counter()
        fn(i)
        latencies.append(time.perf_counter() - t)
        i += 1
    elapsed = time.perf_counter() - start
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    return {"op": op, "calls": len(latencies),
            "records_per_s": len(latencies) * per_call / elapsed,
            "p50_ms": statistics.median(latencies) * 1000, "p99_ms": p99 * 1000}
