"""Prometheus metrics: cheap accumulators in each process, one collector that renders them.

Core types: `OpStats` (counts by op and outcome plus a latency histogram, a few dict
updates per batch, picklable snapshots) and `ClusterCollector` (turns a cluster report —
what the manager gathers from every shard — into metric families at scrape time).

Why a custom collector instead of prometheus-client's global Counters in every actor:
shards live in other processes, so their numbers must travel to the manager anyway; a
scrape-time collector renders exactly what the manager last gathered, keeps label values
bounded (source, shard id, op, outcome, state: never keys or user data) and costs the
data path nothing but `OpStats.observe`.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.registry import Collector

BUCKETS: tuple[float, ...] = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                              0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SHARD_STATES = ("serving", "recovering", "failed", "stopped")


class OpStats:
    """Counts by (op, outcome) and a latency histogram by op; thread-safe, picklable snapshot."""

    __slots__ = ("_counts", "_hist", "_lock")

    def __init__(self) -> None:
        self._counts: dict[tuple[str, str], int] = {}
        self._hist: dict[str, list[float]] = {}  # op -> bucket counts + [sum, count]
        self._lock = threading.Lock()

    def observe(self, op: str, outcome: str, seconds: float, n: int = 1) -> None:
        """Record `n` operations of kind `op` that took `seconds` in all (one batch)."""
        per_op = seconds / n if n > 1 else seconds
        slot = bisect.bisect_left(BUCKETS, per_op)
        with self._lock:
            key = (op, outcome)
            self._counts[key] = self._counts.get(key, 0) + n
            hist = self._hist.get(op)
            if hist is None:
                hist = self._hist[op] = [0.0] * (len(BUCKETS) + 3)
            hist[slot] += n  # slot len(BUCKETS) is +Inf only
            hist[-2] += seconds
            hist[-1] += n

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"counts": dict(self._counts),
                    "hist": {op: list(v) for op, v in self._hist.items()}}

    @staticmethod
    def merge(snapshots: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
        """Sum several snapshots (e.g. every shard of one source)."""
        counts: dict[tuple[str, str], int] = {}
        hist: dict[str, list[float]] = {}
        for snap in snapshots:
            for key, n in snap.get("counts", {}).items():
                counts[tuple(key)] = counts.get(tuple(key), 0) + n  # type: ignore[index]
            for op, values in snap.get("hist", {}).items():
                acc = hist.setdefault(op, [0.0] * len(values))
                for i, v in enumerate(values):
                    acc[i] += v
        return {"counts": counts, "hist": hist}


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
        for (op, outcome), n in sorted(snap.get("counts", {}).items()):
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
        op_stats: dict[str, Any] = {}
        for source, info in sorted(sources.items()):
            ring.add_metric([source], info.get("ring_version", 0))
            restarts.add_metric([source], info.get("restarts", 0))
            repl.add_metric([source], info.get("replication_failures", 0))
            shard_ops = []
            for shard, sh in sorted(info.get("shards", {}).items()):
                records.add_metric([source, shard], sh.get("records", 0))
                size.add_metric([source, shard], sh.get("bytes", 0))
                hydration.add_metric([source, shard], sh.get("hydration", 1.0))
                for s in SHARD_STATES:
                    state.add_metric([source, shard, s], 1.0 if sh.get("state") == s else 0.0)
                if sh.get("ops"):
                    shard_ops.append(sh["ops"])
            op_stats[source] = OpStats.merge(shard_ops)
        epoch = GaugeMetricFamily("memcluster_manager_epoch", "Fencing epoch of the leader.")
        epoch.add_metric([], report.get("epoch", 0))
        yield from op_families("memcluster", op_stats)
        yield from (records, size, state, hydration, restarts, repl, ring, epoch)


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


def start_metrics_server(port: int, stats: Callable[[], Mapping[str, Mapping[str, Any]]],
                         addr: str = "127.0.0.1") -> Any:
    """Expose client-side latency (`{source: OpStats snapshot}`) as memcluster_client_*."""
    return serve(_ClientCollector(stats), port, addr)
