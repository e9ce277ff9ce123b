"""The ring: an immutable, versioned placement of keys on shards over uhashring.

Core type: `Ring(version, shard_ids)`. It is a pure value (riak_core's `ring`): built once,
never mutated, compared and shipped between processes as (version, shard ids, vnodes).
A change (scale up or down) makes a new ring with version + 1; who owns and caches the
current ring is someone else's concern (the manager actor and the client).

`preference(key, n)` returns n distinct shards in ring order, the first being the key's
primary. It is on every operation's hot path, so the ring precomputes, for every point of
the uhashring continuum, the distinct shards met walking clockwise from it; a lookup is
then one md5, one bisect and one index. Asking for more replicas than there are shards is
an error, never a silent shortfall. The rejected alternative was calling uhashring's
`range()` per lookup: it walks the continuum and allocates a list on every call.
"""

from __future__ import annotations

from bisect import bisect
from collections.abc import Iterable
from typing import Any

from uhashring import HashRing

from memcluster.errors import ConfigError

DEFAULT_VNODES = 160


def routing_key(key: str, namespace: str = "") -> str:
    """What the ring hashes: the namespace and the key, so tenants spread over shards."""
    return f"{namespace}\x1f{key}" if namespace else key


class Ring:
    """An immutable, versioned consistent-hash ring over shard ids."""

    __slots__ = ("_hashi", "_points", "_prefs", "shard_ids", "version", "vnodes")

    def __init__(self, version: int, shard_ids: Iterable[str], *,
                 vnodes: int = DEFAULT_VNODES) -> None:
        ids = tuple(shard_ids)
        if not ids:
            raise ConfigError("a ring needs at least one shard")
        if len(set(ids)) != len(ids):
            raise ConfigError(f"duplicate shard ids in ring: {ids}")
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise ConfigError(f"ring version must be an int >= 1, got {version!r}")
        self.version = version
        self.shard_ids = ids
        self.vnodes = vnodes
        ring = HashRing(nodes=list(ids), vnodes=vnodes)
        self._hashi = ring.hashi
        points = ring.get_points()
        self._points = [p for p, _ in points]
        owners = [o for _, o in points]
        # For every point, the distinct shards met walking clockwise from it.
        prefs: list[tuple[str, ...]] = []
        total = len(ids)
        size = len(owners)
        for start in range(size):
            seen: list[str] = []
            i = start
            while len(seen) < total:
                owner = owners[i]
                if owner not in seen:
                    seen.append(owner)
                i = (i + 1) % size
            prefs.append(tuple(seen))
        self._prefs = prefs

    def __setattr__(self, name: str, value: Any) -> None:
        if hasattr(self, "_prefs"):
            raise AttributeError("Ring is immutable; make a new one with next()")
        object.__setattr__(self, name, value)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (self.version, self.shard_ids, self.vnodes))

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Ring) and self.version == other.version
                and self.shard_ids == other.shard_ids and self.vnodes == other.vnodes)

    def __hash__(self) -> int:
        return hash((self.version, self.shard_ids, self.vnodes))

    def __repr__(self) -> str:
        return f"Ring(version={self.version}, shard_ids={list(self.shard_ids)})"

    def __len__(self) -> int:
        return len(self.shard_ids)

    def preference(self, key: str, n: int = 1) -> tuple[str, ...]:
        """The n distinct shards for `key` in ring order (primary first)."""
        if n > len(self.shard_ids):
            raise ConfigError(f"cannot place {n} replicas on {len(self.shard_ids)} shards")
        pos = bisect(self._points, self._hashi(key))
        if pos == len(self._points):
            pos = 0
        prefs = self._prefs[pos]
        return prefs if n == len(prefs) else prefs[:n]

    def primary(self, key: str) -> str:
        return self.preference(key, 1)[0]

    def next(self, shard_ids: Iterable[str]) -> Ring:
        """A new ring over `shard_ids` with version + 1."""
        return Ring(self.version + 1, shard_ids, vnodes=self.vnodes)

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "shard_ids": list(self.shard_ids),
                "vnodes": self.vnodes}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Ring:
        return cls(int(data["version"]), data["shard_ids"],
                   vnodes=int(data.get("vnodes", DEFAULT_VNODES)))


def _rebuild(version: int, shard_ids: tuple[str, ...], vnodes: int) -> Ring:
    return Ring(version, shard_ids, vnodes=vnodes)
