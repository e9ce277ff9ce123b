"""The REST API beside the Python client: store / retrieve / search ops per second, one run.

Run: python benchmarks/rest_ops.py [--seconds 3] [--concurrency 16] [--cluster NAME]
                                   [--json PATH]

Subjects, each doing the same work for `seconds` (keys cycle over 1000 ~100-byte
records, in one namespace):

- python: the memory surface called in this process (`MemoryManager` on a memory
  source, or `mc.connect(NAME)` with --cluster), sequential sync calls, then
  `concurrency` asyncio tasks over the async twins;
- rest: `memcluster serve` in its own process (so server and client do not share a GIL)
  over the same kind of memory (a memory source, or the same cluster), called with httpx:
  one keep-alive connection sequentially, then `concurrency` concurrent requests.

Prints ops/s and p50/p99 latency per (subject, mode, op), and REST / Python ratios. The
`health` row (GET /v1/health: routing and HTTP only, no memory call) is the ceiling any
endpoint of this server can reach on the machine: what bounds the others.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

import memcluster as mc
from tests.support import free_port, wait_until

KEYS = 1000
VALUE = {"text": "x" * 80, "n": 1}
NAMESPACE = "bench"


def key(i: int) -> str:
    return f"k{i % KEYS:04d}"


def timed(fn: Callable[[int], Any], seconds: float) -> dict[str, float]:
    """Call fn(0), fn(1), ... for `seconds`; ops/s and latency percentiles (ms)."""
    latencies: list[float] = []
    end = time.perf_counter() + seconds
    i = 0
    while True:
        start = time.perf_counter()
        if start >= end:
            break
        fn(i)
        latencies.append(time.perf_counter() - start)
        i += 1
    return summary(latencies, seconds)


async def timed_async(fn: Callable[[int], Awaitable[Any]], seconds: float,
                      concurrency: int) -> dict[str, float]:
    """`concurrency` tasks calling fn for `seconds`; ops/s and latency percentiles (ms)."""
    latencies: list[float] = []
    end = time.perf_counter() + seconds
    counter = iter(range(10**12))

    async def worker() -> None:
        while True:
            start = time.perf_counter()
            if start >= end:
                return
            await fn(next(counter))
            latencies.append(time.perf_counter() - start)

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return summary(latencies, time.perf_counter() - began)


def summary(latencies: list[float], seconds: float) -> dict[str, float]:
    ordered = sorted(latencies) or [0.0]
    return {"ops_s": len(latencies) / seconds,
            "p50_ms": 1000 * statistics.median(ordered),
            "p99_ms": 1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]}


def python_rows(memory: mc.MemorySurface, seconds: float, concurrency: int
                ) -> dict[tuple[str, str], dict[str, float]]:
    src = {"namespace": NAMESPACE}
    query = mc.Query(pattern="k00*", filter={"n": 1}, limit=10)
    memory.store_many([(key(i), VALUE) for i in range(KEYS)], **src)  # every key exists
    rows = {("sync", "store"): timed(lambda i: memory.store(key(i), VALUE, **src), seconds),
            ("sync", "retrieve"): timed(lambda i: memory.retrieve(key(i), **src), seconds),
            ("sync", "search"): timed(lambda i: memory.search(query, **src), seconds)}
    for op, call in (("store", lambda i: memory.astore(key(i), VALUE, **src)),
                     ("retrieve", lambda i: memory.aretrieve(key(i), **src)),
                     ("search", lambda i: memory.asearch(query, **src))):
        rows[("concurrent", op)] = asyncio.run(timed_async(call, seconds, concurrency))
    return rows


class Connection:
    """A minimal HTTP/1.1 keep-alive client on asyncio streams. The benchmark measures the
    server, so the client must cost less than it: httpx spends more CPU per request than
    a FastAPI endpoint does (on this machine it capped a trivial endpoint at 1/7 of what
    this client reaches)."""

    def __init__(self, host: str, port: int, token: str) -> None:
        self.host, self.port = host, port
        self.headers = (f"Host: {host}:{port}\r\nAuthorization: Bearer {token}\r\n"
                        "Content-Type: application/json\r\n")
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        payload = b"" if body is None else json.dumps(body).encode()
        self.writer.write(f"{method} {path} HTTP/1.1\r\n{self.headers}Content-Length: "
                          f"{len(payload)}\r\n\r\n".encode() + payload)
        assert self.reader is not None
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        data = await self.reader.readexactly(length)
        if status != 200:
            raise RuntimeError(f"{method} {path}: {status} {data[:200]!r}")
        return status, data

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def rest_rows(url: str, token: str, seconds: float, concurrency: int
              ) -> dict[tuple[str, str], dict[str, float]]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    body = {"value": VALUE}
    search = {"pattern": "k00*", "filter": {"n": 1}, "limit": 10}
    calls = (("health", lambda c, i: c.request("GET", "/v1/health")),
             ("store", lambda c, i: c.request("PUT", f"/v1/records/{key(i)}", body)),
             ("retrieve", lambda c, i: c.request("GET", f"/v1/records/{key(i)}")),
             ("search", lambda c, i: c.request("POST", "/v1/search", search)))
    rows: dict[tuple[str, str], dict[str, float]] = {}

    async def run() -> None:
        first = Connection(host, int(port), token)
        await first.request("POST", "/v1/records:batch-store", {"items": [
            {"key": key(i), "value": VALUE} for i in range(KEYS)]})  # every key exists
        for mode, width in (("sync", 1), ("concurrent", concurrency)):
            pool = [Connection(host, int(port), token) for _ in range(width)]
            for op, call in calls:
                free = list(pool)

                async def one(i: int, call: Any = call, free: list = free) -> None:
                    conn = free.pop()
                    try:
                        await call(conn, i)
                    finally:
                        free.append(conn)

                rows[(mode, op)] = await timed_async(one, seconds, width)
            for conn in pool:
                await conn.close()
        await first.close()

    asyncio.run(run())
    return rows


def serve(args: argparse.Namespace, workdir: Path, token: str) -> tuple[subprocess.Popen, str]:
    """`memcluster serve` in its own process, and its URL once it answers."""
    tokens = workdir / "tokens.txt"
    tokens.write_text(f"{token} {NAMESPACE}\n")
    port = free_port()
    where = ["--cluster", args.cluster] if args.cluster else ["--config", str(args.config)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen([sys.executable, "-m", "memcluster.cli", *where, "serve",
                             "--http", f"127.0.0.1:{port}", "--token-file", str(tokens)],
                            env=env)
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: httpx.get(f"{url}/v1/health").status_code == 200, timeout=60,
               message="memcluster serve")
    return proc, url


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--cluster", default=None, help="measure a running cluster instead")
    parser.add_argument("--json", default=None, help="also write the rows to this file")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        args.config = workdir / "memory.yaml"
        args.config.write_text("sources: [{name: cache, backend: memory, "
                               "opts: {cleanup_interval: 0}}]\n")
        memory = mc.connect(args.cluster) if args.cluster else \
            mc.MemoryManager.from_config(args.config)
        with memory:
            python = python_rows(memory, args.seconds, args.concurrency)
        token = secrets.token_urlsafe(24)
        proc, url = serve(args, workdir, token)
        try:
            rest = rest_rows(url, token, args.seconds, args.concurrency)
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=30)
    rows = []
    print(f"{'mode':<11}{'op':<9}{'python ops/s':>14}{'p50 ms':>8}{'rest ops/s':>12}"
          f"{'p50 ms':>8}{'p99 ms':>8}{'rest/python':>13}")
    for (mode, op), http in rest.items():
        py = python.get((mode, op))   # health: the HTTP stack's own ceiling, no memory call
        ratio = http["ops_s"] / py["ops_s"] if py and py["ops_s"] else None
        rows.append({"mode": mode, "op": op, "python": py, "rest": http, "ratio": ratio})
        print(f"{mode:<11}{op:<9}{py['ops_s'] if py else float('nan'):>14,.0f}"
              f"{py['p50_ms'] if py else float('nan'):>8.2f}{http['ops_s']:>12,.0f}"
              f"{http['p50_ms']:>8.2f}{http['p99_ms']:>8.2f}"
              f"{'' if ratio is None else f'{ratio:.2f}x':>13}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    main()
