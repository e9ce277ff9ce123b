"""The cluster: ring, shards, router, manager actor, client and the embedded launcher.

Public entry points: `start_cluster(config, name=..., redis_url=None, ray_address=None)`
-> `ClusterHandle`, and `connect(name)` -> `ClusterMemory`. Ray is imported only when a
cluster is actually started or joined.
"""

from memcluster.cluster.client import ClusterMemory, connect
from memcluster.cluster.embedded import ClusterHandle, start_cluster, stop_cluster

__all__ = ["ClusterHandle", "ClusterMemory", "connect", "start_cluster", "stop_cluster"]
