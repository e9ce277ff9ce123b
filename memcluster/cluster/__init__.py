"""The cluster: every source split into replicated shard actors on Ray, run by a manager.

Planes, one sub-package each (arrows point one way: control -> data, control -> coord):
  * `data/` — the data path: ring, placement, router, shard actor and its handle, wire
    format, client, coalescer.
  * `control/` — the manager actor and what it runs: supervision tree, supervisor,
    rebalance, handoff, hydration, ring-switch recovery.
  * `coord/` — Redis recipes: lease, election, ring store, membership, hints.
Beside them: `names` (how actors and namespaces are spelled), `session` (joining Ray,
calling the manager), `embedded` (local Ray head + private redis-server), `launcher`
(`start_cluster`, `ClusterHandle`, `stop_cluster`) and `retry`.

Public entry points: `start_cluster(config, name=..., redis_url=None, ray_address=None)`
-> `ClusterHandle`, and `connect(name)` -> `ClusterMemory`. Ray is imported only when a
cluster is actually started or joined.
"""

from memcluster.cluster.data.client import ClusterMemory, connect
from memcluster.cluster.launcher import ClusterHandle, start_cluster, stop_cluster

__all__ = ["ClusterHandle", "ClusterMemory", "connect", "start_cluster", "stop_cluster"]
