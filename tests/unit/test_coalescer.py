"""The async coalescer without Ray: batching per tick, dedupe, per-key order, cancellation."""

from __future__ import annotations

import asyncio
import os
import random
import threading

import memcluster as mc
from memcluster.cluster.data.coalescer import Coalescer
from memcluster.ops import ClearOp, RetrieveOp, StoreOp


class Recorder:
    """Runs batches on a MemoryManager and records them; `gate` holds batches back."""

    def __init__(self) -> None:
        self.mem = mc.MemoryManager([mc.memory_source("m", "memory", default=True)])
        self.batches: list[list] = []
        self.gate = threading.Event()
        self.gate.set()
        self.started = threading.Event()

    def execute(self, source, ops):  # type: ignore[no-untyped-def]
        self.batches.append(list(ops))
        self.started.set()
        assert self.gate.wait(10)
        return self.mem._execute(source, ops)


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def test_concurrent_requests_of_one_tick_become_one_batch():
    rec = Recorder()
    co = Coalescer(rec.execute)

    async def main():  # type: ignore[no-untyped-def]
        return await asyncio.gather(*(co.submit("m", [StoreOp.make(f"k{i}", i)])
                                      for i in range(50)))

    results = run(main())
    assert len(rec.batches) == 1 and len(rec.batches[0]) == 50
    assert [r[0].key for r in results] == [f"k{i}" for i in range(50)]
    assert [r[0].value for r in results] == list(range(50))
    co.close()


def test_identical_reads_are_sent_once_unless_a_write_intervenes():
    rec = Recorder()
    rec.mem.store("a", 1)
    co = Coalescer(rec.execute)

    async def main():  # type: ignore[no-untyped-def]
        reads = [co.submit("m", [RetrieveOp.make("a")]) for _ in range(10)]
        write = co.submit("m", [StoreOp.make("a", 2)])
        after = co.submit("m", [RetrieveOp.make("a")])
        return await asyncio.gather(*reads, write, after)

    *reads, write, after = run(main())
    (batch,) = rec.batches
    assert [op.kind for op in batch] == ["retrieve", "store", "retrieve"]
    assert {r[0].value for r in reads} == {1}
    assert write[0].version == 2 and after[0].value == 2
    assert co.deduped == 9
    co.close()


def test_per_key_order_holds_while_an_earlier_flush_is_in_flight():
    rec = Recorder()
    rec.gate.clear()
    co = Coalescer(rec.execute)

    async def main():  # type: ignore[no-untyped-def]
        first = asyncio.ensure_future(co.submit("m", [StoreOp.make("k", "first")]))
        await asyncio.to_thread(rec.started.wait, 10)  # flush 1 is running (held at the gate)
        second = asyncio.ensure_future(co.submit("m", [StoreOp.make("k", "second")]))
        other = asyncio.ensure_future(co.submit("m", [StoreOp.make("x", 1)]))
        await asyncio.sleep(0.05)
        # `x` may go ahead in a second flush; `k` must wait for the first flush to finish.
        assert all(op.key != "k" for batch in rec.batches[1:] for op in batch)
        rec.gate.set()
        return await asyncio.gather(first, second, other)

    first, second, _ = run(main())
    assert (first[0].version, second[0].version) == (1, 2)
    assert rec.mem.retrieve("k").value == "second"
    co.close()


def test_random_interleavings_keep_each_writers_order():
    seed = int(os.environ.get("MEMCLUSTER_TEST_SEED", "0"))
    print(f"seed {seed}")
    rnd = random.Random(seed)
    rec = Recorder()
    co = Coalescer(rec.execute, max_inflight=3)

    async def writer(w: int) -> list[int]:  # type: ignore[no-untyped-def]
        versions = []
        for i in range(20):
            key = f"k{rnd.randrange(3)}"
            (r,) = await co.submit("m", [StoreOp.make(key, [w, i])])
            versions.append((key, r.version))
            if rnd.random() < 0.3:
                await asyncio.sleep(0)
        return versions

    async def main():  # type: ignore[no-untyped-def]
        return await asyncio.gather(*(writer(w) for w in range(8)))

    out = run(main())
    for versions in out:  # each writer sees its own writes of a key in increasing versions
        for key in {k for k, _ in versions}:
            mine = [v for k, v in versions if k == key]
            assert mine == sorted(mine) and len(set(mine)) == len(mine)
    total = sum(len(v) for v in out)
    assert sum(rec.mem.retrieve(f"k{i}").version for i in range(3)
               if rec.mem.exists(f"k{i}")) == total
    co.close()


def test_a_cancelled_request_is_not_sent():
    rec = Recorder()
    co = Coalescer(rec.execute)

    async def main():  # type: ignore[no-untyped-def]
        doomed = asyncio.ensure_future(co.submit("m", [StoreOp.make("gone", 1)]))
        kept = asyncio.ensure_future(co.submit("m", [StoreOp.make("kept", 1)]))
        await asyncio.sleep(0)  # both queued, flush scheduled but not run yet
        doomed.cancel()
        await asyncio.gather(kept)
        return doomed

    doomed = run(main())
    assert doomed.cancelled()
    assert [op.key for batch in rec.batches for op in batch] == ["kept"]
    assert rec.mem.retrieve("gone") is None
    co.close()


def test_a_failed_batch_fails_its_requests_and_clear_is_a_barrier():
    rec = Recorder()
    co = Coalescer(rec.execute)

    async def main():  # type: ignore[no-untyped-def]
        a = co.submit("m", [StoreOp.make("a", 1)])
        clear = co.submit("m", [ClearOp.make()])
        b = co.submit("m", [StoreOp.make("b", 1)])
        return await asyncio.gather(a, clear, b)

    _, (removed,), _ = run(main())
    assert removed == 1  # `a` was written before the clear, `b` after it
    assert [[op.kind for op in batch] for batch in rec.batches] == [
        ["store"], ["clear"], ["store"]]
    assert rec.mem.exists("b") and not rec.mem.exists("a")

    bad = Coalescer(lambda source, ops: (_ for _ in ()).throw(mc.errors.UnknownSource("x")))

    async def fail():  # type: ignore[no-untyped-def]
        return await asyncio.gather(bad.submit("m", [RetrieveOp.make("a")]),
                                    return_exceptions=True)

    (error,) = run(fail())
    assert isinstance(error, mc.errors.UnknownSource)
    co.close()
    bad.close()
