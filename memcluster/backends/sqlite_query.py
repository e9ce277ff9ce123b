"""Translate a `Query` into SQLite SQL, exactly or not at all, part by part.

Core type: `Plan` (WHERE fragments, their parameters, and whether SQL alone answers the
query). Core functions: `translate`, `glob_for`, `order_sql`, `is_plain`.

The reference for what a query means is `memcluster.query`; this module only emits SQL that
gives the same answer on every row, and declines (returns "not exact") wherever SQLite's
semantics differ: a glob feature GLOB spells differently, a filter argument that is a list
or dict (deep equality), a NaN or a 64-bit-unsigned integer (SQLite cannot bind them), a
JSON path label it cannot quote. The backend then lets the pure engine finish the job over
the rows the exact parts selected. Rows whose metadata JSON is not a faithful image of the
Python value (tagged bytes, non-finite floats, huge ints) or whose key holds a NUL (GLOB
stops there) are stored with `plain = 0`; a namespace holding any such row is answered by
the engine too. The rejected alternative, one SQL translation trusted everywhere, was
wrong in exactly those corners (NaN binds as NULL, GLOB's `[^...]` is fnmatch's `[!...]`).

Every atom is wrapped in IFNULL(..., 0), so NOT never meets SQL's NULL.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from memcluster.model import Query

_INT64 = (-(1 << 63), (1 << 63) - 1)
_ORDER_COLUMNS = {"key": '"key"', "created_at": "created_at", "updated_at": "updated_at",
                  "version": "version"}
_COMPARE = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
META = "metadata"


class _Untranslatable(Exception):
    """Raised inside the translator where SQL would not be exact."""


@dataclass(slots=True)
class Plan:
    """WHERE fragments (ANDed), each `(sql, params, plain_only)`; `exact`: nothing was left
    for the engine. A `plain_only` fragment is exact only on rows with `plain = 1`."""

    parts: list[tuple[str, list[Any], bool]] = field(default_factory=list)
    exact: bool = True

    @property
    def needs_plain(self) -> bool:
        return any(plain_only for _, _, plain_only in self.parts)

    def render(self, inexact_rows: bool) -> tuple[list[str], list[Any], bool]:
        """(fragments, params, exact) for a namespace that does or does not hold rows with
        `plain = 0`: if it does, those rows pass the plain-only fragments (a sound
        superset) and the engine decides on them."""
        where: list[str] = []
        params: list[Any] = []
        for sql, args, plain_only in self.parts:
            where.append(f"(plain = 0 OR {sql})" if plain_only and inexact_rows else sql)
            params += args
        return where, params, self.exact and not (inexact_rows and self.needs_plain)


def translate(query: Query) -> Plan:
    """A Plan for the query's pattern, text and filter (order and paging are `order_sql`)."""
    plan = Plan()
    if query.pattern is not None:
        glob = glob_for(query.pattern)
        if glob is None:
            plan.exact = False
        else:
            plan.parts.append(('"key" GLOB ?', [glob], True))
    if query.text is not None:
        plan.parts.append(("instr(search_text, ?) > 0", [query.text.lower()], False))
    if query.filter:
        params: list[Any] = []
        try:
            sql = _filter(query.filter, params)
        except _Untranslatable:
            plan.exact = False
        else:
            plan.parts.append((sql, params, True))
    if query.min_score is not None:
        plan.exact = False
    return plan


def order_sql(order_by: str | None) -> str:
    """ORDER BY terms matching `query.sort_records` (ties by key ascending)."""
    name = (order_by or "key").lstrip("-")
    column = _ORDER_COLUMNS.get(name, '"key"')
    direction = "DESC" if order_by and order_by.startswith("-") else "ASC"
    if column == '"key"':
        return f'"key" {direction}'
    return f'{column} {direction}, "key" ASC'


# ---- patterns -----------------------------------------------------------------------------

def glob_for(pattern: str) -> str | None:
    """The SQLite GLOB equal to fnmatch's `pattern`, or None where they may differ.

    fnmatch: `[!x]` negates, `^` is literal, an unclosed `[` is literal. GLOB: `[^x]`
    negates and an unclosed `[` matches nothing. Sets with anything beyond plain
    characters and ordered ranges are declined.
    """
    if "\x00" in pattern:
        return None
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        char = pattern[i]
        i += 1
        if char != "[":  # "*", "?" and literal characters mean the same in GLOB
            out.append(char)
        else:
            j = i
            if j < n and pattern[j] == "!":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            while j < n and pattern[j] != "]":
                j += 1
            if j >= n:
                out.append("[[]")  # fnmatch: an unclosed bracket is a literal "["
                continue
            body = pattern[i:j]
            i = j + 1
            negate = body.startswith("!")
            if negate:
                body = body[1:]
            items = _set_items(body)
            if items is None:
                return None
            out.append("[" + ("^" if negate else "") + items + "]")
    return "".join(out)


def _set_items(body: str) -> str | None:
    """`body` if it is plain characters and ordered ranges `a-z`; else None."""
    if not body:
        return None
    k = 0
    while k < len(body):
        char = body[k]
        if char in "]^[\\-!&~|":
            return None
        if k + 1 < len(body) and body[k + 1] == "-":
            if k + 2 >= len(body):
                return None
            high = body[k + 2]
            if high in "]^[\\-!&~|" or high < char:
                return None
            k += 3
        else:
            k += 1
    return body


# ---- filters ------------------------------------------------------------------------------

def _path(name: str) -> str:
    """A JSON path for a dotted field name, or `_Untranslatable` where SQLite would not
    find the key as written: a quote, backslash or control character (the JSON text holds
    it escaped, the path label raw), or an empty segment."""
    parts = name.split(".")
    if any(not p or '"' in p or "\\" in p or min(p) < " " for p in parts):
        raise _Untranslatable(name)
    return "$" + "".join(f'."{p}"' for p in parts)


def _scalar(value: Any) -> tuple[str, Any]:
    """(JSON type test, bound value) for a scalar filter argument; raises if not exact."""
    kind = type(value)
    if kind is bool:
        return ("'true'" if value else "'false'"), None
    if value is None:
        return "'null'", None
    if kind is int:
        if not _INT64[0] <= value <= _INT64[1]:
            raise _Untranslatable(value)
        return "'integer', 'real'", value
    if kind is float:
        if math.isnan(value):
            raise _Untranslatable(value)
        return "'integer', 'real'", value
    if kind is str:
        return "'text'", value
    raise _Untranslatable(value)


def _eq_sql(types: str) -> str:
    return f"IFNULL(json_type({META}, ?) IN ({types}) AND json_extract({META}, ?) = ?, 0)"


def _field(name: str, cond: Any, params: list[Any]) -> str:
    path = _path(name)
    if isinstance(cond, dict) and cond and all(
            isinstance(k, str) and k.startswith("$") for k in cond):
        return "(" + " AND ".join(_operator(path, op, arg, params)
                                  for op, arg in cond.items()) + ")"
    return _equals(path, cond, params)


def _equals(path: str, value: Any, params: list[Any]) -> str:
    types, bound = _scalar(value)
    if bound is None:
        params.append(path)
        return f"IFNULL(json_type({META}, ?) IN ({types}), 0)"
    params += [path, path, bound]
    return _eq_sql(types)


def _operator(path: str, op: str, arg: Any, params: list[Any]) -> str:
    if op == "$eq":
        return _equals(path, arg, params)
    if op == "$ne":
        return f"NOT {_equals(path, arg, params)}"
    if op in ("$in", "$nin"):
        if not arg:
            return "0" if op == "$in" else "1"
        any_sql = "(" + " OR ".join(_equals(path, a, params) for a in arg) + ")"
        return any_sql if op == "$in" else f"NOT {any_sql}"
    if op == "$exists":
        params.append(path)
        return f"json_type({META}, ?) IS {'NOT ' if arg else ''}NULL"
    if op in _COMPARE:
        types, bound = _scalar(arg)
        params += [path, path, bound]
        return (f"IFNULL(json_type({META}, ?) IN ({types}) "
                f"AND json_extract({META}, ?) {_COMPARE[op]} ?, 0)")
    if op == "$contains":
        types, bound = _scalar(arg)
        element = f"type IN ({types})" + ("" if bound is None else " AND value = ?")
        params.append(path)
        sql = (f"IFNULL(json_type({META}, ?) = 'array' AND EXISTS (SELECT 1 FROM "
               f"json_each({META}, ?) WHERE {element}), 0)")
        params.append(path)
        if bound is not None:
            params.append(bound)
        if type(arg) is str:
            params += [path, path, arg]
            sql = (f"({sql} OR IFNULL(json_type({META}, ?) = 'text' "
                   f"AND instr(json_extract({META}, ?), ?) > 0, 0))")
        return sql
    raise _Untranslatable(op)  # unknown operators never get here: check_filter runs first


def _filter(flt: dict[str, Any], params: list[Any]) -> str:
    parts = []
    for name, cond in flt.items():
        if name == "$and":
            parts.append("(" + " AND ".join(_filter(sub, params) for sub in cond) + ")")
        elif name == "$or":
            parts.append("(" + " OR ".join(_filter(sub, params) for sub in cond) + ")")
        elif name == "$not":
            parts.append(f"NOT {_filter(cond, params)}")
        else:
            parts.append(_field(name, cond, params))
    return "(" + " AND ".join(parts) + ")" if parts else "1"


# ---- rows that SQL sees exactly -------------------------------------------------------------

def is_plain(key: str, metadata: dict[str, Any]) -> bool:
    """True if SQL predicates are exact on this row: no NUL in the key, and metadata whose
    JSON is a faithful image (no bytes, non-finite floats, ints beyond int64, tag dicts)."""
    if "\x00" in key:
        return False
    stack: list[Any] = [metadata]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is dict:
            if len(item) == 1 and next(iter(item)) in ("$bytes", "$float", "$dict"):
                return False
            stack.extend(item.values())
        elif kind is list:
            stack.extend(item)
        elif (kind is bytes or (kind is int and not _INT64[0] <= item <= _INT64[1])
              or (kind is float and not math.isfinite(item))):
            return False
    return True
