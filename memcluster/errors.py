"""The error hierarchy: one root, few precise subclasses, permanent apart from transient.

Every error memcluster raises on purpose derives from `MemclusterError`. Names never
shadow builtins (no `TimeoutError`, no `KeyError`): callers can catch ours without
catching Python's. `TransientError` marks the ones a retry may cure.
"""

from __future__ import annotations

from typing import Any


class MemclusterError(Exception):
    """Root of every error memcluster raises on purpose."""


class TransientError(MemclusterError):
    """A failure that a retry after a short wait may cure."""


class NotFound(MemclusterError):
    """The key (or cluster, or shard) does not exist."""


class InvalidKey(MemclusterError, ValueError):
    """A key or namespace breaks the key rules (non-empty str, at most 512 UTF-8 bytes)."""


class InvalidValue(MemclusterError, ValueError):
    """A value, metadata or option is not msgpack-native, too large or too deep."""


class VersionConflict(MemclusterError):
    """A compare-and-set (`if_version`, `overwrite=False`) found another version."""

    def __init__(self, message: str, *, key: str | None = None,
                 expected: int | None = None, actual: int | None = None) -> None:
        super().__init__(message)
        self.key = key
        self.expected = expected
        self.actual = actual

    def __reduce__(self) -> tuple[Any, ...]:
        """Keep the fields when pickled across processes (Ray)."""
        return (_rebuild, (type(self), self.args,
                           {"key": self.key, "expected": self.expected, "actual": self.actual}))


class UnsupportedQuery(MemclusterError):
    """The backend cannot answer this query; it never silently matches everything."""


class UnsupportedOperation(MemclusterError):
    """The backend does not implement an operation the caller needs."""


class UnknownSource(MemclusterError, LookupError):
    """No memory source has that name."""


class ConfigError(MemclusterError, ValueError):
    """A configuration is invalid; the message names the field (`sources[1].replicas`)."""


class ConfirmationRequired(MemclusterError, ValueError):
    """A destructive call (`clear`) was made without `confirm=True`; nothing was removed."""


class CapacityExceeded(MemclusterError):
    """A bounded store is full (e.g. the memory backend's `max_items`)."""


class SourceUnavailable(TransientError):
    """The source's store or shards cannot be reached now."""


class QuorumNotReached(TransientError):
    """Fewer than W replicas acknowledged a write; the outcome may be partial."""


class StaleRing(TransientError):
    """The caller routed with an older ring version; refresh the ring and retry."""

    def __init__(self, message: str, *, current: int | None = None) -> None:
        super().__init__(message)
        self.current = current

    def __reduce__(self) -> tuple[Any, ...]:
        """Keep `current` when pickled across processes (Ray)."""
        return (_rebuild, (type(self), self.args, {"current": self.current}))


class Timeout(TransientError):
    """An operation did not finish before its deadline."""


class FencedOut(MemclusterError):
    """A control write carried a fencing epoch older than the current one: another manager
    has taken the lease since. Permanent for this caller: it must stop acting as leader."""

    def __init__(self, message: str, *, epoch: int | None = None,
                 current: int | None = None) -> None:
        super().__init__(message)
        self.epoch = epoch
        self.current = current

    def __reduce__(self) -> tuple[Any, ...]:
        """Keep the fields when pickled across processes (Ray)."""
        return (_rebuild, (type(self), self.args, {"epoch": self.epoch, "current": self.current}))


class ShardUnavailable(TransientError):
    """A shard cannot serve this call now (busy, hydrating, restarting); retry shortly."""


class ShardRecovering(ShardUnavailable):
    """A shard is starting or still copying its keys back (hydrating): it serves neither
    reads nor primary writes yet. Reads may go to a replica; writes wait for it."""


class ShardDied(MemclusterError):
    """A shard actor is gone for good (permanent): route around it until it is replaced."""


class InternalError(MemclusterError):
    """A bug inside memcluster (an unexpected exception in a shard or the manager), reported
    as ours with the original type and first line; permanent: retrying will not help."""


class UnknownOutcome(TransientError):
    """A non-idempotent operation may or may not have been applied (the shard died mid-call)."""


def mark_in_flight(exc: MemclusterError) -> MemclusterError:
    """Mark `exc` as raised by the transport after the call was sent (see `in_flight`)."""
    exc.in_flight = True  # type: ignore[attr-defined]
    return exc


def in_flight(exc: BaseException) -> bool:
    """True if `exc` came from the transport after the call was sent: the shard may or may
    not have applied it (a non-idempotent op then has an unknown outcome)."""
    return bool(getattr(exc, "in_flight", False))


def _rebuild(cls: type, args: tuple, fields: dict) -> Exception:
    return cls(*args, **fields)


__all__ = [
    "CapacityExceeded",
    "ConfigError",
    "ConfirmationRequired",
    "FencedOut",
    "InternalError",
    "InvalidKey",
    "InvalidValue",
    "MemclusterError",
    "NotFound",
    "QuorumNotReached",
    "ShardDied",
    "ShardRecovering",
    "ShardUnavailable",
    "SourceUnavailable",
    "StaleRing",
    "Timeout",
    "TransientError",
    "UnknownOutcome",
    "UnknownSource",
    "UnsupportedOperation",
    "UnsupportedQuery",
    "VersionConflict",
    "in_flight",
    "mark_in_flight",
]
