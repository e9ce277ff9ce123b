"""Local backends beside the plain tools they wrap: store / retrieve / search ops per second.

Run: python benchmarks/local_ops.py [--n 20000] [--searches 200] [--only a,b] [--json PATH]

Each row is a *subject*: a name and three callables doing the same work: `store(i)` writes
record i (a small dict value with a numeric metadata field), `retrieve(i)` reads it back,
`search()` runs one query (keys matching `k1*` whose metadata n < 10, first 10 by key).
memcluster subjects go through the backend API with validated ops (the real path); the
peers do the same work by hand: a dict with fnmatch, and sqlite3 with the same pragmas
(WAL, synchronous=FULL, one transaction per write) and the same SQL shape; redis-py and
psycopg and PyMySQL against the machine's Redis, PostgreSQL and MariaDB/MySQL
(MEMCLUSTER_TEST_REDIS_URL, MEMCLUSTER_TEST_POSTGRES_DSN, MEMCLUSTER_TEST_MYSQL_DSN) with a
hash / a jsonb table / a JSON table and no versions or CAS; qdrant-client in memory with
the same hashing embedder, one point per record.

To compare another store, add a factory to `SUBJECTS` (name -> callable taking the work
directory and returning a `Subject`), e.g. redis beside redis-py or postgres beside psycopg.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import random
import sqlite3
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from memcluster.backends.registry import create_backend
from memcluster.model import Query
from memcluster.ops import RetrieveOp, SearchOp, StoreOp

QUERY = Query(pattern="k1*", filter={"n": {"$lt": 10}}, limit=10)


def record(i: int) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """Key, value and metadata of record i (the same for every subject)."""
    return f"k{i}", {"name": f"user {i}", "i": i, "tags": ["a", "b"]}, {"n": i % 100}


@dataclass
class Subject:
    """One row of the table: the callables doing the work, and how to release it."""

    name: str
    store: Callable[[int], Any]
    retrieve: Callable[[int], Any]
    search: Callable[[], Any]
    close: Callable[[], Any] = field(default=lambda: None)


def memcluster_subject(name: str, backend: str, opts: dict[str, Any]) -> Subject:
    instance = create_backend(backend, opts, prefix="bench")

    def store(i: int) -> Any:
        key, value, meta = record(i)
        return instance.store(StoreOp.make(key, value, metadata=meta))

    return Subject(name, store, lambda i: instance.retrieve(RetrieveOp.make(f"k{i}")),
                   lambda: instance.search(SearchOp(QUERY)), instance.close)


def dict_subject(_: Path) -> Subject:
    data: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}

    def store(i: int) -> None:
        key, value, meta = record(i)
        data[key] = (value, meta)

    def search() -> list[str]:
        hits = [k for k, (_, meta) in data.items()
                if fnmatch.fnmatchcase(k, "k1*") and meta["n"] < 10]
        return sorted(hits)[:10]

    return Subject("dict (plain)", store, lambda i: data.get(f"k{i}"), search)


def sqlite3_subject(workdir: Path) -> Subject:
    conn = sqlite3.connect(workdir / "plain.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute('CREATE TABLE kv ("key" TEXT PRIMARY KEY, value TEXT, meta TEXT)')

    def store(i: int) -> None:
        key, value, meta = record(i)
        conn.execute('INSERT OR REPLACE INTO kv VALUES (?, ?, ?)',
                     (key, json.dumps(value), json.dumps(meta)))

    def retrieve(i: int) -> Any:
        row = conn.execute('SELECT value FROM kv WHERE "key" = ?', (f"k{i}",)).fetchone()
        return None if row is None else json.loads(row[0])

    def search() -> list[Any]:
        return conn.execute('SELECT "key", value FROM kv WHERE "key" GLOB ? AND '
                            "json_extract(meta, '$.n') < ? ORDER BY \"key\" LIMIT 10",
                            ("k1*", 10)).fetchall()

    return Subject("sqlite3 (plain, WAL FULL)", store, retrieve, search, conn.close)


REDIS_URL = os.environ.get("MEMCLUSTER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_DSN = os.environ.get("MEMCLUSTER_TEST_POSTGRES_DSN",
                              "postgresql://postgres@127.0.0.1:5432/test")


def memcluster_service_subject(name: str, backend: str, opts: dict[str, Any]) -> Subject:
    """A memcluster service backend under a unique prefix, cleared when done."""
    from memcluster.ops import ClearOp

    subject = memcluster_subject(name, backend, opts)
    instance_close = subject.close

    def close() -> None:
        clear = create_backend(backend, opts, prefix="bench")
        clear.clear(ClearOp(namespace=None))
        clear.close()
        instance_close()

    subject.close = close
    return subject


def redis_py_subject(_: Path) -> Subject:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    prefix = f"bench-plain-{os.getpid()}:"

    def store(i: int) -> None:
        key, value, meta = record(i)
        client.hset(prefix + key, mapping={"v": json.dumps(value), "m": json.dumps(meta)})

    def retrieve(i: int) -> Any:
        raw = client.hget(f"{prefix}k{i}", "v")
        return None if raw is None else json.loads(raw)

    def search() -> list[str]:
        keys = sorted(k.decode() for k in client.scan_iter(match=prefix + "k1*", count=1000))
        hits = []
        for key in keys:
            if json.loads(client.hget(key, "m"))["n"] < 10:
                hits.append(key)
                if len(hits) == 10:
                    break
        return hits

    def close() -> None:
        for batch in iter(lambda: list(client.scan_iter(match=prefix + "*", count=1000))[:1000],
                          []):
            client.unlink(*batch)
        client.close()

    return Subject("redis-py (plain)", store, retrieve, search, close)


def psycopg_subject(_: Path) -> Subject:
    import psycopg

    conn = psycopg.connect(POSTGRES_DSN, autocommit=True)
    table = f"bench_plain_{os.getpid()}"
    conn.execute(f'CREATE TABLE {table} ("key" TEXT COLLATE "C" PRIMARY KEY, '
                 "value JSONB, meta JSONB)")

    def store(i: int) -> None:
        key, value, meta = record(i)
        conn.execute(f'INSERT INTO {table} VALUES (%s, %s, %s) ON CONFLICT ("key") DO UPDATE '
                     "SET value = EXCLUDED.value, meta = EXCLUDED.meta",
                     (key, json.dumps(value), json.dumps(meta)))

    def retrieve(i: int) -> Any:
        row = conn.execute(f'SELECT value FROM {table} WHERE "key" = %s', (f"k{i}",)).fetchone()
        return None if row is None else row[0]

    def search() -> list[Any]:
        return conn.execute(f'SELECT "key", value FROM {table} WHERE "key" LIKE %s AND '
                            "(meta->>'n')::numeric < %s ORDER BY \"key\" LIMIT 10",
                            ("k1%", 10)).fetchall()

    def close() -> None:
        conn.execute(f"DROP TABLE IF EXISTS {table}")
        conn.close()

    return Subject("psycopg (plain)", store, retrieve, search, close)


MYSQL_DSN = os.environ.get("MEMCLUSTER_TEST_MYSQL_DSN", "mysql://root@127.0.0.1:3306/test")


def pymysql_subject(_: Path) -> Subject:
    """Raw PyMySQL, one connection, autocommit: an upsert per store, a JSON table, no versions."""
    import pymysql

    from memcluster.backends.mysql import parse_dsn

    conn = pymysql.connect(**parse_dsn(MYSQL_DSN), autocommit=True, charset="utf8mb4")
    cur = conn.cursor()
    table = f"bench_plain_{os.getpid()}"
    cur.execute(f"CREATE TABLE {table} (`key` VARBINARY(512) PRIMARY KEY, value JSON, "
                "meta JSON) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4")

    def store(i: int) -> None:
        key, value, meta = record(i)
        cur.execute(f"INSERT INTO {table} VALUES (%s, %s, %s) ON DUPLICATE KEY UPDATE "
                    "value = VALUES(value), meta = VALUES(meta)",
                    (key.encode(), json.dumps(value), json.dumps(meta)))

    def retrieve(i: int) -> Any:
        cur.execute(f"SELECT value FROM {table} WHERE `key` = %s", (f"k{i}".encode(),))
        row = cur.fetchone()
        return None if row is None else json.loads(row[0])

    def search() -> list[Any]:
        cur.execute(f"SELECT `key`, value FROM {table} WHERE `key` LIKE %s AND "
                    "CAST(JSON_UNQUOTE(JSON_EXTRACT(meta, '$.n')) AS DOUBLE) < %s "
                    "ORDER BY `key` LIMIT 10", (b"k1%", 10))
        return list(cur.fetchall())

    def close() -> None:
        cur.execute(f"DROP TABLE IF EXISTS {table}")
        conn.close()

    return Subject("PyMySQL (plain)", store, retrieve, search, close)


QDRANT_DIMENSION = 384


def qdrant_client_subject(_: Path) -> Subject:
    """Raw qdrant-client in memory: a point per record embedded by the same hashing embedder,
    the search a payload-filtered scroll (k1* has no Qdrant form: filtered in Python)."""
    import uuid

    from qdrant_client import QdrantClient, models

    from memcluster.backends.embedders import HashingEmbedder, text_of

    client = QdrantClient(location=":memory:")
    embedder = HashingEmbedder(QDRANT_DIMENSION)
    client.create_collection("plain", vectors_config=models.VectorParams(
        size=QDRANT_DIMENSION, distance=models.Distance.COSINE))
    ids = {}

    def point_id(key: str) -> str:
        if key not in ids:
            ids[key] = str(uuid.uuid5(uuid.NAMESPACE_URL, key))
        return ids[key]

    def store(i: int) -> None:
        key, value, meta = record(i)
        client.upsert("plain", points=[models.PointStruct(
            id=point_id(key), vector=embedder.embed([text_of(value)])[0].tolist(),
            payload={"key": key, "value": value, "meta": meta})])

    def retrieve(i: int) -> Any:
        found = client.retrieve("plain", ids=[point_id(f"k{i}")])
        return found[0].payload["value"] if found else None

    def search() -> list[Any]:
        points, _ = client.scroll("plain", scroll_filter=models.Filter(must=[
            models.FieldCondition(key="meta.n", range=models.Range(lt=10))]), limit=100_000)
        return sorted(p.payload["key"] for p in points
                      if fnmatch.fnmatchcase(p.payload["key"], "k1*"))[:10]

    return Subject("qdrant-client (plain, :memory:)", store, retrieve, search, client.close)


SUBJECTS: dict[str, Callable[[Path], Subject]] = {
    "dict": dict_subject,
    "memory": lambda _: memcluster_subject("memcluster memory", "memory",
                                           {"cleanup_interval": 0}),
    "sqlite3": sqlite3_subject,
    "sqlite": lambda d: memcluster_subject("memcluster sqlite (WAL FULL)", "sqlite",
                                           {"path": str(d / "mc.db")}),
    "sqlite-memory": lambda _: memcluster_subject("memcluster sqlite :memory:", "sqlite",
                                                  {"path": ":memory:"}),
    "redis-py": redis_py_subject,
    "redis": lambda _: memcluster_service_subject("memcluster redis", "redis",
                                                  {"url": REDIS_URL}),
    "psycopg": psycopg_subject,
    "postgres": lambda _: memcluster_service_subject(
        "memcluster postgres", "postgres",
        {"dsn": POSTGRES_DSN, "table_name": "memcluster_bench"}),
    "pymysql": pymysql_subject,
    "mysql": lambda _: memcluster_service_subject(
        "memcluster mysql", "mysql", {"dsn": MYSQL_DSN, "table_name": "memcluster_bench"}),
    "qdrant-client": qdrant_client_subject,
    "qdrant": lambda _: memcluster_subject(
        "memcluster qdrant :memory:", "qdrant",
        {"location": ":memory:", "embedder": "hashing", "dimension": QDRANT_DIMENSION}),
}


def rate(count: int, fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return count / (time.perf_counter() - start)


def measure(subject: Subject, n: int, searches: int, seed: int) -> dict[str, Any]:
    order = list(range(n))
    random.Random(seed).shuffle(order)
    try:
        row = {"subject": subject.name, "n": n,
               "store": rate(n, lambda: [subject.store(i) for i in range(n)]),
               "retrieve": rate(n, lambda: [subject.retrieve(i) for i in order]),
               "search": rate(searches, lambda: [subject.search() for _ in range(searches)])}
    finally:
        subject.close()
    return row


def format_table(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'subject':<32} {'store/s':>10} {'retrieve/s':>11} {'search/s':>10}"]
    lines += [f"{r['subject']:<32} {r['store']:>10,.0f} {r['retrieve']:>11,.0f} "
              f"{r['search']:>10,.1f}" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=20_000, help="records per subject")
    parser.add_argument("--searches", type=int, default=200, help="searches per subject")
    parser.add_argument("--only", default=",".join(SUBJECTS), help="comma-separated subjects")
    parser.add_argument("--seed", type=int, default=0, help="retrieve order")
    parser.add_argument("--json", default=None, help="also write the rows to this file")
    args = parser.parse_args(argv)
    names = [s for s in args.only.split(",") if s]
    unknown = set(names) - set(SUBJECTS)
    if unknown:
        parser.error(f"unknown subjects {sorted(unknown)}; known: {', '.join(SUBJECTS)}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="memcluster-bench-") as tmp:
        for name in names:
            rows.append(measure(SUBJECTS[name](Path(tmp)), args.n, args.searches, args.seed))
            print(format_table(rows[-1:]).splitlines()[-1], flush=True)
    print()
    print(format_table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    main()
