"""Bounds and eviction for an in-process store: which records go when a write needs room.

Core types: `Capacity` (a store's bounds, `max_items` and `max_bytes`, its byte count,
its policy and the record of what it evicted) and the policies: `Policy` (the interface,
and the `reject` policy: evict nothing), `LRU`, `LFU` and `TTLFirst`. A policy only
orders candidates; `Capacity.victims` decides how many to take, takes none unless enough
can go, and the store removes them and reports them (`drain_evicted`).

- `reject`: nothing is evicted; a write that needs room fails with CapacityExceeded.
- `lru`: least recently used first (a read or a write is a use), as Redis allkeys-lru but
  exact instead of sampled. An OrderedDict moved-to-end on use.
- `lfu`: least frequently used first, ties by least recent; exact counts, no decay (a
  long-popular record stays, unlike Redis's decaying counter). Frequency buckets of
  OrderedDicts, so a use is O(1).
- `ttl-first`: records with a TTL only, soonest expiry first (Redis volatile-ttl); when
  no record has a TTL, nothing can go and the write fails with CapacityExceeded.

Decision: exact orders, not Redis's sampling of five keys. Sampling saves memory but
makes the victim a matter of chance, and a store's users (and its tests) should be able
to say which record goes next. The cost is one dict entry per record for lru and lfu.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterator, Mapping
from typing import Any

from memcluster.errors import CapacityExceeded, ConfigError

Slot = tuple[str, str]  # (namespace, key)
POLICIES = ("reject", "lru", "lfu", "ttl-first")


class Policy:
    """The `reject` policy, and the interface: `used` on each read or write of a slot,
    `forget` when it is removed, `victims` in eviction order (best first). The store
    reads victims to the end it needs and only then removes them: a `victims` iterator
    is never resumed after the store changed."""

    name = "reject"

    def used(self, slot: Slot) -> None:
        return None

    def forget(self, slot: Slot) -> None:
        return None

    def clear(self) -> None:
        return None

    def victims(self) -> Iterator[Slot]:
        return iter(())


class LRU(Policy):
    name = "lru"

    def __init__(self) -> None:
        self._order: OrderedDict[Slot, None] = OrderedDict()

    def used(self, slot: Slot) -> None:
        self._order[slot] = None
        self._order.move_to_end(slot)

    def forget(self, slot: Slot) -> None:
        self._order.pop(slot, None)

    def clear(self) -> None:
        self._order.clear()

    def victims(self) -> Iterator[Slot]:
        return iter(self._order)  # the store reads victims, then removes them


class LFU(Policy):
    name = "lfu"

    def __init__(self) -> None:
        self._count: dict[Slot, int] = {}
        self._buckets: dict[int, OrderedDict[Slot, None]] = {}

    def used(self, slot: Slot) -> None:
        count = self._count.get(slot, 0)
        if count:
            self._drop(slot, count)
        count += 1
        self._count[slot] = count
        self._buckets.setdefault(count, OrderedDict())[slot] = None

    def _drop(self, slot: Slot, count: int) -> None:
        bucket = self._buckets[count]
        del bucket[slot]
        if not bucket:
            del self._buckets[count]

    def forget(self, slot: Slot) -> None:
        count = self._count.pop(slot, 0)
        if count:
            self._drop(slot, count)

    def clear(self) -> None:
        self._count.clear()
        self._buckets.clear()

    def victims(self) -> Iterator[Slot]:
        if not self._buckets:
            return
        least = min(self._buckets)  # usually one victim is enough: no sort
        yield from self._buckets[least]
        for count in sorted(self._buckets):
            if count > least:
                yield from self._buckets[count]

    def count(self, slot: Slot) -> int:
        return self._count.get(slot, 0)


class TTLFirst(Policy):
    """Victims are whatever `soonest()` yields: the store's records with a TTL, soonest
    expiry first (it owns the expiry heap; this policy keeps no state of its own)."""

    name = "ttl-first"

    def __init__(self, soonest: Callable[[], Iterator[Slot]]) -> None:
        self._soonest = soonest

    def victims(self) -> Iterator[Slot]:
        return self._soonest()


def soonest_expiring(heap: list[tuple[float, str, str]],
                     expiry_of: Callable[[str, str], float | None]) -> Iterator[Slot]:
    """Slots of an expiry heap of (expires, namespace, key), soonest first, skipping
    entries whose record is gone or expires at another time now (`expiry_of`). The stale
    top of the heap is dropped for good; the rest is sorted only when one victim is not
    enough."""
    while heap and expiry_of(heap[0][1], heap[0][2]) != heap[0][0]:
        heapq.heappop(heap)
    if not heap:
        return
    yield heap[0][1], heap[0][2]
    for expires, namespace, key in sorted(heap)[1:]:
        if expiry_of(namespace, key) == expires:
            yield namespace, key


def make_policy(name: str, soonest: Callable[[], Iterator[Slot]]) -> Policy:
    """The policy called `name` (one of POLICIES)."""
    if name == "lru":
        return LRU()
    if name == "lfu":
        return LFU()
    if name == "ttl-first":
        return TTLFirst(soonest)
    return Policy()


def _bound(opts: Mapping[str, Any], name: str) -> int | None:
    value = opts.get(name)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                              or value < 1):
        raise ConfigError(f"{name}: must be an int >= 1, got {value!r}")
    return value


class Capacity:
    """A store's bounds and eviction policy. The store calls `added` and `removed` as
    records come and go (with their sizes when `counts_bytes`), and `victims` before a
    write that adds `items` records and `size` bytes."""

    def __init__(self, max_items: int | None = None, max_bytes: int | None = None,
                 policy: Policy | None = None) -> None:
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.policy = policy or Policy()
        self.bytes = 0
        self.evictions = 0
        self.evicted: list[Slot] = []
        self.written: set[Slot] = set()  # slots written in this batch: never evicted by it
        self.in_batch = False
        self.tracks_use = self.policy.name in ("lru", "lfu")  # reads count as uses

    @classmethod
    def from_opts(cls, opts: Mapping[str, Any], soonest: Callable[[], Iterator[Slot]]
                  ) -> Capacity:
        """From the options `max_items`, `max_bytes` and `eviction`; ConfigError names a
        bad one. `soonest` yields the store's records with a TTL, soonest first."""
        max_items, max_bytes = _bound(opts, "max_items"), _bound(opts, "max_bytes")
        eviction = opts.get("eviction", "reject")
        if eviction not in POLICIES:
            raise ConfigError(f"eviction: must be one of {', '.join(POLICIES)}, "
                              f"got {eviction!r}")
        if eviction != "reject" and max_items is None and max_bytes is None:
            raise ConfigError(f"eviction: {eviction!r} needs a bound (max_items or max_bytes)")
        return cls(max_items, max_bytes, make_policy(eviction, soonest))

    @property
    def bounded(self) -> bool:
        return self.max_items is not None or self.max_bytes is not None

    @property
    def counts_bytes(self) -> bool:
        return self.max_bytes is not None

    def begin_batch(self) -> None:
        """A batch starts: fresh lists of evicted and written slots."""
        self.evicted = []
        self.written.clear()
        self.in_batch = True

    def end_batch(self) -> None:
        self.in_batch = False
        self.written.clear()

    def begin_write(self) -> None:
        """A write call starts; outside a batch it is a batch of its own."""
        if not self.in_batch:
            self.written.clear()

    def added(self, slot: Slot, size_delta: int) -> None:
        self.bytes += size_delta
        self.policy.used(slot)
        if self.bounded:
            self.written.add(slot)

    def removed(self, slot: Slot, size: int) -> None:
        self.bytes -= size
        self.policy.forget(slot)

    def clear(self) -> None:
        self.bytes = 0
        self.policy.clear()

    def fits(self, records: int, items: int, size: int) -> bool:
        """True if `records` held plus `items` more, and `size` more bytes, are in bounds."""
        return ((self.max_items is None or records + items <= self.max_items)
                and (self.max_bytes is None or self.bytes + size <= self.max_bytes))

    def victims(self, records: int, items: int, size: int, keep: Collection[Slot],
                size_of: Callable[[Slot], int | None]) -> list[Slot]:
        """The records to evict so that the write fits, best victim first, never one in
        `keep` nor one written earlier in the batch (so a batch never evicts what it wrote,
        and evictions can be forwarded to replicas before the batch's writes); `size_of`
        is None for a slot no longer held. CapacityExceeded when not enough can go: the
        caller then evicts nothing."""
        chosen: list[Slot] = []
        freed_items = freed_bytes = 0
        if not self.fits(records, items, size):
            for slot in self.policy.victims():
                taken = size_of(slot)
                if taken is None or slot in keep or slot in self.written:
                    continue
                chosen.append(slot)
                freed_items += 1
                freed_bytes += taken
                if self.fits(records, items - freed_items, size - freed_bytes):
                    break
            else:
                raise CapacityExceeded(self._full(records, items, size))
        return chosen

    def _full(self, records: int, items: int, size: int) -> str:
        held = [f"{records} records" + (f" of max_items={self.max_items}"
                                        if self.max_items is not None else "")]
        if self.max_bytes is not None:
            held.append(f"{self.bytes} bytes of max_bytes={self.max_bytes}")
        why = ("" if self.policy.name == "reject"
               else f"; eviction ({self.policy.name}) cannot free enough")
        return (f"memory backend is full ({', '.join(held)}); the write needs {items} more "
                f"records and {size} more bytes{why}")

    def record(self, slots: list[Slot]) -> None:
        """Count evicted `slots` and keep them for `drain`."""
        self.evicted.extend(slots)
        self.evictions += len(slots)

    def drain(self) -> list[Slot]:
        out, self.evicted = self.evicted, []
        return out

    def info(self) -> dict[str, Any]:
        return {"max_items": self.max_items, "max_bytes": self.max_bytes,
                "bytes": self.bytes if self.counts_bytes else None,
                "eviction": self.policy.name, "evictions": self.evictions}


__all__ = ["LFU", "LRU", "POLICIES", "Capacity", "Policy", "Slot", "TTLFirst", "make_policy",
           "soonest_expiring"]
