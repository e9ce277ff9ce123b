"""The leader lease: one holder at a time per cluster, with a fencing epoch.

Usage:
    lease = coordinator.lease("manager-7f3a", ttl_ms=5000)    # no I/O yet
    if lease.acquire():                 # SET-if-absent with PX, and INCR the epoch, atomically
        coordinator.save_spec(spec, lease.epoch)   # every control write carries the epoch
        while lease.renew():            # every ttl/3
            ...
    lease.release()                     # only removes the key if it is still ours

Core type: `LeaderLease`. The key `memcluster:<cluster>:leader` holds `"<epoch> <token>"`
with a PX expiry; `memcluster:<cluster>:epoch` is INCRed by the same Lua script that sets
the leader key, so every acquisition gets a strictly larger epoch (the fencing token).
Renew and release are Lua scripts that act only if the key still holds our exact value.
The token is `<holder_id>/<random>`: two lease objects with the same holder id are still
two different holders.

What can go wrong:
  * Lease lost: a pause (GC, a frozen VM, Redis unreachable) longer than the TTL lets the
    key expire and another manager acquire it. `held` turns False on our side as soon as
    the local validity window ends (measured from *before* the acquire/renew request was
    sent, minus a drift allowance), so a holder that checks `held` stops acting in time
    under bounded clock drift. It cannot stop a write already in flight: that is what the
    epoch is for — `Coordinator.fence_check(epoch)` and the ring/spec scripts reject a
    stale epoch, and shards reject calls from an older epoch.
  * Redis down: acquire/renew/release raise `SourceUnavailable`; `held` stays True until
    the validity window ends, then False. A failed renew never extends the window.
  * Redis restarted without persistence: the epoch key may restart from 0. Run Redis
    with AOF (the chart does) so epochs never go backwards.

Decision: a single-Redis lease (SET NX PX + Lua), not Redlock over several masters: the
cluster already trusts one Redis for its spec and rings, and fencing epochs make safety
independent of the lease's timing; Redlock would add nodes without removing the need for
fencing.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable

from memcluster.cluster.coord.redis_conn import RedisConn, text

DRIFT_FACTOR = 0.01        # allowance for clock drift between us and Redis, per TTL
DRIFT_MIN_S = 0.002        # plus a fixed allowance for Redis' millisecond resolution

_ACQUIRE = """
local cur = redis.call('GET', KEYS[1])
if cur then
  if cur == ARGV[3] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return {1, tonumber(ARGV[4])}
  end
  local sep = string.find(cur, ' ', 1, true)
  return {0, tonumber(string.sub(cur, 1, sep - 1))}
end
local epoch = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], epoch .. ' ' .. ARGV[1], 'PX', ARGV[2])
return {1, epoch}
"""

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class LeaderLease:
    """A renewable lease on `leader_key` that bumps `epoch_key` on every acquisition.

    Not thread-safe: one lease object belongs to one campaign (see `election.py`).
    """

    def __init__(self, link: RedisConn, leader_key: str, epoch_key: str, holder_id: str,
                 ttl_ms: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        if not holder_id or " " in holder_id:
            raise ValueError("holder_id must be a non-empty str without spaces")
        if isinstance(ttl_ms, bool) or not isinstance(ttl_ms, int) or ttl_ms < 10:
            raise ValueError("ttl_ms must be an integer >= 10")
        self._link = link
        self._leader_key = leader_key
        self._epoch_key = epoch_key
        self.holder_id = holder_id
        self.ttl_ms = ttl_ms
        self.token = f"{holder_id}/{secrets.token_hex(8)}"
        self._clock = clock
        self._epoch: int | None = None
        self._valid_until = 0.0
        self._acquire = link.script(_ACQUIRE)
        self._renew = link.script(_RENEW)
        self._release = link.script(_RELEASE)

    @property
    def ttl(self) -> float:
        """The TTL in seconds."""
        return self.ttl_ms / 1000.0

    @property
    def held(self) -> bool:
        """True while our local validity window is open (see "Lease lost")."""
        return self._epoch is not None and self._clock() < self._valid_until

    @property
    def epoch(self) -> int | None:
        """The fencing epoch of our current (or most recent) tenure; None if never held."""
        return self._epoch

    @property
    def valid_until(self) -> float:
        """The end of the local validity window on the lease's clock."""
        return self._valid_until

    def _window(self, sent_at: float) -> float:
        return sent_at + self.ttl - self.ttl * DRIFT_FACTOR - DRIFT_MIN_S

    def _value(self) -> str:
        return f"{self._epoch} {self.token}"

    def acquire(self) -> bool:
        """Try once to become the holder; True if held now (re-acquiring renews it)."""
        sent_at = self._clock()
        # If the key still holds our last value, nobody acquired since: our tenure goes on.
        args = [self.token, self.ttl_ms, self._value() if self._epoch else "", self._epoch or 0]
        with self._link.guard("lease acquire"):
            ok, epoch = self._acquire(keys=[self._leader_key, self._epoch_key], args=args)
        if not ok:
            self._valid_until = 0.0
            return False
        self._epoch = int(epoch)
        self._valid_until = self._window(sent_at)
        return True

    def renew(self) -> bool:
        """Extend the lease if it is still ours; False (and `held` False) if it was lost."""
        if self._epoch is None:
            return False
        sent_at = self._clock()
        with self._link.guard("lease renew"):
            ok = self._renew(keys=[self._leader_key], args=[self._value(), self.ttl_ms])
        if ok:
            self._valid_until = self._window(sent_at)
            return True
        self._valid_until = 0.0
        return False

    def release(self) -> bool:
        """Give the lease up if it is still ours; True if our key was removed."""
        if self._epoch is None:
            return False
        self._valid_until = 0.0
        with self._link.guard("lease release"):
            return bool(self._release(keys=[self._leader_key], args=[self._value()]))

    def current_holder(self) -> tuple[str, int] | None:
        """Who holds the lease in Redis now, as (token, epoch); None if nobody."""
        with self._link.guard("lease read"):
            raw = self._link.client.get(self._leader_key)
        return parse_leader_value(raw)


def parse_leader_value(raw: object) -> tuple[str, int] | None:
    """`"<epoch> <token>"` -> (token, epoch); None for a missing key."""
    if raw is None:
        return None
    epoch, _, token = text(raw).partition(" ")
    return token, int(epoch)


__all__ = ["LeaderLease", "parse_leader_value"]
