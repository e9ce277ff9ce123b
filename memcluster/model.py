"""The values memcluster hands around: Record, Query, Page and SourceSpec.

They are plain frozen dataclasses with no behaviour beyond validation and conversion, so
every layer (backend, manager, shard, router, client) can pass them across process
boundaries unchanged. Query validates itself at construction: a bad limit or an unknown
`order_by` fails where it is written, not deep inside a backend.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, TypeVar

from memcluster.errors import InvalidValue

ORDER_FIELDS = ("key", "created_at", "updated_at", "score", "version")
MAX_LIMIT = (1 << 31) - 1
"""The largest limit or offset any call takes (`Query`, `list_keys`). A 32-bit bound:
every store takes it as a LIMIT/OFFSET (a 64-bit one overflowed SQLite and PostgreSQL),
`offset + limit` stays far inside 64 bits wherever it is added up, and no page can hold
that many records anyway."""
SEARCH_MODES = ("vector", "keyword", "hybrid")
T = TypeVar("T")


def fast_constructor(cls: type[T]) -> Callable[..., T]:
    """A constructor of the frozen, slotted dataclass `cls` taking every field positionally.

    For hot paths that build thousands of Records or ops per batch: a frozen dataclass's
    `__init__` sets each field through `object.__setattr__` (~1.1 us for a Record); this
    sets the slots through their descriptors (~0.4 us). The result is the same object of
    the same class, but nothing is checked, no default applies and no `__post_init__` runs,
    so use it only where the fields are already validated and all given, in order.
    """
    names = [f.name for f in fields(cls)]  # type: ignore[arg-type]
    scope: dict[str, Any] = {"_new": object.__new__, "_cls": cls}
    body = []
    for i, name in enumerate(names):
        scope[f"_set{i}"] = getattr(cls, name).__set__
        body.append(f"    _set{i}(obj, {name})\n")
    source = (f"def build({', '.join(names)}):\n    obj = _new(_cls)\n"
              f"{''.join(body)}    return obj\n")
    exec(source, scope)  # generated from the class's own field names, nothing else
    build = scope["build"]
    build.__qualname__ = build.__name__ = f"fast_{cls.__name__}"
    return build  # type: ignore[no-any-return]


@dataclass(frozen=True, slots=True)
class Record:
    """One stored memory. Times are epoch seconds; `expires_at` None means never."""

    key: str
    value: Any
    namespace: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    version: int = 1
    created_at: float = 0.0
    updated_at: float = 0.0
    expires_at: float | None = None
    score: float | None = None

    def expired(self, now: float) -> bool:
        """True if the record's TTL has passed at `now`."""
        return self.expires_at is not None and self.expires_at <= now

    def ttl_left(self, now: float | None = None) -> float | None:
        """Seconds until expiry (None if it never expires)."""
        if self.expires_at is None:
            return None
        return max(0.0, self.expires_at - (time.time() if now is None else now))

    def with_score(self, score: float | None) -> Record:
        return replace(self, score=score)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict (bytes values stay bytes; callers that need JSON convert)."""
        return {
            "key": self.key, "value": self.value, "namespace": self.namespace,
            "metadata": self.metadata, "version": self.version,
            "created_at": self.created_at, "updated_at": self.updated_at,
            "expires_at": self.expires_at, "score": self.score,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Record:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


new_record = fast_constructor(Record)
"""`Record(key, value, namespace, metadata, version, created_at, updated_at, expires_at,
score)` with every field given, for hot paths (see `fast_constructor`)."""


def check_count(name: str, value: Any, minimum: int) -> int:
    """`value` if it is an int from `minimum` to `MAX_LIMIT` (a limit, an offset), else
    `InvalidValue` naming it."""
    if isinstance(value, bool) or not isinstance(value, int) \
            or not minimum <= value <= MAX_LIMIT:
        shown = repr(value) if isinstance(value, (int, float)) and abs(value) < 1e30 \
            else f"<{type(value).__name__}>"
        raise InvalidValue(f"{name} must be an int from {minimum} to 2**31-1, got {shown}")
    return value


@dataclass(frozen=True, slots=True)
class Query:
    """What to search for. Fields left None are not constraints.

    Checked here for shape (types, limit and offset from 0 to `MAX_LIMIT`); the contents
    of text, pattern and filter are checked where a query enters an op
    (`SearchOp.make`, `CountOp.make`), with the value rules of `memcluster.codec`.

    text: case-insensitive substring on key and value (key-value backends) or semantic
    similarity (vector backends). pattern: glob on keys. filter: metadata operators
    ($eq $ne $gt $gte $lt $lte $in $nin $contains $exists, $and $or $not).
    order_by: one of key, created_at, updated_at, score, version; '-' prefix descends.
    """

    text: str | None = None
    pattern: str | None = None
    filter: dict[str, Any] | None = None
    limit: int = 10
    offset: int = 0
    order_by: str | None = None
    min_score: float | None = None

    def __post_init__(self) -> None:
        if self.text is not None and not isinstance(self.text, str):
            raise InvalidValue(f"Query.text must be str, got {type(self.text).__name__}")
        if self.pattern is not None and not isinstance(self.pattern, str):
            raise InvalidValue(f"Query.pattern must be str, got {type(self.pattern).__name__}")
        if self.filter is not None and not isinstance(self.filter, dict):
            raise InvalidValue(f"Query.filter must be a dict, got {type(self.filter).__name__}")
        check_count("Query.limit", self.limit, 0)
        check_count("Query.offset", self.offset, 0)
        if self.order_by is not None and (
            not isinstance(self.order_by, str) or self.order_by.lstrip("-") not in ORDER_FIELDS
        ):
            raise InvalidValue(f"Query.order_by must be one of {ORDER_FIELDS} "
                               f"(optionally '-'-prefixed), got {self.order_by!r}")
        if self.min_score is not None and (
            isinstance(self.min_score, bool) or not isinstance(self.min_score, (int, float))
        ):
            raise InvalidValue(f"Query.min_score must be a number, got {self.min_score!r}")

    @classmethod
    def of(cls, query: Query | str | None = None, **overrides: Any) -> Query:
        """Coerce what a caller passed to search/count: a Query, a text str, or None."""
        if query is None:
            base = cls()
        elif isinstance(query, Query):
            base = query
        elif isinstance(query, str):
            base = cls(text=query)
        else:
            raise InvalidValue(f"query must be a Query or a str, got {type(query).__name__}")
        given = {k: v for k, v in overrides.items() if v is not None}
        return replace(base, **given) if given else base


def _check_number(name: str, value: Any, *, positive: bool) -> float:
    number = math.nan
    if not isinstance(value, bool) and isinstance(value, (int, float)):
        try:
            number = float(value)
        except OverflowError:  # an int beyond any float
            number = math.inf
    if not math.isfinite(number) or number < 0 or (positive and number == 0):
        shown = repr(value)[:40] if isinstance(value, float) or number == number \
            else type(value).__name__
        raise InvalidValue(f"Ranking.{name} must be a finite number "
                           f"{'> 0' if positive else '>= 0'}, got {shown}")
    return number


@dataclass(frozen=True, slots=True)
class Ranking:
    """How a search combines relevance with recency and importance (Park et al., 2023).

    score = (relevance * rel + recency * 0.5 ** (age / half_life) + importance * imp)
            / (relevance + recency + importance)

    where rel is the search mode's relevance in [0, 1], age is seconds since the record's
    `updated_at`, and imp is the number at `importance_field` (a dotted metadata path)
    divided by `importance_scale` and clipped to [0, 1] (missing or not a number: 0). Each
    term depends on the record alone, never on the other candidates, so a cluster's
    per-shard top-k merge to the same answer as one store would give.
    """

    relevance: float = 1.0
    recency: float = 0.0
    importance: float = 0.0
    half_life: float = 86400.0
    importance_field: str = "importance"
    importance_scale: float = 1.0

    def __post_init__(self) -> None:
        for name in ("relevance", "recency", "importance"):
            _check_number(name, getattr(self, name), positive=False)
        if self.relevance + self.recency + self.importance <= 0:
            raise InvalidValue("Ranking needs at least one weight > 0")
        _check_number("half_life", self.half_life, positive=True)
        _check_number("importance_scale", self.importance_scale, positive=True)
        if not isinstance(self.importance_field, str) or not self.importance_field:
            raise InvalidValue(f"Ranking.importance_field must be a non-empty str, "
                               f"got {self.importance_field!r}")

    @classmethod
    def of(cls, value: Ranking | Mapping[str, Any] | None) -> Ranking | None:
        """A Ranking from a Ranking, a dict of its fields (unknown ones: InvalidValue) or None."""
        if value is None or isinstance(value, Ranking):
            return value
        if not isinstance(value, Mapping):
            raise InvalidValue(f"ranking must be a Ranking or a dict, got {type(value).__name__}")
        unknown = [repr(k)[:40] for k in value if k not in cls.__dataclass_fields__]
        if unknown:
            raise InvalidValue(f"ranking: unknown field(s) {', '.join(unknown)}; "
                               f"known: {', '.join(cls.__dataclass_fields__)}")
        return cls(**value)

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


def check_mode(mode: Any) -> str | None:
    """`mode` if it is None or one of SEARCH_MODES, else InvalidValue."""
    if mode is not None and mode not in SEARCH_MODES:
        raise InvalidValue(f"mode must be one of {', '.join(SEARCH_MODES)}, got {mode!r}")
    return mode


@dataclass(frozen=True, slots=True)
class Page:
    """One page of keys; `cursor` is opaque and None when there are no more."""

    keys: list[str]
    cursor: str | None = None

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.keys)

    def __len__(self) -> int:
        return len(self.keys)


@dataclass(frozen=True, slots=True)
class SourceSpec:
    """A named memory source: its backend and options, and how the cluster lays it out.

    `backend` is a registered name (memory, files, sqlite, redis, postgres, vector), a
    dotted path to a MemoryBackend class, or the class itself. `replicas` None means the
    backend's default (2 for state held in the actor, 1 for a durable store);
    `write_quorum` None means all replicas. MemoryManager ignores shards/replicas.
    """

    name: str
    backend: Any
    description: str = ""
    default: bool = False
    opts: dict[str, Any] = field(default_factory=dict)
    shards: int = 1
    replicas: int | None = None
    write_quorum: int | None = None
    supervision: dict[str, Any] = field(default_factory=dict)
    read_quorum: int | None = None  # cluster: replicas compared per read (None/1 = primary)
    consolidation: dict[str, Any] | None = None  # see memcluster.consolidation.check_config
