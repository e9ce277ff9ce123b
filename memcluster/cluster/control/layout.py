"""A source's layout: its spec and its placement on the current ring, as a pure value.

Core types: `Layout` (spec + `Placement` + whether the backend is durable) and
`layout_for(spec, ring)`, which derives N (replicas) and W (write quorum) from the spec and
checks them against the ring. The manager holds one `Layout` per source and swaps it for
a new value when the ring or the spec changes; nothing mutates one in place.

Decision: a layout is frozen and replaced whole (`dataclasses.replace`) when a scale or a
recovered ring switch changes it, because the manager serves up to 32 concurrent calls and
its router reads `placement` while `scale` runs: a reader sees the old layout or the new
one, never a spec from one and a ring from the other. The rejected alternative, a mutable
per-source record edited field by field, would need every reader to take the manager's
lock. N and W default by durability here, in one place, so `directory()`, the router and
the rebalancer never disagree on them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from memcluster.backends.registry import backend_name, resolve_backend
from memcluster.cluster.data.placement import Placement
from memcluster.cluster.data.ring import Ring
from memcluster.errors import ConfigError
from memcluster.model import SourceSpec


@dataclass(frozen=True)
class Layout:
    """A source as the manager runs it: its spec and its placement."""

    spec: SourceSpec
    placement: Placement
    durable: bool
    node_local: bool = False

    def describe(self) -> dict[str, Any]:
        cls = resolve_backend(self.spec.backend)
        return {"backend": backend_name(self.spec.backend),
                "capabilities": cls.capabilities.as_dict(),
                "description": self.spec.description, "default": self.spec.default,
                "shards": len(self.placement.ring), "replicas": self.placement.replicas,
                "write_quorum": self.placement.write_quorum,
                "read_quorum": self.spec.read_quorum or 1,
                "ring": self.placement.ring.to_dict()}


def layout_for(spec: SourceSpec, ring: Ring) -> Layout:
    """N, W and R from the spec, defaulting by durability (N=1 durable, else 2; W=N; R=1)."""
    cls = resolve_backend(spec.backend)
    durable = cls.capabilities.durable
    n = spec.replicas if spec.replicas is not None else min(1 if durable else 2, len(ring))
    if n > len(ring):
        raise ConfigError(f"sources[{spec.name}].replicas: {n} replicas need at least "
                          f"{n} shards, have {len(ring)}")
    w = spec.write_quorum if spec.write_quorum is not None else n
    if w > n:
        raise ConfigError(f"sources[{spec.name}].write_quorum: must be <= replicas ({n})")
    r = spec.read_quorum or 1
    if r > n:
        raise ConfigError(f"sources[{spec.name}].read_quorum: must be <= replicas ({n})")
    return Layout(spec, Placement(spec.name, ring, n, w, r), durable,
                  cls.node_local(spec.opts))


__all__ = ["Layout", "layout_for"]
