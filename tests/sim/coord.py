"""The coordination Redis, simulated: what `ClusterManager` uses of the `Coordinator`.

Core types: `SimCoordinator` (spec, epoch, the leader lease via `SimLease`, and the ring
store via `SimRingStore`, with the same fencing and compare-and-set rules as the Lua
scripts in `memcluster.cluster.coord`) and its `stall(seconds)` fault: while stalled every
call waits like a client on a frozen Redis and, past the socket timeout, fails with
`SourceUnavailable`, as `RedisConn.guard` makes the real one do. Time is the world's, so a
lease expires in virtual time.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Mapping
from typing import Any

from memcluster.errors import FencedOut, NotFound, SourceUnavailable, VersionConflict
from tests.sim.world import World

SOCKET_TIMEOUT = 1.0


class SimCoordinator:
    """The coordinator's state and recipes over the world (see the module docstring)."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.spec: dict[str, Any] | None = None
        self.epoch = 0
        self.leader: tuple[str, float] | None = None    # (token, expires at)
        self.rings: dict[str, dict[int, str]] = {}      # source -> version -> json
        self.pointers: dict[str, int] = {}
        self.stalled_until = 0.0
        self.ring_store = SimRingStore(self)
        self.membership = None

    # ---- faults --------------------------------------------------------------------------

    def stall(self, seconds: float) -> None:
        self.stalled_until = max(self.stalled_until, self.world.now + seconds)

    def _io(self) -> None:
        """One round trip: waits out a stall up to the socket timeout, then fails."""
        world = self.world
        if world.now < self.stalled_until:
            wait = min(self.stalled_until - world.now, SOCKET_TIMEOUT)
            world.sleep(wait)
            if world.now < self.stalled_until or world.rng.random() < 0.5:
                raise SourceUnavailable("the coordination Redis did not answer in time")
        world.sleep(world.rng.uniform(0.0001, 0.001))

    # ---- the Coordinator's interface ----------------------------------------------------

    def ping(self) -> bool:
        self._io()
        return True

    def close(self) -> None:
        return None

    def lease(self, holder_id: str, ttl_ms: int = 5000, *,
              clock: Callable[[], float] | None = None) -> SimLease:
        return SimLease(self, holder_id, ttl_ms)

    def current_epoch(self) -> int:
        self._io()
        return self.epoch

    def save_spec(self, spec: Mapping[str, Any], epoch: int) -> None:
        self._io()
        if epoch != self.epoch:
            raise FencedOut(f"spec: epoch {epoch} is stale (current {self.epoch})",
                            epoch=epoch, current=self.epoch)
        self.spec = json.loads(json.dumps(spec))

    def load_spec(self) -> dict[str, Any] | None:
        self._io()
        return copy.deepcopy(self.spec)

    def publish_hint(self, kind: str, **fields: Any) -> int:
        return 0

    def destroy(self) -> int:
        self._io()
        n = len(self.rings) + (self.spec is not None)
        self.rings.clear()
        self.pointers.clear()
        self.spec = None
        return n


class SimLease:
    """`LeaderLease` on the simulated Redis: SET NX PX, an epoch bumped per acquisition."""

    def __init__(self, coord: SimCoordinator, holder_id: str, ttl_ms: int) -> None:
        self.coord = coord
        self.holder_id = holder_id
        self.ttl_ms = ttl_ms
        self.token = f"{holder_id}/{coord.world.rng.getrandbits(32):08x}"
        self._epoch: int | None = None
        self._valid_until = 0.0

    @property
    def ttl(self) -> float:
        return self.ttl_ms / 1000.0

    @property
    def held(self) -> bool:
        return self._epoch is not None and self.coord.world.now < self._valid_until

    @property
    def epoch(self) -> int | None:
        return self._epoch

    def _window(self, sent_at: float) -> float:
        return sent_at + self.ttl * 0.99 - 0.002

    def acquire(self) -> bool:
        coord, now = self.coord, self.coord.world.now
        coord._io()
        held = coord.leader
        if held is not None and held[1] > coord.world.now and held[0] != self.token:
            self._valid_until = 0.0
            return False
        if held is None or held[0] != self.token or held[1] <= coord.world.now:
            coord.epoch += 1
            self._epoch = coord.epoch
        coord.leader = (self.token, coord.world.now + self.ttl)
        self._valid_until = self._window(now)
        return True

    def renew(self) -> bool:
        coord, now = self.coord, self.coord.world.now
        if self._epoch is None:
            return False
        coord._io()
        held = coord.leader
        if held is None or held[0] != self.token or held[1] <= coord.world.now:
            self._valid_until = 0.0
            return False
        coord.leader = (self.token, coord.world.now + self.ttl)
        self._valid_until = self._window(now)
        return True

    def release(self) -> bool:
        self._valid_until = 0.0
        coord = self.coord
        coord._io()
        if coord.leader is not None and coord.leader[0] == self.token:
            coord.leader = None
            return True
        return False


class SimRingStore:
    """`RingStore`: immutable versions plus a fenced compare-and-set pointer."""

    def __init__(self, coord: SimCoordinator) -> None:
        self.coord = coord

    def _fence(self, epoch: int) -> None:
        if epoch != self.coord.epoch:
            raise FencedOut(f"ring: epoch {epoch} is stale (current {self.coord.epoch})",
                            epoch=epoch, current=self.coord.epoch)

    def _put(self, source: str, version: int, data: Mapping[str, Any]) -> None:
        body = json.dumps(data, sort_keys=True)
        stored = self.coord.rings.setdefault(source, {})
        if version in stored and stored[version] != body:
            raise VersionConflict(f"ring {source!r} version {version} exists",
                                  key=source, actual=version)
        stored[version] = body

    def publish(self, source: str, version: int, data: Mapping[str, Any], *,
                expected: int | None, epoch: int) -> None:
        self.coord._io()
        self._fence(epoch)
        self._check_pointer(source, version, expected)
        self._put(source, version, data)
        self.coord.pointers[source] = version

    def switch(self, source: str, version: int, *, expected: int | None, epoch: int) -> None:
        self.coord._io()
        self._fence(epoch)
        self._check_pointer(source, version, expected)
        if version not in self.coord.rings.get(source, {}):
            raise NotFound(f"ring {source!r} version {version} is not stored")
        self.coord.pointers[source] = version

    def _check_pointer(self, source: str, version: int, expected: int | None) -> None:
        cur = self.coord.pointers.get(source, 0)
        if cur != (expected or 0):
            raise VersionConflict(f"ring {source!r}: expected {expected}, current {cur}",
                                  key=source, expected=expected, actual=cur)
        if version <= cur:
            raise VersionConflict(f"ring {source!r}: {version} is not newer than {cur}",
                                  key=source, expected=expected, actual=cur)

    def put_version(self, source: str, version: int, data: Mapping[str, Any], *,
                    epoch: int) -> None:
        self.coord._io()
        self._fence(epoch)
        self._put(source, version, data)

    def current_version(self, source: str) -> int | None:
        self.coord._io()
        return self.coord.pointers.get(source)

    def load(self, source: str, version: int | None = None
             ) -> tuple[int, dict[str, Any]] | None:
        self.coord._io()
        version = self.coord.pointers.get(source) if version is None else version
        body = self.coord.rings.get(source, {}).get(version) if version is not None else None
        return None if body is None else (version, json.loads(body))

    def versions(self, source: str) -> list[int]:
        self.coord._io()
        return sorted(self.coord.rings.get(source, {}))


__all__ = ["SimCoordinator", "SimLease", "SimRingStore"]
