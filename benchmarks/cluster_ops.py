"""memcluster beside a hand-written Ray dict actor, redis-py and LangGraph, in one run.

Run: python benchmarks/cluster_ops.py [--full] [--seconds S] [--sections a,b] [--json PATH]
Starts a local Ray (num_cpus=2), a private redis-server and the cluster of
`benchmarks.harness.bench_spec()` (n1: memory N=1; n2: memory N=2 W=2; vec: vector
over 4 shards), runs `run_cluster_bench`, prints the table and writes the rows as JSON
(`--json PATH`, default bench_results.json). The redis-py peer runs against
MEMCLUSTER_BENCH_REDIS_URL (default: the local Redis at 127.0.0.1:6379, else the private
redis-server). The default is a quick run (2 s per
measurement, 20k vectors, 200k records); `--full` uses 100k vectors and 1M records.
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

from benchmarks.harness import (  # noqa: E402
    AGENTS,
    SECTIONS,
    format_table,
    local_bench_cluster,
    run_cluster_bench,
)


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
    args = parser.parse_args(argv)
    with local_bench_cluster() as memory:
        rows = run_cluster_bench(
            memory, seconds=args.seconds, quick=not args.full,
            sections=args.sections.split(","), agents=[int(a) for a in args.agents.split(",")],
            vectors=args.vectors, records=args.records,
            redis_url=local_redis(memory.bench_redis_url),
            progress=lambda msg: print(f"... {msg}", file=sys.stderr, flush=True))
    print(format_table(rows))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)
    return rows


if __name__ == "__main__":
    main()
