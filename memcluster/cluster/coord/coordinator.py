"""The coordinator: what every node of one cluster must agree on, kept in Redis.

Usage:
    coord = Coordinator("redis://:${REDIS_PASSWORD}@redis:6379/0", "agents")   # no I/O
    coord.ping()                                        # True, or SourceUnavailable
    lease = coord.lease("manager-7f3a", ttl_ms=5000)
    if lease.acquire():
        coord.save_spec(raw_spec, lease.epoch)          # the spec as written (${VAR} refs)
        coord.ring_store.publish("cache", 1, ring.to_dict(), expected=0, epoch=lease.epoch)
    coord.load_spec()                                   # -> dict | None
    coord.membership.heartbeat("cache/0", {"incarnation": 2}, ttl_ms=3000)
    listener = coord.subscribe_hints(on_hint)           # ring switches, on a thread
    coord.fence_check(lease.epoch)                      # FencedOut if another took over
    coord.destroy()                                     # every key of the cluster, gone

Core type: `Coordinator`, a facade over the recipes, one per module: `lease.py`
(`LeaderLease`: the leader lease and the fencing epoch), `election.py` (`campaign`,
`Election`: standby until the lease is won), `ring_store.py` (`RingStore`: immutable ring
versions and a fenced compare-and-set pointer), `membership.py` (`Membership`: heartbeats
with expiry) and `hints.py` (`HintListener`: the pub/sub channel). Keys, all under
`memcluster:<cluster>:`: `spec`, `leader`, `epoch`, `ring:<source>`,
`ring:<source>:<version>`, `members`, `members:info`; channel `memcluster:<cluster>:events`.

What can go wrong:
  * Redis unreachable: every call raises `SourceUnavailable` naming the redacted URL. Redis
    is never on the data path, so data keeps flowing on the cached ring meanwhile.
  * A deposed manager writes: `save_spec`, ring writes and `fence_check` compare its epoch
    with the current one and raise `FencedOut`.
  * Secrets: the spec is stored as the caller gives it — the raw config with `${ENV_VAR}`
    references. A spec holding a URL with a clear-text password is refused (`ConfigError`)
    so an expanded secret never lands in Redis.

Decision: a thin facade that only names keys and wires recipes together, so each recipe
can be used and tested on its own; the rejected alternative, one large class with every
Lua script in it, is what kazoo's recipes avoided.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

import redis

from memcluster.cluster.coord.election import Election
from memcluster.cluster.coord.hints import HintListener
from memcluster.cluster.coord.lease import LeaderLease, parse_leader_value
from memcluster.cluster.coord.membership import Membership
from memcluster.cluster.coord.redis_conn import RedisConn, text
from memcluster.cluster.coord.ring_store import RingStore
from memcluster.cluster.names import check_cluster_name
from memcluster.errors import ConfigError, FencedOut, InvalidValue
from memcluster.secrets import MASK, redact_text

KEY_ROOT = "memcluster"
DEFAULT_LEASE_TTL_MS = 5000

# KEYS: spec, epoch. ARGV: epoch, json.
_SAVE_SPEC = """
local current_epoch = tonumber(redis.call('GET', KEYS[2]) or '0')
if current_epoch ~= tonumber(ARGV[1]) then return {'FENCED', current_epoch} end
redis.call('SET', KEYS[1], ARGV[2])
return {'OK', current_epoch}
"""


_ENV_REF = re.compile(r"\$\{[^}]*\}")


def _holds_clear_secret(value: Any) -> bool:
    """True if a str anywhere in `value` has a password that is not a `${VAR}` reference."""
    if isinstance(value, str):
        probe = _ENV_REF.sub(MASK, value)        # a reference reads as already masked
        return redact_text(probe) != probe
    if isinstance(value, Mapping):
        return any(_holds_clear_secret(k) or _holds_clear_secret(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return any(_holds_clear_secret(v) for v in value)
    return False


def cluster_prefix(cluster: str) -> str:
    """`memcluster:<cluster>:` — every key of the cluster starts with it."""
    return f"{KEY_ROOT}:{check_cluster_name(cluster)}:"


class Coordinator:
    """Names the cluster's Redis keys and hands out the coordination recipes. No I/O here."""

    def __init__(self, redis_url_or_client: str | redis.Redis | RedisConn, cluster: str, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.cluster = cluster
        self.prefix = cluster_prefix(cluster)
        self.link = RedisConn.of(redis_url_or_client)
        self._clock = clock
        self.spec_key = self.key("spec")
        self.leader_key = self.key("leader")
        self.epoch_key = self.key("epoch")
        self.events_channel = self.key("events")
        self.ring_store = RingStore(self.link, self.prefix, self.epoch_key, self.events_channel)
        self.membership = Membership(self.link, self.prefix)
        self._save_spec = self.link.script(_SAVE_SPEC)

    @property
    def where(self) -> str:
        """The redacted Redis address (safe for logs and errors)."""
        return self.link.where

    def key(self, name: str) -> str:
        return f"{self.prefix}{name}"

    # -- liveness ----------------------------------------------------------------------

    def ping(self) -> bool:
        """True if Redis answers; `SourceUnavailable` otherwise."""
        with self.link.guard("ping"):
            return bool(self.link.client.ping())

    def close(self) -> None:
        self.link.close()

    # -- leadership and fencing --------------------------------------------------------

    def lease(self, holder_id: str, ttl_ms: int = DEFAULT_LEASE_TTL_MS, *,
              clock: Callable[[], float] = time.monotonic) -> LeaderLease:
        """A (not yet acquired) lease on this cluster's `leader` key."""
        return LeaderLease(self.link, self.leader_key, self.epoch_key, holder_id, ttl_ms,
                           clock=clock)

    def election(self, holder_id: str, on_elected: Callable[[LeaderLease], None], *,
                 ttl_ms: int = DEFAULT_LEASE_TTL_MS,
                 on_lost: Callable[[LeaderLease], None] | None = None,
                 poll_interval: float | None = None) -> Election:
        """An `Election` (not started) for `holder_id` on this cluster's lease."""
        return Election(self.lease(holder_id, ttl_ms), on_elected, on_lost=on_lost,
                        poll_interval=poll_interval)

    def current_epoch(self) -> int:
        """The fencing epoch of the latest lease acquisition (0 if none ever)."""
        with self.link.guard("epoch read"):
            raw = self.link.client.get(self.epoch_key)
        return 0 if raw is None else int(text(raw))

    def leader(self) -> tuple[str, int] | None:
        """The current lease holder as (token, epoch); None if the lease is free."""
        with self.link.guard("leader read"):
            return parse_leader_value(self.link.client.get(self.leader_key))

    def fence_check(self, epoch: int) -> None:
        """Raise `FencedOut` unless `epoch` is the current epoch."""
        current = self.current_epoch()
        if epoch != current:
            raise FencedOut(f"cluster {self.cluster!r}: epoch {epoch} is stale "
                            f"(current {current}); another manager holds the lease",
                            epoch=epoch, current=current)

    # -- the spec ----------------------------------------------------------------------

    def save_spec(self, spec: Mapping[str, Any], epoch: int) -> None:
        """Store the cluster spec (raw, `${VAR}` references unexpanded), fenced by `epoch`."""
        if not isinstance(spec, Mapping):
            raise InvalidValue("spec must be a mapping")
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise InvalidValue(f"epoch must be an integer >= 0, got {epoch!r}")
        try:
            body = json.dumps({"spec": spec, "epoch": epoch, "saved_at": self._clock()},
                              sort_keys=True, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise InvalidValue(f"spec must be JSON-serialisable: {exc}") from None
        if _holds_clear_secret(spec):
            raise ConfigError("spec: holds a clear-text password or token; write it as a "
                              "${ENV_VAR} reference so no secret is stored in Redis")
        with self.link.guard("save spec"):
            status, current = self._save_spec(keys=[self.spec_key, self.epoch_key],
                                              args=[epoch, body])
        if text(status) == "FENCED":
            raise FencedOut(f"cluster {self.cluster!r}: cannot save the spec with epoch "
                            f"{epoch} (current {int(current)})", epoch=epoch,
                            current=int(current))

    def load_spec(self) -> dict[str, Any] | None:
        """The stored spec, or None if this cluster has none."""
        with self.link.guard("load spec"):
            raw = self.link.client.get(self.spec_key)
        return None if raw is None else json.loads(text(raw))["spec"]

    # -- hints -------------------------------------------------------------------------

    def subscribe_hints(self, callback: Callable[[dict[str, Any]], None]) -> HintListener:
        """Subscribe (now) to the cluster's hints; `callback(hint)` runs on a thread."""
        return HintListener(self.link, self.events_channel, callback).start()

    def publish_hint(self, kind: str, **fields: Any) -> int:
        """Publish a hint `{"kind": kind, **fields}`; returns the number of receivers."""
        with self.link.guard("publish hint"):
            return int(self.link.client.publish(self.events_channel,
                                                json.dumps({"kind": kind, **fields})))

    # -- teardown ----------------------------------------------------------------------

    def keys(self) -> list[str]:
        """Every key of this cluster (SCAN, never KEYS), sorted."""
        with self.link.guard("scan"):
            return sorted(text(k) for k in
                          self.link.client.scan_iter(match=f"{self.prefix}*", count=1000))

    def destroy(self) -> int:
        """Remove every key of this cluster (SCAN + UNLINK in batches); -> keys removed."""
        removed = 0
        batch: list[Any] = []
        with self.link.guard("destroy"):
            for k in self.link.client.scan_iter(match=f"{self.prefix}*", count=1000):
                batch.append(k)
                if len(batch) >= 500:
                    removed += int(self.link.client.unlink(*batch))
                    batch = []
            if batch:
                removed += int(self.link.client.unlink(*batch))
        return removed


__all__ = ["DEFAULT_LEASE_TTL_MS", "Coordinator", "cluster_prefix"]
