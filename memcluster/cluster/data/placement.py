"""A source's placement: its ring with N (replicas), W (write quorum) and R (read quorum).

Core type: `Placement`, a pure value: `preference(key, namespace)` is the key's N shards in
ring order, primary first, memoised per placement so a hot key hashes nothing. The router
consumes it; it never decides placement inline (riak_core's `apl`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from memcluster.cluster.data.ring import Ring, routing_key
from memcluster.errors import InvalidValue


@dataclass(frozen=True)
class Placement:
    """A source's layout: its ring, N (replicas) and W (write quorum). A pure value."""

    source: str
    ring: Ring
    replicas: int
    write_quorum: int
    read_quorum: int = 1     # > 1: retrieve compares that many replicas and repairs them
    _prefs: dict[str, dict[str, tuple[str, ...]]] = field(
        default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not 1 <= self.write_quorum <= self.replicas:
            raise InvalidValue(f"write_quorum must be in 1..{self.replicas}, "
                               f"got {self.write_quorum}")
        if not 1 <= self.read_quorum <= self.replicas:
            raise InvalidValue(f"read_quorum must be in 1..{self.replicas}, "
                               f"got {self.read_quorum}")

    def preference(self, key: str, namespace: str = "") -> tuple[str, ...]:
        """The key's N shards, primary first; memoised per (namespace, key) in a bounded
        cache (nested dicts: a hit allocates nothing and hashes no md5)."""
        keys = self._prefs.get(namespace)
        if keys is None:
            if len(self._prefs) >= _PREF_CACHE:
                self._prefs.clear()
            keys = self._prefs[namespace] = {}
        prefs = keys.get(key)
        if prefs is None:
            if len(keys) >= _PREF_CACHE:
                keys.clear()
            prefs = keys[key] = self.ring.preference(routing_key(key, namespace),
                                                     self.replicas)
        return prefs


_PREF_CACHE = 1 << 16  # memoised keys per namespace (and namespaces) per placement

