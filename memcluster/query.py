"""The pure query engine: what a `Query` means, written once, with no storage behind it.

Core functions: `check_filter` (validate a metadata filter), `match_pattern` (glob on keys),
`match_filter` (metadata operators), `searchable_text` and `matches` (one record against one
query), `sort_records` and `run` (the whole query over an iterable of records).

Every key-value backend either runs its candidates through `run` or translates a query into
its store's language; either way this module is the reference the conformance suite holds
it to, so there is exactly one definition of "matches". The alternative, letting each
backend interpret filters its own way, is what made the original contract loose (unknown
operators silently matching everything, "9" > "10" as strings); it was rejected.

Semantics, in short:

- pattern: a glob on keys with `fnmatch.fnmatchcase` rules (case-sensitive; `*`, `?`,
  `[seq]`, `[!seq]`; no backslash escapes, so use `escape_glob` or `[*]` for a literal).
- filter: a plain value means `$eq`; several fields AND; dotted paths reach nested dicts;
  numbers compare as numbers and bool is not a number; strings compare by code point; any
  type mismatch is no match. `$ne` and `$nin` match a missing field, every other operator
  needs the field. `$contains` is list membership or substring of a str. `$exists` takes a
  bool. `$and`/`$or` take non-empty lists of filters, `$not` takes a filter. Unknown
  operators raise `UnsupportedQuery`; malformed filters raise `InvalidValue`.
- text: a case-insensitive substring of the key or of any str/number leaf of the value.
- order: `key` ascending by default; ties always break by key then namespace ascending
  (also for descending orders), so results are deterministic; records without a score
  sort last whichever way scores are ordered.
"""

from __future__ import annotations

import fnmatch
import functools
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from memcluster.errors import InvalidValue, UnsupportedQuery
from memcluster.model import Query, Record

FIELD_OPERATORS = frozenset(
    {"$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$contains", "$exists"})
LOGICAL_OPERATORS = frozenset({"$and", "$or", "$not"})
_TEXT_SEPARATOR = "\x1f"  # between leaves, so a text never matches across two of them


class _Missing:
    """The value of a field that is absent (distinct from a stored None)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<missing>"


MISSING: Any = _Missing()


# ---- patterns -----------------------------------------------------------------------------

@functools.lru_cache(maxsize=1024)
def _compile_glob(pattern: str) -> Callable[[str], re.Match[str] | None]:
    return re.compile(fnmatch.translate(pattern)).match


def match_pattern(key: str, pattern: str | None) -> bool:
    """True if `key` matches the glob `pattern` (None matches every key); case-sensitive."""
    if pattern is None:
        return True
    return _compile_glob(pattern)(key) is not None


def escape_glob(text: str) -> str:
    """A glob that matches `text` literally (`*`, `?` and `[` wrapped in brackets)."""
    return re.sub(r"([*?\[])", r"[\1]", text)


# ---- filters --------------------------------------------------------------------------------

def check_filter(filter: dict[str, Any] | None) -> None:
    """Raise `UnsupportedQuery` for an unknown `$operator`, `InvalidValue` if malformed."""
    if filter is None:
        return
    _check_filter(filter, "filter")


def _check_filter(flt: Any, path: str) -> None:
    if not isinstance(flt, Mapping):
        raise InvalidValue(f"{path}: a filter must be a dict, got {type(flt).__name__}")
    for name, cond in flt.items():
        if not isinstance(name, str) or not name:
            raise InvalidValue(f"{path}: field names must be non-empty str, got {name!r}")
        where = f"{path}.{name}"
        if name in ("$and", "$or"):
            if not isinstance(cond, list) or not cond:
                raise InvalidValue(f"{where}: needs a non-empty list of filters")
            for i, sub in enumerate(cond):
                _check_filter(sub, f"{where}[{i}]")
        elif name == "$not":
            _check_filter(cond, where)
        elif name in FIELD_OPERATORS:
            raise InvalidValue(f"{where}: {name} needs a field, e.g. {{'age': {{'{name}': ...}}}}")
        elif name.startswith("$"):
            raise UnsupportedQuery(f"unknown filter operator {name!r} at {path}")
        elif _is_operator_dict(cond):
            for op, arg in cond.items():
                _check_operator(op, arg, f"{where}.{op}")


def _is_operator_dict(cond: Any) -> bool:
    """True if `cond` is `{"$op": arg, ...}`; a dict mixing $ and plain keys is malformed."""
    if not isinstance(cond, Mapping) or not cond:
        return False
    dollars = [isinstance(k, str) and k.startswith("$") for k in cond]
    if all(dollars):
        return True
    if any(dollars):
        raise InvalidValue(f"a condition mixes operators and plain fields: {sorted(cond)!r}")
    return False


def _check_operator(op: str, arg: Any, where: str) -> None:
    if op in LOGICAL_OPERATORS:
        raise InvalidValue(f"{where}: {op} combines whole filters; write "
                           f"{{'{op}': ...}} at the top level of a filter")
    if op not in FIELD_OPERATORS:
        raise UnsupportedQuery(f"unknown filter operator {op!r} at {where.rpartition('.')[0]}")
    if op in ("$in", "$nin") and not isinstance(arg, list):
        raise InvalidValue(f"{where}: needs a list, got {type(arg).__name__}")
    if op == "$exists" and not isinstance(arg, bool):
        raise InvalidValue(f"{where}: needs true or false, got {arg!r}")
    if op in ("$gt", "$gte", "$lt", "$lte") and _kind(arg) not in ("number", "str"):
        raise InvalidValue(f"{where}: compares numbers or strings, got {type(arg).__name__}")


def _kind(value: Any) -> str:
    """The comparison class of a value: numbers compare with numbers, nothing else mixes."""
    kind = type(value)
    if kind is bool:
        return "bool"
    if kind is int or kind is float:
        return "number"
    if kind is str:
        return "str"
    if isinstance(value, Mapping):
        return "dict"
    if isinstance(value, list):
        return "list"
    return kind.__name__


def _equal(a: Any, b: Any) -> bool:
    """Equality without Python's `True == 1`: kinds must agree, containers compare deeply."""
    kind = _kind(a)
    if kind != _kind(b):
        return False
    if kind == "list":
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    if kind == "dict":
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    return bool(a == b)


def _order(a: Any, b: Any) -> int | None:
    """-1, 0 or 1 for two numbers or two strs; None when they do not compare."""
    kind = _kind(a)
    if kind not in ("number", "str") or kind != _kind(b):
        return None
    return (a > b) - (a < b)


def _compare(test: Callable[[int], bool]) -> Callable[[Any, Any], bool]:
    def op(value: Any, arg: Any) -> bool:
        if value is MISSING:
            return False
        order = _order(value, arg)
        return order is not None and test(order)
    return op


def _contains(value: Any, arg: Any) -> bool:
    if isinstance(value, list):
        return any(_equal(item, arg) for item in value)
    return type(value) is str and type(arg) is str and arg in value


_FIELD_TESTS: dict[str, Callable[[Any, Any], bool]] = {
    "$eq": lambda value, arg: value is not MISSING and _equal(value, arg),
    "$ne": lambda value, arg: value is MISSING or not _equal(value, arg),
    "$gt": _compare(lambda o: o > 0),
    "$gte": _compare(lambda o: o >= 0),
    "$lt": _compare(lambda o: o < 0),
    "$lte": _compare(lambda o: o <= 0),
    "$in": lambda value, arg: value is not MISSING and any(_equal(value, a) for a in arg),
    "$nin": lambda value, arg: value is MISSING or not any(_equal(value, a) for a in arg),
    "$contains": lambda value, arg: value is not MISSING and _contains(value, arg),
    "$exists": lambda value, arg: (value is not MISSING) is arg,
}


def field_value(metadata: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted `path` in nested dicts, or `MISSING`."""
    node: Any = metadata
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return MISSING
        node = node[part]
    return node


def match_filter(metadata: Mapping[str, Any], filter: dict[str, Any] | None) -> bool:
    """True if `metadata` satisfies `filter` (None or {} match everything)."""
    if not filter:
        return True
    for name, cond in filter.items():
        if name == "$and":
            ok = all(match_filter(metadata, sub) for sub in cond)
        elif name == "$or":
            ok = any(match_filter(metadata, sub) for sub in cond)
        elif name == "$not":
            ok = not match_filter(metadata, cond)
        elif name.startswith("$"):
            _check_filter({name: cond}, "filter")  # raises the precise error
            ok = False
        else:
            value = field_value(metadata, name)
            if _is_operator_dict(cond):
                ok = all(_field_test(op)(value, arg) for op, arg in cond.items())
            else:
                ok = _FIELD_TESTS["$eq"](value, cond)
        if not ok:
            return False
    return True


def _field_test(op: str) -> Callable[[Any, Any], bool]:
    test = _FIELD_TESTS.get(op)
    if test is None:
        raise UnsupportedQuery(f"unknown filter operator {op!r}")
    return test


# ---- text, one record, many records ----------------------------------------------------------

def searchable_text(key: str, value: Any) -> str:
    """Lower-cased key plus every str and number leaf of `value` (bools, bytes, None skipped)."""
    parts = [key]
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is str:
            parts.append(item)
        elif kind is int or kind is float:
            parts.append(repr(item))
        elif kind is list:
            stack.extend(reversed(item))
        elif kind is dict:
            stack.extend(reversed(list(item.values())))
    return _TEXT_SEPARATOR.join(parts).lower()


def matches(record: Record, query: Query) -> bool:
    """True if `record` satisfies the query's pattern AND filter AND text (and min_score)."""
    if not match_pattern(record.key, query.pattern):
        return False
    if query.filter and not match_filter(record.metadata, query.filter):
        return False
    if query.text is not None and query.text.lower() not in searchable_text(
            record.key, record.value):
        return False
    return query.min_score is None or (
        record.score is not None and record.score >= query.min_score)


def sort_records(records: Iterable[Record], order_by: str | None) -> list[Record]:
    """Records in `order_by` order ('-' descends); ties break by key, then namespace."""
    out = sorted(records, key=lambda r: (r.key, r.namespace))
    field = (order_by or "key").lstrip("-")
    descending = bool(order_by) and order_by.startswith("-")  # type: ignore[union-attr]
    if field == "score":
        scored = [r for r in out if r.score is not None]
        scored.sort(key=lambda r: r.score, reverse=descending)  # type: ignore[arg-type,return-value]
        return scored + [r for r in out if r.score is None]
    if field != "key" or descending:
        out.sort(key=lambda r: getattr(r, field), reverse=descending)  # stable: ties keep order
    return out


def run(records: Iterable[Record], query: Query, *, key_ordered: bool = False) -> list[Record]:
    """The whole query: validate the filter, keep `matches`, sort, then offset and limit.

    `key_ordered=True` promises that `records` arrive in ascending key order within one
    namespace (a backend streaming its key index): a query in key order then stops reading
    after offset + limit matches instead of consuming, and fetching, the whole stream.
    """
    check_filter(query.filter)
    if key_ordered and query.order_by in (None, "key"):
        wanted = query.offset + query.limit
        kept: list[Record] = []
        if wanted:
            for record in records:
                if matches(record, query):
                    kept.append(record)
                    if len(kept) >= wanted:
                        break
        return kept[query.offset:]
    kept = [r for r in records if matches(r, query)]
    ordered = sort_records(kept, query.order_by)
    return ordered[query.offset:query.offset + query.limit]


__all__ = [
    "MISSING",
    "check_filter",
    "escape_glob",
    "field_value",
    "match_filter",
    "match_pattern",
    "matches",
    "run",
    "searchable_text",
    "sort_records",
]
