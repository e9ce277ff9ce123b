"""The postgres dialect of the SQL query compiler: a `Query` as a WHERE clause over jsonb.

Core function: `compile_query(prefix, namespace, query, now) -> (scope, condition)`, two
`SqlQuery`s: the rows in play (prefix, namespace, live), and the query's own part. Core
type: `JsonbFilter`, the `FilterCompiler` that writes jsonb.

Translations mean exactly what `memcluster.query` means: numbers as numbers via
`jsonb_typeof(...) = 'number' AND (...)::numeric` (numeric holds every int and finite float
exactly), strings by code point via COLLATE "C", equality by jsonb equality (which like the
engine keeps `true` apart from 1 and compares lists and dicts deeply), `$contains` as array
membership or `strpos`. A glob becomes LIKE (`[...]` classes are not exact), text is
`strpos` over the `search_text` column. Paths with a segment jsonb reads as an integer
(`0`, `-1`, and also `+0`, ` 0`) are declined: jsonb's `#>` indexes arrays, the engine's
paths reach only dicts. See `sql_query` for the
superset-plus-engine rule these follow.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal
from typing import Any

from psycopg.types.json import Jsonb

from memcluster.backends.sql_query import FilterCompiler, SqlQuery, glob_to_like, json_exact
from memcluster.model import Query

LIVE = "(expires_at IS NULL OR expires_at > %s)"
# What jsonb's `#>` reads as an array index: PostgreSQL parses a path element with strtol,
# which skips leading whitespace and takes a sign, so "+0", " 0" and "\t-1" index arrays
# too. Matching more than that (Python's \s and \d are wider) only declines more paths.
_INDEX_SEGMENT = re.compile(r"\s*[+-]?\d+")
_SIGNS = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}


def _json_param(value: Any) -> Jsonb | None:
    return Jsonb(value) if json_exact(value) else None


def _number(value: Any) -> Decimal | None:
    if type(value) is int:
        return Decimal(value)
    if type(value) is float and math.isfinite(value):
        return Decimal(repr(value))
    return None


class JsonbFilter(FilterCompiler):
    """Metadata filters over the `metadata` jsonb column."""

    def path_ok(self, segments: list[str]) -> bool:
        return not any(_INDEX_SEGMENT.fullmatch(s) for s in segments)

    def _node(self, segments: list[str]) -> str:
        self.params.append(segments)
        return "(metadata #> %s::text[])"

    def operator(self, segments: list[str], op: str, arg: Any) -> str | None:
        if op in ("$eq", "$ne"):
            value = _json_param(arg)
            if value is None:
                return None
            node = self._node(segments)
            self.params.append(value)
            test = f"COALESCE({node} = %s::jsonb, false)"
            return test if op == "$eq" else f"(NOT {test})"
        if op in ("$in", "$nin"):
            values = [_json_param(a) for a in arg]
            if any(v is None for v in values):
                return None
            node = self._node(segments)
            self.params.append(values)
            test = f"COALESCE({node} = ANY(%s::jsonb[]), false)"
            return test if op == "$in" else f"(NOT {test})"
        if op in _SIGNS:
            sign = _SIGNS[op]
            if type(arg) is str:
                if "\x00" in arg:
                    return None
                node, node2 = self._node(segments), self._node(segments)
                self.params.append(arg)
                return (f"COALESCE(jsonb_typeof({node}) = 'string' AND ({node2} #>> '{{}}') "
                        f'COLLATE "C" {sign} %s, false)')
            number = _number(arg)
            if number is None:
                return None
            node, node2 = self._node(segments), self._node(segments)
            self.params.append(number)
            return (f"COALESCE(jsonb_typeof({node}) = 'number' AND ({node2})::numeric "
                    f"{sign} %s, false)")
        if op == "$contains":
            value = _json_param(arg)
            if value is None:
                return None
            # Placeholders are positional: nodes and values are added in the order they appear.
            node, node2 = self._node(segments), self._node(segments)
            in_list = (f"(jsonb_typeof({node}) = 'array' AND EXISTS (SELECT 1 FROM "
                       f"jsonb_array_elements({node2}) AS el WHERE el = %s::jsonb))")
            self.params.append(value)
            if type(arg) is not str:
                return f"COALESCE({in_list}, false)"
            node, node2 = self._node(segments), self._node(segments)
            in_str = f"(jsonb_typeof({node}) = 'string' AND strpos({node2} #>> '{{}}', %s) > 0)"
            self.params.append(arg)
            return f"COALESCE({in_list} OR {in_str}, false)"
        if op == "$exists":
            node = self._node(segments)
            return f"({node} IS NOT NULL)" if arg else f"({node} IS NULL)"
        return None


def compile_query(prefix: str, namespace: str, query: Query,
                  now: float) -> tuple[SqlQuery, SqlQuery]:
    """(scope, condition): the rows in play, and the query's own part of the WHERE."""
    scope = SqlQuery()
    scope.add("prefix = %s", prefix)
    scope.add("namespace = %s", namespace)
    scope.add(LIVE, now)
    cond = SqlQuery()
    if query.pattern is not None:
        like, exact = glob_to_like(query.pattern)
        if "\x00" in query.pattern:
            cond.exact = False
        else:
            cond.add("key LIKE %s", like)
            cond.exact = exact
    if query.text is not None:
        needle = query.text.lower()
        if "\x00" in needle:
            cond.exact = False
        else:
            cond.add("strpos(search_text, %s) > 0", needle)
    if query.filter:
        compiler = JsonbFilter()
        clause, exact = compiler.compile(query.filter)
        if clause is not None:
            cond.add(clause, *compiler.params)
        cond.exact = cond.exact and exact
    return scope, cond


__all__ = ["LIVE", "JsonbFilter", "compile_query"]
