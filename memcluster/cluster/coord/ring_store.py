"""Ring versions in Redis: immutable versions and a pointer switched by compare-and-set.

Usage:
    store = coordinator.ring_store                       # no I/O yet
    store.publish("cache", 2, ring.to_dict(), expected=1, epoch=lease.epoch)
    version, data = store.load("cache")                  # -> (2, {...}) or None
    store.put_version("cache", 3, target.to_dict(), epoch=lease.epoch)   # stage a target
    ...move the keys whose owners change...
    store.switch("cache", 3, expected=2, epoch=lease.epoch)              # then switch
    store.gc("cache", keep=2, epoch=lease.epoch)         # drop versions older than the last 2

Core type: `RingStore`. Keys under `memcluster:<cluster>:`: `ring:<source>:<version>` holds
one version as canonical JSON and never changes once written (writing the same content
again is a no-op; different content is a `VersionConflict`); `ring:<source>` holds the
current version number. The switch is one Lua script that checks, atomically, that the
caller's fencing epoch is the current epoch (`FencedOut` otherwise), that the pointer
still holds `expected` (`VersionConflict` otherwise; `expected=0` or None means "no ring
yet") and that the new version is larger; then it moves the pointer and publishes a hint
`{"kind": "ring", "source", "version", "epoch"}` on `memcluster:<cluster>:events`.

What can go wrong:
  * A deposed manager (lease lost, still running) tries to switch: its epoch is stale, the
    script refuses with `FencedOut`, the pointer does not move.
  * Two switches race: the second sees a pointer other than its `expected` and fails with
    `VersionConflict(actual=...)`; it must reload and decide again.
  * A hint is lost (pub/sub is fire-and-forget, a subscriber may be reconnecting): clients
    also re-read the pointer when a shard answers `StaleRing`, so hints only make them
    faster, never correct.
  * Redis down: every call raises `SourceUnavailable`; the cluster keeps serving on the
    ring it has cached.

Decision: versions are immutable keys plus a pointer, rather than one key overwritten in
place, so a reader can always fetch the exact version a shard names in `StaleRing`, and a
target ring can be staged before keys move and switched only after.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from memcluster.cluster.coord.redis_conn import RedisConn, text
from memcluster.errors import FencedOut, InvalidValue, NotFound, VersionConflict

_SOURCE = re.compile(r"^[^\s:*?\[\]]{1,200}$")

# Shared by the scripts below: the caller's epoch must be the current one.
_FENCE = """
local current_epoch = tonumber(redis.call('GET', KEYS[3]) or '0')
if current_epoch ~= tonumber(ARGV[1]) then return {'FENCED', current_epoch} end
"""

# KEYS: pointer, version key, epoch key. ARGV: epoch, expected, version, payload ('' = must
# exist already), channel, hint.
_SWITCH = _FENCE + """
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
if cur ~= tonumber(ARGV[2]) then return {'CONFLICT', cur} end
if tonumber(ARGV[3]) <= cur then return {'NOT_NEWER', cur} end
local existing = redis.call('GET', KEYS[2])
if ARGV[4] ~= '' then
  if existing and existing ~= ARGV[4] then return {'EXISTS', cur} end
  if not existing then redis.call('SET', KEYS[2], ARGV[4]) end
elseif not existing then
  return {'MISSING', cur}
end
redis.call('SET', KEYS[1], ARGV[3])
redis.call('PUBLISH', ARGV[5], ARGV[6])
return {'OK', cur}
"""

# KEYS: pointer, version key, epoch key. ARGV: epoch, payload.
_PUT = _FENCE + """
local existing = redis.call('GET', KEYS[2])
if existing and existing ~= ARGV[2] then return {'EXISTS', 0} end
if not existing then redis.call('SET', KEYS[2], ARGV[2]) end
return {'OK', 0}
"""

# KEYS: pointer, (unused), epoch key, then version keys to delete. ARGV: epoch, then versions.
_GC = _FENCE + """
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
local n = 0
for i = 4, #KEYS do
  if tonumber(ARGV[i - 2]) < cur then n = n + redis.call('UNLINK', KEYS[i]) end
end
return {'OK', n}
"""

# KEYS: pointer. ARGV: version key prefix. Reads pointer and content in one step.
_LOAD_CURRENT = """
local v = redis.call('GET', KEYS[1])
if not v then return false end
return {v, redis.call('GET', ARGV[1] .. v)}
"""


def canonical_json(data: Mapping[str, Any]) -> str:
    """JSON with sorted keys and no spaces: equal data, equal bytes (immutability checks)."""
    try:
        return json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidValue(f"ring data must be JSON-serialisable: {exc}") from None


def check_source(source: str) -> str:
    if not isinstance(source, str) or not _SOURCE.match(source):
        raise InvalidValue(f"source name {source!r} cannot be used in a Redis key "
                           "(no spaces, ':', '*', '?', '[' or ']')")
    return source


def check_version(version: int, what: str = "version") -> int:
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise InvalidValue(f"{what} must be an integer >= 0, got {version!r}")
    return version


class RingStore:
    """Immutable ring versions per source and a fenced compare-and-set pointer."""

    def __init__(self, link: RedisConn, prefix: str, epoch_key: str, channel: str) -> None:
        self._link = link
        self._prefix = prefix
        self._epoch_key = epoch_key
        self.channel = channel
        self._switch = link.script(_SWITCH)
        self._put = link.script(_PUT)
        self._gc = link.script(_GC)
        self._load_current = link.script(_LOAD_CURRENT)

    def pointer_key(self, source: str) -> str:
        return f"{self._prefix}ring:{check_source(source)}"

    def version_key(self, source: str, version: int) -> str:
        return f"{self.pointer_key(source)}:{check_version(version)}"

    # -- writes (fenced) ---------------------------------------------------------------

    def publish(self, source: str, version: int, data: Mapping[str, Any], *,
                expected: int | None, epoch: int) -> None:
        """Write version `version` (immutable) and switch the pointer to it, atomically."""
        self._run_switch(source, version, canonical_json(data), expected, epoch)

    def switch(self, source: str, version: int, *, expected: int | None, epoch: int) -> None:
        """Move the pointer to an already stored version (`NotFound` if it is not stored)."""
        self._run_switch(source, version, "", expected, epoch)

    def put_version(self, source: str, version: int, data: Mapping[str, Any], *,
                    epoch: int) -> None:
        """Store a version without switching to it (e.g. a target ring during a rebalance)."""
        check_version(version)
        keys = [self.pointer_key(source), self.version_key(source, version), self._epoch_key]
        with self._link.guard("ring put"):
            status, info = self._put(keys=keys, args=[_epoch(epoch), canonical_json(data)])
        self._raise_for(text(status), int(info), source, version, None, epoch)

    def gc(self, source: str, *, keep: int = 2, epoch: int) -> int:
        """Delete versions older than the current one, keeping the newest `keep`; -> count."""
        if keep < 1:
            raise InvalidValue("keep must be >= 1 (the current version is always kept)")
        doomed = self.versions(source)[:-keep]
        if not doomed:
            return 0
        keys = [self.pointer_key(source), self.pointer_key(source), self._epoch_key]
        keys += [self.version_key(source, v) for v in doomed]
        with self._link.guard("ring gc"):
            status, info = self._gc(keys=keys, args=[_epoch(epoch), *doomed])
        self._raise_for(text(status), int(info), source, 0, None, epoch)
        return int(info)

    def _run_switch(self, source: str, version: int, payload: str, expected: int | None,
                    epoch: int) -> None:
        check_version(version)
        expected = check_version(expected or 0, "expected")
        hint = json.dumps({"kind": "ring", "source": source, "version": version,
                           "epoch": epoch})
        keys = [self.pointer_key(source), self.version_key(source, version), self._epoch_key]
        args = [_epoch(epoch), expected, version, payload, self.channel, hint]
        with self._link.guard("ring switch"):
            status, info = self._switch(keys=keys, args=args)
        self._raise_for(text(status), int(info), source, version, expected, epoch)

    @staticmethod
    def _raise_for(status: str, info: int, source: str, version: int, expected: int | None,
                   epoch: int) -> None:
        if status == "OK":
            return
        if status == "FENCED":
            raise FencedOut(f"ring {source!r}: epoch {epoch} is stale (current {info})",
                            epoch=epoch, current=info)
        if status == "CONFLICT":
            raise VersionConflict(f"ring {source!r}: expected version {expected}, "
                                  f"current is {info}", key=source, expected=expected,
                                  actual=info)
        if status == "NOT_NEWER":
            raise VersionConflict(f"ring {source!r}: version {version} is not newer than "
                                  f"the current {info}", key=source, expected=expected,
                                  actual=info)
        if status == "EXISTS":
            raise VersionConflict(f"ring {source!r} version {version} already exists with "
                                  "other content (versions are immutable)", key=source,
                                  actual=version)
        if status == "MISSING":
            raise NotFound(f"ring {source!r} version {version} is not stored")
        raise RuntimeError(f"unexpected ring script status {status!r}")

    # -- reads -------------------------------------------------------------------------

    def current_version(self, source: str) -> int | None:
        """The version the pointer names, None if the source has no ring yet."""
        with self._link.guard("ring read"):
            raw = self._link.client.get(self.pointer_key(source))
        return None if raw is None else int(text(raw))

    def load(self, source: str, version: int | None = None) -> tuple[int, dict[str, Any]] | None:
        """(version, data) of the current ring (or of `version`); None if absent."""
        if version is not None:
            with self._link.guard("ring read"):
                raw = self._link.client.get(self.version_key(source, version))
            return None if raw is None else (version, json.loads(text(raw)))
        with self._link.guard("ring read"):
            reply = self._load_current(keys=[self.pointer_key(source)],
                                       args=[self.pointer_key(source) + ":"])
        if not reply or len(reply) < 2 or reply[1] is None:
            return None
        return int(text(reply[0])), json.loads(text(reply[1]))

    def versions(self, source: str) -> list[int]:
        """Every stored version of `source`, ascending."""
        pattern = self.pointer_key(source) + ":*"
        with self._link.guard("ring scan"):
            found = [text(k) for k in self._link.client.scan_iter(match=pattern, count=500)]
        return sorted(int(k.rsplit(":", 1)[1]) for k in found if k.rsplit(":", 1)[1].isdigit())

    def sources(self) -> list[str]:
        """Every source that has a current ring, sorted."""
        head = f"{self._prefix}ring:"
        with self._link.guard("ring scan"):
            found = [text(k) for k in self._link.client.scan_iter(match=head + "*", count=500)]
        return sorted(k[len(head):] for k in found if ":" not in k[len(head):])


def _epoch(epoch: int) -> int:
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        raise InvalidValue(f"epoch must be an integer >= 0, got {epoch!r}")
    return epoch


__all__ = ["RingStore", "canonical_json", "check_source"]
