"""The MySQL/MariaDB dialect of the SQL query compiler: a `Query` as a WHERE clause over JSON.

Core function: `compile_query(prefix, namespace, query, now) -> (scope, condition)` (two
`SqlQuery`s, as in `postgres_query`); core type: `JsonFilter`, the `FilterCompiler` that
writes MySQL 8 / MariaDB >= 10.6 JSON functions. Keys, namespaces and the search text are
binary columns holding UTF-8, so byte order is code-point order (see `mysql`).

Every atom tests the JSON type first, so kinds never mix, as in the engine:

- numbers: `JSON_TYPE` is INTEGER, UNSIGNED INTEGER, DOUBLE or DECIMAL, then the value as a
  DOUBLE against the argument. Exact because the backend marks rows holding an int beyond
  2**53 as inexact (the engine decides them) and declines such arguments: every number
  left is a double exactly, and doubles compare as Python compares them.
- strings: `JSON_TYPE` is STRING, then `CAST(JSON_UNQUOTE(...) AS BINARY)` against the
  argument's UTF-8 bytes: code-point order, and no PAD SPACE (under which `'a' = 'a '`).
- booleans: BOOLEAN and the text `true`/`false` (so `true` never equals 1); null: NULL.
- `$contains`: an array element equal to the argument (`JSON_TABLE` over the array), or a
  substring of a string (`LOCATE` on bytes).
- `$exists`: `JSON_CONTAINS_PATH`. Lists and dicts as arguments are declined (deep
  equality), and so are paths whose names MySQL's path syntax cannot spell verbatim
  (`"`, `\\`, control characters, empty names, a leading `-`); the engine decides those.

Paths are `$."a"."b"`, passed as parameters; member names are quoted, so `*`, `$` or `[`
in a name are plain characters, and a name never indexes an array.
"""

from __future__ import annotations

import math
from typing import Any

from memcluster.backends.sql_query import FilterCompiler, SqlQuery, glob_to_like
from memcluster.model import Query

LIVE = "(expires_at IS NULL OR expires_at > %s)"
MAX_EXACT_INT = 1 << 53
_SIGNS = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
_NUMBER_TYPES = "('INTEGER', 'UNSIGNED INTEGER', 'DOUBLE', 'DECIMAL')"


def json_path(segments: list[str]) -> str | None:
    """`$."a"."b"` for the engine path a.b, or None where MySQL cannot spell a name as is.

    Declined: empty names, names with `"`, `\\` or control characters (the JSON text
    escapes them, the path would not), and names starting with `-` (MariaDB 10.11 reads
    `$."-x"` as no member at all: its negative array indexes leak into quoted names).
    """
    for name in segments:
        if not name or name[0] == "-" or any(ch in '"\\' or ord(ch) < 0x20 for ch in name):
            return None
    return "$" + "".join(f'."{name}"' for name in segments)


def _scalar_kind(value: Any) -> str | None:
    """'number', 'str', 'bool' or 'null' for an argument SQL can compare exactly; else None."""
    kind = type(value)
    if kind is bool:
        return "bool"
    if value is None:
        return "null"
    if kind is int:
        return "number" if abs(value) <= MAX_EXACT_INT else None
    if kind is float:
        return "number" if math.isfinite(value) else None
    if kind is str:
        return "str" if "\x00" not in value else None
    return None


Atom = tuple[str, list[Any]]
"""A fragment and its parameters, in the order of their placeholders."""


def _atom(expr: Atom, sign: str, arg: Any) -> Atom | None:
    """`expr sign arg` with the engine's kinds, for a scalar `arg` (sign `=` for booleans
    and null); `expr`'s SQL and parameters repeat at each use. None: not exact in SQL."""
    kind = _scalar_kind(arg)
    sql, params = expr
    if kind is None or (sign != "=" and kind not in ("number", "str")):
        return None
    if kind == "null":
        return f"COALESCE(JSON_TYPE({sql}) = 'NULL', FALSE)", [*params]
    if kind == "bool":
        return (f"COALESCE(JSON_TYPE({sql}) = 'BOOLEAN' AND JSON_UNQUOTE({sql}) = %s, FALSE)",
                [*params, *params, "true" if arg else "false"])
    if kind == "number":
        return (f"COALESCE(JSON_TYPE({sql}) IN {_NUMBER_TYPES} AND "
                f"CAST(JSON_UNQUOTE({sql}) AS DOUBLE) {sign} %s, FALSE)", [*params, *params, arg])
    return (f"COALESCE(JSON_TYPE({sql}) = 'STRING' AND "
            f"CAST(JSON_UNQUOTE({sql}) AS BINARY) {sign} %s, FALSE)",
            [*params, *params, arg.encode()])


def _field(path: str) -> Atom:
    return "JSON_EXTRACT(metadata, %s)", [path]


_ELEMENT: Atom = ("el.v", [])


class JsonFilter(FilterCompiler):
    """Metadata filters over the `metadata` JSON column."""

    def operator(self, segments: list[str], op: str, arg: Any) -> str | None:
        path = json_path(segments)
        if path is None:
            return None
        atom = self._operator(path, op, arg)
        if atom is None:
            return None
        self.params.extend(atom[1])
        return atom[0]

    def _operator(self, path: str, op: str, arg: Any) -> Atom | None:
        if op in ("$eq", "$ne"):
            test = _atom(_field(path), "=", arg)
            if test is None or op == "$eq":
                return test
            return self.negate(test[0]), test[1]
        if op in ("$in", "$nin"):
            tests = [_atom(_field(path), "=", a) for a in arg]
            if any(t is None for t in tests):
                return None
            sql = "(" + " OR ".join(t[0] for t in tests) + ")" if tests else "FALSE"  # type: ignore[index]
            params = [p for t in tests for p in t[1]]  # type: ignore[index]
            return (sql, params) if op == "$in" else (self.negate(sql), params)
        if op in _SIGNS:
            return _atom(_field(path), _SIGNS[op], arg)
        if op == "$contains":
            return self._contains(path, arg)
        if op == "$exists":
            test = "JSON_CONTAINS_PATH(metadata, 'one', %s)"
            return (f"({test} = 1)" if arg else f"COALESCE({test} = 0, TRUE)"), [path]
        return None

    @staticmethod
    def _contains(path: str, arg: Any) -> Atom | None:
        element = _atom(_ELEMENT, "=", arg)
        if element is None:
            return None
        in_array = ("(JSON_TYPE(JSON_EXTRACT(metadata, %s)) = 'ARRAY' AND EXISTS (SELECT 1 "
                    "FROM JSON_TABLE(JSON_EXTRACT(metadata, %s), '$[*]' COLUMNS "
                    f"(v JSON PATH '$')) AS el WHERE {element[0]}))")
        params = [path, path, *element[1]]
        if type(arg) is not str:
            return f"COALESCE({in_array}, FALSE)", params
        in_string = ("(JSON_TYPE(JSON_EXTRACT(metadata, %s)) = 'STRING' AND LOCATE(%s, "
                     "CAST(JSON_UNQUOTE(JSON_EXTRACT(metadata, %s)) AS BINARY)) > 0)")
        return (f"COALESCE({in_array} OR {in_string}, FALSE)",
                [*params, path, arg.encode(), path])


def key_like(pattern: str) -> tuple[str | None, list[Any], bool]:
    """(fragment or None, params, exact) for a glob on the binary `key` column.

    `%` matches any bytes, so a LIKE without `_` is exact on UTF-8 bytes; `_` must match one
    character, not one byte, so a pattern with `?` is matched on the key read as utf8mb4
    (utf8mb4_bin: case-sensitive, and LIKE never pads). A NUL declines to the engine.
    """
    if "\x00" in pattern:
        return None, [], False
    like, exact = glob_to_like(pattern)
    if "?" in pattern.split("[", 1)[0]:
        return "(CONVERT(`key` USING utf8mb4) COLLATE utf8mb4_bin LIKE %s)", [like], exact
    return "(`key` LIKE %s)", [like.encode()], exact


def compile_query(prefix: bytes, namespace: bytes, query: Query,
                  now: float) -> tuple[SqlQuery, SqlQuery]:
    """(scope, condition): the rows in play, and the query's own part of the WHERE."""
    scope = SqlQuery()
    scope.add("prefix = %s", prefix)
    scope.add("namespace = %s", namespace)
    scope.add(LIVE, now)
    cond = SqlQuery()
    if query.pattern is not None:
        clause, params, exact = key_like(query.pattern)
        if clause is not None:
            cond.add(clause, *params)
        cond.exact = exact
    if query.text is not None:
        cond.add("LOCATE(%s, search_text) > 0", query.text.lower().encode())
    if query.filter:
        compiler = JsonFilter()
        clause, exact = compiler.compile(query.filter)
        if clause is not None:
            cond.add(clause, *compiler.params)
        cond.exact = cond.exact and exact
    return scope, cond


__all__ = ["LIVE", "MAX_EXACT_INT", "JsonFilter", "compile_query", "json_path", "key_like"]
