"""A fake clock for tests: time moves only when the test says so."""

from __future__ import annotations

import threading


class FakeClock:
    """Callable like `time.time`; `advance(seconds)` moves it. Thread-safe."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = float(start)
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> float:
        with self._lock:
            self._now += seconds
            return self._now
