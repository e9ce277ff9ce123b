"""Prometheus metrics: cheap accumulators in each process, one collector that renders them.

Core types: `OpStats` (counts by op and outcome plus a latency histogram, a few dict
updates per batch, JSON-safe snapshots), `ClusterCollector` (turns a cluster report —
what the manager gathers from every shard — into metric families at scrape time) and, on
the client side, `ClientStats` (one memory surface's `OpStats` per source, fed once per
surface call by `MemorySurface`) with the process's `ClientRegistry`, which
`start_metrics_server(port)` serves as `memcluster_client_*`.

Why a custom collector instead of prometheus-client's global Counters in every actor:
shards live in other processes, so their numbers must travel to the manager anyway; a
scrape-time collector renders exactly what the manager last gathered, keeps label values
bounded (source, shard id, op, outcome, state: never keys or user data) and costs the
data path nothing but `OpStats.observe`.

The client registry holds each surface weakly (a `weakref.finalize`), so metrics never
keep a `ClusterMemory` or `MemoryManager` alive; when one is collected, its counts move to
the registry's retired totals, so the process's counters never go backwards (a per-surface
label would instead grow without bound in a process that opens many clients).
"""

from __future__ import annotations

import bisect
import queue
import threading
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.registry import Collector

from memcluster.errors import MemclusterError

BUCKETS: tuple[float, ...] = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                              0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SHARD_STATES = ("serving", "recovering", "failed", "stopped")
_bisect = bisect.bisect_left


class OpStats:
    """Counts by (op, outcome) and a latency histogram by op; thread-safe, picklable snapshot."""

    __slots__ = ("_counts", "_hist", "_lock")

    def __init__(self) -> None:
        self._counts: dict[tuple[str, str], int] = {}
        self._hist: dict[str, list[float]] = {}  # op -> bucket counts + [sum, count]
        self._lock = threading.Lock()

    def observe(self, op: str, outcome: str, seconds: float, n: int = 1) -> None:
        """Record `n` operations of kind `op` that took `seconds` in all (one batch)."""
        slot = _bisect(BUCKETS, seconds / n if n > 1 else seconds)
        key = (op, outcome)
        with self._lock:
            counts = self._counts
            counts[key] = counts.get(key, 0) + n
            hist = self._hist.get(op)
            if hist is None:
                hist = self._hist[op] = [0.0] * (len(BUCKETS) + 3)
            hist[slot] += n  # slot len(BUCKETS) is +Inf only
            hist[-2] += seconds
            hist[-1] += n

    def snapshot(self) -> dict[str, Any]:
        """JSON-safe plain data: {"counts": {op: {outcome: n}}, "hist": {op: [bucket
        counts..., sum, count]}}. Nested by op rather than keyed by (op, outcome) tuples,
        so a status that carries it can be `json.dumps`ed as it is."""
        with self._lock:
            counts: dict[str, dict[str, int]] = {}
            for (op, outcome), n in self._counts.items():
                counts.setdefault(op, {})[outcome] = n
            return {"counts": counts, "hist": {op: list(v) for op, v in self._hist.items()}}

    @staticmethod
    def merge(snapshots: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
        """Sum several snapshots (e.g. every shard of one source)."""
        counts: dict[str, dict[str, int]] = {}
        hist: dict[str, list[float]] = {}
        for snap in snapshots:
            for op, outcomes in snap.get("counts", {}).items():
                acc_counts = counts.setdefault(op, {})
                for outcome, n in outcomes.items():
                    acc_counts[outcome] = acc_counts.get(outcome, 0) + n
            for op, values in snap.get("hist", {}).items():
                acc = hist.setdefault(op, [0.0] * len(values))
                for i, v in enumerate(values):
                    acc[i] += v
        return {"counts": counts, "hist": hist}

    @staticmethod
    def total(snapshot: Mapping[str, Any] | None, op: str | None = None, *,
              failed: bool = False) -> int:
        """How many operations a snapshot counts: of `op` (None: every op), only those
        whose outcome was not "ok" with `failed`."""
        counts = (snapshot or {}).get("counts", {})
        ops = counts.values() if op is None else [counts.get(op, {})]
        return sum(n for outcomes in ops for outcome, n in outcomes.items()
                   if not (failed and outcome == "ok"))


def _histogram_buckets(values: list[float]) -> list[tuple[str, float]]:
    out, running = [], 0.0
    for bound, n in zip(BUCKETS, values, strict=False):
        running += n
        out.append((repr(bound), running))
    running += values[len(BUCKETS)]
    out.append(("+Inf", running))
    return out


def op_families(prefix: str, stats_by_source: Mapping[str, Mapping[str, Any]],
                ) -> list[CounterMetricFamily | HistogramMetricFamily]:
    """Operation counters and latency histograms for `{source: OpStats snapshot}`."""
    ops = CounterMetricFamily(f"{prefix}_operations", "Operations by source, op and outcome.",
                              labels=["source", "op", "outcome"])
    latency = HistogramMetricFamily(f"{prefix}_operation_duration_seconds",
                                    "Operation latency by source and op.", labels=["source", "op"])
    for source, snap in sorted(stats_by_source.items()):
        for op, outcomes in sorted(snap.get("counts", {}).items()):
            for outcome, n in sorted(outcomes.items()):
                ops.add_metric([source, op, outcome], n)
        for op, values in sorted(snap.get("hist", {}).items()):
            latency.add_metric([source, op], _histogram_buckets(values), sum_value=values[-2])
    return [ops, latency]


class ClusterCollector(Collector):
    """Renders a cluster report at scrape time.

    The report is a dict: {"epoch": int, "sources": {name: {"ring_version": int,
    "restarts": int, "replication_failures": int, "shards": {shard_id: {"state": str,
    "records": int, "bytes": int, "hydration": float 0..1, "ops": OpStats snapshot}}}}}.
    """

    def __init__(self, report: Callable[[], Mapping[str, Any]]) -> None:
        self._report = report

    def collect(self) -> Iterable[Any]:
        report = self._report()
        sources: Mapping[str, Any] = report.get("sources", {})
        records = GaugeMetricFamily("memcluster_shard_records", "Live records held by a shard.",
                                    labels=["source", "shard"])
        size = GaugeMetricFamily("memcluster_shard_bytes", "Encoded bytes held by a shard.",
                                 labels=["source", "shard"])
        state = GaugeMetricFamily("memcluster_shard_state",
                                  "1 for the shard's current state, 0 for the others.",
                                  labels=["source", "shard", "state"])
        hydration = GaugeMetricFamily("memcluster_hydration_progress_ratio",
                                      "Fraction of keys a recovering shard has copied (1 = done).",
                                      labels=["source", "shard"])
        restarts = CounterMetricFamily("memcluster_supervisor_restarts",
                                       "Shard restarts made by the supervisor.", labels=["source"])
        repl = CounterMetricFamily("memcluster_replication_failures",
                                   "Replica writes that failed.", labels=["source"])
        ring = GaugeMetricFamily("memcluster_ring_version", "Current ring version.",
                                 labels=["source"])
        evictions = CounterMetricFamily("memcluster_evictions",
                                        "Records a bounded shard evicted to make room.",
                                        labels=["source", "shard"])
        domains = GaugeMetricFamily("memcluster_failure_domains",
                                    "Failure domains a source's shards run in.",
                                    labels=["source"])
        domains_ok = GaugeMetricFamily("memcluster_failure_domains_ok",
                                       "1 if every key's replicas sit in distinct failure "
                                       "domains, 0 if fewer domains than replicas.",
                                       labels=["source"])
        op_stats: dict[str, Any] = {}
        for source, info in sorted(sources.items()):
            ring.add_metric([source], info.get("ring_version", 0))
            domains.add_metric([source], info.get("failure_domains", 0))
            domains_ok.add_metric([source], 1.0 if info.get("domains_ok", True) else 0.0)
            restarts.add_metric([source], info.get("restarts", 0))
            repl.add_metric([source], info.get("replication_failures", 0))
            shard_ops = []
            for shard, sh in sorted(info.get("shards", {}).items()):
                records.add_metric([source, shard], sh.get("records", 0))
                if sh.get("bytes") is not None:     # a backend that counts its bytes
                    size.add_metric([source, shard], sh["bytes"])
                evictions.add_metric([source, shard], sh.get("evictions") or 0)
                hydration.add_metric([source, shard], sh.get("hydration", 1.0))
                for s in SHARD_STATES:
                    state.add_metric([source, shard, s], 1.0 if sh.get("state") == s else 0.0)
                if sh.get("ops"):
                    shard_ops.append(sh["ops"])
            op_stats[source] = OpStats.merge(shard_ops)
        epoch = GaugeMetricFamily("memcluster_manager_epoch", "Fencing epoch of the leader.")
        epoch.add_metric([], report.get("epoch", 0))
        yield from op_families("memcluster", op_stats)
        yield from (records, size, state, hydration, restarts, repl, ring, evictions,
                    domains, domains_ok, epoch)


class ClientStats:
    """One memory surface's client-side latency: an `OpStats` per source.

    `record` is called once per surface call (one op, or one `*_many` batch), never per
    op of a batch in the common case: a batch whose ops all succeeded is one `observe`.
    """

    __slots__ = ("__weakref__", "_by_source")

    def __init__(self) -> None:
        self._by_source: dict[str, OpStats] = {}

    def record(self, source: str, kind: str, n: int, outcome: Any, seconds: float) -> None:
        """Count `n` ops of `kind` on `source` that took `seconds` in all; `outcome` is the
        exception the call raised, or its results (per-op errors are counted by class)."""
        stats = self._by_source.get(source)
        if stats is None:
            stats = self._by_source.setdefault(source, OpStats())
        if isinstance(outcome, BaseException):
            stats.observe(kind, _outcome(outcome), seconds, n)
            return
        for result in outcome:
            if isinstance(result, BaseException):
                break
        else:  # the common case: every op succeeded
            stats.observe(kind, "ok", seconds, n)
            return
        failed = [r for r in outcome if isinstance(r, BaseException)]
        groups: dict[str, int] = {}
        for error in failed:
            name = _outcome(error)
            groups[name] = groups.get(name, 0) + 1
        if len(failed) < n:
            groups["ok"] = n - len(failed)
        for name, count in groups.items():
            stats.observe(kind, name, seconds * count / n, count)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """{source: OpStats snapshot}."""
        return {src: stats.snapshot() for src, stats in list(self._by_source.items())}


def _outcome(error: BaseException) -> str:
    """A bounded label: our error's class name, else "error" (never a message)."""
    return type(error).__name__ if isinstance(error, MemclusterError) else "error"


class ClientRegistry:
    """Every live surface's `ClientStats` (surfaces held weakly) plus the totals of those
    already collected; `snapshot()` sums them per source for the scrape."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._live: set[ClientStats] = set()
        self._retired: dict[str, dict[str, Any]] = {}
        self._gone: queue.SimpleQueue[ClientStats] = queue.SimpleQueue()

    def track(self, owner: object) -> ClientStats:
        """A new `ClientStats` for `owner`, counted until `owner` is garbage collected."""
        stats = ClientStats()
        with self._lock:
            self._live.add(stats)
        # The callback may run inside any allocation (cyclic GC), even under our lock:
        # it only enqueues (SimpleQueue.put is reentrant); the next snapshot folds it in.
        weakref.finalize(owner, self._gone.put, stats).atexit = False
        return stats

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """{source: OpStats snapshot} over every surface of this process, live or gone."""
        with self._lock:
            while True:
                try:
                    gone = self._gone.get_nowait()
                except queue.Empty:
                    break
                self._live.discard(gone)
                self._retired = _merge_sources([self._retired, gone.snapshot()])
            live = list(self._live)
            retired = self._retired
        return _merge_sources([retired, *(stats.snapshot() for stats in live)])


def _merge_sources(parts: Iterable[Mapping[str, Mapping[str, Any]]]) -> dict[str, Any]:
    by_source: dict[str, list[Mapping[str, Any]]] = {}
    for part in parts:
        for source, snap in part.items():
            by_source.setdefault(source, []).append(snap)
    return {source: OpStats.merge(snaps) for source, snaps in by_source.items()}


CLIENTS = ClientRegistry()
"""The process's client-side stats: every MemoryManager and ClusterMemory registers here."""


class _ClientCollector(Collector):
    def __init__(self, stats: Callable[[], Mapping[str, Mapping[str, Any]]]) -> None:
        self._stats = stats

    def collect(self) -> Iterable[Any]:
        yield from op_families("memcluster_client", self._stats())


def serve(collector: Collector, port: int, addr: str = "0.0.0.0") -> Any:
    """Serve `/metrics` for `collector` on its own registry; returns the server (call shutdown)."""
    registry = CollectorRegistry()
    registry.register(collector)
    server, _thread = start_http_server(port, addr=addr, registry=registry)
    return server


def start_metrics_server(port: int, addr: str = "127.0.0.1", *,
                         stats: Callable[[], Mapping[str, Mapping[str, Any]]] | None = None
                         ) -> Any:
    """Serve this process's client-side latency as `memcluster_client_*` on `/metrics`.

    By default, what every `MemoryManager` and `ClusterMemory` of the process measured
    (`CLIENTS`); `stats` gives another `{source: OpStats snapshot}` source. Binds to
    loopback unless `addr` says otherwise. Returns the server (call `shutdown()`).
    """
    return serve(_ClientCollector(stats or CLIENTS.snapshot), port, addr)
