"""Cluster operation rates beside a hand-written Ray actor holding a dict (the baseline).

Run: python benchmarks/cluster_ops.py [--ops 2000] [--json]
Starts a local Ray (num_cpus=2) and a private redis-server, a cluster with two sources
(n1: memory, 2 shards, N=1; n2: memory, 2 shards, N=2 W=2), and measures in one run:
single store/retrieve (N=1, N=2), store_many/retrieve_many of 1000 ~100-byte values,
and direct client routing vs routing through the manager actor. Prints a table with each
rate and its ratio to the target.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
import time
from typing import Any

import ray


@ray.remote(num_cpus=0)
class DictActor:
    """The baseline: a plain dict behind one Ray actor."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    def put(self, key: str, value: Any) -> None:
        self.data[key] = value

    def get(self, key: str) -> Any:
        return self.data.get(key)


def rate(fn: Any, n: int) -> float:
    fn(0)  # warm up
    start = time.perf_counter()
    for i in range(n):
        fn(i)
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ops", type=int, default=2000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    n = args.ops

    import memcluster as mc
    from memcluster.cluster.embedded import _free_port as free_port

    redis_dir = tempfile.mkdtemp()
    port = free_port()
    redis_proc = subprocess.Popen([shutil.which("redis-server") or "redis-server", "--port",
                                   str(port), "--save", "", "--dir", redis_dir],
                                  stdout=subprocess.DEVNULL)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    config = {"sources": [
        {"name": "n1", "backend": "memory", "shards": 2, "replicas": 1, "default": True},
        {"name": "n2", "backend": "memory", "shards": 2, "replicas": 2, "write_quorum": 2}]}
    cluster = mc.start_cluster(config, name="bench", redis_url=f"redis://127.0.0.1:{port}/0")
    try:
        rows = run(cluster, n)
    finally:
        cluster.stop()
        ray.shutdown()
        redis_proc.kill()
        shutil.rmtree(redis_dir, ignore_errors=True)
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{'measurement':44} {'rate':>12} {'ratio':>7} {'target':>8}  met")
    for row in rows:
        print(f"{row['name']:44} {row['rate']:>10.0f}/s {row.get('ratio', 0):>7.2f} "
              f"{row.get('target', ''):>8}  {row.get('met', '')}")


def run(cluster: Any, n: int) -> list[dict[str, Any]]:
    import memcluster as mc

    value = {"text": "x" * 80}
    base = DictActor.remote()
    put = rate(lambda i: ray.get(base.put.remote(f"k{i}", value)), n)
    get = rate(lambda i: ray.get(base.get.remote(f"k{i}")), n)
    mem = mc.connect(cluster.name)
    slow = mc.connect(cluster.name, via_manager=True)
    rows: list[dict[str, Any]] = [
        {"name": "baseline actor put", "rate": put},
        {"name": "baseline actor get", "rate": get}]

    def add(name: str, r: float, ref: float | None = None, target: float | None = None,
            absolute: float | None = None) -> None:
        row: dict[str, Any] = {"name": name, "rate": r}
        if ref is not None:
            row["ratio"] = r / ref
            row["target"] = f">={target}x"
            row["met"] = r / ref >= target  # type: ignore[operator]
        if absolute is not None:
            row["target"] = f">={absolute:.0f}/s"
            row["met"] = r >= absolute
        rows.append(row)

    add("store N=1", rate(lambda i: mem.store(f"k{i}", value, source="n1"), n), put, 0.8)
    add("retrieve N=1", rate(lambda i: mem.retrieve(f"k{i}", source="n1"), n), get, 0.8)
    add("store N=2 W=2", rate(lambda i: mem.store(f"k{i}", value, source="n2"), n), put, 0.4)
    add("retrieve N=2", rate(lambda i: mem.retrieve(f"k{i}", source="n2"), n), get, 0.8)
    items = [(f"b{i}", value) for i in range(1000)]
    keys = [k for k, _ in items]
    reps = 10
    for source in ("n1", "n2"):
        mem.store_many(items, source=source)
        start = time.perf_counter()
        for _ in range(reps):
            mem.store_many(items, source=source)
        add(f"store_many 1000 ({source}) items", reps * 1000 / (time.perf_counter() - start),
            absolute=100_000)
        start = time.perf_counter()
        for _ in range(reps):
            mem.retrieve_many(keys, source=source)
        add(f"retrieve_many 1000 ({source}) items", reps * 1000 / (time.perf_counter() - start))
    via = rate(lambda i: slow.retrieve(f"k{i}", source="n1"), n)
    direct = rate(lambda i: mem.retrieve(f"k{i}", source="n1"), n)
    add("retrieve N=1 via manager", via)
    add("retrieve N=1 direct (vs via manager)", direct, via, 1.6)
    return rows


if __name__ == "__main__":
    main()
