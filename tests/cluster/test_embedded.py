"""The embedded mode as a user meets it: `memcluster up` in one process starts a local Ray
head and a private redis-server that outlive it; later processes attach by name (the
README's `memcluster demo`, `mc.connect`); `memcluster down` from another process stops
exactly what was started. Every step is a separate process with a private state dir."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest

pytestmark = [pytest.mark.cluster, pytest.mark.slow]
NAME = "memcluster-demo"   # the name `memcluster demo` looks for first


def run(env, *argv, timeout=180):
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)


def started_pids(state: dict) -> list[int]:
    """The processes the embedded mode started, found by its private paths."""
    marks = [m for m in (state.get("ray_temp_dir"), state.get("redis_dir")) if m]
    pids = [state["redis_pid"]] if state.get("redis_pid") else []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = " ".join(proc.info.get("cmdline") or [])
        if any(m in cmdline for m in marks):
            pids.append(proc.pid)
    return [p for p in pids if psutil.pid_exists(p)]


def test_up_attach_demo_down_across_processes(tmp_path):
    script = Path(sys.executable).with_name("memcluster")
    env = {**os.environ, "MEMCLUSTER_STATE_DIR": str(tmp_path / "state"),
           "MEMCLUSTER_CLUSTER": ""}
    for var in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH"):
        env.pop(var, None)
    state_file = tmp_path / "state" / f"{NAME}.json"
    try:
        up = run(env, str(script), "up", "--name", NAME, "--json")
        assert up.returncode == 0, up.stderr[-3000:]
        state = json.loads(state_file.read_text())
        assert state["ray_address"] and not state["ray_address"].endswith(":6379")
        assert started_pids(state), "nothing recorded as started"
        report = json.loads(up.stdout)["status"]
        assert report["sources"]["cache"]["shards"] == 4
        assert report["sources"]["persistent"]["backend"] == "sqlite"

        attach = run(env, sys.executable, "-c", textwrap.dedent(f"""
            import memcluster as mc
            mem = mc.connect({NAME!r})
            mem.store("greeting", {{"from": "process 2"}}, source="persistent", namespace="x")
            print(mem.count(source="persistent", namespace="x"))
        """))
        assert attach.returncode == 0, attach.stderr[-3000:]
        assert attach.stdout.strip().splitlines()[-1] == "1"

        demo = run(env, str(script), "demo", "--agents", "3", "--facts", "2")
        assert demo.returncode == 0, demo.stderr[-3000:]
        assert "as Ray tasks on cluster 'memcluster-demo'" in demo.stdout
        assert "none of the others'" in demo.stdout and "3 of 3 agents' notes" in demo.stdout

        status = run(env, str(script), "--cluster", NAME, "status", "--json")
        assert status.returncode == 0, status.stderr[-3000:]
        shards = json.loads(status.stdout)["shards"]
        # the one fact, on its 2 replicas (the default persistent source keeps N=2)
        assert sum(s["records"] for k, s in shards.items() if k.startswith("persistent")) == 2
        assert state_file.exists(), "the attached demo must not stop a cluster it did not start"

        down = run(env, str(script), "--cluster", NAME, "down")
        assert down.returncode == 0, down.stderr[-3000:]
        assert not state_file.exists()
        assert started_pids(state) == []
        again = run(env, str(script), "--cluster", NAME, "status")
        assert again.returncode == 1 and again.stderr.count("\n") == 1
        assert f"no cluster named {NAME!r}" in again.stderr
    finally:
        if state_file.exists():  # a failed step: stop exactly what was started, by pid
            state = json.loads(state_file.read_text())
            for pid in started_pids(state):
                psutil.Process(pid).kill()
