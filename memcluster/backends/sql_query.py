"""The dialect-neutral half of compiling a `Query` to SQL, shared by postgres and mysql.

Core types: `SqlQuery` (WHERE fragments ANDed, their parameters, and whether SQL alone decides
the query exactly) and `FilterCompiler` (walks a checked metadata filter; a dialect subclass
supplies one method, `operator`, that turns one `field $op arg` into SQL or declines).
Core functions: `glob_to_like`, `json_exact`, `search_exact` and `page_keys` (the paging
strategies).

The strategy both backends share, rejected alternative a full translation of every filter
to SQL: a part of a query that SQL cannot express with exactly the engine's meaning
(`memcluster.query`) is left out, which makes the WHERE clause a *superset*, and the pure
engine then decides on the rows fetched; rows whose metadata the JSON column cannot hold
exactly (bytes, NaN, NUL characters, or whatever the dialect adds) always reach the engine
too. So a wrong or missing translation can only cost speed, never change an answer. Logical
operators keep the superset property: a declined part of an `$and` is dropped, an `$or` or a
`$not` with a declined or inexact part is declined whole.

Fragments are plain strings with `%s` placeholders (psycopg and PyMySQL both bind those); a
fragment never holds an identifier or a value, only the dialect's constant SQL, so nothing a
user gives can change a statement. Dialects wrap them as they need (psycopg's `sql.SQL`).

The sqlite backend's translator (`sqlite_query`) follows a different rule (a filter is
translated whole or not at all, per row class) and shares only the idea, not this code.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from memcluster import query as engine
from memcluster.model import Page, Query, Record
from memcluster.ops import ListKeysOp

_LIKE_ESCAPES = {"*": "%", "?": "_", "%": "\\%", "_": "\\_", "\\": "\\\\"}


@dataclass
class SqlQuery:
    """WHERE fragments (ANDed) plus parameters; `exact` False means the engine must re-check."""

    parts: list[str] = field(default_factory=list)
    params: list[Any] = field(default_factory=list)
    exact: bool = True

    def add(self, clause: str, *params: Any) -> None:
        self.parts.append(clause)
        self.params.extend(params)

    def where(self) -> str:
        return " AND ".join(self.parts) if self.parts else "TRUE"


def glob_to_like(pattern: str) -> tuple[str, bool]:
    """A LIKE pattern (escape character `\\`) for a glob, and whether it is exact.

    `*` and `?` become `%` and `_`; `%`, `_` and `\\` are escaped. A `[...]` class has no LIKE
    form: the pattern is cut there and ends in `%` (a superset), and is not exact.
    """
    out = []
    for ch in pattern:
        if ch == "[":
            return "".join(out) + "%", False
        out.append(_LIKE_ESCAPES.get(ch, ch))
    return "".join(out), True


def json_exact(value: Any, *, int_limit: int | None = None) -> bool:
    """True if a JSON column holds `value` exactly as the engine sees it: no bytes, no
    non-finite float, no NUL character in a string or a name, and (with `int_limit`) no int
    whose magnitude exceeds it (a dialect comparing numbers as doubles passes 2**53)."""
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is str:
            if "\x00" in item:
                return False
        elif kind is float:
            if not math.isfinite(item):
                return False
        elif kind is int:
            if int_limit is not None and abs(item) > int_limit:
                return False
        elif kind is list:
            stack.extend(item)
        elif kind is dict:
            if any("\x00" in k for k in item):
                return False
            stack.extend(item.values())
        elif kind not in (bool, type(None)):
            return False
    return True


class FilterCompiler(ABC):
    """Translate a checked filter into one WHERE fragment; parameters collect in `params`.

    Each method returns (fragment or None when nothing could be translated, exact). A
    subclass implements `operator`; `path_ok` says which dotted paths its JSON paths reach
    exactly as the engine's (which walk nested dicts only).
    """

    def __init__(self) -> None:
        self.params: list[Any] = []

    @abstractmethod
    def operator(self, segments: list[str], op: str, arg: Any) -> str | None:
        """SQL for `field op arg` with exactly the engine's meaning, or None to decline."""

    def path_ok(self, segments: list[str]) -> bool:
        return True

    @staticmethod
    def negate(clause: str) -> str:
        """NOT of an exact fragment; every fragment is TRUE or FALSE, never NULL."""
        return f"(NOT COALESCE({clause}, false))"

    def compile(self, flt: Mapping[str, Any]) -> tuple[str | None, bool]:
        parts: list[str] = []
        exact = True
        for name, cond in flt.items():
            mark = len(self.params)  # a discarded clause must take its parameters with it
            clause: str | None
            if name in ("$and", "$or"):
                subs = [self.compile(sub) for sub in cond]
                if name == "$or" and any(s is None for s, _ in subs):
                    clause, ok = None, False
                else:
                    kept = [s for s, _ in subs if s is not None]
                    joiner = " AND " if name == "$and" else " OR "
                    clause = f"({joiner.join(kept)})" if kept else None
                    ok = all(e for _, e in subs)
            elif name == "$not":
                inner, inner_exact = self.compile(cond)
                if inner is None or not inner_exact:
                    clause, ok = None, False
                else:
                    clause, ok = self.negate(inner), True
            elif engine._is_operator_dict(cond):
                clause, ok = self._field(name, cond)
            else:
                clause, ok = self._field(name, {"$eq": cond})
            exact = exact and ok
            if clause is None:
                del self.params[mark:]
            else:
                parts.append(clause)
        if not parts:
            return None, False
        return "(" + " AND ".join(parts) + ")", exact

    def _field(self, path: str, ops: Mapping[str, Any]) -> tuple[str | None, bool]:
        segments = path.split(".")
        if not self.path_ok(segments):
            return None, False
        parts: list[str] = []
        exact = True
        for op, arg in ops.items():
            clause = self.operator(segments, op, arg)
            if clause is None:
                exact = False
            else:
                parts.append(clause)
        if not parts:
            return None, False
        return "(" + " AND ".join(parts) + ")", exact


def search_exact(fetch: Callable[[int], list[Record]], query: Query) -> list[Record]:
    """One page of a query whose WHERE clause is exact on every `exact` row.

    `fetch(n)` returns at most n candidate rows in the query's order: the rows satisfying
    the clause, plus any row the JSON column cannot hold exactly (the engine decides those).
    The page is read once; only when the engine drops some rows is it read again, twice as
    long, until enough rows remain or the candidates run out.
    """
    wanted = query.offset + query.limit
    size = wanted
    while True:
        rows = fetch(size)
        kept = [r for r in rows if engine.matches(r, query)]
        if len(kept) >= wanted or len(rows) < size:
            return kept[query.offset:wanted]
        size *= 2


def page_keys(fetch: Callable[[str | None, int], list[str]], op: ListKeysOp,
              exact: bool) -> Page:
    """One page of `list_keys` from `fetch(after, n)`: at most n live keys greater than
    `after` (all keys when None) in key order, those matching the pattern's LIKE form.

    When the LIKE form is `exact` a page is one fetch; otherwise the engine's glob decides
    each key and fetching goes on in larger steps until the page is full or keys run out.
    """
    found: list[str] = []
    after = op.cursor
    step = op.limit + 1 if exact else max(2 * op.limit, 200)
    while len(found) <= op.limit:
        keys = fetch(after, step)
        found.extend(k for k in keys if exact or engine.match_pattern(k, op.pattern))
        if len(keys) < step:
            break
        after = keys[-1]
    if len(found) > op.limit:
        return Page(found[:op.limit], found[op.limit - 1])
    return Page(found, None)


__all__ = ["FilterCompiler", "SqlQuery", "glob_to_like", "json_exact", "page_keys",
           "search_exact"]
