"""Membership: shard heartbeats with expiry, and the list of live members.

Usage:
    members = coordinator.membership                  # no I/O yet
    members.heartbeat("cache/0", {"actor": "agents/cache/0", "incarnation": 3}, ttl_ms=3000)
    members.members()      # -> {"cache/0": {"actor": ..., "incarnation": 3}, ...} live only
    members.leave("cache/0")                          # on a clean stop

Core type: `Membership`. Keys under `memcluster:<cluster>:`: `members` is a sorted set of
member -> deadline (milliseconds on the Redis server's clock) and `members:info` a hash of
member -> JSON info. A heartbeat is one Lua script that reads Redis' `TIME`, so every node
measures expiry on the same clock and skew between nodes cannot keep a dead member alive
or expire a live one. `members()` drops (a bounded number of) expired members and returns
the rest, atomically.

What can go wrong:
  * A member stops heartbeating without `leave()` (crash, partition): it disappears once
    its TTL passes — choose a TTL of a few heartbeat intervals so one slow beat is not a
    death.
  * Redis down: heartbeats and reads raise `SourceUnavailable`. Membership is advisory
    (the manager's own health checks decide restarts), so callers log and carry on.
  * A member that comes back after expiring simply reappears on its next heartbeat.

Decision: one sorted set with server-time deadlines instead of one key per member with
PX: listing needs no SCAN over the keyspace, and expiry is visible at once rather than
whenever Redis' lazy expiry gets to the key.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from memcluster.cluster.coord.redis_conn import RedisConn, text
from memcluster.errors import InvalidValue

PRUNE_LIMIT = 256   # expired members removed per members() call (bounded sweep)

_NOW_MS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# KEYS: zset, hash. ARGV: member, ttl_ms, info json.
_HEARTBEAT = _NOW_MS + """
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
return now
"""

# KEYS: zset, hash. ARGV: prune limit. -> {member, deadline, info, ...}
_MEMBERS = _NOW_MS + """
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
for _, m in ipairs(dead) do
  redis.call('ZREM', KEYS[1], m)
  redis.call('HDEL', KEYS[2], m)
end
local live = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf', 'WITHSCORES')
local out = {}
for i = 1, #live, 2 do
  out[#out + 1] = live[i]
  out[#out + 1] = tostring(tonumber(live[i + 1]) - now)
  out[#out + 1] = redis.call('HGET', KEYS[2], live[i]) or '{}'
end
return out
"""

# KEYS: zset, hash. ARGV: member.
_LEAVE = """
local n = redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return n
"""


class Membership:
    """Heartbeats with a TTL and the live members' info."""

    def __init__(self, link: RedisConn, prefix: str) -> None:
        self._link = link
        self._zset = f"{prefix}members"
        self._hash = f"{prefix}members:info"
        self._heartbeat = link.script(_HEARTBEAT)
        self._members = link.script(_MEMBERS)
        self._leave = link.script(_LEAVE)

    def heartbeat(self, member: str, info: Mapping[str, Any] | None = None, *,
                  ttl_ms: int = 3000) -> None:
        """Announce `member` alive for `ttl_ms` more milliseconds, with its `info`."""
        if not isinstance(member, str) or not member:
            raise InvalidValue("member must be a non-empty str")
        if isinstance(ttl_ms, bool) or not isinstance(ttl_ms, int) or ttl_ms < 1:
            raise InvalidValue("ttl_ms must be an integer >= 1")
        try:
            payload = json.dumps(dict(info or {}), sort_keys=True)
        except (TypeError, ValueError) as exc:
            raise InvalidValue(f"member info must be JSON-serialisable: {exc}") from None
        with self._link.guard("membership heartbeat"):
            self._heartbeat(keys=[self._zset, self._hash], args=[member, ttl_ms, payload])

    def members(self) -> dict[str, dict[str, Any]]:
        """Live members -> their info (from the latest heartbeat), in member order."""
        return {m: info for m, (info, _left) in self._live().items()}

    def expiries(self) -> dict[str, float]:
        """Live members -> seconds until they expire without another heartbeat."""
        return {m: left for m, (_info, left) in self._live().items()}

    def alive(self, member: str) -> bool:
        return member in self._live()

    def leave(self, member: str) -> bool:
        """Remove `member` at once (a clean stop); True if it was listed."""
        with self._link.guard("membership leave"):
            return bool(self._leave(keys=[self._zset, self._hash], args=[member]))

    def _live(self) -> dict[str, tuple[dict[str, Any], float]]:
        with self._link.guard("membership read"):
            flat = self._members(keys=[self._zset, self._hash], args=[PRUNE_LIMIT])
        out: dict[str, tuple[dict[str, Any], float]] = {}
        for i in range(0, len(flat), 3):
            out[text(flat[i])] = (json.loads(text(flat[i + 2])),
                                  float(text(flat[i + 1])) / 1000.0)
        return dict(sorted(out.items()))


class HeartbeatSender:
    """One member's heartbeat as a picklable callable, handed to a shard actor: each call
    announces `member` alive for `ttl_ms` with the given info. No I/O until the first call;
    the connection is made in the process that beats."""

    def __init__(self, redis_url: str, prefix: str, member: str, ttl_ms: int) -> None:
        self.redis_url = redis_url
        self.prefix = prefix
        self.member = member
        self.ttl_ms = ttl_ms
        self._membership: Membership | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_membership": None}

    def __repr__(self) -> str:   # never the URL: it may hold a password
        return f"HeartbeatSender({self.member!r}, ttl_ms={self.ttl_ms})"

    def __call__(self, info: Mapping[str, Any]) -> None:
        if self._membership is None:
            self._membership = Membership(RedisConn.of(self.redis_url), self.prefix)
        self._membership.heartbeat(self.member, info, ttl_ms=self.ttl_ms)


__all__ = ["HeartbeatSender", "Membership"]
