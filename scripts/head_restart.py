"""What survives a Ray head restart with GCS fault tolerance, measured on this machine.

Run: .venv/bin/python scripts/head_restart.py   (about a minute; not part of the test suite)

It starts a private redis-server, a Ray head with GCS fault tolerance on it
(`RAY_REDIS_ADDRESS`, its own storage namespace) and 0 CPUs (as the Helm chart does), and
a worker node with its own temp dir; starts a memcluster cluster (manager and shards land
on the worker: the head has no CPU), stores records, then kills every process of the head
(`SIGKILL`, like a lost pod) and starts a new head on the same port and Redis. It reports,
as JSON: whether the worker's raylet re-registered, whether the detached manager and
shard actors are the same processes, whether a client could read every record and write
new ones after the restart, and the seconds each took. Only processes it started are
killed (found by its private temp dirs), never a broad `ray stop`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RAY = str(Path(sys.executable).with_name("ray"))


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _procs(fragment: str) -> list[int]:
    import psutil

    out = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        if fragment in " ".join(p.info.get("cmdline") or []) and p.pid != os.getpid():
            out.append(p.pid)
    return out


def _kill(fragment: str) -> int:
    pids = _procs(fragment)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return len(pids)


# `ray start --head` refuses an address that a local process names as its GCS; on one
# machine the worker's raylet does (on Kubernetes the head is a pod of its own), so the
# new head skips that local check (and only it).
_RAY_CLI = ("import sys, ray._private.services as s; s.find_gcs_addresses = lambda: []; "
            "from ray.scripts.scripts import main; sys.argv[0] = 'ray'; main()")


def _ray(args: list[str], env: dict[str, str]) -> None:
    cmd = [sys.executable, "-c", _RAY_CLI, *args] if "--head" in args else [RAY, *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"ray {args[0]} {args[1]} failed: "
                           f"{(proc.stderr or proc.stdout).strip().splitlines()[-3:]}")


def main() -> int:
    base = Path(tempfile.mkdtemp(prefix="mc-head-"))
    head_tmp, worker_tmp = str(base / "head"), str(base / "worker")
    redis_port, gcs_port = _port(), _port()
    subprocess.run(["redis-server", "--port", str(redis_port), "--save", "", "--appendonly",
                    "no", "--daemonize", "yes", "--dir", str(base), "--pidfile",
                    str(base / "redis.pid")], check=True, stdout=subprocess.DEVNULL)
    token = base / "token"
    token.write_text(os.urandom(16).hex())
    env = {**os.environ, "RAY_REDIS_ADDRESS": f"127.0.0.1:{redis_port}",
           "RAY_external_storage_namespace": "mc-head-test", "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN_PATH": str(token), "RAY_USAGE_STATS_ENABLED": "0",
           "RAY_gcs_rpc_server_reconnect_timeout_s": "120"}
    head = ["start", "--head", "--port", str(gcs_port), "--num-cpus", "0",
            "--include-dashboard=false", "--disable-usage-stats", "--temp-dir", head_tmp]
    report: dict[str, object] = {}
    try:
        _ray(head, env)
        _ray(["start", "--address", f"127.0.0.1:{gcs_port}", "--num-cpus", "2",
              "--temp-dir", worker_tmp], env)
        code = _client(gcs_port, redis_port, env, "before")
        report["before"] = json.loads(code)
        killed_at = time.monotonic()
        report["head_processes_killed"] = _kill(head_tmp)
        for attempt in range(30):            # until the old head's port is free again
            time.sleep(1)
            try:
                _ray(head, env)
                break
            except RuntimeError as exc:
                if attempt == 29 or "already running" not in str(exc):
                    raise
        report["head_restarted_s"] = round(time.monotonic() - killed_at, 1)
        report["after"] = json.loads(_client(gcs_port, redis_port, env, "after"))
        report["after_s"] = round(time.monotonic() - killed_at, 1)
        before, after = report["before"], report["after"]
        report["same_manager_process"] = before["manager"] == after["manager"]
        report["same_shard_processes"] = before["shard_pids"] == after["shard_pids"]
        report["records_readable"] = after["read"] == before["stored"]
    except Exception as exc:  # the report says how far it got
        report["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        _kill(worker_tmp)
        _kill(head_tmp)
        pid = (base / "redis.pid").read_text().strip() if (base / "redis.pid").exists() else ""
        if pid:
            os.kill(int(pid), signal.SIGTERM)
    print(json.dumps(report, indent=2))
    return 0 if report.get("records_readable") else 1


CLIENT = r'''
import json, sys, time, ray, memcluster as mc
from memcluster.cluster import names
phase, gcs, redis_port = sys.argv[1], sys.argv[2], sys.argv[3]
for attempt in range(120):
    try:
        ray.init(address=f"127.0.0.1:{gcs}", namespace=names.ray_namespace("hr"),
                 log_to_driver=False, configure_logging=False)
        break
    except Exception:
        time.sleep(1)
spec = {"name": "hr", "metrics_port": None, "sources": [
    {"name": "cache", "backend": "memory", "default": True, "shards": 2, "replicas": 2}]}
if phase == "before":
    h = mc.start_cluster(spec, name="hr", redis_url=f"redis://127.0.0.1:{redis_port}/1")
mem = None
for attempt in range(120):
    try:
        mem = mc.connect("hr")
        break
    except Exception:
        time.sleep(1)
keys = [f"k{i}" for i in range(100)]
out = {}
if phase == "before":
    mem.store_many([(k, i) for i, k in enumerate(keys)])
    out["stored"] = 100
else:
    deadline = time.time() + 120
    while True:
        try:
            out["read"] = len(mem.retrieve_many(keys))
            mem.store("after", 1)
            out["wrote_after"] = True
            break
        except Exception as exc:
            if time.time() > deadline:
                out["read_error"] = type(exc).__name__
                break
            time.sleep(1)
st = mem.status()
out["manager"] = st["leader"]          # a restarted manager has a new holder name
out["shard_pids"] = {sid: s.get("pid") for sid, s in sorted(st["shards"].items())}
out["epoch"] = st["epoch"]
print(json.dumps(out))
'''


def _client(gcs_port: int, redis_port: int, env: dict[str, str], phase: str) -> str:
    proc = subprocess.run([sys.executable, "-c", CLIENT, phase, str(gcs_port),
                           str(redis_port)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=400)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    return proc.stdout.strip().splitlines()[-1]


if __name__ == "__main__":
    sys.exit(main())
