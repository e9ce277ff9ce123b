"""memcluster beside a hand-written Ray dict actor, redis-py and LangGraph, in one run.

Run: python benchmarks/cluster_ops.py [--full] [--seconds S] [--sections a,b] [--json PATH]
                                     [--plot [DIR]] [--shards 1,2,4,8] [--agents 1,8,64,256]
Starts a local Ray (num_cpus=2), a private redis-server and the cluster of
`benchmarks.harness.bench_spec()` (n1: memory N=1; n2: memory N=2 W=2; vec: vector
over 4 shards), runs `run_cluster_bench`, prints the table and writes the rows as JSON
(`--json PATH`, default bench_results.json). The redis-py peer runs against
MEMCLUSTER_BENCH_REDIS_URL (default: the local Redis at 127.0.0.1:6379, else the private
redis-server). The default is a quick run (2 s per
measurement, 20k vectors, 200k records); `--full` uses 100k vectors and 1M records.

`--plot DIR` (default docs/bench; needs matplotlib, the `bench` extra) also starts the
shard sweep's sources (`benchmarks.sweep`: memory N=1 over each of `--shards`), measures
them beside the Ray dict actor and redis-py, and saves the charts of `benchmarks.plots`
(fleet ops/s and latency against `--agents`, throughput against shard count) as PNGs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: the repo root must be importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness import (
    AGENTS,
    SECTIONS,
    format_table,
    local_bench_cluster,
    run_cluster_bench,
)
from benchmarks.sweep import SHARDS, run_shard_sweep, sweep_sources


def local_redis(fallback: str) -> str:
    url = os.environ.get("MEMCLUSTER_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
    try:
        import redis

        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
        return url
    except Exception:  # not reachable: use the benchmark's own redis-server
        return fallback


def main(argv: list[str] | None = None, sections: tuple[str, ...] = SECTIONS) -> list[Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--full", action="store_true", help="100k vectors, 1M records")
    parser.add_argument("--seconds", type=float, default=2.0, help="per measurement")
    parser.add_argument("--sections", default=",".join(sections))
    parser.add_argument("--agents", default=",".join(map(str, AGENTS)))
    parser.add_argument("--vectors", type=int, default=None)
    parser.add_argument("--records", type=int, default=None)
    parser.add_argument("--json", default="bench_results.json",
                        help="where to write the rows as JSON (default: %(default)s)")
    parser.add_argument("--plot", nargs="?", const="docs/bench", default=None, metavar="DIR",
                        help="also run the shard sweep and save PNG charts in DIR "
                             "(default DIR: %(const)s; needs matplotlib)")
    parser.add_argument("--shards", default=",".join(map(str, SHARDS)),
                        help="shard counts of the sweep (with --plot; default: %(default)s)")
    args = parser.parse_args(argv)
    if args.plot is not None:
        from benchmarks.plots import require_matplotlib

        require_matplotlib()  # before minutes of measuring, not after
    shards = [int(n) for n in args.shards.split(",")] if args.plot is not None else []

    def progress(msg: str) -> None:
        print(f"... {msg}", file=sys.stderr, flush=True)

    with local_bench_cluster(extra_sources=sweep_sources(shards)) as memory:
        redis_url = local_redis(memory.bench_redis_url)
        rows = run_cluster_bench(
            memory, seconds=args.seconds, quick=not args.full,
            sections=args.sections.split(","), agents=[int(a) for a in args.agents.split(",")],
            vectors=args.vectors, records=args.records, redis_url=redis_url,
            progress=progress)
        if shards:
            rows += run_shard_sweep(memory, shards=shards, seconds=args.seconds,
                                    redis_url=redis_url, progress=progress)
    print(format_table(rows))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)
    if args.plot is not None:
        from benchmarks.plots import write_charts

        for path in write_charts(rows, args.plot):
            print(f"wrote {path}")
    return rows


if __name__ == "__main__":
    main()
