"""Coalescing of concurrent async operations into batches: one router call per flush.

Core type: `Coalescer`. An async caller's request `(source, ops)` joins a queue with a
future; the queue is flushed on the next event-loop tick (`loop.call_soon`), so every
request made in one tick, by any number of tasks, becomes one `execute(source, ops)` call
per source, which the router turns into one Ray call per shard. The blocking `execute`
runs on a small private thread pool, so the event loop never waits on Ray.

Guarantees:
- **Dedupe**: identical reads (`retrieve`/`exists` of one key and namespace) in a flush
  are sent once and share the result, unless a write of that key sits between them.
- **Per-key order**: ops of one flush keep their order (the router groups by shard without
  reordering, and one shard applies one call in order); a request touching a key that an
  unfinished flush carries waits for that flush to finish (so does every later request
  touching it), and `clear` waits until nothing of its source is in flight.
- **Cancellation**: a request whose caller was cancelled before its flush started is
  dropped; once sent, its ops run but nobody waits for them.
- **Pipelining**: at most `max_inflight` flushes per source run at once; while they are
  busy, new requests gather into the next flush (group commit), so batches grow under
  load instead of queueing in threads.

The rejected alternative, a sub-millisecond timer window, adds that latency to every
lone call; the tick plus group commit batches as much and adds none.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from memcluster.ops import WRITE_KINDS, Op

Execute = Callable[[str, list[Op]], list[Any]]
_DEDUPE = frozenset({"retrieve", "exists"})
_NONE: Counter[tuple[str, str]] = Counter()


class _Request:
    __slots__ = ("future", "ops", "slots", "source")

    def __init__(self, source: str, ops: list[Op], future: asyncio.Future[list[Any]]) -> None:
        self.source = source
        self.ops = ops
        self.future = future
        self.slots: list[int] = []  # where each op's result sits in its flush


def _touched(op: Any) -> tuple[str, str] | None:
    key = op.key
    return None if key is None else (op.namespace, key)


class Coalescer:
    """Batches the async requests of one event loop (see the module docstring)."""

    def __init__(self, execute: Execute, *, max_inflight: int = 2, threads: int = 4) -> None:
        self._execute = execute
        self.max_inflight = max_inflight
        self._pool = ThreadPoolExecutor(max_workers=threads,
                                        thread_name_prefix="memcluster-flush")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: list[_Request] = []
        self._scheduled = False
        self._inflight: dict[str, int] = {}
        self._busy: dict[str, Counter[tuple[str, str]]] = {}
        self.flushes = 0      # execute calls made (for tests and stats)
        self.deduped = 0      # reads answered by another identical read

    async def submit(self, source: str, ops: list[Op]) -> list[Any]:
        """Queue `ops` for `source`; their results once the flush that carries them ends."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # a new loop (asyncio.run again): start afresh
            self._loop, self._queue, self._scheduled = loop, [], False
            self._inflight, self._busy = {}, {}
        future: asyncio.Future[list[Any]] = loop.create_future()
        self._queue.append(_Request(source, ops, future))
        self._schedule()
        return await future

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    # ---- flushing (on the loop's thread) ---------------------------------------------

    def _schedule(self) -> None:
        if not self._scheduled and self._loop is not None:
            self._scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        queue, self._queue = self._queue, []
        held: list[_Request] = []
        batches: dict[str, list[_Request]] = {}
        blocked: dict[str, set[tuple[str, str]]] = {}
        barred: set[str] = set()  # sources where a held `clear` stops everything after it
        for req in queue:
            if req.future.done():  # cancelled before it was sent
                continue
            src = req.source
            busy = self._busy.get(src, _NONE)
            block = blocked.setdefault(src, set())
            keys = [k for k in map(_touched, req.ops) if k is not None]
            barrier = any(op.kind == "clear" for op in req.ops)
            wait = (src in barred or self._inflight.get(src, 0) >= self.max_inflight
                    or any(k in busy or k in block for k in keys)
                    or (barrier and (self._inflight.get(src, 0) or src in batches)))
            if wait:
                held.append(req)
                block.update(keys)
                if barrier:
                    barred.add(src)
                continue
            batches.setdefault(src, []).append(req)
            if barrier:
                barred.add(src)  # nothing joins a flush after its clear
        self._queue = held + self._queue
        for src, reqs in batches.items():
            self._start(src, reqs)

    def _start(self, source: str, reqs: list[_Request]) -> None:
        ops: list[Op] = []
        reads: dict[Op, int] = {}
        reads_of: dict[tuple[str, str], list[Op]] = {}
        for req in reqs:
            slots = req.slots = []
            for op in req.ops:
                kind = op.kind
                if kind in _DEDUPE:
                    slot = reads.get(op)
                    if slot is not None:
                        self.deduped += 1
                        slots.append(slot)
                        continue
                    reads[op] = len(ops)
                    reads_of.setdefault((op.namespace, op.key), []).append(op)
                elif kind in WRITE_KINDS and reads:
                    touched = _touched(op)
                    if touched is None:  # clear: no read before it answers one after it
                        reads.clear()
                        reads_of.clear()
                    for read in reads_of.pop(touched, ()):  # type: ignore[arg-type]
                        reads.pop(read, None)
                slots.append(len(ops))
                ops.append(op)
        keys = Counter(k for k in map(_touched, ops) if k is not None)
        self._busy.setdefault(source, Counter()).update(keys)
        self._inflight[source] = self._inflight.get(source, 0) + 1
        self.flushes += 1
        assert self._loop is not None
        done = self._loop.run_in_executor(self._pool, self._execute, source, ops)
        done.add_done_callback(lambda fut: self._finish(source, reqs, keys, fut))

    def _finish(self, source: str, reqs: Sequence[_Request], keys: Counter[tuple[str, str]],
                done: asyncio.Future[list[Any]]) -> None:
        self._inflight[source] -= 1
        self._busy[source].subtract(keys)
        self._busy[source] = +self._busy[source]  # drop zero counts
        error = None if done.cancelled() else done.exception()
        results = None if error is not None or done.cancelled() else done.result()
        for req in reqs:
            if req.future.done():
                continue
            if results is None:
                req.future.set_exception(error or asyncio.CancelledError())
            else:
                req.future.set_result([results[i] for i in req.slots])
        if self._queue:
            self._schedule()
