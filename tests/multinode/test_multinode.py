"""Placement across failure domains, node loss and new nodes on several raylets.

The scenarios run in a process of their own (`python -m tests.multinode.scenarios`),
because a process joins one Ray and the rest of the suite shares a single-node one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.cluster, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]


def test_placement_node_loss_and_rebalance_on_four_nodes(redis_url):
    proc = subprocess.run([sys.executable, "-m", "tests.multinode.scenarios"], cwd=ROOT,
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "RAY_DEDUP_LOGS": "0"})
    lines = proc.stdout.splitlines()
    rows = [json.loads(line[4:]) for line in lines if line.startswith("ROW ")]
    for row in rows:
        print(row)
    failed = [line for line in lines if line.startswith("FAILED ")]
    assert proc.returncode == 0 and not failed, \
        "\n".join(failed) + "\n" + proc.stdout[-3000:] + proc.stderr[-3000:]
    assert {r["scenario"] for r in rows} == {
        "placement", "node loss (manager's node)", "node added + rebalance"}
