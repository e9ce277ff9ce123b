"""The agent-fleet workload alone: K async agents (75% retrieve / 20% store / 5% search)
against memcluster, redis-py and LangGraph's InMemoryStore, beside the dict-actor baseline.

Run: python benchmarks/fleet.py [--agents 1,8,64,256] [--seconds S] [--json PATH]
(see benchmarks/cluster_ops.py for the options; this is its fleet and peers sections).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: the repo root must be importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.cluster_ops import main

if __name__ == "__main__":
    main(sections=("fleet", "peers"))
