"""A fleet of agents on Ray sharing one memcluster cluster, across two separate Ray jobs.

    python examples/ray_fleet.py                                  # embedded Ray and Redis
    python examples/ray_fleet.py --redis-url redis://127.0.0.1:6379/0 --ray-address auto

What happens:

1. `mc.start_cluster(config, name=...)` starts the cluster: with no addresses, a local
   Ray head and a private redis-server as daemons (the embedded mode), so the cluster
   outlives this process and any job can attach to it by name.
2. Job 1, a separate Python process (its own Ray driver, so its own Ray job), attaches
   with `mc.connect(name)` alone: the name is enough to find the cluster's Ray (and, in
   the embedded mode, its private auth token). It runs several agent tasks in parallel;
   each calls `mc.connect(name)` and writes what it "learned" to the shared namespace
   "fleet" and notes to its own namespace.
3. Job 2, another process, runs new agent tasks that read and search job 1's memories:
   memory outlives the job that wrote it, and every agent on every node sees it.
4. The cluster is stopped (actors, Redis keys, the embedded daemons), even on failure.

Agents here are plain Ray tasks with a scripted "skill" so the example runs offline; a
real agent would call an LLM with `memory.tools(...)` as in examples/tool_loop.py.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

import memcluster as mc

TOPICS = ("ray", "redis", "raft", "paxos", "gossip", "crdt")


def cluster_config(name: str) -> dict[str, Any]:
    return {"name": name, "metrics_port": None, "sources": [
        {"name": "shared", "backend": "memory", "default": True, "shards": 2, "replicas": 2,
         "description": "What the fleet has learned"}]}


# ---- the agents (run inside Ray tasks) -----------------------------------------------------


def learn(cluster: str, agent: int) -> dict[str, Any]:
    """Job 1's agent: store a finding in the shared namespace and a note in its own."""
    memory = mc.connect(cluster)
    topic = TOPICS[agent % len(TOPICS)]
    memory.store(f"finding:{topic}", {"topic": topic, "by": f"agent-{agent}",
                                      "text": f"agent {agent} studied {topic}"},
                 namespace="fleet", metadata={"tags": ["finding", topic]})
    memory.store("progress", {"done": [topic]}, namespace=f"agent-{agent}")
    return {"agent": agent, "stored": topic}


def review(cluster: str, agent: int) -> dict[str, Any]:
    """Job 2's agent: find what job 1 learned, through the LLM tools as an agent would."""
    memory = mc.connect(cluster)
    topic = TOPICS[agent % len(TOPICS)]
    got = memory.call_tool("memory_retrieve", {"key": f"finding:{topic}"}, namespace="fleet")
    found = memory.call_tool("memory_search", {"tags": ["finding"], "limit": 100},
                             namespace="fleet")
    return {"agent": agent, "topic": topic, "retrieved": bool(got.get("found")),
            "by": (got.get("record") or {}).get("value", {}).get("by"),
            "findings": found.get("count", 0)}


def run_job(cluster: str, phase: str, agents: int, ray_address: str | None
            ) -> list[dict[str, Any]]:
    """One Ray job: attach by the cluster's name, run `agents` tasks of `phase` in parallel."""
    import ray

    memory = mc.connect(cluster, ray_address=ray_address)  # also starts this Ray driver
    try:
        task = ray.remote(num_cpus=0)(learn if phase == "learn" else review)
        rows = ray.get([task.remote(cluster, i) for i in range(agents)], timeout=60)
        job = ray.get_runtime_context().get_job_id()
        shared = memory.count(namespace="fleet")
        return [{**row, "job": job, "shared": shared} for row in rows]
    finally:
        memory.close()
        ray.shutdown()


# ---- the driver ----------------------------------------------------------------------------


def spawn_job(cluster: str, phase: str, agents: int, ray_address: str | None
              ) -> list[dict[str, Any]]:
    """Run a job as a separate process (a separate Ray driver) and read its JSON result."""
    address = [] if ray_address is None else ["--ray-address", ray_address]
    done = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "job", "--name", cluster, "--phase", phase,
         "--agents", str(agents), *address],
        capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"job {phase} failed ({done.returncode}): {done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_fleet(name: str, agents: int, redis_url: str | None, ray_address: str | None) -> bool:
    import ray

    try:
        cluster = mc.start_cluster(cluster_config(name), name=name, redis_url=redis_url,
                                   ray_address=ray_address)
    except BaseException:
        from memcluster.cluster import stop_cluster

        stop_cluster(name)  # whatever the embedded mode had started before the failure
        raise
    try:
        print(f"cluster {name!r} up on Ray at {ray.get_runtime_context().gcs_address}")
        learned = spawn_job(name, "learn", agents, ray_address)
        for row in learned:
            print(f"  job {row['job']} agent-{row['agent']} stored finding:{row['stored']}")
        reviewed = spawn_job(name, "review", agents, ray_address)
        for row in reviewed:
            print(f"  job {row['job']} agent-{row['agent']} read finding:{row['topic']} "
                  f"by {row['by']}; sees {row['findings']} findings")
        expected = len({TOPICS[i % len(TOPICS)] for i in range(agents)})
        jobs = {row["job"] for row in learned} | {row["job"] for row in reviewed}
        print(f"  job {reviewed[0]['job']}'s driver counts {reviewed[0]['shared']} findings")
        ok = (len(jobs) == 2 and all(r["retrieved"] for r in reviewed)
              and all(r["findings"] == r["shared"] == expected for r in reviewed))
        print(f"{'OK' if ok else 'FAILED'}: {len(jobs)} jobs, {expected} shared findings")
        return ok
    finally:
        cluster.stop()
        print(f"cluster {name!r} stopped")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", nargs="?", choices=("fleet", "job"), default="fleet")
    parser.add_argument("--name", default=f"fleet-{os.getpid()}", help="cluster name")
    parser.add_argument("--agents", type=int, default=4)
    parser.add_argument("--redis-url", default=None, help="default: a private redis-server")
    parser.add_argument("--ray-address", default=None, help="default: a local Ray head")
    parser.add_argument("--phase", choices=("learn", "review"), help="(job mode)")
    args = parser.parse_args(argv)
    if args.mode == "job":
        rows = run_job(args.name, args.phase, args.agents, args.ray_address)
        print(json.dumps(rows))
        return 0
    return 0 if run_fleet(args.name, args.agents, args.redis_url, args.ray_address) else 1


if __name__ == "__main__":
    sys.exit(main())
