"""Leader election on top of the lease: one leader, the others wait as standby.

Usage:
    stop = threading.Event()
    lease = coordinator.lease("manager-7f3a", ttl_ms=5000)
    campaign(lease, on_elected=start_managing, stop_event=stop, on_lost=crash_manager)
    # or, on a thread of its own:
    election = Election(lease, start_managing, on_lost=crash_manager).start()
    election.is_leader; election.epoch; election.stop()

Core pieces: `campaign()` — the loop (standby: try to acquire every `poll_interval`;
leader: renew every ttl/3 until lost or stopped; release on stop) — and `Election`, the
loop on a daemon thread. `on_elected(lease)` runs on the campaign's thread when the lease
is won and should return promptly (start work elsewhere): renewals wait for it.
`on_lost(lease)` runs when the lease is lost involuntarily; the campaign then goes back to
standby. If `on_elected` raises, the lease is released and the error propagates (an
`Election` keeps it in `.error`).

What can go wrong:
  * Lease lost while leading (a pause longer than the TTL, Redis unreachable for longer
    than the validity window): `on_lost` is called as soon as the campaign notices; work
    already in flight is stopped by fencing (the epoch), not by this callback.
  * Redis down while standby: acquisition attempts fail quietly and are retried.
  * Takeover latency: a standby notices a dead leader within TTL + poll_interval. A
    clean `stop()` releases the lease so a standby takes over within one poll.

Decision: election is the lease plus a loop, not a separate protocol (queues of
candidates, as in ZooKeeper recipes): with one Redis key there is nothing to order, and
fairness between standbys does not matter for a manager.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from memcluster.cluster.coord.lease import LeaderLease
from memcluster.errors import SourceUnavailable
from memcluster.logs import event, get_logger

log = get_logger("cluster.election")


def campaign(lease: LeaderLease, on_elected: Callable[[LeaderLease], None],
             stop_event: threading.Event, poll_interval: float | None = None, *,
             on_lost: Callable[[LeaderLease], None] | None = None,
             renew_interval: float | None = None) -> None:
    """Run until `stop_event` is set: stand by, lead when the lease is won, release at the end.

    `poll_interval` (default ttl/2) is how often a standby tries to acquire;
    `renew_interval` (default ttl/3) how often the leader renews.
    """
    poll = poll_interval if poll_interval is not None else lease.ttl / 2
    renew_every = renew_interval if renew_interval is not None else lease.ttl / 3
    leading = False
    try:
        while not stop_event.is_set():
            if not leading:
                try:
                    leading = lease.acquire()
                except SourceUnavailable as exc:
                    event(log, "election.unavailable", level=logging.WARNING,
                          holder=lease.holder_id, error=str(exc))
                if not leading:
                    stop_event.wait(poll)
                    continue
                event(log, "election.elected", holder=lease.holder_id, epoch=lease.epoch)
                on_elected(lease)
                continue
            stop_event.wait(renew_every)
            if stop_event.is_set():
                break
            try:
                leading = lease.renew()
            except SourceUnavailable as exc:
                leading = lease.held
                event(log, "election.renew_failed", level=logging.WARNING,
                      holder=lease.holder_id, epoch=lease.epoch, error=str(exc))
            if not leading:
                event(log, "election.lost", level=logging.WARNING, holder=lease.holder_id,
                      epoch=lease.epoch)
                if on_lost is not None:
                    on_lost(lease)
    finally:
        if leading:
            try:
                lease.release()
                event(log, "election.released", holder=lease.holder_id, epoch=lease.epoch)
            except SourceUnavailable:
                pass   # the lease expires on its own


class Election:
    """`campaign()` on a daemon thread: `start()`, `is_leader`, `epoch`, `stop()`."""

    def __init__(self, lease: LeaderLease, on_elected: Callable[[LeaderLease], None], *,
                 on_lost: Callable[[LeaderLease], None] | None = None,
                 poll_interval: float | None = None,
                 renew_interval: float | None = None) -> None:
        self.lease = lease
        self._on_elected = on_elected
        self._on_lost = on_lost
        self._poll = poll_interval
        self._renew = renew_interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def start(self) -> Election:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, daemon=True,
                                            name=f"election:{self.lease.holder_id}")
            self._thread.start()
        return self

    def _run(self) -> None:
        try:
            campaign(self.lease, self._on_elected, self._stop, self._poll,
                     on_lost=self._on_lost, renew_interval=self._renew)
        except BaseException as exc:
            self.error = exc
            log.exception("election for %s ended with an error", self.lease.holder_id)

    @property
    def is_leader(self) -> bool:
        return self.running and self.lease.held

    @property
    def epoch(self) -> int | None:
        return self.lease.epoch

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop campaigning; a leader releases the lease so a standby can take over."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)


__all__ = ["Election", "campaign"]
