"""memcluster metadata filters as Qdrant filters that never drop a match: a sound superset.

Core function: `superset(filter) -> models.Filter | None` (None: no restriction). The
qdrant backend always rechecks every candidate with the engine (`memcluster.query`), so
this translation only has to keep every record the engine would keep; where it is also
exact, the recheck changes nothing and Qdrant did all the narrowing.

Why a superset and not an exact translation: Qdrant's conditions have array semantics
(`match` on a list field matches when any element does, so `{"tags": "x"}` also finds
`["x", "y"]`), integer `match` ignores `2.0`, and `must_not` over arrays would drop
records the engine keeps. So:

- `$eq`/plain values: str and bool as `match`, numbers as a `range` from v to v (ints and
  floats alike, as the engine compares them), None as `is_null`;
- `$gt $gte $lt $lte` on numbers as `range`; `$in` as `should` of the `$eq`s;
  `$contains` of a number or bool as its `$eq` (list membership); `$exists: false` as
  `is_empty` (missing, null or []: a superset of missing);
- `$and` as `must` of what translates; `$or` only when every branch translates;
  `$ne`, `$nin`, `$not`, `$exists: true`, string ranges and substrings, lists and dicts as
  arguments: no restriction. Paths are `metadata.<a>.<b>` with plain ASCII names only.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from qdrant_client import models

from memcluster import query as engine

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_RANGES = {"$gt": "gt", "$gte": "gte", "$lt": "lt", "$lte": "lte"}


def payload_key(path: str, root: str = "metadata") -> str | None:
    """The Qdrant payload key for an engine path, or None if a name needs quoting."""
    segments = path.split(".")
    if not all(_NAME.fullmatch(s) for s in segments):
        return None
    return ".".join([root, *segments])


def superset(flt: Mapping[str, Any] | None) -> models.Filter | None:
    """A filter every record matching `flt` passes, or None when nothing can be kept out."""
    if not flt:
        return None
    musts = [c for name, cond in flt.items() if (c := _part(name, cond)) is not None]
    return models.Filter(must=musts) if musts else None


def _part(name: str, cond: Any) -> Any:
    if name == "$and":
        kept = [f for f in (superset(sub) for sub in cond) if f is not None]
        return models.Filter(must=kept) if kept else None
    if name == "$or":
        branches = [superset(sub) for sub in cond]
        if any(b is None for b in branches):
            return None  # one branch may match anything
        return models.Filter(should=branches)
    if name.startswith("$"):
        return None  # $not: the complement of a superset is no superset
    key = payload_key(name)
    if key is None:
        return None
    ops = cond if engine._is_operator_dict(cond) else {"$eq": cond}
    musts = [c for op, arg in ops.items() if (c := _operator(key, op, arg)) is not None]
    return models.Filter(must=musts) if musts else None


def _number(value: Any) -> bool:
    return type(value) in (int, float) and math.isfinite(value)


def _equals(key: str, value: Any) -> Any:
    if type(value) in (str, bool):
        return models.FieldCondition(key=key, match=models.MatchValue(value=value))
    if _number(value):
        return models.FieldCondition(key=key, range=models.Range(gte=value, lte=value))
    if value is None:
        return models.IsNullCondition(is_null=models.PayloadField(key=key))
    return None


def _operator(key: str, op: str, arg: Any) -> Any:
    if op == "$eq":
        return _equals(key, arg)
    if op == "$in":
        conds = [_equals(key, a) for a in arg]
        if not conds or any(c is None for c in conds):
            return None
        return models.Filter(should=conds)
    if op in _RANGES and _number(arg):
        return models.FieldCondition(key=key, range=models.Range(**{_RANGES[op]: arg}))
    if op == "$contains" and (type(arg) is bool or _number(arg)):
        return _equals(key, arg)
    if op == "$exists" and arg is False:
        return models.IsEmptyCondition(is_empty=models.PayloadField(key=key))
    return None


__all__ = ["payload_key", "superset"]
