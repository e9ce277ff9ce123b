"""The agent-fleet workload alone: K async agents (75% retrieve / 20% store / 5% search)
against memcluster, redis-py and LangGraph's InMemoryStore, beside the dict-actor baseline.

Run: python benchmarks/fleet.py [--agents 1,8,64,256] [--seconds S] [--json PATH]
(see benchmarks/cluster_ops.py for the options; this is its fleet and peers sections).
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from cluster_ops import main

if __name__ == "__main__":
    main(sections=("fleet", "peers"))
