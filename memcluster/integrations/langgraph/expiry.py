"""The TTL sweeper API of SqliteStore and PostgresStore, on memcluster: `ExpiryLog`, `Sweeper`.

    store = MemclusterStore(mem, ttl={"default_ttl": 60, "sweep_interval_minutes": 5})
    store.start_ttl_sweeper()        # as with PostgresStore: a daemon thread
    store.sweep_ttl()                # -> how many items expired since the last sweep
    store.stop_ttl_sweeper()

Memcluster needs no sweep: an expired record is invisible to every read at once and its
backend removes it (lazily, by its own sweeper or natively). The API exists so code written
against SqliteStore/PostgresStore runs unchanged, and `sweep_ttl()` returns what those
return: how many items expired.

Core types: `ExpiryLog` (the expiry deadlines of the items this store wrote or refreshed
with a TTL: the latest version of each key, and a heap of deadlines) and `Sweeper` (the
thread that calls `sweep_ttl` every interval). A sweep takes the entries whose deadline
passed, asks the source which of those items are gone, and counts them; an item rewritten
or refreshed meanwhile (here or elsewhere) is still there and not counted, and its new
deadline is logged if it was written here.

Decisions and limits:

- The count covers items written or refreshed through this store object, not those written
  by other processes: counting those would need a scan of expired records, which no
  memcluster read returns. An item deleted elsewhere after its deadline counts as expired.
- The log holds at most `MAX_TRACKED` keys; beyond that, the earliest deadlines are dropped
  uncounted, so a process that writes with TTLs and never sweeps cannot grow without bound.
- Nothing is deleted by a sweep, so a sweep can never remove a write that raced with it.
  Rejected: deleting due keys, which would destroy a concurrent re-creation of the key.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import heapq
import logging
import threading
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from memcluster.model import Record

log = logging.getLogger("memcluster.integrations.langgraph")
MAX_TRACKED = 100_000
DEFAULT_INTERVAL_MINUTES = 5.0


@dataclass
class ExpiryLog:
    """Deadlines of the items written with a TTL (see the module docstring). Thread-safe."""

    max_tracked: int = MAX_TRACKED
    _latest: dict[tuple[str, str], int] = field(default_factory=dict)
    _heap: list[tuple[float, str, str, int]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __len__(self) -> int:
        return len(self._latest)

    def note(self, record: Record) -> None:
        """Remember `record`'s deadline (a record without one forgets the key)."""
        key = (record.namespace, record.key)
        with self._lock:
            if record.expires_at is None:
                self._latest.pop(key, None)
                return
            self._latest[key] = record.version
            heapq.heappush(self._heap, (record.expires_at, *key, record.version))
            while len(self._latest) > self.max_tracked and self._heap:
                _, ns, k, version = heapq.heappop(self._heap)
                if self._latest.get((ns, k)) == version:
                    del self._latest[(ns, k)]
            if len(self._heap) > 2 * len(self._latest) + 1024:  # drop superseded entries
                self._heap = [e for e in self._heap if self._latest.get(e[1:3]) == e[3]]
                heapq.heapify(self._heap)

    def forget(self, namespace: str, key: str) -> None:
        """The item was deleted through this store: its expiry is not an expiry."""
        with self._lock:
            self._latest.pop((namespace, key), None)

    def due(self, now: float) -> dict[str, dict[str, int]]:
        """Take the items whose deadline passed: {namespace: {key: version}}."""
        out: dict[str, dict[str, int]] = defaultdict(dict)
        with self._lock:
            while self._heap and self._heap[0][0] <= now:
                _, ns, key, version = heapq.heappop(self._heap)
                if self._latest.get((ns, key)) == version:
                    del self._latest[(ns, key)]
                    out[ns][key] = version
        return dict(out)


def interval_seconds(minutes: float | None, ttl_config: dict | None) -> float:
    """The sweep interval: the argument, else the TTL config's, else 5 minutes."""
    chosen = minutes or (ttl_config or {}).get("sweep_interval_minutes") \
        or DEFAULT_INTERVAL_MINUTES
    return float(chosen) * 60


class Sweeper:
    """Runs `sweep` every `interval` seconds on a daemon thread until stopped (or until
    `sweep` returns None: its store is gone)."""

    def __init__(self, sweep: Callable[[], int | None], interval: float) -> None:
        self._sweep = sweep
        self._interval = interval
        self._stop = threading.Event()
        self.future: concurrent.futures.Future[None] = concurrent.futures.Future()
        self.future.add_done_callback(lambda f: self._stop.set() if f.cancelled() else None)
        self._thread = threading.Thread(target=self._loop, daemon=True,
                                        name="memcluster-ttl-sweeper")

    def start(self) -> Sweeper:
        self._thread.start()
        return self

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                swept = self._sweep()
            except Exception as exc:  # keep sweeping; one failed read is not fatal
                log.warning("TTL sweep failed: %s", type(exc).__name__)
                continue
            if swept is None:
                break
            if swept:
                log.info("TTL sweep: %d items expired", swept)
        if not self.future.done():
            self.future.set_result(None)

    def stop(self, timeout: float | None = None) -> bool:
        """Stop the thread; True once it has ended (False if `timeout` ran out first)."""
        self._stop.set()
        self._thread.join(timeout)
        return not self._thread.is_alive()


def sweeper_task(sweep: Callable[[], Awaitable[int]], interval: float,
                 stop: asyncio.Event) -> asyncio.Task[None]:
    """The async form of `Sweeper`: a task on the running loop that sweeps every `interval`
    seconds until `stop` is set or the task is cancelled (AsyncPostgresStore's shape)."""

    async def loop() -> None:
        while not stop.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)
                return
            try:
                swept = await sweep()
                if swept:
                    log.info("TTL sweep: %d items expired", swept)
            except Exception as exc:
                log.warning("TTL sweep failed: %s", type(exc).__name__)

    task = asyncio.get_running_loop().create_task(loop())
    task.set_name("memcluster-ttl-sweeper")
    return task


__all__ = ["ExpiryLog", "Sweeper", "interval_seconds", "sweeper_task"]
