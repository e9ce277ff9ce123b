"""Multi-node tests on `ray.cluster_utils.Cluster` (see `scenarios.py`)."""
