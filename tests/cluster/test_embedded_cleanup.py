"""The embedded mode never leaves a process behind (issue 15, item 10): a `start_cluster`
that fails stops the Ray head and redis-server it launched, and `memcluster down` stops
the recorded processes even when the cluster's Redis is gone, noting in one line what it
could not clean. Every step is a separate process with a private state dir."""

from __future__ import annotations

import json
import os
import signal
import sys
import textwrap
from pathlib import Path

import psutil
import pytest

from tests.cluster.test_embedded import run, started_pids

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def _ours(name: str) -> list[int]:
    """Processes launched for cluster `name`, found by its private temp dir prefixes."""
    marks = (f"mc-{name[:12]}-", f"memcluster-{name}-redis-")
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = " ".join(proc.info.get("cmdline") or [])
        if any(m in cmdline for m in marks) and proc.pid != os.getpid():
            found.append(proc.pid)
    return found


@pytest.fixture
def env(tmp_path):
    out = {**os.environ, "MEMCLUSTER_STATE_DIR": str(tmp_path / "state"),
           "MEMCLUSTER_CLUSTER": ""}
    for var in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH"):
        out.pop(var, None)
    return out


def test_a_failed_embedded_start_stops_the_head_and_redis_it_launched(env, tmp_path):
    name = f"fail{os.getpid()}"
    try:
        started = run(env, sys.executable, "-c", textwrap.dedent(f"""
            import memcluster as mc
            cfg = {{"sources": [{{"name": "cache", "backend": "memory", "shards": 2}}],
                   "metrics_port": None}}
            try:
                mc.start_cluster(cfg, name={name!r}, timeout=0.001)
            except mc.errors.MemclusterError as exc:
                print("failed:", type(exc).__name__)
        """))
        assert started.returncode == 0, started.stderr[-3000:]
        assert "failed:" in started.stdout
        assert not (tmp_path / "state" / f"{name}.json").exists()
        assert _ours(name) == []
    finally:
        for pid in _ours(name):
            psutil.Process(pid).kill()


def test_down_stops_every_recorded_process_when_redis_is_gone(env, tmp_path):
    script = Path(sys.executable).with_name("memcluster")
    name = f"gone{os.getpid()}"
    state_file = tmp_path / "state" / f"{name}.json"
    try:
        up = run(env, str(script), "up", "--name", name, "--json")
        assert up.returncode == 0, up.stderr[-3000:]
        state = json.loads(state_file.read_text())
        os.kill(state["redis_pid"], signal.SIGKILL)
        down = run(env, str(script), "--cluster", name, "down")
        assert down.returncode == 0, down.stderr[-3000:]
        assert down.stderr.count("\n") == 1 and down.stderr.startswith("memcluster: note:")
        assert "Redis keys" in down.stderr and "Traceback" not in down.stderr
        assert not state_file.exists()
        assert started_pids(state) == [] and _ours(name) == []
    finally:
        for pid in _ours(name):
            psutil.Process(pid).kill()
