"""What the manager reports: failure-domain placement per source, and the metrics report.

Core functions, pure over the manager's state: `placement_report(layouts, shard_nodes,
nodes, policy)` (per source, `assignment.domain_report` plus each shard's node and logical
domain, for `status`) and `metrics_report(status, layouts, restarts, epoch)` (what
`memcluster.metrics.ClusterCollector` renders at scrape time).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from memcluster.cluster.control.assignment import domain_report
from memcluster.cluster.control.layout import Layout
from memcluster.cluster.control.runtime import Node
from memcluster.config import PlacementPolicy


def placement_report(layouts: Mapping[str, Layout], shard_nodes: Mapping[str, str],
                     nodes: Iterable[Node], policy: PlacementPolicy) -> dict[str, Any]:
    """Per source: the domain report, and shard id -> {node, domain}."""
    nodes = list(nodes)
    out: dict[str, Any] = {}
    for name, lay in layouts.items():
        ring = lay.placement.ring
        placed = {sid: node for sid, node in shard_nodes.items() if sid in ring.domains}
        rep = domain_report(ring.domains, placed, nodes, policy, lay.placement.replicas,
                            node_local=lay.node_local)
        rep["shards"] = {sid: {"node": placed.get(sid), "domain": ring.domains[sid]}
                         for sid in ring.shard_ids}
        out[name] = rep
    return out


def metrics_report(status: Mapping[str, Any], layouts: Mapping[str, Layout],
                   restarts: Mapping[str, int], epoch: int) -> dict[str, Any]:
    """The report `ClusterCollector` renders, from a manager status."""
    from memcluster.metrics import OpStats

    sources: dict[str, Any] = {}
    for name, lay in layouts.items():
        shards = {}
        failures = 0
        for sid in lay.placement.ring.shard_ids:
            st = status["shards"].get(sid) or {"error": "missing"}
            if "error" in st:
                shards[sid] = {"state": "failed"}
                continue
            shards[sid] = {k: st.get(k) for k in ("state", "records", "bytes", "evictions",
                                                  "hydration", "ops")}
            failures += OpStats.total(st.get("ops"), "replicate", failed=True)
        placement = status.get("placement", {}).get(name, {})
        sources[name] = {"ring_version": lay.placement.ring.version,
                         "restarts": restarts.get(name, 0),
                         "replication_failures": failures, "shards": shards,
                         "domains_ok": bool(placement.get("ok", True)),
                         "failure_domains": placement.get("physical_domains", 0)}
    return {"epoch": epoch, "sources": sources}


__all__ = ["metrics_report", "placement_report"]
