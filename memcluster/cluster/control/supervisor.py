"""OTP-style supervision, in pure Python: restart strategies, restart types, intensity.

Core types:
  * `ChildSpec` — how to start one child (`start() -> handle`), when to restart it
    (`permanent` always, `transient` only after a crash, `temporary` never) and how long a
    graceful stop may take before the child is killed.
  * `Supervisor` — starts its children in order, reacts to `child_exited(id, reason)` with
    its strategy (`one_for_one` restarts the child, `one_for_all` restarts every child,
    `rest_for_one` restarts the child and every child started after it), and gives up when
    more than `intensity` restarts happen within `period` seconds: it stops its children
    and escalates — to its parent supervisor (a nested supervisor is one of its parent's
    children) or, at the root, to `on_give_up` (the manager crashes itself there, Ray
    restarts it and it recovers from Redis).
  * `Terminator` — the injected "graceful stop, then kill" for handles (`ray.kill` in the
    manager; a fake in tests). `SupervisionSpec` — the `supervision:` config section.
  * `SupervisorEvent` — every decision, kept in a bounded log and passed to `on_event`.

Design decision: the supervisor knows nothing about Ray, Redis, threads or time beyond an
injected clock. Whoever watches the children (the manager's health checks, `ActorDiedError`)
reports exits; the supervisor only decides and calls `start`/`stop`/`kill`. That makes every
strategy testable with fake children and a fake clock, and one implementation serves the
per-source supervisors and the root. The rejected alternative was leaning on Ray's own
`max_restarts`: it restarts an actor in place but has no strategies, no restart intensity
window and no escalation, and it would restart a shard without the hydration the manager
must run first.

Calls are serialised by a re-entrant lock per supervisor; escalation to the parent happens
after the lock is released, so a parent and a child supervisor never wait on each other.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from memcluster.errors import ConfigError, MemclusterError

RestartType = Literal["permanent", "transient", "temporary"]
Strategy = Literal["one_for_one", "one_for_all", "rest_for_one"]
ExitReason = Literal["normal", "shutdown", "crash"]
ChildState = Literal["not_started", "running", "exited", "stopped"]
SupervisorState = Literal["idle", "running", "gave_up", "shut_down"]

RESTART_TYPES: tuple[str, ...] = ("permanent", "transient", "temporary")
STRATEGIES: tuple[str, ...] = ("one_for_one", "one_for_all", "rest_for_one")
EXIT_REASONS: tuple[str, ...] = ("normal", "shutdown", "crash")

DEFAULT_INTENSITY = 5          # per source supervisor: 5 restarts ...
DEFAULT_PERIOD = 30.0          # ... within 30 seconds
ROOT_INTENSITY = 3             # the root: 3 restarts ...
ROOT_PERIOD = 300.0            # ... within 300 seconds
DEFAULT_SHUTDOWN_TIMEOUT = 5.0
EVENT_LOG_SIZE = 1000


@dataclass(frozen=True, slots=True)
class ChildSpec:
    """How to start and stop one child. `start()` returns the child's handle."""

    id: str
    start: Callable[[], Any]
    restart: RestartType = "permanent"
    shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise ValueError("ChildSpec.id must be a non-empty str")
        if not callable(self.start):
            raise ValueError(f"ChildSpec {self.id!r}: start must be callable")
        if self.restart not in RESTART_TYPES:
            raise ValueError(f"ChildSpec {self.id!r}: restart must be one of {RESTART_TYPES}")
        if isinstance(self.shutdown_timeout, bool) or not (
                isinstance(self.shutdown_timeout, (int, float)) and self.shutdown_timeout >= 0):
            raise ValueError(f"ChildSpec {self.id!r}: shutdown_timeout must be a number >= 0")


@runtime_checkable
class Terminator(Protocol):
    """Stops handles: `stop` asks gracefully and reports whether the child ended in time."""

    def stop(self, handle: Any, timeout: float) -> bool:
        """Ask the child to stop; return True if it ended within `timeout` seconds."""
        ...

    def kill(self, handle: Any) -> None:
        """End the child at once (after a graceful stop timed out or failed)."""
        ...


class HandleTerminator:
    """The default: calls `handle.stop(timeout) -> bool` and `handle.kill()` when present.

    A handle without `stop` counts as not stopped gracefully, and one without `kill` is
    left alone (nothing more can be done for it).
    """

    def stop(self, handle: Any, timeout: float) -> bool:
        stop = getattr(handle, "stop", None)
        return bool(stop(timeout)) if callable(stop) else False

    def kill(self, handle: Any) -> None:
        kill = getattr(handle, "kill", None)
        if callable(kill):
            kill()


class CallbackTerminator:
    """A terminator from two functions: `stop(handle, timeout) -> bool` and `kill(handle)`."""

    def __init__(self, stop: Callable[[Any, float], bool], kill: Callable[[Any], None]) -> None:
        self._stop = stop
        self._kill = kill

    def stop(self, handle: Any, timeout: float) -> bool:
        return bool(self._stop(handle, timeout))

    def kill(self, handle: Any) -> None:
        self._kill(handle)


@dataclass(frozen=True, slots=True)
class SupervisorEvent:
    """One supervisor decision, for logs: `kind` is e.g. `restarting`, `gave_up`."""

    time: float
    supervisor: str
    kind: str
    child: str | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ChildInfo:
    """A snapshot of one child for `children()`; `restarts` counts restarts, not the start."""

    id: str
    state: ChildState
    restart: RestartType
    restarts: int
    handle: Any


@dataclass(frozen=True, slots=True)
class SupervisionSpec:
    """The config's `supervision: {strategy, intensity, period}` section, validated."""

    strategy: Strategy = "one_for_one"
    intensity: int = DEFAULT_INTENSITY
    period: float = DEFAULT_PERIOD

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None, *, path: str = "supervision",
                  default: SupervisionSpec | None = None) -> SupervisionSpec:
        """Validate `data` (None means all defaults); errors are ConfigError naming the field.

        Example: `SupervisionSpec.from_dict({"intensity": 10}, path="sources[0].supervision")`.
        """
        base = default or SOURCE_SUPERVISION
        if data is None:
            return base
        if not isinstance(data, Mapping):
            raise ConfigError(f"{path}: must be a mapping with strategy, intensity, period")
        unknown = sorted(set(data) - {"strategy", "intensity", "period"})
        if unknown:
            raise ConfigError(f"{path}.{unknown[0]}: unknown field "
                              "(allowed: strategy, intensity, period)")
        strategy = data.get("strategy", base.strategy)
        if strategy not in STRATEGIES:
            raise ConfigError(f"{path}.strategy: must be one of {', '.join(STRATEGIES)}")
        intensity = data.get("intensity", base.intensity)
        if isinstance(intensity, bool) or not isinstance(intensity, int) or intensity < 0:
            raise ConfigError(f"{path}.intensity: must be an integer >= 0")
        period = data.get("period", base.period)
        if isinstance(period, bool) or not isinstance(period, (int, float)) or not period > 0:
            raise ConfigError(f"{path}.period: must be a number of seconds > 0")
        return cls(strategy, intensity, float(period))

    def to_dict(self) -> dict[str, Any]:
        return {"strategy": self.strategy, "intensity": self.intensity, "period": self.period}


SOURCE_SUPERVISION = SupervisionSpec("one_for_one", DEFAULT_INTENSITY, DEFAULT_PERIOD)
ROOT_SUPERVISION = SupervisionSpec("one_for_one", ROOT_INTENSITY, ROOT_PERIOD)


class _Child:
    __slots__ = ("handle", "restarts", "spec", "state")

    def __init__(self, spec: ChildSpec) -> None:
        self.spec = spec
        self.state: ChildState = "not_started"
        self.handle: Any = None
        self.restarts = 0


class SupervisorGaveUp(MemclusterError):
    """The root supervisor exceeded its restart intensity and has no `on_give_up`."""


class _GiveUp(Exception):
    """Internal: restart intensity exceeded while handling an exit."""


class Supervisor:
    """Supervises an ordered list of children (see the module docstring).

    Example:
        sup = Supervisor([ChildSpec("shard-0", start_shard_0), ChildSpec("shard-1", ...)],
                         "one_for_one", intensity=5, period=30.0,
                         terminator=RayTerminator(), on_event=log_event)
        sup.start()                       # starts shard-0 then shard-1
        sup.child_exited("shard-1", "crash")   # restarts shard-1 (counted in the window)
        sup.shutdown()                    # stops shard-1 then shard-0

    `child_exited` about a child that is not running (or, with `handle=`, about an older
    incarnation) is ignored: watchers may report the same death twice, or report the
    death of a child the supervisor itself just stopped.
    """

    def __init__(self, children: Iterable[ChildSpec] = (), strategy: Strategy = "one_for_one",
                 intensity: int = DEFAULT_INTENSITY, period: float = DEFAULT_PERIOD,
                 clock: Callable[[], float] = time.monotonic, parent: Supervisor | None = None,
                 *, name: str = "root", terminator: Terminator | None = None,
                 on_event: Callable[[SupervisorEvent], None] | None = None,
                 on_give_up: Callable[[Supervisor], None] | None = None,
                 lock: Any = None, start_failures: str = "raise") -> None:
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}")
        if isinstance(intensity, bool) or not isinstance(intensity, int) or intensity < 0:
            raise ValueError("intensity must be an integer >= 0")
        if not period > 0:
            raise ValueError("period must be > 0")
        self.name = name
        self.strategy: Strategy = strategy
        self.intensity = intensity
        self.period = float(period)
        self.parent = parent
        self._clock = clock
        self._terminator: Terminator = terminator or HandleTerminator()
        self._on_event = on_event
        self._on_give_up = on_give_up
        self._children: list[_Child] = []
        self._restart_times: deque[float] = deque()
        self._events: deque[SupervisorEvent] = deque(maxlen=EVENT_LOG_SIZE)
        self._state: SupervisorState = "idle"
        if start_failures not in ("raise", "restart"):
            raise ValueError("start_failures must be 'raise' or 'restart'")
        self.start_failures = start_failures
        self._lock = lock if lock is not None else threading.RLock()  # re-entrant
        for spec in children:
            self._add(spec)

    @classmethod
    def with_spec(cls, children: Iterable[ChildSpec], spec: SupervisionSpec,
                  **kwargs: Any) -> Supervisor:
        """A supervisor configured by a `SupervisionSpec` (strategy, intensity, period)."""
        return cls(children, spec.strategy, spec.intensity, spec.period, **kwargs)

    def as_child(self, restart: RestartType = "permanent",
                 shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT) -> ChildSpec:
        """A ChildSpec that runs this supervisor under a parent (id = this supervisor's name)."""
        return ChildSpec(self.name, self.start, restart, shutdown_timeout)

    # -- observation -------------------------------------------------------------------

    @property
    def state(self) -> SupervisorState:
        return self._state

    def children(self) -> list[ChildInfo]:
        """Every child in start order with its state, restart count and current handle."""
        with self._lock:
            return [ChildInfo(c.spec.id, c.state, c.spec.restart, c.restarts, c.handle)
                    for c in self._children]

    def child(self, child_id: str) -> ChildInfo:
        with self._lock:
            c = self._find(child_id)
            return ChildInfo(c.spec.id, c.state, c.spec.restart, c.restarts, c.handle)

    def events(self) -> list[SupervisorEvent]:
        """The most recent decisions (at most 1000), oldest first."""
        with self._lock:
            return list(self._events)

    def restarts_in_window(self) -> int:
        """Restarts counted against the intensity right now (those within `period`)."""
        with self._lock:
            self._forget_old(self._clock())
            return len(self._restart_times)

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> Supervisor:
        """Start every child in order; returns self (so it can be a nested child's handle).

        With `start_failures="raise"` (OTP's rule), if a child fails to start the ones
        already started are stopped in reverse order and the child's exception propagates:
        a supervisor starts whole or not at all. With "restart", a child that fails to
        start counts as a crash of that child alone (restarted per strategy and intensity,
        escalating if exceeded), and its siblings keep running: for children whose stop
        costs more than a retry (a stateful shard).
        """
        give_up = False
        with self._lock:
            if self._state == "running":
                return self
            self._restart_times.clear()
            self._state = "running"
            self._emit("starting")
            failed: list[_Child] = []
            try:
                for c in self._children:
                    try:
                        self._start_child(c)
                    except Exception as exc:
                        if self.start_failures == "raise":
                            raise
                        c.state, c.handle = "exited", None
                        self._emit("start_failed", c.spec.id, error=type(exc).__name__)
                        failed.append(c)
            except BaseException:
                self._stop_all(reverse=True)
                self._state = "idle"
                raise
            try:
                for c in failed:
                    if c.state != "running" and self._state == "running":
                        self._restart_from(c)
            except _GiveUp:
                self._give_up_locked()
                give_up = True
        if give_up:
            self._escalate()
        return self

    def shutdown(self) -> None:
        """Stop every child in reverse start order (graceful, then kill); exits are ignored."""
        with self._lock:
            if self._state in ("shut_down", "idle"):
                self._state = "shut_down"
                return
            self._state = "shut_down"
            self._stop_all(reverse=True)
            self._emit("shutdown")

    def stop(self, timeout: float | None = None) -> bool:
        """Terminator protocol for a nested supervisor: shut down; True (always graceful)."""
        self.shutdown()
        return True

    def kill(self) -> None:
        self.shutdown()

    def add_child(self, spec: ChildSpec, *, start: bool = True) -> ChildInfo:
        """Append a child (e.g. a new shard after scaling) and start it if running."""
        with self._lock:
            c = self._add(spec)
            if start and self._state == "running":
                self._start_child(c)
            return ChildInfo(c.spec.id, c.state, c.spec.restart, c.restarts, c.handle)

    def remove_child(self, child_id: str) -> None:
        """Stop a child (if running) and forget it."""
        with self._lock:
            c = self._find(child_id)
            if c.state == "running":
                self._stop_child(c)
            self._children.remove(c)
            self._emit("removed", c.spec.id)

    def replace_handle(self, child_id: str, handle: Any) -> None:
        """A running child was replaced by its owner (e.g. moved to another node): later
        exit reports name the new handle."""
        with self._lock:
            c = self._find(child_id)
            if c.state == "running":
                c.handle = handle

    def child_exited(self, child_id: str, reason: ExitReason = "crash", *,
                     handle: Any = None) -> None:
        """Report that a child ended; apply its restart type and the strategy."""
        if reason not in EXIT_REASONS:
            raise ValueError(f"reason must be one of {EXIT_REASONS}")
        with self._lock:
            if self._state != "running":
                return
            c = self._find(child_id)
            if c.state != "running" or (handle is not None and handle is not c.handle):
                self._emit("ignored_exit", child_id, reason=reason)
                return
            c.state = "exited"
            c.handle = None
            self._emit("exited", child_id, reason=reason)
            if not self._should_restart(c.spec.restart, reason):
                return
            try:
                self._restart_from(c)
                return
            except _GiveUp:
                self._give_up_locked()
        self._escalate()

    # -- internals ---------------------------------------------------------------------

    @staticmethod
    def _should_restart(restart: RestartType, reason: ExitReason) -> bool:
        if restart == "permanent":
            return True
        if restart == "transient":
            return reason == "crash"
        return False

    def _add(self, spec: ChildSpec) -> _Child:
        if any(c.spec.id == spec.id for c in self._children):
            raise ValueError(f"supervisor {self.name!r} already has a child {spec.id!r}")
        c = _Child(spec)
        self._children.append(c)
        return c

    def _find(self, child_id: str) -> _Child:
        for c in self._children:
            if c.spec.id == child_id:
                return c
        raise KeyError(f"supervisor {self.name!r} has no child {child_id!r}")

    def _emit(self, kind: str, child: str | None = None, **detail: Any) -> None:
        ev = SupervisorEvent(self._clock(), self.name, kind, child, detail)
        self._events.append(ev)
        if self._on_event is not None:
            self._on_event(ev)

    def _start_child(self, c: _Child) -> None:
        handle = c.spec.start()
        if isinstance(handle, Supervisor) and handle is not self:
            handle.parent = self
            handle.name = c.spec.id
        c.handle = handle
        c.state = "running"
        self._emit("started", c.spec.id, restarts=c.restarts)

    def _stop_child(self, c: _Child) -> None:
        handle, c.handle = c.handle, None
        c.state = "stopped"
        if isinstance(handle, Supervisor):
            handle.shutdown()
            self._emit("stopped", c.spec.id, graceful=True)
            return
        graceful = False
        try:
            graceful = self._terminator.stop(handle, c.spec.shutdown_timeout)
        except Exception as exc:  # a failed graceful stop means "kill it"
            self._emit("stop_failed", c.spec.id, error=type(exc).__name__)
        if not graceful:
            self._terminator.kill(handle)
            self._emit("killed", c.spec.id, timeout=c.spec.shutdown_timeout)
        else:
            self._emit("stopped", c.spec.id, graceful=True)

    def _stop_all(self, *, reverse: bool) -> None:
        for c in (reversed(self._children) if reverse else self._children):
            if c.state == "running":
                self._stop_child(c)

    def _forget_old(self, now: float) -> None:
        while self._restart_times and now - self._restart_times[0] > self.period:
            self._restart_times.popleft()

    def _count_restart(self, child_id: str) -> None:
        now = self._clock()
        self._forget_old(now)
        self._restart_times.append(now)
        if len(self._restart_times) > self.intensity:
            self._emit("intensity_exceeded", child_id, restarts=len(self._restart_times),
                       intensity=self.intensity, period=self.period)
            raise _GiveUp

    def _restart_from(self, failed: _Child) -> None:
        """Restart per strategy; a child that fails to start counts as another crash."""
        while True:
            self._count_restart(failed.spec.id)
            index = self._children.index(failed)
            if self.strategy == "one_for_one":
                group = [failed]
            elif self.strategy == "one_for_all":
                group = list(self._children)
            else:
                group = self._children[index:]
            self._emit("restarting", failed.spec.id, strategy=self.strategy,
                       children=[c.spec.id for c in group])
            for c in reversed(group):
                if c is not failed and c.state == "running":
                    self._stop_child(c)
            failed = self._start_group(group, failed)
            if failed is None:
                return

    def _start_group(self, group: Sequence[_Child], failed: _Child) -> _Child | None:
        """Start `group` in order (temporary siblings stay stopped); return the one that failed."""
        for c in group:
            if c is not failed and c.spec.restart == "temporary":
                continue
            c.restarts += 1
            try:
                self._start_child(c)
            except Exception as exc:  # a failed start is a crash of that child
                c.state = "exited"
                c.handle = None
                self._emit("start_failed", c.spec.id, error=type(exc).__name__)
                return c
        return None

    def _give_up_locked(self) -> None:
        self._stop_all(reverse=True)
        self._state = "gave_up"
        self._emit("gave_up", restarts=len(self._restart_times), intensity=self.intensity,
                   period=self.period)

    def _escalate(self) -> None:
        """Outside the lock: tell the parent this supervisor crashed, or call on_give_up."""
        if self.parent is not None:
            self._emit("escalated", parent=self.parent.name)
            self.parent.child_exited(self.name, "crash", handle=self)
        elif self._on_give_up is not None:
            self._on_give_up(self)
        else:
            raise SupervisorGaveUp(f"supervisor {self.name!r} gave up: more than "
                                   f"{self.intensity} restarts in {self.period:g}s")


__all__ = [
    "DEFAULT_INTENSITY",
    "DEFAULT_PERIOD",
    "ROOT_INTENSITY",
    "ROOT_PERIOD",
    "ROOT_SUPERVISION",
    "SOURCE_SUPERVISION",
    "CallbackTerminator",
    "ChildInfo",
    "ChildSpec",
    "HandleTerminator",
    "SupervisionSpec",
    "Supervisor",
    "SupervisorEvent",
    "SupervisorGaveUp",
    "Terminator",
]
