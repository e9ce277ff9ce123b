"""The ring: an immutable, versioned placement of keys on shards over uhashring.

Core type: `Ring(version, shard_ids, domains=...)`. It is a pure value (riak_core's
`ring`): built once, never mutated, compared and shipped between processes as (version,
shard ids, vnodes, domains). A change (scale, or spreading over more failure domains) makes
a new ring with version + 1; who owns and caches the current ring is someone else's
concern (the manager actor and the client).

`preference(key, n)` returns n distinct shards, the first being the key's primary. Each
shard belongs to a logical failure domain (`domains`, e.g. "d0", "d1": the manager maps
each to a Ray node or a zone); walking clockwise from the key's point, the list takes a
shard only if its domain is not used yet, and falls back to the skipped shards in ring
order only when there are fewer domains than n (riak's `target_n_val`). So a key's N
replicas sit in N distinct domains whenever the ring has N domains. Domains are logical
and part of the ring, so moving a domain to another node moves shard actors, never keys;
only a new ring (a different domain count or shard set) moves keys, through a rebalance.
Without `domains` every shard is its own domain: plain ring order.

It is on every operation's hot path, so the ring precomputes, for every point of the
uhashring continuum, that ordered list of shards; a lookup is then one md5, one bisect and
one index. Asking for more replicas than there are shards is an error, never a silent
shortfall. The rejected alternative was calling uhashring's `range()` per lookup: it walks
the continuum and allocates a list on every call.
"""

from __future__ import annotations

from bisect import bisect
from collections.abc import Iterable, Mapping
from typing import Any

from uhashring import HashRing

from memcluster.errors import ConfigError

DEFAULT_VNODES = 160


def routing_key(key: str, namespace: str = "") -> str:
    """What the ring hashes: the namespace and the key, so tenants spread over shards."""
    return f"{namespace}\x1f{key}" if namespace else key


class Ring:
    """An immutable, versioned consistent-hash ring over shard ids."""

    __slots__ = ("_hashi", "_points", "_prefs", "domains", "shard_ids", "version", "vnodes")

    def __init__(self, version: int, shard_ids: Iterable[str], *,
                 vnodes: int = DEFAULT_VNODES, domains: Mapping[str, str] | None = None
                 ) -> None:
        ids = tuple(shard_ids)
        if not ids:
            raise ConfigError("a ring needs at least one shard")
        if len(set(ids)) != len(ids):
            raise ConfigError(f"duplicate shard ids in ring: {ids}")
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise ConfigError(f"ring version must be an int >= 1, got {version!r}")
        if domains is not None:
            if set(domains) != set(ids) or not all(isinstance(d, str) and d
                                                   for d in domains.values()):
                raise ConfigError(f"ring domains must name one domain per shard, got "
                                  f"{dict(domains)!r} for {ids}")
            domains = {sid: domains[sid] for sid in ids}
        self.version = version
        self.shard_ids = ids
        self.vnodes = vnodes
        self.domains: dict[str, str] = domains or {sid: sid for sid in ids}
        key = (ids, vnodes, tuple(self.domains[sid] for sid in ids))
        built = _BUILT.get(key)
        if built is None:
            built = _BUILT[key] = _build(ids, vnodes, self.domains)
            while len(_BUILT) > _BUILT_MAX:
                del _BUILT[next(iter(_BUILT))]
        self._hashi, self._points, self._prefs = built

    def __setattr__(self, name: str, value: Any) -> None:
        if hasattr(self, "_prefs"):
            raise AttributeError("Ring is immutable; make a new one with next()")
        object.__setattr__(self, name, value)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (self.version, self.shard_ids, self.vnodes, self.domains))

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Ring) and self.version == other.version
                and self.shard_ids == other.shard_ids and self.vnodes == other.vnodes
                and self.domains == other.domains)

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

    @property
    def domain_count(self) -> int:
        """How many distinct logical failure domains the ring's shards are in."""
        return len(set(self.domains.values()))

    def next(self, shard_ids: Iterable[str], *, domain_count: int | None = None) -> Ring:
        """A new ring over `shard_ids` with version + 1, its shards dealt round-robin over
        `domain_count` logical domains (default: as many as this ring has, at most one per
        shard)."""
        ids = tuple(shard_ids)
        count = domain_count if domain_count is not None else self.domain_count
        return Ring(self.version + 1, ids, vnodes=self.vnodes,
                    domains=spread_domains(ids, count))

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "shard_ids": list(self.shard_ids),
                "vnodes": self.vnodes, "domains": dict(self.domains)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Ring:
        return cls(int(data["version"]), data["shard_ids"],
                   vnodes=int(data.get("vnodes", DEFAULT_VNODES)),
                   domains=data.get("domains"))


# Rings are rebuilt whenever one crosses a process boundary (pickle) or is read from
# Redis; the continuum and preference lists depend only on (ids, vnodes, domains), so
# the last few are kept and shared (they are never mutated).
_BUILT: dict[tuple[Any, ...], tuple[Any, list[int], list[tuple[str, ...]]]] = {}
_BUILT_MAX = 32


def _build(ids: tuple[str, ...], vnodes: int, dom: Mapping[str, str]
           ) -> tuple[Any, list[int], list[tuple[str, ...]]]:
    """The uhashring continuum and, for every point, its ordered shard list: the distinct
    shards met walking clockwise, one per domain first, then the skipped ones in order."""
    ring = HashRing(nodes=list(ids), vnodes=vnodes)
    points = ring.get_points()
    owners = [o for _, o in points]
    prefs: list[tuple[str, ...]] = []
    total = len(ids)
    size = len(owners)
    cache: dict[tuple[str, ...], tuple[str, ...]] = {}
    for start in range(size):
        seen: list[str] = []
        i = start
        while len(seen) < total:
            owner = owners[i]
            if owner not in seen:
                seen.append(owner)
            i = (i + 1) % size
        walk = tuple(seen)
        ordered = cache.get(walk)
        if ordered is None:
            used: set[str] = set()
            first: list[str] = []
            rest: list[str] = []
            for sid in walk:
                (rest if dom[sid] in used else first).append(sid)
                used.add(dom[sid])
            ordered = cache[walk] = tuple(first + rest)
        prefs.append(ordered)
    return ring.hashi, [p for p, _ in points], prefs


def spread_domains(shard_ids: Iterable[str], count: int) -> dict[str, str]:
    """Shards dealt round-robin over `count` logical domains ("d0", "d1", ...), in the
    order given (index order), so each domain holds a near-equal share."""
    ids = tuple(shard_ids)
    count = max(1, min(int(count), len(ids)))
    return {sid: f"d{i % count}" for i, sid in enumerate(ids)}


def _rebuild(version: int, shard_ids: tuple[str, ...], vnodes: int,
             domains: dict[str, str] | None = None) -> Ring:
    return Ring(version, shard_ids, vnodes=vnodes, domains=domains)
