"""Hints: a listener for the cluster's pub/sub channel (`memcluster:<cluster>:events`).

Usage:
    listener = coordinator.subscribe_hints(lambda hint: client.refresh_ring(hint["source"]))
    ...                                  # hints arrive on a daemon thread
    listener.stop()

Core type: `HintListener`. A hint is a JSON object with a `kind` (`"ring"` after a ring
switch: `source`, `version`, `epoch`). After the subscription was broken and restored the
listener delivers `{"kind": "resubscribed"}`, because hints sent meanwhile are lost:
whoever listens should re-read what it caches.

What can go wrong:
  * Hints are lost while the subscriber is disconnected (pub/sub does not queue):
    `resubscribed` says so; correctness never depends on a hint (shards answer
    `StaleRing` to an old ring).
  * The callback raises: the error is logged and the listener keeps listening.
  * Redis down: `start()` raises `SourceUnavailable`; once started, the listener retries
    with backoff until `stop()`.

Decision: one thread per listener polling `get_message` with a short timeout, rather
than redis-py's `run_in_thread`, so reconnects, the `resubscribed` hint and a prompt
`stop()` are under our control.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from memcluster.cluster.coord.redis_conn import RedisConn, text
from memcluster.logs import event, get_logger

log = get_logger("cluster.hints")

POLL_S = 0.2
MAX_BACKOFF_S = 2.0


class HintListener:
    """Calls `callback(hint: dict)` for every hint on `channel`, on its own daemon thread."""

    def __init__(self, link: RedisConn, channel: str,
                 callback: Callable[[dict[str, Any]], None]) -> None:
        self._link = link
        self.channel = channel
        self._callback = callback
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pubsub: Any = None

    def start(self) -> HintListener:
        """Subscribe (waiting for Redis' confirmation) and start the thread; returns self."""
        if self._thread is not None:
            return self
        self._subscribe()
        self._thread = threading.Thread(target=self._run, name=f"hints:{self.channel}",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 2.0) -> None:
        """Stop listening and close the subscription."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        self._close()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> HintListener:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _subscribe(self) -> None:
        self._close()
        with self._link.guard("hint subscribe"):
            pubsub = self._link.client.pubsub()
            pubsub.subscribe(self.channel)
            deadline = time.monotonic() + 5.0
            while time.monotonic() < deadline:
                msg = pubsub.get_message(timeout=POLL_S)
                if msg and text(msg["type"]) == "subscribe":
                    break
        self._pubsub = pubsub

    def _close(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            with contextlib.suppress(Exception):  # a broken connection may fail to close
                pubsub.close()

    def _run(self) -> None:
        backoff = 0.05
        while not self._stop.is_set():
            try:
                if self._pubsub is None:
                    self._subscribe()
                    backoff = 0.05
                    event(log, "hints.resubscribed", channel=self.channel)
                    self._deliver({"kind": "resubscribed"})
                msg = self._pubsub.get_message(ignore_subscribe_messages=True, timeout=POLL_S)
            except Exception as exc:  # connection trouble: back off, resubscribe
                if self._stop.is_set():
                    return
                event(log, "hints.disconnected", level=logging.WARNING, channel=self.channel,
                      error=type(exc).__name__)
                self._close()
                self._stop.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
                continue
            if msg and text(msg["type"]) == "message":
                try:
                    hint = json.loads(text(msg["data"]))
                except ValueError:
                    continue
                if isinstance(hint, dict):
                    self._deliver(hint)

    def _deliver(self, hint: dict[str, Any]) -> None:
        try:
            self._callback(hint)
        except Exception:
            log.exception("hint callback failed for %s", hint.get("kind"))


__all__ = ["HintListener"]
