"""The simulated world's clock and threads: a seeded, single-threaded scheduler on greenlets.

Core types: `World` (virtual time, a queue of wake-ups ordered by (time, sequence), the
seeded RNG, and the loop that runs greenlets one at a time), `Owner` (a group of greenlets
that crash together: a manager, a shard incarnation), `SimScheduler` (the control plane's
`runtime.Scheduler`: now, wall, sleep, start, event, lock, over the world) and the
cooperative `SimEvent`, `SimLock` and `Future`.

Every blocking point of the code under test (a sleep, an event, a lock, a call's result)
parks the current greenlet and returns to the loop, which wakes the next one in time order.
Nothing depends on wall-clock time or OS scheduling, so one seed is one exact run
(FoundationDB's simulator, TigerBeetle's VOPR). A crashed owner's greenlets are never
woken again, the way a killed process stops mid-instruction: their `finally` blocks do not
run. At the end `close()` unwinds them all at once.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Callable
from typing import Any

import greenlet

from memcluster.errors import MemclusterError, Timeout, mark_in_flight


class Crashed(BaseException):
    """Raised in a greenlet that tries to block after its owner crashed or the world
    closed: it unwinds without touching the world again."""


class Owner:
    """A group of greenlets that live and die together (one process)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.dead = False

    def __repr__(self) -> str:
        return f"Owner({self.name!r}{', dead' if self.dead else ''})"


class World:
    """Virtual time and the greenlet loop (see the module docstring)."""

    def __init__(self, seed: int, *, max_events: int = 2_000_000) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.now = 0.0
        self.epoch_base = 1_800_000_000.0     # wall time = base + now
        self._queue: list[tuple[float, int, Any, int, Any]] = []
        self._seq = itertools.count()
        self._tokens = itertools.count(1)
        self._owner_of: dict[Any, Owner] = {}
        self._token_of: dict[Any, int] = {}
        self._alive: list[Any] = []           # every greenlet, kept until close()
        self.hub: Any = None
        self.closed = False
        self.events = 0
        self.max_events = max_events
        self.errors: list[tuple[str, BaseException]] = []   # unexpected exceptions

    # ---- greenlets -------------------------------------------------------------------

    def spawn(self, fn: Callable[[], Any], owner: Owner, name: str = "") -> Any:
        """Start `fn` on a new greenlet of `owner`, woken now (after the current one)."""
        def run(*_started: Any) -> None:
            try:
                fn()
            except Crashed:
                pass
            except BaseException as exc:
                if not owner.dead and not self.closed:
                    self.errors.append((name or getattr(fn, "__name__", "?"), exc))

        g = greenlet.greenlet(run, parent=self.hub)
        self._owner_of[g] = owner
        self._alive.append(g)
        self._wake(g, self.now, 0, None)
        return g

    def current_owner(self) -> Owner | None:
        return self._owner_of.get(greenlet.getcurrent())

    def _wake(self, g: Any, at: float, token: int, value: Any) -> None:
        heapq.heappush(self._queue, (at, next(self._seq), g, token, value))

    def park(self, timeout: float | None = None) -> tuple[bool, Any]:
        """Suspend the current greenlet until `resume(g, value)` or `timeout` virtual
        seconds. -> (True, value) if resumed, (False, None) on timeout."""
        g = greenlet.getcurrent()
        owner = self._owner_of.get(g)
        if self.closed or owner is None or owner.dead:
            raise Crashed()
        token = next(self._tokens)
        self._token_of[g] = token
        if timeout is not None:
            self._wake(g, self.now + max(0.0, timeout), token, _TIMEOUT)
        value = self.hub.switch()
        if self.closed or owner.dead:
            raise Crashed()
        if value is _TIMEOUT:
            return False, None
        return True, value

    def resume(self, g: Any, value: Any = None, delay: float = 0.0) -> None:
        """Wake `g` (parked) with `value` after `delay` (ignored if it woke meanwhile)."""
        token = self._token_of.get(g)
        if token is not None:
            self._wake(g, self.now + delay, token, _Box(value))

    def sleep(self, seconds: float) -> None:
        self.park(seconds)

    # ---- the loop --------------------------------------------------------------------

    def run(self, main: Callable[[], Any], *, until: float = 3600.0) -> Any:
        """Run `main` (as a greenlet of its own owner) until it returns; -> its result."""
        self.hub = greenlet.getcurrent()
        result: dict[str, Any] = {}
        owner = Owner("main")

        def body() -> None:
            result["value"] = main()

        self.spawn(body, owner, "main")
        while "value" not in result:
            if not self._queue:
                raise RuntimeError(f"seed {self.seed}: deadlock, nothing left to run at "
                                   f"t={self.now:.3f}")
            at, _, g, token, value = heapq.heappop(self._queue)
            if g.dead:
                continue
            if token and self._token_of.get(g) != token:
                continue            # a stale wake-up (it was resumed another way)
            owner = self._owner_of.get(g)
            if owner is not None and owner.dead:
                continue
            self.events += 1
            if self.events > self.max_events:
                raise RuntimeError(f"seed {self.seed}: more than {self.max_events} events")
            if at > until:
                raise RuntimeError(f"seed {self.seed}: still running at t={at:.1f}s")
            self.now = max(self.now, at)
            self._token_of.pop(g, None)
            g.switch(value.value if isinstance(value, _Box) else value)
            if self.errors:
                name, exc = self.errors[0]
                raise RuntimeError(f"seed {self.seed}: untyped error in {name}: "
                                   f"{type(exc).__name__}: {exc}") from exc
        return result["value"]

    def crash(self, owner: Owner) -> None:
        """`owner`'s greenlets stop where they are, for good."""
        owner.dead = True

    def close(self) -> None:
        """Unwind every greenlet still suspended (their owners are gone with the world)."""
        self.closed = True
        for g in self._alive:
            if not g.dead and g is not greenlet.getcurrent():
                try:
                    g.throw(Crashed())
                except Crashed:
                    pass
                except BaseException:
                    pass
        self._alive.clear()
        self._queue.clear()


class _Box:
    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


_TIMEOUT = object()


class SimEvent:
    """`threading.Event` on the world."""

    def __init__(self, world: World) -> None:
        self.world = world
        self._set = False
        self._waiters: list[Any] = []

    def set(self) -> None:
        self._set = True
        for g in self._waiters:
            self.world.resume(g, True)
        self._waiters.clear()

    def clear(self) -> None:
        self._set = False

    def is_set(self) -> bool:
        return self._set

    def wait(self, timeout: float | None = None) -> bool:
        if self._set:
            return True
        g = greenlet.getcurrent()
        self._waiters.append(g)
        try:
            self.world.park(timeout)
        finally:
            if g in self._waiters:
                self._waiters.remove(g)
        return self._set


class SimLock:
    """A re-entrant lock on the world (owned by a greenlet)."""

    def __init__(self, world: World) -> None:
        self.world = world
        self._holder: Any = None
        self._count = 0
        self._waiters: list[Any] = []

    def acquire(self) -> bool:
        g = greenlet.getcurrent()
        while self._holder is not None and self._holder is not g:
            if self._holder.dead or self.world._owner_of.get(self._holder, Owner("")).dead:
                break   # its holder crashed: a dead process holds nothing
            self._waiters.append(g)
            try:
                self.world.park(None)
            finally:
                if g in self._waiters:
                    self._waiters.remove(g)
        if self._holder is not g:
            self._holder, self._count = g, 0
        self._count += 1
        return True

    def release(self) -> None:
        self._count -= 1
        if self._count == 0:
            self._holder = None
            if self._waiters:
                self.world.resume(self._waiters[0])

    def __enter__(self) -> SimLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class Future:
    """A simulated remote call: `result()` waits (virtually) and raises typed errors."""

    __slots__ = ("_done", "_error", "_value", "_waiters", "timeout", "what", "world")

    def __init__(self, world: World, what: str, timeout: float | None) -> None:
        self.world = world
        self.what = what
        self.timeout = timeout
        self._done = False
        self._value: Any = None
        self._error: BaseException | None = None
        self._waiters: list[Any] = []

    @property
    def done(self) -> bool:
        return self._done

    def resolve(self, value: Any = None, error: BaseException | None = None) -> None:
        if self._done:
            return
        self._done, self._value, self._error = True, value, error
        for g in self._waiters:
            self.world.resume(g)
        self._waiters.clear()

    def result(self) -> Any:
        if not self._done:
            g = greenlet.getcurrent()
            self._waiters.append(g)
            try:
                self.world.park(self.timeout)
            finally:
                if g in self._waiters:
                    self._waiters.remove(g)
            if not self._done:
                raise mark_in_flight(Timeout(f"{self.what} did not answer in "
                                             f"{self.timeout}s"))
        if self._error is not None:
            raise self._error
        if isinstance(self._value, MemclusterError):
            raise self._value
        return self._value


class SimScheduler:
    """`runtime.Scheduler` over the world, starting greenlets for one owner."""

    def __init__(self, world: World, owner: Owner) -> None:
        self.world = world
        self.owner = owner

    def now(self) -> float:
        return self.world.now

    def wall(self) -> float:
        return self.world.epoch_base + self.world.now

    def sleep(self, seconds: float) -> None:
        self.world.sleep(seconds)

    def uniform(self, low: float, high: float) -> float:
        return self.world.rng.uniform(low, high)

    def start(self, fn: Callable[[], None], name: str) -> None:
        self.world.spawn(fn, self.owner, name)

    def event(self) -> SimEvent:
        return SimEvent(self.world)

    def lock(self) -> SimLock:
        return SimLock(self.world)


__all__ = ["Crashed", "Future", "Owner", "SimEvent", "SimLock", "SimScheduler", "World"]
