"""The `sqlite` backend: one table, every prefix and namespace in it, queries pushed into SQL.

Core type: `SQLiteBackend`. Options: `path` (a file, or ":memory:"), `synchronous`
(full | normal, default full), `sweep_every` (writes between expiry sweeps, default 1000).

Decisions:

- **One table** `memcluster_records`, primary key (prefix, namespace, key): shards sharing
  a database file see only their prefix. Values are msgpack BLOBs (exact), metadata is JSON
  text in the `codec.to_json_safe` form (so `json_extract` can filter it), and
  `search_text` holds `query.searchable_text(key, value)` so text search is one `instr`.
- **WAL with synchronous=FULL** by default: every commit is fsynced, so an acknowledged write
  survives power loss, not only a killed process. NORMAL (opt-in) is safe against a process
  crash but may lose the last commits on power loss; batches (`store_many`, one
  transaction) are how to amortise the fsync instead.
- **Queries:** `memcluster.backends.sqlite_query` translates pattern, text and filter to SQL
  where it can do so exactly (and the whole query, order, offset and limit included, then runs in
  SQLite). Whatever it cannot translate exactly is applied by the pure engine
  (`memcluster.query.run`) over the rows SQL prefiltered. The rejected alternative, always
  filtering in Python, reads the whole namespace for every search.
- **Atomicity:** every write runs in `BEGIN IMMEDIATE` (the database write lock), so a CAS
  or an `update` is atomic across threads and processes; a thread lock serialises use of
  the one connection (`check_same_thread=False`).
- **TTL:** every read has `expires_at > now`; a sweep deletes expired rows of the prefix on
  open and every `sweep_every` writes.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from memcluster import codec, query
from memcluster.backends import sqlite_query
from memcluster.backends.base import Capabilities, MemoryBackend, check_options
from memcluster.errors import ConfigError, SourceUnavailable
from memcluster.model import Page, Query, Record
from memcluster.ops import (
    ClearOp,
    CountOp,
    DeleteOp,
    ExistsOp,
    ListKeysOp,
    ReplicateOp,
    RetrieveOp,
    SearchOp,
    StoreOp,
    UpdateOp,
)

TABLE = "memcluster_records"
COLUMNS = 'namespace, "key", value, metadata, version, created_at, updated_at, expires_at'
SELECTED = COLUMNS + ", plain"
LIVE = "(expires_at IS NULL OR expires_at > ?)"
IN_CHUNK = 500
SCHEMA = (
    f"""CREATE TABLE IF NOT EXISTS {TABLE} (
        prefix TEXT NOT NULL,
        namespace TEXT NOT NULL,
        "key" TEXT NOT NULL,
        value BLOB NOT NULL,
        metadata TEXT NOT NULL,
        version INTEGER NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        expires_at REAL,
        search_text TEXT NOT NULL,
        plain INTEGER NOT NULL,
        PRIMARY KEY (prefix, namespace, "key"))""",
    f"CREATE INDEX IF NOT EXISTS {TABLE}_expiry ON {TABLE} (prefix, expires_at) "
    "WHERE expires_at IS NOT NULL",
    f"CREATE INDEX IF NOT EXISTS {TABLE}_inexact ON {TABLE} (prefix, namespace) WHERE plain = 0",
)
_UPSERT = (f'INSERT INTO {TABLE} (prefix, {COLUMNS}, search_text, plain) '
           "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
           'ON CONFLICT (prefix, namespace, "key") DO UPDATE SET value = excluded.value, '
           "metadata = excluded.metadata, version = excluded.version, "
           "created_at = excluded.created_at, updated_at = excluded.updated_at, "
           "expires_at = excluded.expires_at, search_text = excluded.search_text, "
           "plain = excluded.plain")


_EXPIRED = "(expires_at IS NOT NULL AND expires_at <= ?)"
_STORE = (f'INSERT INTO {TABLE} (prefix, {COLUMNS}, search_text, plain) '
          "VALUES (?, ?, ?, ?, ?, 1, ?, ?, ?, ?, ?) "
          'ON CONFLICT (prefix, namespace, "key") DO UPDATE SET value = excluded.value, '
          f"metadata = excluded.metadata, "
          f"version = CASE WHEN {_EXPIRED} THEN 1 ELSE version + 1 END, "
          f"created_at = CASE WHEN {_EXPIRED} THEN excluded.created_at ELSE created_at END, "
          "updated_at = excluded.updated_at, expires_at = excluded.expires_at, "
          "search_text = excluded.search_text, plain = excluded.plain "
          "RETURNING version, created_at")


def _meta_json(metadata: dict[str, Any]) -> str:
    return json.dumps(codec.to_json_safe(metadata), ensure_ascii=False, allow_nan=False)


def _row_record(row: Sequence[Any]) -> Record:
    ns, key, blob, meta, version, created, updated, expires, plain = row
    metadata = json.loads(meta)  # a plain row's JSON holds no tags: nothing to convert
    return Record(key, codec.decode(blob), ns, metadata if plain else codec.from_json_safe(
        metadata), version, created, updated, expires)


class SQLiteBackend(MemoryBackend):
    """Records in one SQLite table, scoped by prefix; see the module docstring."""

    name = "sqlite"
    capabilities = Capabilities(text="substring", ttl="sweeper", native_batch=True,
                                durable=False)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.RLock()
        self._depth = 0
        self._writes = 0
        self._sweep_every = 1000
        self._path = ""

    # ---- lifecycle ------------------------------------------------------------------------

    @classmethod
    def node_local(cls, opts: Mapping[str, Any]) -> bool:
        return opts.get("path", ":memory:") != ":memory:"

    def open(self, opts: Mapping[str, Any]) -> None:
        check_options("sqlite", opts, ("path", "synchronous", "sweep_every"))
        path = opts.get("path")
        if not isinstance(path, str) or not path:
            raise ConfigError("sqlite.path: required, a file path or ':memory:'")
        sync = str(opts.get("synchronous", "full")).lower()
        if sync not in ("full", "normal"):
            raise ConfigError(f"sqlite.synchronous: must be full or normal, got {sync!r}")
        every = opts.get("sweep_every", 1000)
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ConfigError(f"sqlite.sweep_every: must be an int >= 1, got {every!r}")
        self._sweep_every, self._path = every, path
        try:
            conn = sqlite3.connect(path, timeout=30.0, isolation_level=None,
                                   check_same_thread=False)
        except sqlite3.Error as exc:
            raise SourceUnavailable(f"sqlite database {path!r} cannot be opened: {exc}") from exc
        self._conn = conn
        try:
            with self._locked():
                if path != ":memory:":
                    conn.execute("PRAGMA journal_mode=WAL")
                conn.execute(f"PRAGMA synchronous={sync.upper()}")
                with self._tx():
                    for statement in SCHEMA:
                        conn.execute(statement)
                    self._sweep()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    @contextlib.contextmanager
    def _locked(self) -> Iterator[sqlite3.Connection]:
        """The connection under the thread lock; sqlite errors become SourceUnavailable."""
        with self._lock:
            if self._conn is None:
                raise SourceUnavailable("sqlite backend is closed")
            try:
                yield self._conn
            except sqlite3.Error as exc:
                raise SourceUnavailable(f"sqlite database {self._path!r}: {exc}") from exc

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (BEGIN IMMEDIATE), re-entrant: nested uses join the outer one."""
        with self._locked() as conn:
            if self._depth:
                self._depth += 1
                try:
                    yield conn
                finally:
                    self._depth -= 1
                return
            conn.execute("BEGIN IMMEDIATE")
            self._depth = 1
            try:
                yield conn
            except BaseException:
                self._depth = 0
                conn.execute("ROLLBACK")
                raise
            self._depth = 0
            try:
                conn.execute("COMMIT")
            except sqlite3.Error:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise

    def _sweep(self) -> int:
        """Delete the prefix's expired rows (they are already invisible to reads)."""
        with self._tx() as conn:
            return conn.execute(f"DELETE FROM {TABLE} WHERE prefix = ? AND expires_at <= ?",
                                (self.prefix, self.clock())).rowcount

    def _wrote(self, n: int = 1) -> None:
        self._writes += n
        if self._writes >= self._sweep_every:
            self._writes = 0
            self._sweep()

    # ---- reads -------------------------------------------------------------------------------

    def retrieve(self, op: RetrieveOp) -> Record | None:
        with self._locked() as conn:
            row = conn.execute(f'SELECT {SELECTED} FROM {TABLE} WHERE prefix = ? AND namespace = ? '
                               f'AND "key" = ? AND {LIVE}',
                               (self.prefix, op.namespace, op.key, self.clock())).fetchone()
        return None if row is None else _row_record(row)

    def retrieve_many(self, ops: Sequence[RetrieveOp]) -> list[Record | None]:
        by_ns: dict[str, list[str]] = defaultdict(list)
        for op in ops:
            by_ns[op.namespace].append(op.key)
        found: dict[tuple[str, str], Record] = {}
        now = self.clock()
        with self._locked() as conn:
            for ns, keys in by_ns.items():
                unique = list(dict.fromkeys(keys))
                for i in range(0, len(unique), IN_CHUNK):
                    chunk = unique[i:i + IN_CHUNK]
                    marks = ", ".join("?" * len(chunk))
                    rows = conn.execute(
                        f'SELECT {SELECTED} FROM {TABLE} WHERE prefix = ? AND namespace = ? '
                        f'AND "key" IN ({marks}) AND {LIVE}', (self.prefix, ns, *chunk, now))
                    for row in rows:
                        found[(row[0], row[1])] = _row_record(row)
        return [found.get((op.namespace, op.key)) for op in ops]

    def exists(self, op: ExistsOp) -> bool:
        with self._locked() as conn:
            return conn.execute(f'SELECT 1 FROM {TABLE} WHERE prefix = ? AND namespace = ? '
                                f'AND "key" = ? AND {LIVE}',
                                (self.prefix, op.namespace, op.key, self.clock())
                                ).fetchone() is not None

    def _plan(self, conn: sqlite3.Connection, q: Query, namespace: str,
              now: float) -> tuple[str, list[Any], bool]:
        """WHERE clause and params for `q`, and whether SQL answers it exactly."""
        where = [f"prefix = ? AND namespace = ? AND {LIVE}"]
        params: list[Any] = [self.prefix, namespace, now]
        plan = sqlite_query.translate(q)
        inexact_rows = plan.needs_plain and conn.execute(
            f"SELECT 1 FROM {TABLE} WHERE prefix = ? AND namespace = ? AND plain = 0 LIMIT 1",
            (self.prefix, namespace)).fetchone() is not None
        fragments, args, exact = plan.render(inexact_rows)
        where += fragments
        params += args
        return " AND ".join(where), params, exact

    def search(self, op: SearchOp) -> list[Record]:
        q = op.query
        query.check_filter(q.filter)
        now = self.clock()
        with self._locked() as conn:
            where, params, exact = self._plan(conn, q, op.namespace, now)
            if exact:
                sql = (f"SELECT {SELECTED} FROM {TABLE} WHERE {where} "
                       f"ORDER BY {sqlite_query.order_sql(q.order_by)} LIMIT ? OFFSET ?")
                rows = conn.execute(sql, (*params, q.limit, q.offset)).fetchall()
                return [_row_record(row) for row in rows]
            rows = conn.execute(f"SELECT {SELECTED} FROM {TABLE} WHERE {where}", params).fetchall()
        return query.run([_row_record(row) for row in rows], q)

    def count(self, op: CountOp) -> int:
        q = op.query
        query.check_filter(q.filter)
        now = self.clock()
        with self._locked() as conn:
            where, params, exact = self._plan(conn, q, op.namespace, now)
            if exact:
                return conn.execute(f"SELECT COUNT(*) FROM {TABLE} WHERE {where}",
                                    params).fetchone()[0]
            rows = conn.execute(f"SELECT {SELECTED} FROM {TABLE} WHERE {where}", params).fetchall()
        unlimited = Query(text=q.text, pattern=q.pattern, filter=q.filter)
        return sum(1 for row in rows if query.matches(_row_record(row), unlimited))

    def list_keys(self, op: ListKeysOp) -> Page:
        with self._locked() as conn:
            where, params, exact = self._plan(conn, Query(pattern=op.pattern), op.namespace,
                                              self.clock())
            if op.cursor is not None:
                where += ' AND "key" > ?'
                params.append(op.cursor)
            sql = f'SELECT "key" FROM {TABLE} WHERE {where} ORDER BY "key"'
            if exact:
                keys = [r[0] for r in conn.execute(sql + " LIMIT ?", (*params, op.limit + 1))]
            else:
                keys = []
                for (key,) in conn.execute(sql, params):
                    if query.match_pattern(key, op.pattern):
                        keys.append(key)
                        if len(keys) > op.limit:
                            break
        more = len(keys) > op.limit
        keys = keys[:op.limit]
        return Page(keys, keys[-1] if more else None)

    def export(self, *, cursor: str | None = None, limit: int = 1000
               ) -> tuple[list[Record], str | None]:
        where, params = f"prefix = ? AND {LIVE}", [self.prefix, self.clock()]
        if cursor is not None:
            ns, key = json.loads(cursor)
            where += ' AND (namespace, "key") > (?, ?)'
            params += [ns, key]
        with self._locked() as conn:
            rows = conn.execute(f'SELECT {SELECTED} FROM {TABLE} WHERE {where} '
                                'ORDER BY namespace, "key" LIMIT ?', (*params, limit + 1)
                                ).fetchall()
        records = [_row_record(row) for row in rows[:limit]]
        more = len(rows) > limit
        return records, json.dumps([records[-1].namespace, records[-1].key]) if more else None

    # ---- writes ------------------------------------------------------------------------------

    def _current(self, conn: sqlite3.Connection, namespace: str, key: str,
                 now: float) -> Record | None:
        """The live row's version and creation time (value left out: a write needs only those)."""
        row = conn.execute(f'SELECT version, created_at FROM {TABLE} WHERE prefix = ? '
                           f'AND namespace = ? AND "key" = ? AND {LIVE}',
                           (self.prefix, namespace, key, now)).fetchone()
        return None if row is None else Record(key, None, namespace, {}, row[0], row[1])

    def _put(self, conn: sqlite3.Connection, record: Record, blob: bytes) -> None:
        plain = sqlite_query.is_plain(record.key, record.metadata)
        conn.execute(_UPSERT, (self.prefix, record.namespace, record.key, blob,
                               _meta_json(record.metadata), record.version, record.created_at,
                               record.updated_at, record.expires_at,
                               query.searchable_text(record.key, record.value), int(plain)))

    def _store(self, conn: sqlite3.Connection, op: StoreOp, now: float) -> Record:
        if op.expected_version is not None:  # CAS: read, check, write (inside BEGIN IMMEDIATE)
            record = op.record_after(self._current(conn, op.namespace, op.key, now), now)
            self._put(conn, record, op.blob)
            return record
        # unconditional: one statement computes the version (restarting after expiry)
        value = op.value
        expires = None if op.ttl is None else now + op.ttl
        ((version, created),) = conn.execute(_STORE, (
            self.prefix, op.namespace, op.key, op.blob, _meta_json(op.metadata), now, now,
            expires, query.searchable_text(op.key, value),
            int(sqlite_query.is_plain(op.key, op.metadata)), now, now)).fetchall()
        return Record(op.key, value, op.namespace, dict(op.metadata), version, created, now,
                      expires)

    def store(self, op: StoreOp) -> Record:
        if op.expected_version is not None:
            return self.store_many([op])[0]
        with self._locked() as conn:  # one statement is its own transaction
            record = self._store(conn, op, self.clock())
        self._wrote()
        return record

    def store_many(self, ops: Sequence[StoreOp]) -> list[Record]:
        """One transaction: all or nothing (a CAS conflict anywhere rolls the batch back)."""
        now = self.clock()
        with self._tx() as conn:
            out = [self._store(conn, op, now) for op in ops]
        self._wrote(len(out))
        return out

    def update(self, op: UpdateOp) -> Record:
        """The base read-modify-write inside one BEGIN IMMEDIATE: atomic across processes."""
        with self._tx():
            return super().update(op)

    def delete(self, op: DeleteOp) -> bool:
        return self.delete_many([op]) == 1

    def delete_many(self, ops: Sequence[DeleteOp]) -> int:
        now, removed = self.clock(), 0
        with self._tx() as conn:
            for op in ops:
                row = conn.execute(f'DELETE FROM {TABLE} WHERE prefix = ? AND namespace = ? '
                                   'AND "key" = ? RETURNING expires_at',
                                   (self.prefix, op.namespace, op.key)).fetchone()
                removed += row is not None and (row[0] is None or row[0] > now)
        return removed

    def clear(self, op: ClearOp) -> int:
        where, params = "prefix = ?", [self.prefix]
        if op.namespace is not None:
            where += " AND namespace = ?"
            params.append(op.namespace)
        with self._tx() as conn:
            live = conn.execute(f"SELECT COUNT(*) FROM {TABLE} WHERE {where} AND {LIVE}",
                                (*params, self.clock())).fetchone()[0]
            conn.execute(f"DELETE FROM {TABLE} WHERE {where}", params)
        return live

    def replicate(self, op: ReplicateOp) -> bool:
        record = op.record
        blob = codec.encode_value(record.value)
        with self._tx() as conn:
            current = self._current(conn, record.namespace, record.key, self.clock())
            if current is not None and current.version >= record.version:
                return False
            self._put(conn, record.with_score(None), blob)
        self._wrote()
        return True

    def info(self) -> dict[str, Any]:
        with self._locked() as conn:
            live = conn.execute(f"SELECT COUNT(*) FROM {TABLE} WHERE prefix = ? AND {LIVE}",
                                (self.prefix, self.clock())).fetchone()[0]
            mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
            sync = {0: "off", 1: "normal", 2: "full", 3: "extra"}.get(
                conn.execute("PRAGMA synchronous").fetchone()[0])
        return {**super().info(), "records": live, "journal_mode": mode, "synchronous": sync}
