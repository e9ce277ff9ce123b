"""`memcluster demo`: several agents sharing memory through the LLM tools only.

Core pieces: `run_demo(surface)` (agents as threads on any surface), `run_demo_fleet(name)`
(agents as Ray tasks in separate worker processes against a cluster), `demo_cluster` (the
named cluster, else the embedded demo cluster started here and stopped at the end) and
`cmd_demo`, which prints a table of what each agent stored and found, and that none saw
another's memories.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from memcluster.cli.cluster import cluster_name, default_config
from memcluster.cli.data import open_surface
from memcluster.cli.output import ENV_CLUSTER, emit, table
from memcluster.config import memory_source
from memcluster.manager.memory_manager import MemoryManager
from memcluster.manager.surface import MemorySurface

DEMO_TOPICS = ("astronomy", "botany", "chemistry", "geology", "music", "poetry")
DEMO_BOARD = "demo/board"
DEMO_CLUSTER = "memcluster-demo"


def _demo_agent(mem: MemorySurface, index: int, agents: int, facts: int) -> dict[str, Any]:
    """One agent's session, through the LLM tools only, bound to its own namespace."""
    ns = f"demo/agent-{index}"
    topic = DEMO_TOPICS[index % len(DEMO_TOPICS)]
    errors: list[str] = []

    def call(name: str, **arguments: Any) -> dict[str, Any]:
        result = mem.call_tool(name, arguments, namespace=ns)
        if not result.get("ok"):
            errors.append(f"{name}: {result['error']['message']}")
        return result

    sources = [s["name"] for s in call("memory_list_sources").get("sources", [])]
    durable = next((s for s in sources if s != mem.default_source), mem.default_source)
    stored = 0
    for j in range(facts):
        stored += bool(call("memory_store", key=f"fact:{j}", memory_source=durable,
                            value={"text": f"{topic} note {j} by agent {index}",
                                   "marker": f"secret-{index}"},
                            tags=[topic, "fact"]).get("ok"))
    stored += bool(call("memory_store", key="scratch", value={"step": 1}, ttl=60).get("ok"))
    found = call("memory_search", query=topic, memory_source=durable).get("count", 0)
    tagged = call("memory_count", tags=[topic], memory_source=durable).get("count", 0)
    fact0 = call("memory_retrieve", key="fact:0", memory_source=durable)
    keys = call("memory_list_keys", memory_source=durable).get("keys", [])
    others = [f"secret-{k}" for k in range(agents) if k != index]
    leaked = sum(call("memory_search", query=o, memory_source=durable).get("count", 0)
                 for o in others)
    call("memory_delete", key="scratch")
    return {"agent": f"agent-{index}", "namespace": ns, "topic": topic, "stored": stored,
            "found": found, "tagged": tagged, "keys": len(keys),
            "retrieved": bool(fact0.get("found")), "isolated": leaked == 0,
            "errors": errors}


def run_demo(mem: MemorySurface, *, agents: int = 4, facts: int = 5) -> list[dict[str, Any]]:
    """Run `agents` threads that use memory only through `call_tool`; one row per agent."""
    rows: list[dict[str, Any] | None] = [None] * agents
    failures: list[BaseException] = []

    def work(i: int) -> None:
        try:
            rows[i] = _demo_agent(mem, i, agents, facts)
        except BaseException as exc:  # reported after join
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(i,), name=f"agent-{i}")
               for i in range(agents)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        raise failures[0]
    return [r for r in rows if r is not None]


def _demo_task(cluster: str, index: int, agents: int, facts: int) -> dict[str, Any]:
    """One demo agent as a Ray task: its own process attaches to the cluster by name."""
    from memcluster.cluster import connect

    mem = connect(cluster)
    try:
        row = _demo_agent(mem, index, agents, facts)
        board = mem.store(f"hello:{index}", {"from": f"agent-{index}"}, namespace=DEMO_BOARD)
        row["posted"] = board.version >= 1
        return row
    finally:
        mem.close()


def run_demo_fleet(cluster: str, *, agents: int = 4, facts: int = 5
                   ) -> tuple[list[dict[str, Any]], int]:
    """Run every agent as a Ray task (separate worker processes) against `cluster`;
    -> (one row per agent, notes on the shared board read back by this process)."""
    import ray

    from memcluster.cluster import connect

    task = ray.remote(num_cpus=0, max_retries=0)(_demo_task)
    rows = ray.get([task.remote(cluster, i, agents, facts) for i in range(agents)],
                   timeout=600)
    with connect(cluster) as mem:
        board = len(mem.list_keys("hello:*", namespace=DEMO_BOARD, limit=1000).keys)
        mem.clear(namespace=DEMO_BOARD, confirm=True)
        for source in mem.info():     # leave an attached cluster as it was
            for i in range(agents):
                mem.clear(source=source, namespace=f"demo/agent-{i}", confirm=True)
    return rows, board


@contextlib.contextmanager
def demo_cluster(args: argparse.Namespace) -> Iterator[str]:
    """The cluster the demo runs on: the named one (left running), else the embedded demo
    cluster, started here and stopped at the end unless it was already running."""
    from memcluster.cluster import session
    from memcluster.cluster.embedded import find_ray_address
    from memcluster.cluster.launcher import start_cluster, stop_cluster

    named = args.cluster or os.environ.get(ENV_CLUSTER)
    if named:
        session.join(named)
        session.ManagerHandle.find(named)
        yield named
        return
    name = cluster_name(argparse.Namespace(name=DEMO_CLUSTER))
    config = default_config(name)
    config["metrics_port"] = None
    Path(config["sources"][1]["opts"]["path"]).parent.mkdir(parents=True, exist_ok=True)
    print(f"starting the embedded cluster {name!r} (a local Ray head and a private "
          f"redis-server)...", file=sys.stderr)
    already = find_ray_address(name) is not None
    handle = start_cluster(config, name=name)
    owned = handle.state is not None and not already
    try:
        yield name
    finally:
        if owned:
            print(f"stopping the embedded cluster {name!r}...", file=sys.stderr)
            stop_cluster(name)


@contextlib.contextmanager
def demo_surface(args: argparse.Namespace) -> Iterator[MemorySurface]:
    """The memory the in-process demo runs on: the one named by --config, else a local one
    (a memory cache plus SQLite in a temporary directory)."""
    if args.config:
        with open_surface(args) as mem:
            yield mem
        return
    with tempfile.TemporaryDirectory(prefix="memcluster-demo-") as tmp:
        sources = [
            memory_source("cache", "memory", default=True,
                          description="Fast session cache for short-lived notes"),
            memory_source("persistent", "sqlite", opts={"path": str(Path(tmp) / "memory.db")},
                          description="Long-term facts that survive restarts"),
        ]
        with MemoryManager(sources) as mem:
            yield mem


def cmd_demo(args: argparse.Namespace) -> int:
    board: int | None = None
    if args.local or args.config:
        with demo_surface(args) as mem:
            rows = run_demo(mem, agents=args.agents, facts=args.facts)
        where = "in this process"
    else:
        with demo_cluster(args) as name:
            rows, board = run_demo_fleet(name, agents=args.agents, facts=args.facts)
        where = f"as Ray tasks on cluster {name!r}"
    ok = all(r["isolated"] and not r["errors"] and r["retrieved"] for r in rows)
    ok = ok and (board is None or board == len(rows))

    def human() -> str:
        body = table(["AGENT", "NAMESPACE", "TOPIC", "STORED", "FOUND", "TAGGED", "KEYS",
                      "ISOLATED", "ERRORS"],
                     [[r["agent"], r["namespace"], r["topic"], r["stored"], r["found"],
                       r["tagged"], r["keys"], "yes" if r["isolated"] else "NO",
                       "; ".join(r["errors"]) or "-"] for r in rows])
        verdict = ("every agent found its own memories and none of the others'" if ok
                   else "FAILED: see the ISOLATED and ERRORS columns")
        shared = ("" if board is None else
                  f"\nshared board: {board} of {len(rows)} agents' notes read back by "
                  f"another process")
        return f"{body}\n\n{len(rows)} agents {where}: {verdict}{shared}"

    emit(args, {"ok": ok, "agents": rows, "where": where, "board": board}, human)
    return 0 if ok else 1


