"""Retry: a deadline, exponential backoff and jitter as one object (kazoo's `KazooRetry`).

Core type: `Retry`. Callers say what may be retried (`retry_on`, transient errors by
default) and how long they are willing to wait overall; the object owns the schedule.
`Retry.run(fn, on_retry=...)` calls `fn` until it returns, raises something that is not
retryable, or the deadline passes (then the last error is raised as is, so a caller sees
the real cause). The rejected alternative, a `retry=True` flag on each call, scatters
the policy over every call site and cannot express a deadline.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from memcluster.errors import TransientError

T = TypeVar("T")


@dataclass(frozen=True)
class Retry:
    """How to retry: overall `deadline` seconds, backoff from `delay` by `factor` up to
    `max_delay`, each sleep scaled by a random factor in [1 - jitter, 1 + jitter]."""

    deadline: float = 10.0
    delay: float = 0.005
    factor: float = 2.0
    max_delay: float = 0.5
    jitter: float = 0.25
    retry_on: tuple[type[BaseException], ...] = (TransientError,)
    clock: Callable[[], float] = field(default=time.monotonic, compare=False)
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False)
    uniform: Callable[[float, float], float] = field(default=random.uniform, compare=False)

    def delays(self):  # type: ignore[no-untyped-def]
        """The (unjittered) backoff schedule, forever."""
        delay = self.delay
        while True:
            yield delay
            delay = min(delay * self.factor, self.max_delay)

    def run(self, fn: Callable[[], T], *,
            on_retry: Callable[[BaseException], None] | None = None) -> T:
        """Call `fn` until it succeeds or the deadline passes; `on_retry(exc)` before each wait."""
        end = self.clock() + self.deadline
        for delay in self.delays():
            try:
                return fn()
            except self.retry_on as exc:
                left = end - self.clock()
                if left <= 0:
                    raise
                if on_retry is not None:
                    on_retry(exc)
                jittered = delay * (1 + self.uniform(-self.jitter, self.jitter))
                self.sleep(max(0.0, min(jittered, left)))
        raise AssertionError("unreachable")  # pragma: no cover


NO_RETRY = Retry(deadline=0.0)
