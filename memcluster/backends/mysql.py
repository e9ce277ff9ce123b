"""The `mysql` backend: MySQL 8 or MariaDB >= 10.6, one table shared by every shard, over PyMySQL.

Core type: `MySQLBackend`. Options: `dsn` (`mysql://user:password@host:port/database`),
`table_name` (default `memcluster_records`, in the DSN's database), `max_size` (pooled
connections, default 4), `pool_timeout`, `connect_timeout`, `sweep_interval` (seconds
between expiry sweeps on writes). The query compiler is `mysql_query` (the dialect) over
`sql_query` (what it shares with the postgres backend); the pool is `mysql_pool`.

Table (created if absent, InnoDB, utf8mb4): prefix, namespace and key are VARBINARY
holding UTF-8, value (msgpack LONGBLOB), meta (msgpack: the exact metadata), metadata
(JSON, for filtering; NULL when JSON cannot hold it exactly), exact, search_text (the
engine's `searchable_text`, LONGBLOB), version, created_at, updated_at, expires_at, with
primary key (prefix, namespace, key) and an index on (prefix, expires_at).

Decisions:

- **Keys as UTF-8 bytes, not utf8mb4_bin text.** Byte order of UTF-8 is code-point order,
  the order utf8mb4_bin sorts by; but utf8mb4_bin is a PAD SPACE collation in both MySQL and
  MariaDB, under which `'a' = 'a '` (two keys would share a row) and `'a\\t' < 'a'`. The
  NO PAD collations that fix this are named differently on each server
  (utf8mb4_0900_bin, utf8mb4_nopad_bin), and 512-character utf8mb4 columns (2 KiB each)
  would not fit a 3 KiB primary key; VARBINARY(512) does, on both servers.
- **CAS as `UPDATE ... WHERE version = %s`.** A write reads the row's (version,
  updated_at), computes the new record in Python (`StoreOp.record_after`, the one rule
  every backend shares), then writes `UPDATE ... WHERE ... AND version = %s AND
  updated_at = %s`, or a plain INSERT when there was no row; 0 rows changed (or a duplicate
  key) means another writer came between, and the write starts again from the read. Two
  round trips, no lock held between them, and two processes racing on a key cannot both
  win. `update` is the same loop over the full row. `store_many` is all or nothing: one
  transaction, rows locked with `SELECT ... FOR UPDATE`, new keys inserted (a duplicate
  or a deadlock rolls back and retries), existing ones upserted.
- **Numbers compare as numbers** in JSON (see `mysql_query`); rows whose metadata holds
  bytes, NaN, NUL or an int beyond 2**53 are `exact = 0` and the engine decides them.
- **TTL**: every read has `expires_at > now`; a bounded sweep deletes expired rows of the
  prefix on writes at most every `sweep_interval` seconds.
- **Identifiers** (the table name) are quoted with backticks, doubled inside; every value is
  a parameter escaped by PyMySQL; the session's sql_mode is set on connect (no
  ANSI_QUOTES, no NO_BACKSLASH_ESCAPES), so the escaping matches the server's parsing.
- **Failures**: a killed or timed-out idle connection is replaced before use (the pool
  checks the socket); a read that fails on a connection is retried once; a write is not
  (it may have committed). Errors are `SourceUnavailable` with the password masked.
"""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import pymysql
from pymysql.constants import CLIENT

from memcluster import codec
from memcluster import query as engine
from memcluster.backends.base import (
    UPDATE_RETRIES,
    Capabilities,
    MemoryBackend,
    chain_stores,
    check_options,
)
from memcluster.backends.mysql_pool import ConnectionPool
from memcluster.backends.mysql_query import LIVE, MAX_EXACT_INT, compile_query, key_like
from memcluster.backends.sql_query import SqlQuery, json_exact, page_keys, search_exact
from memcluster.errors import (
    ConfigError,
    InvalidKey,
    InvalidValue,
    SourceUnavailable,
    VersionConflict,
)
from memcluster.model import Page, Query, Record
from memcluster.ops import (
    ClearOp,
    CountOp,
    DeleteOp,
    ListKeysOp,
    ReplicateOp,
    RetrieveOp,
    SearchOp,
    StoreOp,
    UpdateOp,
)
from memcluster.secrets import redact_text, redact_url

T = TypeVar("T")
_COLUMNS = "`key`, namespace, value, meta, version, created_at, updated_at, expires_at, exact"
_HEAD = "`key`, namespace, NULL, NULL, version, created_at, updated_at, expires_at, exact"
_WRITE = ("prefix", "namespace", "`key`", "value", "meta", "metadata", "exact", "search_text",
          "version", "created_at", "updated_at", "expires_at")
_ORDER = {"key": "`key`", "created_at": "created_at", "updated_at": "updated_at",
          "version": "version"}
_SESSION = "SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION'"
_CONNECTION_ERRORS = (pymysql.err.OperationalError, pymysql.err.InterfaceError)
_DUPLICATE_KEY, _LOCK_WAIT, _DEADLOCK = 1062, 1205, 1213
_IN_CHUNK = 500
_SWEEP_BATCH = 1000


def _unavailable(*, retry: bool) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Map driver failures to SourceUnavailable (password masked); reads get one retry."""

    def decorate(method: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(method)
        def wrapper(self: MySQLBackend, *args: Any, **kwargs: Any) -> T:
            for attempt in (1, 2):
                try:
                    return method(self, *args, **kwargs)
                except _CONNECTION_ERRORS as exc:
                    if retry and attempt == 1:
                        continue  # the pool dropped the failed connection
                    raise SourceUnavailable(
                        f"mysql at {self.safe_dsn} is unavailable: {type(exc).__name__}: "
                        f"{redact_text(str(exc), self._password)}") from None
                except UnicodeEncodeError:
                    raise InvalidKey("mysql cannot store lone surrogates in keys, "
                                     "namespaces or metadata") from None
            raise AssertionError("unreachable")

        return wrapper

    return decorate


def _b(text: str) -> bytes:
    return text.encode()


def quote_identifier(name: str) -> str:
    """`name` as a MySQL identifier: backticks around, backticks inside doubled."""
    return "`" + name.replace("`", "``") + "`"


def parse_dsn(dsn: str) -> dict[str, Any]:
    """PyMySQL connect arguments from `mysql://user:password@host:port/database`."""
    safe = redact_url(dsn)
    try:
        parts = urlsplit(dsn)
        port = parts.port or 3306
    except ValueError:
        raise ConfigError(f"mysql: dsn is not a valid URL: {safe}") from None
    if parts.scheme not in ("mysql", "mariadb") or not parts.hostname:
        raise ConfigError(f"mysql: dsn must look like mysql://user:password@host:port/db, "
                          f"got {safe}")
    database = unquote(parts.path.lstrip("/"))
    if not database or "/" in database:
        raise ConfigError(f"mysql: dsn must name one database: {safe}")
    if parts.query or parts.fragment:
        raise ConfigError(f"mysql: dsn parameters are not supported: {safe}")
    return {"host": parts.hostname, "port": port, "user": unquote(parts.username or "root"),
            "password": unquote(parts.password or ""), "database": database}


class MySQLBackend(MemoryBackend):
    """Records in one MySQL/MariaDB table; filters in SQL over JSON, the engine as the fallback."""

    name = "mysql"
    capabilities = Capabilities(ttl="sweeper", durable=True, native_batch=True)
    OPTIONS: Mapping[str, Any] = {
        "dsn": "mysql://root@127.0.0.1:3306/test", "table_name": "memcluster_records",
        "max_size": 4, "pool_timeout": 5.0, "connect_timeout": 5, "sweep_interval": 60.0,
    }

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pool: ConnectionPool | None = None
        self.safe_dsn = ""
        self._password: str | None = None
        self._table = ""
        self._table_name = ""
        self._prefix = b""
        self._last_sweep: float | None = None

    # ---- lifecycle ----------------------------------------------------------------------

    def open(self, opts: Mapping[str, Any]) -> None:
        check_options("mysql", opts, self.OPTIONS)
        cfg = {**self.OPTIONS, **opts}
        dsn = cfg["dsn"]
        if not isinstance(dsn, str) or not dsn:
            raise ConfigError("mysql: dsn must be a non-empty str")
        table = cfg["table_name"]
        if not isinstance(table, str) or not 1 <= len(table) <= 64 or "\x00" in table \
                or table != table.rstrip():
            raise ConfigError("mysql: table_name must be a str of 1 to 64 characters "
                              "without NUL or trailing spaces")
        for name in ("max_size", "connect_timeout"):
            if isinstance(cfg[name], bool) or not isinstance(cfg[name], int) or cfg[name] < 1:
                raise ConfigError(f"mysql: {name} must be an int >= 1")
        for name in ("pool_timeout", "sweep_interval"):
            if isinstance(cfg[name], bool) or not isinstance(cfg[name], (int, float)) \
                    or cfg[name] <= 0:
                raise ConfigError(f"mysql: {name} must be a number of seconds > 0")
        try:
            self._prefix = self.prefix.encode()
        except UnicodeEncodeError:
            raise ConfigError("mysql: the prefix must be valid UTF-8") from None
        if len(self._prefix) > 255:
            raise ConfigError("mysql: the prefix must be at most 255 UTF-8 bytes")
        self.safe_dsn = redact_url(dsn)
        args = parse_dsn(dsn)
        self._password = args["password"] or None
        self._sweep_interval = float(cfg["sweep_interval"])
        self._table_name = table
        self._table = quote_identifier(table)
        connect_args = {**args, "charset": "utf8mb4", "autocommit": True,
                        "connect_timeout": cfg["connect_timeout"],
                        "client_flag": CLIENT.FOUND_ROWS, "init_command": _SESSION}
        self.pool = ConnectionPool(lambda: pymysql.connect(**connect_args),
                                   max_size=cfg["max_size"], timeout=float(cfg["pool_timeout"]))
        try:
            self._create_table()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()
            self.pool = None

    def info(self) -> dict[str, Any]:
        return {**super().info(), "dsn": self.safe_dsn, "table_name": self._table_name,
                "prefix": self.prefix}

    @_unavailable(retry=False)
    def _create_table(self) -> None:
        index = quote_identifier(f"{self._table_name[:40]}_expiry")
        with self._cursor() as cur:
            cur.execute(
                f"CREATE TABLE IF NOT EXISTS {self._table} ("
                " prefix VARBINARY(255) NOT NULL, namespace VARBINARY(512) NOT NULL,"
                " `key` VARBINARY(512) NOT NULL, value LONGBLOB NOT NULL,"
                " meta LONGBLOB NOT NULL, metadata JSON NULL, exact BOOLEAN NOT NULL,"
                " search_text LONGBLOB NOT NULL, version BIGINT NOT NULL,"
                " created_at DOUBLE NOT NULL, updated_at DOUBLE NOT NULL, expires_at DOUBLE NULL,"
                f" PRIMARY KEY (prefix, namespace, `key`), KEY {index} (prefix, expires_at)"
                ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin")

    # ---- connections and rows ---------------------------------------------------------------

    @contextlib.contextmanager
    def _cursor(self) -> Iterator[Any]:
        if self.pool is None:
            raise SourceUnavailable("mysql backend is closed")
        with self.pool.connection() as conn, conn.cursor() as cur:
            yield cur

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Any]:
        """A cursor inside BEGIN ... COMMIT; any exception rolls back first."""
        if self.pool is None:
            raise SourceUnavailable("mysql backend is closed")
        with self.pool.connection() as conn:
            conn.begin()
            try:
                with conn.cursor() as cur:
                    yield cur
            except BaseException:
                with contextlib.suppress(Exception):
                    conn.rollback()
                raise
            conn.commit()

    def _rows(self, statement: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        with self._cursor() as cur:
            cur.execute(statement, params)
            return list(cur.fetchall())

    @staticmethod
    def _record(row: Sequence[Any]) -> Record:
        key, namespace, value, meta, version, created, updated, expires = row[:8]
        return Record(key.decode(), None if value is None else codec.decode(value),
                      namespace.decode(), {} if meta is None else codec.decode(meta),
                      int(version), created, updated, expires)

    def _values(self, record: Record, blob: bytes) -> tuple[Any, ...]:
        """The column values (in `_WRITE` order) that store `record`, whose value is `blob`."""
        exact = json_exact(record.metadata, int_limit=MAX_EXACT_INT)
        metadata = json.dumps(record.metadata, ensure_ascii=False) if exact else None
        return (self._prefix, _b(record.namespace), _b(record.key), blob,
                codec.encode(record.metadata), metadata, exact,
                _b(engine.searchable_text(record.key, record.value)), record.version,
                record.created_at, record.updated_at, record.expires_at)

    @staticmethod
    def _live_row(row: Sequence[Any] | None, now: float) -> bool:
        return row is not None and (row[7] is None or row[7] > now)

    def _pairs(self, pairs: Sequence[tuple[str, str]]) -> Iterator[tuple[str, list[Any]]]:
        """(`(namespace, key) IN (...)` fragment, params) per chunk of `pairs`."""
        for i in range(0, len(pairs), _IN_CHUNK):
            chunk = pairs[i:i + _IN_CHUNK]
            params: list[Any] = [self._prefix]
            for namespace, key in chunk:
                params += [_b(namespace), _b(key)]
            yield ("prefix = %s AND (namespace, `key`) IN ("
                   + ", ".join(["(%s, %s)"] * len(chunk)) + ")"), params

    # ---- writes: CAS by version -------------------------------------------------------------

    def _cas(self, namespace: str, key: str, full: bool,
             decide: Callable[[Record | None, float], tuple[Record, bytes] | None]
             ) -> Record | None:
        """Read the row, `decide` the record to write (None: nothing to do), write it only if
        the row is still as read; start again when another writer came between."""
        where = (self._prefix, _b(namespace), _b(key))
        select = (f"SELECT {_COLUMNS if full else _HEAD} FROM {self._table} "
                  "WHERE prefix = %s AND namespace = %s AND `key` = %s")
        for _ in range(UPDATE_RETRIES):
            now = self.clock()
            with self._cursor() as cur:
                cur.execute(select, where)
                row = cur.fetchone()
                current = self._record(row) if self._live_row(row, now) else None
                decided = decide(current, now)
                if decided is None:
                    return None
                values = self._values(*decided)
                if row is None:
                    written = self._insert(cur, [values])
                else:
                    cur.execute(f"UPDATE {self._table} SET "
                                + ", ".join(f"{c} = %s" for c in _WRITE[3:])
                                + " WHERE prefix = %s AND namespace = %s AND `key` = %s"
                                  " AND version = %s AND updated_at = %s",
                                [*values[3:], *where, row[4], row[6]])
                    written = cur.rowcount == 1
            if written:
                self._maybe_sweep(now)
                return decided[0]
        raise VersionConflict(f"write of {key!r} lost the race {UPDATE_RETRIES} times", key=key)

    def _insert(self, cur: Any, rows: list[tuple[Any, ...]]) -> bool:
        """INSERT new rows; False if one already exists (another writer inserted it)."""
        try:
            cur.executemany(f"INSERT INTO {self._table} ({', '.join(_WRITE)}) VALUES ("
                            + ", ".join(["%s"] * len(_WRITE)) + ")", rows)
        except pymysql.err.IntegrityError as exc:
            if exc.args and exc.args[0] == _DUPLICATE_KEY:
                return False
            raise
        return True

    @_unavailable(retry=False)
    def store(self, op: StoreOp) -> Record:
        record = self._cas(op.namespace, op.key, False,
                           lambda current, now: (op.record_after(current, now), op.blob))
        assert record is not None
        return record

    @_unavailable(retry=False)
    def update(self, op: UpdateOp) -> Record:
        def decide(current: Record | None, now: float) -> tuple[Record, bytes]:
            store = self.update_store_op(op, current)
            return store.record_after(current, now), store.blob

        record = self._cas(op.namespace, op.key, True, decide)
        assert record is not None
        return record

    @_unavailable(retry=False)
    def replicate(self, op: ReplicateOp) -> bool:
        incoming = op.record
        if incoming.expired(self.clock()):
            return False
        key, namespace = codec.check_key(incoming.key), codec.check_namespace(incoming.namespace)
        codec.check_metadata(incoming.metadata)
        blob = codec.encode_value(incoming.value)

        def decide(current: Record | None, now: float) -> tuple[Record, bytes] | None:
            if current is not None and current.version >= incoming.version:
                return None
            return incoming.with_score(None), blob

        return self._cas(namespace, key, False, decide) is not None

    @_unavailable(retry=False)
    def store_many(self, ops: Sequence[StoreOp]) -> list[Record]:
        """All or nothing, in one transaction: rows locked, then one INSERT for new keys and
        one upsert for existing ones. A conflict raises before anything is written."""
        if not ops:
            return []
        pairs = list(dict.fromkeys((op.namespace, op.key) for op in ops))
        for _ in range(UPDATE_RETRIES):
            now = self.clock()
            try:
                with self._transaction() as cur:
                    records = self._store_locked(cur, ops, pairs, now)
            except _Retry:
                continue
            except pymysql.err.OperationalError as exc:
                if exc.args and exc.args[0] in (_DEADLOCK, _LOCK_WAIT):
                    continue  # rolled back: nothing was written
                raise
            self._maybe_sweep(now)
            return records
        raise VersionConflict(f"store_many lost the race {UPDATE_RETRIES} times")

    def _store_locked(self, cur: Any, ops: Sequence[StoreOp], pairs: list[tuple[str, str]],
                      now: float) -> list[Record]:
        """`store_many`'s work inside its transaction."""
        rows: dict[tuple[str, str], tuple[Any, ...]] = {}
        for where, params in self._pairs(pairs):
            cur.execute(f"SELECT {_HEAD} FROM {self._table} WHERE {where} FOR UPDATE", params)
            rows.update({(r[1].decode(), r[0].decode()): r for r in cur.fetchall()})

        def live(namespace: str, key: str) -> Record | None:
            row = rows.get((namespace, key))
            return self._record(row) if row is not None and self._live_row(row, now) else None

        records = chain_stores(ops, live, now)  # a conflict raises: nothing written yet
        final = {(r.namespace, r.key): self._values(r, op.blob)
                 for op, r in zip(ops, records, strict=True)}
        fresh = [v for where, v in final.items() if where not in rows]
        if fresh and not self._insert(cur, fresh):
            raise _Retry
        known = [v for where, v in final.items() if where in rows]
        if known:
            cur.executemany(f"INSERT INTO {self._table} ({', '.join(_WRITE)}) VALUES ("
                            + ", ".join(["%s"] * len(_WRITE)) + ") ON DUPLICATE KEY UPDATE "
                            + ", ".join(f"{c} = VALUES({c})" for c in _WRITE[3:]), known)
        return records

    @_unavailable(retry=False)
    def delete(self, op: DeleteOp) -> bool:
        return self.delete_many([op]) == 1

    @_unavailable(retry=False)
    def delete_many(self, ops: Sequence[DeleteOp]) -> int:
        pairs = list(dict.fromkeys((op.namespace, op.key) for op in ops))
        removed, now = 0, self.clock()
        with self._cursor() as cur:
            for where, params in self._pairs(pairs):
                cur.execute(f"DELETE FROM {self._table} WHERE {where} AND {LIVE}", [*params, now])
                removed += cur.rowcount
        return removed

    @_unavailable(retry=False)
    def clear(self, op: ClearOp) -> int:
        scope = "prefix = %s" + ("" if op.namespace is None else " AND namespace = %s")
        params: list[Any] = [self._prefix] + ([] if op.namespace is None else [_b(op.namespace)])
        with self._cursor() as cur:
            cur.execute(f"DELETE FROM {self._table} WHERE {scope} AND {LIVE}",
                        [*params, self.clock()])
            removed = cur.rowcount
            cur.execute(f"DELETE FROM {self._table} WHERE {scope}", params)  # the expired rest
        return removed

    def _maybe_sweep(self, now: float) -> None:
        if self._last_sweep is None:
            self._last_sweep = now
        elif now - self._last_sweep >= self._sweep_interval:
            self._last_sweep = now
            self.sweep()

    @_unavailable(retry=False)
    def sweep(self, limit: int = _SWEEP_BATCH) -> int:
        """Delete up to `limit` expired rows of this prefix; returns how many went."""
        with self._cursor() as cur:
            cur.execute(f"DELETE FROM {self._table} WHERE prefix = %s AND expires_at <= %s "
                        "LIMIT %s", [self._prefix, self.clock(), limit])
            return cur.rowcount

    # ---- reads ----------------------------------------------------------------------------

    @_unavailable(retry=True)
    def retrieve(self, op: RetrieveOp) -> Record | None:
        rows = self._rows(f"SELECT {_COLUMNS} FROM {self._table} WHERE prefix = %s AND "
                          f"namespace = %s AND `key` = %s AND {LIVE}",
                          [self._prefix, _b(op.namespace), _b(op.key), self.clock()])
        return self._record(rows[0]) if rows else None

    @_unavailable(retry=True)
    def retrieve_many(self, ops: Sequence[RetrieveOp]) -> list[Record | None]:
        pairs = list(dict.fromkeys((op.namespace, op.key) for op in ops))
        found: dict[tuple[str, str], Record] = {}
        now = self.clock()
        with self._cursor() as cur:
            for where, params in self._pairs(pairs):
                cur.execute(f"SELECT {_COLUMNS} FROM {self._table} WHERE {where} AND {LIVE}",
                            [*params, now])
                for row in cur.fetchall():
                    record = self._record(row)
                    found[record.namespace, record.key] = record
        return [found.get((op.namespace, op.key)) for op in ops]

    def _compile(self, namespace: str, query: Query, now: float) -> tuple[SqlQuery, SqlQuery]:
        """(scope, condition): see `mysql_query.compile_query`."""
        return compile_query(self._prefix, _b(namespace), query, now)

    def _candidates(self, scope: SqlQuery, cond: SqlQuery, order: str,
                    limit: int | None) -> list[Record]:
        """Rows in scope that are inexact or satisfy `cond`, in `order`, at most `limit`."""
        statement = (f"SELECT {_COLUMNS} FROM {self._table} WHERE {scope.where()} "
                     f"AND (NOT exact OR {cond.where()}) ORDER BY {order}")
        params = [*scope.params, *cond.params]
        if limit is not None:
            statement += " LIMIT %s"
            params.append(limit)
        return [self._record(r) for r in self._rows(statement, params)]

    @_unavailable(retry=True)
    def search(self, op: SearchOp) -> list[Record]:
        query = op.query
        self.check_query(query)
        engine.check_filter(query.filter)
        scope, cond = self._compile(op.namespace, query, self.clock())
        if not cond.exact:
            return engine.run(self._candidates(scope, cond, "`key`", None), query)
        order_by = query.order_by or "key"
        direction = " DESC" if order_by.startswith("-") else ""
        order = f"{_ORDER[order_by.lstrip('-')]}{direction}, `key`"
        return search_exact(lambda size: self._candidates(scope, cond, order, size), query)

    @_unavailable(retry=True)
    def count(self, op: CountOp) -> int:
        query = op.query
        self.check_query(query)
        engine.check_filter(query.filter)
        scope, cond = self._compile(op.namespace, query, self.clock())
        if not cond.exact:
            candidates = self._candidates(scope, cond, "`key`", None)
            return sum(1 for r in candidates if engine.matches(r, query))
        exact_count = self._rows(f"SELECT COUNT(*) FROM {self._table} WHERE {scope.where()} "
                                 f"AND exact AND {cond.where()}", [*scope.params, *cond.params])
        others = self._rows(f"SELECT {_COLUMNS} FROM {self._table} WHERE {scope.where()} "
                            "AND NOT exact", scope.params)
        return int(exact_count[0][0]) + sum(
            1 for row in others if engine.matches(self._record(row), query))

    @_unavailable(retry=True)
    def list_keys(self, op: ListKeysOp) -> Page:
        now = self.clock()
        clause, like_params, exact = (key_like(op.pattern) if op.pattern is not None
                                      else (None, [], True))

        def fetch(after: str | None, step: int) -> list[str]:
            scope = SqlQuery()
            scope.add("prefix = %s", self._prefix)
            scope.add("namespace = %s", _b(op.namespace))
            scope.add(LIVE, now)
            if clause is not None:
                scope.add(clause, *like_params)
            if after is not None:
                scope.add("`key` > %s", _b(after))
            rows = self._rows(f"SELECT `key` FROM {self._table} WHERE {scope.where()} "
                              "ORDER BY `key` LIMIT %s", [*scope.params, step])
            return [row[0].decode() for row in rows]

        return page_keys(fetch, op, exact)

    @_unavailable(retry=True)
    def export(self, *, cursor: str | None = None, limit: int = 1000
               ) -> tuple[list[Record], str | None]:
        """Every live record of the prefix in (namespace, key) order; cursor = JSON [ns, key]."""
        scope = SqlQuery()
        scope.add("prefix = %s", self._prefix)
        scope.add(LIVE, self.clock())
        if cursor is not None:
            try:
                namespace, key = json.loads(cursor)
                if not (isinstance(namespace, str) and isinstance(key, str)):
                    raise TypeError
            except (ValueError, TypeError):
                raise InvalidValue(f"not an export cursor: {cursor!r}") from None
            scope.add("(namespace, `key`) > (%s, %s)", _b(namespace), _b(key))
        rows = self._rows(f"SELECT {_COLUMNS} FROM {self._table} WHERE {scope.where()} "
                          "ORDER BY namespace, `key` LIMIT %s", [*scope.params, limit + 1])
        records = [self._record(r) for r in rows[:limit]]
        if len(rows) > limit:
            last = records[-1]
            return records, json.dumps([last.namespace, last.key])
        return records, None


class _Retry(Exception):
    """Inside `store_many`: another writer inserted a key first; roll back and start again."""


__all__ = ["MySQLBackend", "parse_dsn", "quote_identifier"]
