"""Side-by-side measurements of a running cluster, for `benchmarks/cluster_ops.py`.

Core functions: `bench_spec()` (the sources the benchmark expects: `n1` memory N=1,
`n2` memory N=2 W=2, `vec` vector over 4 shards), `run_cluster_bench(memory, ...)` (runs
the sections and returns table rows) and `format_table(rows)`. Everything is measured in
one run on the same machine, so the targets are ratios to a baseline measured alongside:

- baseline: a hand-written Ray actor holding a dict, called sync (one call at a time),
  pipelined (a window of calls in flight) and batched (1000 items per call);
- single: store/retrieve one at a time, N=1 and N=2/W=2, as ratios to the baseline;
- many: store_many/retrieve_many of 1000 ~100-byte values, and direct routing vs routing
  through the manager actor;
- fleet: K async agents (1, 8, 64, 256), each doing 75% retrieve / 20% store / 5% search
  in its own namespace, ops/s and p50/p99 latency; the same workload with redis-py
  (`redis.asyncio`, one hash per agent) against a Redis, a hand-written Ray actor holding
  a dict per agent, and LangGraph's `InMemoryStore` in-process (a ceiling for a store that
  is not distributed); the adapters are in `benchmarks/peers.py`;
- vector: top-10 text search over `vectors` 384-dim vectors spread over 4 shards;
- memory: bytes per record held by the memory backend beside a plain dict of the data.

Each row: section, name, value, unit, and where a target applies: ratio (or the absolute
figure), target, met. Sections are bounded by `seconds` (or a fixed op count), so a
`quick` run stays within tens of seconds per section. The rejected alternative, absolute
targets, would pass or fail with the machine's load; ratios measured in one run do not.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import random
import time
import tracemalloc
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from benchmarks.peers import (
    KEYS_PER_AGENT,
    DictAgentOps,
    LangGraphAgentOps,
    RedisAgentOps,
    seed_items,
)

VALUE = {"text": "x" * 80}  # ~100 bytes encoded
SECTIONS = ("baseline", "single", "many", "fleet", "peers", "vector", "memory")
AGENTS = (1, 8, 64, 256)


def bench_spec(name: str = "bench", extra_sources: Iterable[dict[str, Any]] = ()
               ) -> dict[str, Any]:
    """The cluster spec `run_cluster_bench` expects (start it with `start_cluster`), plus
    `extra_sources` (e.g. the shard sweep's, `benchmarks.sweep.sweep_sources`)."""
    return {"name": name, "metrics_port": None, "sources": [
        {"name": "n1", "backend": "memory", "shards": 2, "replicas": 1, "default": True,
         "opts": {"cleanup_interval": 0}},
        {"name": "n2", "backend": "memory", "shards": 2, "replicas": 2, "write_quorum": 2,
         "opts": {"cleanup_interval": 0}},
        {"name": "vec", "backend": "vector", "shards": 4, "replicas": 1,
         "opts": {"dimension": 384}}, *extra_sources]}


# ---- the baseline actor ------------------------------------------------------------------


class DictStore:
    """The baseline: a plain dict behind one Ray actor."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    def put(self, key: str, value: Any) -> None:
        self.data[key] = value

    def get(self, key: str) -> Any:
        return self.data.get(key)

    def put_many(self, items: list[tuple[str, Any]]) -> int:
        self.data.update(items)
        return len(items)


# ---- measuring -------------------------------------------------------------------------


class _Rows:
    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def add(self, section: str, name: str, value: float, unit: str = "ops/s", *,
            ref: float | None = None, target: float | None = None, at_most: bool = False,
            **extra: Any) -> dict[str, Any]:
        row: dict[str, Any] = {"section": section, "name": name, "value": value, "unit": unit}
        if target is not None:
            got = value / ref if ref else value
            if ref:
                row["ratio"] = got
            row["target"] = f"{'<=' if at_most else '>='}{target:g}{'x' if ref else ''}"
            row["met"] = bool(got <= target if at_most else got >= target)
        row.update(extra)
        self.rows.append(row)
        return row


def _rate(fn: Callable[[int], Any], seconds: float, max_ops: int) -> tuple[float, list[float]]:
    """Calls/s of `fn(i)` run back to back for `seconds` (at most `max_ops`), and latencies."""
    fn(0)
    lat: list[float] = []
    start = time.perf_counter()
    end = start + seconds
    i = 0
    now = start
    while now < end and i < max_ops:
        i += 1
        fn(i)
        t = time.perf_counter()
        lat.append(t - now)
        now = t
    return i / (now - start), lat


def _paired(ours: Callable[[int], Any], base: Callable[[int], Any], seconds: float,
            slices: int = 16) -> tuple[float, list[float], float]:
    """Rates of `ours` and `base` measured in alternating slices, so a change in the
    machine's load (other processes) weighs on both alike; -> (ours, its latencies, base)."""
    ours(0)
    base(0)
    spent = {0: 0.0, 1: 0.0}
    done = {0: 0, 1: 0}
    lat: list[float] = []
    for n in range(2 * slices):
        which = n % 2
        fn = ours if which == 0 else base
        start = now = time.perf_counter()
        end = start + seconds / slices
        i = done[which]
        while now < end:
            i += 1
            fn(i)
            t = time.perf_counter()
            if which == 0:
                lat.append(t - now)
            now = t
        spent[which] += now - start
        done[which] = i
    return done[0] / spent[0], lat, done[1] / spent[1]


def _pct(lat: list[float], q: float) -> float:
    if not lat:
        return float("nan")
    s = sorted(lat)
    return s[min(len(s) - 1, int(q * len(s)))] * 1000.0


def run_cluster_bench(memory: Any, *, seconds: float = 2.0, quick: bool = True,
                      sections: Iterable[str] = SECTIONS, agents: Iterable[int] = AGENTS,
                      vectors: int | None = None, records: int | None = None,
                      redis_url: str | None = None, sources: Mapping[str, str] | None = None,
                      progress: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Run the benchmark sections against `memory` (a connected `ClusterMemory`); returns
    the table rows.

    `sources` maps the roles n1 (memory, N=1), n2 (memory, N=2 W=2) and vec (vector, 4
    shards) to the cluster's source names (default: the names of `bench_spec()`). Every
    write goes to a private namespace, cleared at the end, so a live cluster keeps its
    data. `vectors` (default 20k quick, 100k full) and `records` (200k quick, 1M full)
    size the vector and memory sections; `redis_url` None skips the redis-py peer.
    """
    from memcluster.errors import ConfigError

    wanted = set(sections)
    unknown = wanted - set(SECTIONS)
    if unknown:
        raise ConfigError(f"sections: unknown {sorted(unknown)}; known: {', '.join(SECTIONS)}")
    role = {"n1": "n1", "n2": "n2", "vec": "vec", **(sources or {})}
    n1, n2, vec = role["n1"], role["n2"], role["vec"]
    needed = {"single": {n1, n2}, "many": {n1, n2}, "fleet": {n1}, "vector": {vec}}
    want_sources = set().union(*(needed.get(s, set()) for s in wanted))
    missing = want_sources - set(memory.sources) if want_sources else set()
    if missing:
        raise ConfigError(f"the cluster lacks the benchmark's sources {sorted(missing)}; "
                          "start it from benchmarks.harness.bench_spec()")
    rows = _Rows()
    agents = list(agents)
    ns = f"bench-{random.randrange(1 << 40):010x}"
    try:
        _sections(memory, rows, wanted, ns, n1, n2, vec, seconds=seconds, quick=quick,
                  agents=agents, vectors=vectors, records=records, redis_url=redis_url,
                  progress=progress)
    finally:
        for src in want_sources:
            with contextlib.suppress(Exception):  # best effort: the cluster may be gone
                memory.clear(source=src, namespace=ns, confirm=True)
                for a in range(max(agents, default=0)):
                    memory.clear(source=src, namespace=f"{ns}/agent-{a}", confirm=True)
    return rows.rows


def _sections(memory: Any, rows: _Rows, wanted: set[str], ns: str, n1: str, n2: str,
              vec: str, *, seconds: float, quick: bool, agents: Iterable[int], vectors: int,
              records: int, redis_url: str | None,
              progress: Callable[[str], None] | None) -> None:
    if wanted - {"memory"}:
        import ray
    say = progress or (lambda _msg: None)
    vectors = vectors or (20_000 if quick else 100_000)
    records = records or (200_000 if quick else 1_000_000)
    cap = 200_000

    if wanted & {"baseline", "single", "fleet", "peers"}:
        actor = ray.remote(num_cpus=0)(DictStore).remote()
        ray.get(actor.put.remote("warm", VALUE))
        say("baseline")
        put, put_lat = _rate(lambda i: ray.get(actor.put.remote(f"k{i}", VALUE)), seconds, cap)
        get, _ = _rate(lambda i: ray.get(actor.get.remote(f"k{i}")), seconds, cap)
        sync = (put + get) / 2
        rows.add("baseline", "dict actor put (sync)", put, p50_ms=_pct(put_lat, .5),
                 p99_ms=_pct(put_lat, .99))
        rows.add("baseline", "dict actor get (sync)", get)
    batched: float | None = None  # the dict actor's put_many items/s, when measured
    if "baseline" in wanted:
        window, n = 64, 0
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            ray.get([actor.put.remote(f"p{n + j}", VALUE) for j in range(window)])
            n += window
        rows.add("baseline", "dict actor put (pipelined, 64 in flight)",
                 n / (time.perf_counter() - start))
        items = [(f"b{j}", VALUE) for j in range(1000)]
        n = 0
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            ray.get(actor.put_many.remote(items))
            n += 1000
        batched = n / (time.perf_counter() - start)
        rows.add("baseline", "dict actor put_many 1000 (batched)", batched, "items/s")

    if "single" in wanted:
        say("single ops")
        base_put = lambda i: ray.get(actor.put.remote(f"k{i}", VALUE))  # noqa: E731
        base_get = lambda i: ray.get(actor.get.remote(f"k{i}"))  # noqa: E731
        for src, w_target in ((n1, 0.85), (n2, 0.6)):   # issue 16's goals
            label = "N=1" if src == n1 else "N=2 W=2"
            r, lat, ref = _paired(lambda i, s=src: memory.store(f"k{i}", VALUE, source=s,
                                                                namespace=ns),
                                  base_put, seconds)
            rows.add("single", f"store {label}", r, ref=ref, target=w_target,
                     p50_ms=_pct(lat, .5), p99_ms=_pct(lat, .99), baseline=ref)
            r, lat, ref = _paired(lambda i, s=src: memory.retrieve(f"k{i}", source=s,
                                                                   namespace=ns),
                                  base_get, seconds)
            rows.add("single", f"retrieve {label}", r, ref=ref, target=0.85,
                     p50_ms=_pct(lat, .5), p99_ms=_pct(lat, .99), baseline=ref)

    if "many" in wanted:
        say("batches")
        items = [(f"b{i}", VALUE) for i in range(1000)]
        keys = [k for k, _ in items]
        for src in (n1, n2):
            r, _ = _rate(lambda _i, s=src: memory.store_many(items, source=s, namespace=ns),
                         seconds, cap)
            rows.add("many", f"store_many 1000 ({src})", r * 1000, "items/s",  # vs put_many
                     ref=batched if src == n1 else None,
                     target=(0.3 if batched else 100_000) if src == n1 else None)
            r, _ = _rate(lambda _i, s=src: memory.retrieve_many(keys, source=s, namespace=ns),
                         seconds, cap)
            rows.add("many", f"retrieve_many 1000 ({src})", r * 1000, "items/s")
        from memcluster.cluster.data.client import ClusterMemory

        slow = ClusterMemory(memory.name, via_manager=True)
        direct, _, via = _paired(lambda i: memory.retrieve(f"k{i}", source=n1, namespace=ns),
                                 lambda i: slow.retrieve(f"k{i}", source=n1, namespace=ns),
                                 seconds)
        slow.close()
        rows.add("many", "retrieve N=1 via manager", via)
        rows.add("many", "retrieve N=1 direct vs via manager", direct, ref=via, target=1.6)

    if "fleet" in wanted or "peers" in wanted:
        say("fleet")
        fleet = _Fleet(seconds)
        best64: dict[str, float] = {}
        runners: list[tuple[str, Any]] = []
        if "fleet" in wanted:
            runners.append(("memcluster", _ClusterAgentOps(memory, n1, ns)))
        if "peers" in wanted:
            if redis_url is not None:
                runners.append(("redis-py", RedisAgentOps(redis_url)))
            runners.append(("ray dict actor", DictAgentOps()))
            runners.append(("langgraph InMemoryStore", LangGraphAgentOps()))
        for label, target_ops in runners:
            say(f"fleet {label}")
            for k, rate, lat in asyncio.run(fleet.run_all(target_ops, agents)):
                extra: dict[str, Any] = {"p50_ms": _pct(lat, .5), "p99_ms": _pct(lat, .99),
                                         "system": label, "agents": k}
                name = f"fleet {label} K={k}"
                if label == "memcluster" and k == 64:
                    rows.add("fleet", name, rate, ref=sync, target=5, **extra)
                else:
                    rows.add("fleet" if label == "memcluster" else "peers", name, rate, **extra)
                if k == 64:
                    best64[label] = rate
        if "memcluster" in best64 and "redis-py" in best64:
            rows.add("peers", "fleet K=64 memcluster vs redis-py", best64["memcluster"],
                     ref=best64["redis-py"], target=2)

    if "vector" in wanted:
        say(f"vector ({vectors} vectors)")
        _vector(memory, rows, vectors, seconds, vec, ns)

    if "memory" in wanted:
        say(f"memory ({records} records)")
        _memory(rows, records)


# ---- the agent fleet -------------------------------------------------------------------


class _Fleet:
    """K agents, each 75% retrieve / 20% store / 5% search in its own namespace."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    async def run_all(self, ops: Any, agents: Iterable[int]
                      ) -> list[tuple[int, float, list[float]]]:
        """Each fleet size in turn, in one event loop (clients are bound to their loop)."""
        try:
            return [(k, *await self.run(ops, k)) for k in agents]
        finally:
            close = getattr(ops, "close", None)
            if close is not None:
                await close()

    async def run(self, ops: Any, k: int) -> tuple[float, list[float]]:
        await ops.setup(k)
        lat: list[float] = []
        count = 0
        stop = time.perf_counter() + self.seconds

        async def agent(a: int) -> None:
            nonlocal count
            rnd = random.Random(a)
            ns = f"agent-{a}"
            while True:
                t = time.perf_counter()
                if t >= stop:
                    return
                key = f"m{rnd.randrange(KEYS_PER_AGENT)}"
                roll = rnd.random()
                if roll < 0.75:
                    await ops.retrieve(ns, key)
                elif roll < 0.95:
                    await ops.store(ns, key, {"text": f"memory {a} {count}", "pad": "x" * 60})
                else:
                    await ops.search(ns, "memory")
                lat.append(time.perf_counter() - t)
                count += 1

        start = time.perf_counter()
        await asyncio.gather(*(agent(a) for a in range(k)))
        return count / (time.perf_counter() - start), lat


class _ClusterAgentOps:
    def __init__(self, memory: Any, source: str, prefix: str) -> None:
        self.memory = memory
        self.source = source
        self.prefix = prefix + "/"

    async def setup(self, k: int) -> None:
        for a in range(k):
            await self.memory.astore_many(seed_items(a), source=self.source,
                                          namespace=f"{self.prefix}agent-{a}")

    async def retrieve(self, ns: str, key: str) -> Any:
        return await self.memory.aretrieve(key, source=self.source, namespace=self.prefix + ns)

    async def store(self, ns: str, key: str, value: Any) -> Any:
        return await self.memory.astore(key, value, source=self.source,
                                        namespace=self.prefix + ns)

    async def search(self, ns: str, text: str) -> Any:
        return await self.memory.asearch(text, source=self.source, namespace=self.prefix + ns,
                                         limit=10)


# ---- vector and memory ------------------------------------------------------------------


def _vector(memory: Any, rows: _Rows, n: int, seconds: float, source: str, ns: str) -> None:
    rnd = random.Random(7)
    words = [f"w{i}" for i in range(2000)]
    batch = 2000
    start = time.perf_counter()
    for base in range(0, n, batch):
        items = [(f"v{i:07d}", {"text": " ".join(rnd.choices(words, k=12))})
                 for i in range(base, min(n, base + batch))]
        memory.store_many(items, source=source, namespace=ns)
    load = time.perf_counter() - start
    rows.add("vector", f"vector load {n} x 384-dim", n / load, "items/s")
    lat: list[float] = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or len(lat) < 20:
        q = " ".join(rnd.choices(words, k=4))
        t = time.perf_counter()
        hits = memory.search(q, source=source, namespace=ns, limit=10)
        lat.append(time.perf_counter() - t)
        assert len(hits) <= 10
    rows.add("vector", f"vector top-10 over {n} (4 shards) p50", _pct(lat, .5), "ms",
             target=50, at_most=True, p99_ms=_pct(lat, .99), queries=len(lat))


def _memory(rows: _Rows, n: int) -> None:
    from memcluster.backends.memory import MemoryStoreBackend
    from memcluster.ops import StoreOp

    def data() -> Iterable[tuple[str, dict[str, Any]]]:
        return ((f"user:{i:08d}", {"n": i, "name": f"agent {i % 1000}"}) for i in range(n))

    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    plain = dict(data())
    plain_bytes = tracemalloc.get_traced_memory()[0] - base
    del plain
    gc.collect()
    backend = MemoryStoreBackend(prefix="bench")
    backend.open({"cleanup_interval": 0})
    base = tracemalloc.get_traced_memory()[0]
    chunk: list[StoreOp] = []
    for key, value in data():
        chunk.append(StoreOp.make(key, value))
        if len(chunk) == 10_000:
            backend.store_many(chunk)
            chunk = []
    if chunk:
        backend.store_many(chunk)
    del chunk
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    backend.close()
    rows.add("memory", f"plain dict, {n} records", plain_bytes / n, "bytes/record")
    rows.add("memory", f"memory backend, {n} records", held / n, "bytes/record",
             ref=plain_bytes / n, target=3, at_most=True)


# ---- output ----------------------------------------------------------------------------


def format_table(rows: list[dict[str, Any]]) -> str:
    """The rows as a fixed-width text table."""
    lines = [f"{'section':9} {'measurement':46} {'value':>14} {'p50 ms':>8} {'p99 ms':>8} "
             f"{'ratio':>7} {'target':>9}  met"]
    for r in rows:
        unit = {"ops/s": "/s", "items/s": " it/s", "ms": " ms", "bytes/record": " B/rec"}.get(
            r["unit"], r["unit"])
        p50 = f"{r['p50_ms']:.2f}" if "p50_ms" in r else ""
        p99 = f"{r['p99_ms']:.2f}" if "p99_ms" in r else ""
        ratio = f"{r['ratio']:.2f}" if "ratio" in r else ""
        met = {True: "yes", False: "NO"}.get(r.get("met"), "")  # type: ignore[arg-type]
        value = f"{r['value']:.0f}" if abs(r["value"]) >= 100 else f"{r['value']:.2f}"
        lines.append(f"{r['section']:9} {r['name']:46} {value:>9}{unit:<5} "
                     f"{p50:>8} {p99:>8} {ratio:>7} {r.get('target', ''):>9}  {met}")
    return "\n".join(lines)



@contextlib.contextmanager
def local_bench_cluster(name: str = "bench", extra_sources: Iterable[dict[str, Any]] = ()
                        ) -> Iterator[Any]:
    """Start a local Ray (num_cpus=2), a private redis-server and a `bench_spec()` cluster
    (with `extra_sources`); yield a connected client (its `bench_redis_url` names the
    redis-server); stop all on exit. For the benchmark scripts when no running cluster is
    given."""
    import ray

    import memcluster as mc
    from memcluster.cluster.embedded import EmbeddedState, start_redis, stop_embedded

    with contextlib.ExitStack() as stack:
        redis_state = EmbeddedState(f"{name}-bench")     # a private redis-server, never saved
        start_redis(redis_state)
        stack.callback(stop_embedded, redis_state)
        if not ray.is_initialized():
            ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                     configure_logging=False)
            stack.callback(ray.shutdown)
        redis_url = redis_state.redis_url
        cluster = mc.start_cluster(bench_spec(name, extra_sources), name=name, redis_url=redis_url)
        stack.callback(cluster.stop)
        memory = mc.connect(name)
        stack.callback(memory.close)
        memory.bench_redis_url = redis_url
        yield memory
