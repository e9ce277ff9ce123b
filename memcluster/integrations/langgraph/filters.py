"""LangGraph filters on an item's value, and the part of them memcluster can answer itself.

Core functions: `check_filter` (reject what LangGraph's operators cannot mean),
`value_matches` (one value against one filter), `split_filter` (the conditions pushed down
to the source vs. those checked here) and `mirror` (the metadata stored with an item).

Decisions:

- LangGraph filters match the item's *value*; memcluster filters match metadata. The
  value's top-level scalar fields are mirrored into metadata, so the conditions those
  fields answer exactly (a top-level field compared with $eq $ne $gt $gte $lt $lte to a
  non-null scalar) are pushed down to the source; the rest (nested fields, lists, null)
  are checked here. Rejected: filtering everything here (no push-down, every search a
  full read) and mirroring the whole value (twice the storage for nested data).
- A dotted field name is a path into nested dicts (`{"user.access-level": "x"}` reads
  `value["user"]["access-level"]`), as SqliteStore and PostgresStore read it. A key that
  itself contains "." cannot be filtered on; InMemoryStore, which reads the name
  literally, is the odd one out.
- Comparisons follow memcluster's one query engine: numbers compare as numbers, strings as
  strings, bool is not a number, a type mismatch is no match, and a missing field reads as
  null. Gap: InMemoryStore coerces `$gt`-style operands with `float()`, so "5" > 3 there.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from memcluster import query as engine
from memcluster.errors import InvalidValue, UnsupportedQuery
from memcluster.integrations.langgraph.namespaces import RESERVED

OPERATORS = frozenset({"$eq", "$ne", "$gt", "$gte", "$lt", "$lte"})
_PUSHABLE = (str, int, float, bool)
_MIRRORED = (str, int, float, bool, bytes, type(None))


def _is_operators(cond: Any) -> bool:
    if not isinstance(cond, Mapping) or not cond:
        return False
    dollars = [isinstance(k, str) and k.startswith("$") for k in cond]
    if any(dollars) and not all(dollars):
        raise InvalidValue(f"a filter condition mixes operators and fields: {sorted(cond)!r}")
    return all(dollars)


def check_filter(flt: Any, where: str = "filter") -> None:
    """Raise InvalidValue / UnsupportedQuery for a filter LangGraph's operators cannot mean."""
    if flt is None:
        return
    if not isinstance(flt, Mapping):
        raise InvalidValue(f"{where}: must be a dict, got {type(flt).__name__}")
    for name, cond in flt.items():
        if not isinstance(name, str) or not name:
            raise InvalidValue(f"{where}: field names must be non-empty str, got {name!r}")
        if _is_operators(cond):
            for op, arg in cond.items():
                if op not in OPERATORS:
                    raise UnsupportedQuery(f"{where}.{name}: unknown operator {op!r} "
                                           f"(supported: {', '.join(sorted(OPERATORS))})")
                engine.check_filter({"f": {op: arg}})
        elif isinstance(cond, Mapping):
            check_filter(cond, f"{where}.{name}")


def _test(value: Any, op: str, arg: Any) -> bool:
    """One comparison under memcluster's rules (one engine, not a second definition)."""
    return engine.match_filter({"f": value}, {"f": {op: arg}})


def field_at(value: Any, name: str) -> Any:
    """The field `name` of `value`, following dots into nested dicts; None when missing."""
    for part in name.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def value_matches(value: Mapping[str, Any], flt: Mapping[str, Any] | None) -> bool:
    """True if an item's value satisfies a LangGraph filter (missing fields read as null).

    A plain dict condition matches nested fields partially, an operator dict applies each
    operator, anything else must be equal (lists element by element, in order).
    """
    for name, cond in (flt or {}).items():
        got = field_at(value, name)
        if _is_operators(cond):
            ok = all(_test(got, op, arg) for op, arg in cond.items())
        elif isinstance(cond, Mapping):
            ok = isinstance(got, Mapping) and value_matches(got, cond)
        else:
            ok = _test(got, "$eq", cond)
        if not ok:
            return False
    return True


def split_filter(flt: Mapping[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(pushed, residual): the conditions the mirrored metadata answers exactly, and the rest.

    Pushed: a top-level field (no "." or "$", not the reserved key) compared with a
    non-null scalar. For those, metadata (missing when the value's field is absent or not a
    scalar) and the value (missing reads as null) give the same answer.
    """
    pushed: dict[str, Any] = {}
    residual: dict[str, Any] = {}
    for name, cond in (flt or {}).items():
        plain_name = "." not in name and not name.startswith("$") and name != RESERVED
        if _is_operators(cond):
            scalar = all(isinstance(arg, _PUSHABLE) for arg in cond.values())
            target = pushed if plain_name and scalar else residual
            target[name] = dict(cond)
        elif plain_name and isinstance(cond, _PUSHABLE):
            pushed[name] = {"$eq": cond}
        else:
            residual[name] = cond
    return pushed, residual


def mirror(value: Mapping[str, Any], own: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The metadata stored with an item: its top-level scalar fields, plus the adapter's own
    bookkeeping (TTL, vectors, ...) under the reserved key when there is any."""
    meta = {k: v for k, v in value.items() if isinstance(v, _MIRRORED) and k != RESERVED}
    if own:
        meta[RESERVED] = dict(own)
    return meta


__all__ = ["OPERATORS", "check_filter", "field_at", "mirror", "split_filter", "value_matches"]
