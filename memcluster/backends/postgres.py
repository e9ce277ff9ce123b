"""The `postgres` backend: one table shared by every shard, queries compiled to SQL over jsonb.

Core type: `PostgresBackend`. The query compiler lives in `postgres_query` (the jsonb
dialect) and `sql_query` (what it shares with the mysql backend).

Table (default `public.memcluster_records`, created with its indexes if absent):
prefix, namespace, key (all `COLLATE "C"`, so ORDER BY key is code-point order), value
(msgpack bytea), meta (msgpack bytea, the exact metadata), metadata (jsonb, for filtering),
exact (true when jsonb and search_text hold the metadata and text exactly), search_text
(the engine's `searchable_text`, computed in Python at write time), version, created_at,
updated_at, expires_at. Identifiers are composed with `psycopg.sql`; every value is a
parameter, so no key, namespace or metadata can change a statement.

Queries: text, pattern and filter become SQL where the translation means exactly what
`memcluster.query` means; what cannot be translated becomes TRUE (a superset) and the shared
engine decides on the fetched rows (see `sql_query`), as it does for rows whose metadata
jsonb cannot carry exactly (bytes, NaN, NUL).

Writes: one statement each (autocommit): an UPSERT for plain stores, `UPDATE ... WHERE
version = %s` for CAS and `INSERT ... ON CONFLICT DO UPDATE ... WHERE expired` for
"only if absent", so two processes racing on one key cannot both win. Batches use
`executemany` (pipeline mode: one round trip) or `unnest`. Expired rows are invisible to
reads at once and deleted by a bounded sweep (index on expires_at) on writes at most
every `sweep_interval` seconds.

Connection failures surface as `SourceUnavailable` with the DSN's password masked; the
pool checks each connection before lending it (`check_connection` when its socket shows
the server said something), so a session killed by `pg_terminate_backend` is replaced
and the next operation succeeds. Read-only operations are retried once on a connection
failure; writes only when the server aborted them (a terminated session).
"""

from __future__ import annotations

import functools
import json
import select
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from memcluster import codec
from memcluster import query as engine
from memcluster.backends.base import UPDATE_RETRIES, Capabilities, MemoryBackend, check_options
from memcluster.backends.postgres_query import LIVE, compile_query
from memcluster.backends.sql_query import (
    SqlQuery,
    glob_to_like,
    json_exact,
    page_keys,
    search_exact,
)
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
_COLUMNS = sql.SQL("key, namespace, value, meta, version, created_at, updated_at, "
                   "expires_at, exact")
_SWEEP_BATCH = 1000
_CONNECTION_ERRORS = (psycopg.OperationalError, psycopg.InterfaceError)


# ---- errors ---------------------------------------------------------------------------------

def _unavailable(*, retry: bool) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Map connection failures to SourceUnavailable; read-only calls get one retry.

    Writes are retried only after `AdminShutdown` (the session was terminated, e.g. by
    `pg_terminate_backend`, before it answered): the server aborts a terminated session's
    open transaction, so the write did not happen and replaying it cannot apply it twice.
    Any other failure mid-write may follow a commit, so it is reported, not replayed.
    """

    def decorate(method: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(method)
        def wrapper(self: PostgresBackend, *args: Any, **kwargs: Any) -> T:
            for attempt in (1, 2):
                try:
                    return method(self, *args, **kwargs)
                except _CONNECTION_ERRORS as exc:
                    replayable = retry or isinstance(exc, psycopg.errors.AdminShutdown)
                    if replayable and attempt == 1 and self.pool is not None:
                        self.pool.check()  # drop dead connections before the retry
                        continue
                    raise SourceUnavailable(
                        f"postgres at {self.safe_dsn} is unavailable: {type(exc).__name__}: "
                        f"{redact_text(str(exc), self._password)}") from None
                except UnicodeEncodeError:
                    raise InvalidKey("postgres cannot store lone surrogates in keys, "
                                     "namespaces or metadata") from None
            raise AssertionError("unreachable")

        return wrapper

    return decorate


def _check_idle(conn: psycopg.Connection[Any]) -> None:
    """The pool's check before lending a connection, without a round trip when healthy.

    An idle connection has nothing to read; if its socket is readable the server has sent
    something (a FATAL from `pg_terminate_backend`, or EOF), so run the pool's real check,
    which fails and makes the pool replace the connection. The rejected alternative,
    `ConnectionPool.check_connection` on every checkout, doubles the round trips per op.
    """
    if conn.closed or conn.broken:
        raise psycopg.OperationalError("connection is closed")
    readable, _, _ = select.select([conn.fileno()], [], [], 0)
    if readable:
        ConnectionPool.check_connection(conn)


# ---- text ----------------------------------------------------------------------------------

def _check_text(*texts: str) -> None:
    for text in texts:
        if "\x00" in text:
            raise InvalidKey("postgres text cannot hold NUL characters (in a key or namespace)")


# ---- the backend ------------------------------------------------------------------------------

class PostgresBackend(MemoryBackend):
    """Records in one PostgreSQL table; filters in SQL over jsonb, the engine as the fallback."""

    name = "postgres"
    capabilities = Capabilities(ttl="sweeper", durable=True, native_batch=True)
    OPTIONS: Mapping[str, Any] = {
        "dsn": "postgresql://postgres@127.0.0.1:5432/postgres",
        "table_name": "memcluster_records", "schema_name": "public",
        "min_size": 1, "max_size": 4, "pool_timeout": 5.0, "connect_timeout": 5,
        "sweep_interval": 60.0,
    }

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pool: ConnectionPool | None = None
        self.safe_dsn = ""
        self._password: str | None = None
        self._last_sweep: float | None = None
        self._statements: dict[Any, sql.Composed] = {}  # composed once, reused per call

    # ---- lifecycle ----------------------------------------------------------------------

    def open(self, opts: Mapping[str, Any]) -> None:
        check_options("postgres", opts, self.OPTIONS)
        cfg = {**self.OPTIONS, **opts}
        dsn = cfg["dsn"]
        if not isinstance(dsn, str) or not dsn:
            raise ConfigError("postgres: dsn must be a non-empty str")
        for name in ("table_name", "schema_name"):
            value = cfg[name]
            if not isinstance(value, str) or not value or len(value.encode()) > 63 \
                    or "\x00" in value:
                raise ConfigError(f"postgres: {name} must be a str of 1 to 63 bytes")
        for name in ("min_size", "max_size", "connect_timeout"):
            if isinstance(cfg[name], bool) or not isinstance(cfg[name], int) or cfg[name] < 1:
                raise ConfigError(f"postgres: {name} must be an int >= 1")
        if cfg["min_size"] > cfg["max_size"]:
            raise ConfigError("postgres: min_size must not exceed max_size")
        for name in ("pool_timeout", "sweep_interval"):
            if isinstance(cfg[name], bool) or not isinstance(cfg[name], (int, float)) \
                    or cfg[name] <= 0:
                raise ConfigError(f"postgres: {name} must be a number of seconds > 0")
        _check_text(self.prefix)
        self.safe_dsn = redact_url(dsn)
        try:
            self._password = psycopg.conninfo.conninfo_to_dict(dsn).get("password")
        except psycopg.ProgrammingError:
            raise ConfigError(f"postgres: dsn is not a valid connection string: "
                              f"{self.safe_dsn}") from None
        self._sweep_interval = float(cfg["sweep_interval"])
        self._table = sql.Identifier(cfg["schema_name"], cfg["table_name"])
        self._schema = cfg["schema_name"]
        self._table_name = cfg["table_name"]
        pool = ConnectionPool(
            dsn, min_size=cfg["min_size"], max_size=cfg["max_size"],
            timeout=float(cfg["pool_timeout"]), open=False, check=_check_idle,
            kwargs={"autocommit": True, "connect_timeout": cfg["connect_timeout"]},
            name=f"memcluster-{self.prefix or 'default'}")
        self.pool = pool
        try:
            self._start(float(cfg["pool_timeout"]))
        except BaseException:
            pool.close()
            self.pool = None
            raise

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()
            self.pool = None

    def info(self) -> dict[str, Any]:
        return {**super().info(), "dsn": self.safe_dsn, "schema_name": self._schema,
                "table_name": self._table_name, "prefix": self.prefix}

    def _sql(self, template: str) -> sql.Composed:
        return sql.SQL(template).format(table=self._table)

    @_unavailable(retry=False)
    def _start(self, timeout: float) -> None:
        """Open the pool (waiting for its first connections) and create the table."""
        assert self.pool is not None
        self.pool.open(wait=True, timeout=timeout)
        self._create_table()

    def _create_table(self) -> None:
        name = self._table_name
        ddl = [
            sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self._schema)),
            sql.SQL(
                'CREATE TABLE IF NOT EXISTS {} ('
                ' prefix text COLLATE "C" NOT NULL, namespace text COLLATE "C" NOT NULL,'
                ' key text COLLATE "C" NOT NULL, value bytea NOT NULL, meta bytea NOT NULL,'
                ' metadata jsonb, exact boolean NOT NULL, search_text text,'
                ' version bigint NOT NULL, created_at double precision NOT NULL,'
                ' updated_at double precision NOT NULL, expires_at double precision,'
                ' PRIMARY KEY (prefix, namespace, key))').format(self._table),
            sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (expires_at) "
                    "WHERE expires_at IS NOT NULL").format(
                sql.Identifier(f"{name[:40]}_expires_idx"), self._table),
            sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} USING gin (metadata jsonb_path_ops)"
                    ).format(sql.Identifier(f"{name[:40]}_metadata_idx"), self._table),
        ]
        assert self.pool is not None
        with self.pool.connection() as conn, conn.transaction():
            # Serialise concurrent creators: IF NOT EXISTS alone races on the catalogs.
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))",
                         [f"memcluster:{self._schema}.{name}"])
            for statement in ddl:
                conn.execute(statement)

    # ---- rows -----------------------------------------------------------------------------

    def _rows(self, query: sql.Composable, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        assert self.pool is not None
        with self.pool.connection() as conn:
            return conn.execute(query, params).fetchall()

    @staticmethod
    def _record(row: Sequence[Any]) -> Record:
        key, namespace, value, meta, version, created, updated, expires = row[:8]
        return Record(key, codec.decode(value), namespace, codec.decode(meta), int(version),
                      created, updated, expires)

    # ---- writes ---------------------------------------------------------------------------

    def _row_params(self, op: StoreOp, now: float) -> dict[str, Any]:
        _check_text(op.key, op.namespace)
        value = op.value
        text = engine.searchable_text(op.key, value)
        meta_exact = json_exact(op.metadata)
        has_nul = "\x00" in text
        if meta_exact:
            metadata: Jsonb | None = Jsonb(op.metadata)
        else:
            safe = codec.to_json_safe(op.metadata)
            metadata = None if "\\u0000" in json.dumps(safe) else Jsonb(safe)
        return {"prefix": self.prefix, "namespace": op.namespace, "key": op.key,
                "value": op.blob, "meta": codec.encode(op.metadata), "metadata": metadata,
                "exact": meta_exact and not has_nul,
                "search_text": None if has_nul else text, "now": now,
                "expires_at": None if op.ttl is None else now + op.ttl,
                "expected": op.expected_version}

    _UPSERT = """
        INSERT INTO {table} AS r (prefix, namespace, key, value, meta, metadata, exact,
                                  search_text, version, created_at, updated_at, expires_at)
        VALUES (%(prefix)s, %(namespace)s, %(key)s, %(value)s, %(meta)s, %(metadata)s,
                %(exact)s, %(search_text)s, 1, %(now)s, %(now)s, %(expires_at)s)
        ON CONFLICT (prefix, namespace, key) DO UPDATE SET
            value = EXCLUDED.value, meta = EXCLUDED.meta, metadata = EXCLUDED.metadata,
            exact = EXCLUDED.exact, search_text = EXCLUDED.search_text,
            version = CASE WHEN r.expires_at <= EXCLUDED.updated_at THEN 1
                           ELSE r.version + 1 END,
            created_at = CASE WHEN r.expires_at <= EXCLUDED.updated_at
                              THEN EXCLUDED.created_at ELSE r.created_at END,
            updated_at = EXCLUDED.updated_at, expires_at = EXCLUDED.expires_at
        {condition}
        RETURNING version, created_at"""
    _CAS = """
        UPDATE {table} SET value = %(value)s, meta = %(meta)s, metadata = %(metadata)s,
            exact = %(exact)s, search_text = %(search_text)s, version = version + 1,
            updated_at = %(now)s, expires_at = %(expires_at)s
        WHERE prefix = %(prefix)s AND namespace = %(namespace)s AND key = %(key)s
          AND version = %(expected)s AND (expires_at IS NULL OR expires_at > %(now)s)
        RETURNING version, created_at"""

    def _store_sql(self, expected: int | None) -> sql.Composed:
        kind = None if expected is None else min(expected, 1)
        cached = self._statements.get(kind)
        if cached is None:
            cached = self._statements[kind] = self._compose_store(expected)
        return cached

    def _compose_store(self, expected: int | None) -> sql.Composed:
        if expected is None:
            return sql.SQL(self._UPSERT).format(table=self._table, condition=sql.SQL(""))
        if expected == 0:  # only if absent: replace an expired row, never a live one
            return sql.SQL(self._UPSERT).format(
                table=self._table, condition=sql.SQL("WHERE r.expires_at <= EXCLUDED.updated_at"))
        return sql.SQL(self._CAS).format(table=self._table)

    def _stored(self, op: StoreOp, params: Mapping[str, Any], row: Any) -> Record:
        if row is None:
            current = self.retrieve(RetrieveOp(op.key, op.namespace))
            actual = 0 if current is None else current.version
            raise VersionConflict(
                f"{op.key!r} is at version {actual}, expected {op.expected_version}",
                key=op.key, expected=op.expected_version, actual=actual)
        return Record(op.key, op.value, op.namespace, dict(op.metadata), int(row[0]), row[1],
                      params["now"], params["expires_at"])

    def _store_on(self, conn: psycopg.Connection[Any], op: StoreOp, now: float) -> Record:
        params = self._row_params(op, now)
        row = conn.execute(self._store_sql(op.expected_version), params).fetchone()
        return self._stored(op, params, row)

    @_unavailable(retry=False)
    def store(self, op: StoreOp) -> Record:
        now = self.clock()
        assert self.pool is not None
        with self.pool.connection() as conn:
            record = self._store_on(conn, op, now)
        self._maybe_sweep(now)
        return record

    @_unavailable(retry=False)
    def store_many(self, ops: Sequence[StoreOp]) -> list[Record]:
        """All or nothing, in one transaction; plain stores in one round trip (pipeline)."""
        if not ops:
            return []
        now = self.clock()
        assert self.pool is not None
        with self.pool.connection() as conn, conn.transaction():
            if any(op.expected_version is not None for op in ops):
                # A conflict raises and rolls back the whole batch.
                records = [self._store_on(conn, op, now) for op in ops]
            else:
                params = [self._row_params(op, now) for op in ops]
                rows = []
                with conn.cursor() as cur:
                    cur.executemany(self._store_sql(None), params, returning=True)
                    while True:
                        rows.append(cur.fetchone())
                        if not cur.nextset():
                            break
                records = [self._stored(op, p, row)
                           for op, p, row in zip(ops, params, rows, strict=True)]
        self._maybe_sweep(now)
        return records

    @_unavailable(retry=False)
    def update(self, op: UpdateOp) -> Record:
        """Read-modify-write under a row lock (SELECT ... FOR UPDATE), so concurrent updates
        queue instead of retrying; only two first writers of an absent key can conflict,
        and the loser retries against the winner's row."""
        assert self.pool is not None
        for _ in range(UPDATE_RETRIES):
            now = self.clock()
            with self.pool.connection() as conn:
                try:
                    with conn.transaction():
                        row = conn.execute(sql.SQL(
                            "SELECT {} FROM {} WHERE prefix = %s AND namespace = %s "
                            "AND key = %s AND (expires_at IS NULL OR expires_at > %s) "
                            "FOR UPDATE").format(_COLUMNS, self._table),
                            [self.prefix, op.namespace, op.key, now]).fetchone()
                        current = None if row is None else self._record(row)
                        record = self._store_on(conn, self.update_store_op(op, current), now)
                except VersionConflict:
                    continue
            self._maybe_sweep(now)
            return record
        raise VersionConflict(f"update of {op.key!r} lost the race {UPDATE_RETRIES} times",
                              key=op.key)

    @_unavailable(retry=False)
    def replicate(self, op: ReplicateOp) -> bool:
        rec, now = op.record, self.clock()
        if rec.expired(now):
            return False
        key, namespace = codec.check_key(rec.key), codec.check_namespace(rec.namespace)
        store = StoreOp(key, codec.encode_value(rec.value), namespace,
                        codec.check_metadata(rec.metadata))
        params = self._row_params(store, now)
        params.update(version=rec.version, created_at=rec.created_at,
                      updated_at=rec.updated_at, expires_at=rec.expires_at)
        row = self._rows(self._sql("""
            INSERT INTO {table} AS r (prefix, namespace, key, value, meta, metadata, exact,
                                      search_text, version, created_at, updated_at, expires_at)
            VALUES (%(prefix)s, %(namespace)s, %(key)s, %(value)s, %(meta)s, %(metadata)s,
                    %(exact)s, %(search_text)s, %(version)s, %(created_at)s, %(updated_at)s,
                    %(expires_at)s)
            ON CONFLICT (prefix, namespace, key) DO UPDATE SET
                value = EXCLUDED.value, meta = EXCLUDED.meta, metadata = EXCLUDED.metadata,
                exact = EXCLUDED.exact, search_text = EXCLUDED.search_text,
                version = EXCLUDED.version, created_at = EXCLUDED.created_at,
                updated_at = EXCLUDED.updated_at, expires_at = EXCLUDED.expires_at
            WHERE r.version < EXCLUDED.version OR r.expires_at <= %(now)s
            RETURNING 1"""), params)
        return bool(row)

    @_unavailable(retry=False)
    def delete(self, op: DeleteOp) -> bool:
        return self.delete_many([op]) == 1

    @_unavailable(retry=False)
    def delete_many(self, ops: Sequence[DeleteOp]) -> int:
        ops = [op for op in ops if "\x00" not in op.key + op.namespace]
        if not ops:
            return 0
        now = self.clock()
        row = self._rows(self._sql("""
            WITH gone AS (
                DELETE FROM {table} AS t USING unnest(%s::text[], %s::text[]) AS d(ns, k)
                WHERE t.prefix = %s AND t.namespace = d.ns AND t.key = d.k
                RETURNING t.expires_at)
            SELECT count(*) FROM gone WHERE expires_at IS NULL OR expires_at > %s"""),
            [[op.namespace for op in ops], [op.key for op in ops], self.prefix, now])
        return int(row[0][0])

    @_unavailable(retry=False)
    def clear(self, op: ClearOp) -> int:
        scope = sql.SQL("") if op.namespace is None else sql.SQL("AND namespace = %s")
        params: list[Any] = [self.prefix] + ([] if op.namespace is None else [op.namespace])
        if op.namespace is not None and "\x00" in op.namespace:
            return 0
        row = self._rows(sql.SQL("""
            WITH gone AS (DELETE FROM {table} WHERE prefix = %s {scope} RETURNING expires_at)
            SELECT count(*) FROM gone WHERE expires_at IS NULL OR expires_at > %s""").format(
            table=self._table, scope=scope), [*params, self.clock()])
        return int(row[0][0])

    def _maybe_sweep(self, now: float) -> None:
        if self._last_sweep is None:
            self._last_sweep = now
        elif now - self._last_sweep >= self._sweep_interval:
            self._last_sweep = now
            self.sweep()

    @_unavailable(retry=False)
    def sweep(self, limit: int = _SWEEP_BATCH) -> int:
        """Delete up to `limit` expired rows of this prefix; returns how many went."""
        assert self.pool is not None
        with self.pool.connection() as conn:
            cur = conn.execute(self._sql("""
                DELETE FROM {table} WHERE ctid IN (
                    SELECT ctid FROM {table} WHERE expires_at <= %s AND prefix = %s LIMIT %s)"""),
                [self.clock(), self.prefix, limit])
            return cur.rowcount

    # ---- reads ----------------------------------------------------------------------------

    @_unavailable(retry=True)
    def retrieve(self, op: RetrieveOp) -> Record | None:
        if "\x00" in op.key + op.namespace:
            return None
        statement = self._statements.get("retrieve")
        if statement is None:
            statement = self._statements["retrieve"] = sql.SQL(
                "SELECT {} FROM {} WHERE prefix = %s AND namespace = %s AND key = %s "
                "AND (expires_at IS NULL OR expires_at > %s)").format(_COLUMNS, self._table)
        rows = self._rows(statement, [self.prefix, op.namespace, op.key, self.clock()])
        return self._record(rows[0]) if rows else None

    @_unavailable(retry=True)
    def retrieve_many(self, ops: Sequence[RetrieveOp]) -> list[Record | None]:
        wanted = [op for op in ops if "\x00" not in op.key + op.namespace]
        found: dict[tuple[str, str], Record] = {}
        if wanted:
            rows = self._rows(sql.SQL("""
                SELECT {cols} FROM {table} AS t
                JOIN unnest(%s::text[], %s::text[]) AS w(ns, k) ON t.namespace = w.ns
                     AND t.key = w.k
                WHERE t.prefix = %s AND (t.expires_at IS NULL OR t.expires_at > %s)""").format(
                cols=_COLUMNS, table=self._table),
                [[op.namespace for op in wanted], [op.key for op in wanted], self.prefix,
                 self.clock()])
            found = {(row[1], row[0]): self._record(row) for row in rows}
        return [found.get((op.namespace, op.key)) for op in ops]

    def _compile(self, namespace: str, query: Query, now: float) -> tuple[SqlQuery, SqlQuery]:
        """(scope, condition): see `postgres_query.compile_query`."""
        return compile_query(self.prefix, namespace, query, now)

    def _candidates(self, scope: SqlQuery, cond: SqlQuery, order: sql.Composable,
                    limit: int | None) -> list[Record]:
        """Rows in scope that are inexact or satisfy `cond`, in `order`, at most `limit`."""
        where = sql.SQL("{} AND (NOT exact OR {})").format(sql.SQL(scope.where()),
                                                           sql.SQL(cond.where()))
        tail = sql.SQL("") if limit is None else sql.SQL(" LIMIT %s")
        query = sql.SQL("SELECT {} FROM {} WHERE {} ORDER BY {}").format(
            _COLUMNS, self._table, where, order) + tail
        params = [*scope.params, *cond.params] + ([] if limit is None else [limit])
        rows = self._rows(query, params)
        return [self._record(r) for r in rows]

    @_unavailable(retry=True)
    def search(self, op: SearchOp) -> list[Record]:
        query = op.query
        self.check_query(query)
        engine.check_filter(query.filter)
        scope, cond = self._compile(op.namespace, query, self.clock())
        if not cond.exact:
            return engine.run(self._candidates(scope, cond, sql.SQL("key"), None), query)
        field_name = (query.order_by or "key").lstrip("-")
        direction = sql.SQL(" DESC" if (query.order_by or "").startswith("-") else "")
        order = sql.SQL("{}{}, key").format(sql.Identifier(field_name), direction)
        # Only rows the jsonb cannot hold exactly can fail the engine; it decides them.
        return search_exact(lambda size: self._candidates(scope, cond, order, size), query)

    @_unavailable(retry=True)
    def count(self, op: CountOp) -> int:
        query = op.query
        self.check_query(query)
        engine.check_filter(query.filter)
        scope, cond = self._compile(op.namespace, query, self.clock())
        if not cond.exact:
            candidates = self._candidates(scope, cond, sql.SQL("key"), None)
            return sum(1 for r in candidates if engine.matches(r, query))
        exact_count = self._rows(
            sql.SQL("SELECT count(*) FROM {} WHERE {} AND exact AND {}").format(
                self._table, sql.SQL(scope.where()), sql.SQL(cond.where())),
            [*scope.params, *cond.params])
        others = self._rows(
            sql.SQL("SELECT {} FROM {} WHERE {} AND NOT exact").format(
                _COLUMNS, self._table, sql.SQL(scope.where())), scope.params)
        return int(exact_count[0][0]) + sum(
            1 for row in others if engine.matches(self._record(row), query))

    @_unavailable(retry=True)
    def list_keys(self, op: ListKeysOp) -> Page:
        if "\x00" in op.namespace:
            return Page([], None)
        now = self.clock()
        like, exact = glob_to_like(op.pattern) if op.pattern is not None else ("%", True)

        def fetch(after: str | None, step: int) -> list[str]:
            scope = SqlQuery()
            scope.add("prefix = %s", self.prefix)
            scope.add("namespace = %s", op.namespace)
            scope.add(LIVE, now)
            scope.add("key LIKE %s", like)
            if after is not None:
                scope.add("key > %s", after)
            rows = self._rows(sql.SQL("SELECT key FROM {} WHERE {} ORDER BY key LIMIT %s").format(
                self._table, sql.SQL(scope.where())), [*scope.params, step])
            return [row[0] for row in rows]

        return page_keys(fetch, op, exact)

    @_unavailable(retry=True)
    def export(self, *, cursor: str | None = None, limit: int = 1000
               ) -> tuple[list[Record], str | None]:
        """Every live record of the prefix in (namespace, key) order; cursor = JSON [ns, key]."""
        scope = SqlQuery()
        scope.add("prefix = %s", self.prefix)
        scope.add(LIVE, self.clock())
        if cursor is not None:
            try:
                namespace, key = json.loads(cursor)
                if not (isinstance(namespace, str) and isinstance(key, str)):
                    raise TypeError
            except (ValueError, TypeError):
                raise InvalidValue(f"not an export cursor: {cursor!r}") from None
            scope.add("(namespace, key) > (%s, %s)", namespace, key)
        rows = self._rows(sql.SQL("SELECT {} FROM {} WHERE {} ORDER BY namespace, key LIMIT %s")
                          .format(_COLUMNS, self._table, sql.SQL(scope.where())),
                          [*scope.params, limit + 1])
        records = [self._record(r) for r in rows[:limit]]
        if len(rows) > limit:
            last = records[-1]
            return records, json.dumps([last.namespace, last.key])
        return records, None

