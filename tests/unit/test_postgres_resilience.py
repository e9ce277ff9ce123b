"""The postgres backend where the conformance suite does not reach: killed sessions, processes
racing on one key, hostile input near SQL, numbers in jsonb, and the SQL translation of
filters checked against the engine on random filters. The cross-process race and the
hostile-input checks also run against redis (the other shared, durable store)."""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import random
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from memcluster import query as engine
from memcluster.backends.base import MemoryBackend
from memcluster.backends.postgres import PostgresBackend
from memcluster.backends.registry import create_backend
from memcluster.errors import SourceUnavailable, VersionConflict
from memcluster.model import Query, Record
from memcluster.ops import ClearOp, CountOp, RetrieveOp, SearchOp, StoreOp, UpdateOp
from memcluster.testing import FakeClock
from memcluster.testing.conformance import HOSTILE, random_seed
from tests.support import free_port


@pytest.fixture
def pg(postgres_dsn: str) -> Iterator[PostgresBackend]:
    backend = create_backend("postgres", {"dsn": postgres_dsn},
                             prefix=f"resil-{uuid.uuid4().hex[:10]}", clock=FakeClock())
    assert isinstance(backend, PostgresBackend)
    yield backend
    backend.clear(ClearOp(namespace=None))
    backend.close()


@pytest.fixture(params=["postgres", "redis"])
def shared_store(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    """(backend name, opts) of a store several processes can share."""
    if request.param == "postgres":
        return "postgres", {"dsn": request.getfixturevalue("postgres_dsn")}
    return "redis", {"url": request.getfixturevalue("redis_url")}


def _put(backend: MemoryBackend, key: str, value: Any, **kw: Any) -> Record:
    return backend.apply(StoreOp.make(key, value, **kw))


# ---- a killed session -----------------------------------------------------------------------

def test_a_terminated_session_is_replaced_and_the_next_operation_succeeds(postgres_dsn):
    app = f"memcluster-kill-{uuid.uuid4().hex[:8]}"
    dsn = psycopg.conninfo.make_conninfo(postgres_dsn, application_name=app)
    backend = create_backend("postgres", {"dsn": dsn, "min_size": 1, "max_size": 1},
                             prefix=f"kill-{uuid.uuid4().hex[:8]}")
    try:
        _put(backend, "k", 1)
        for attempt in range(2):  # first a read, then a write, right after the kill
            with psycopg.connect(postgres_dsn, autocommit=True) as admin:
                killed = admin.execute(
                    "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) "
                    "FROM pg_stat_activity WHERE application_name = %s", [app]).fetchone()[0]
            assert killed == 1  # the pool's only session is gone
            if attempt == 0:
                assert backend.apply(RetrieveOp.make("k")).value == 1
            else:
                assert _put(backend, "k", 2).version == 2
    finally:
        backend.clear(ClearOp(namespace=None))
        backend.close()


def test_an_unreachable_server_is_unavailable_and_the_password_stays_hidden():
    dsn = f"postgresql://app:hunter2-secret@127.0.0.1:{free_port()}/test"
    with pytest.raises(SourceUnavailable) as caught:
        create_backend("postgres", {"dsn": dsn, "pool_timeout": 0.5, "connect_timeout": 1},
                       prefix="down")
    assert "hunter2" not in str(caught.value)
    assert "postgresql://app:***@127.0.0.1" in str(caught.value)


# ---- processes racing on one key ---------------------------------------------------------------

def _race(name: str, opts: dict[str, Any], prefix: str, rounds: int,
          barrier: Any) -> tuple[list[int], int]:
    """Worker: `rounds` CAS attempts then `rounds` updates; returns versions it won."""
    backend = create_backend(name, opts, prefix=prefix)
    won: list[int] = []
    try:
        barrier.wait(timeout=60)
        for _ in range(rounds):
            current = backend.apply(RetrieveOp.make("cas"))
            with contextlib.suppress(VersionConflict):
                won.append(backend.apply(StoreOp.make(
                    "cas", "mine", if_version=current.version)).version)
        for _ in range(rounds):
            backend.apply(UpdateOp.make("counter", lambda v: (v or 0) + 1))
        return won, 0
    finally:
        backend.close()


def test_two_processes_racing_cas_never_both_win(shared_store):
    name, opts = shared_store
    prefix = f"race-{uuid.uuid4().hex[:8]}"
    backend = create_backend(name, opts, prefix=prefix)
    rounds = 150
    try:
        _put(backend, "cas", "start")
        ctx = multiprocessing.get_context("spawn")
        with ctx.Manager() as manager:
            barrier = manager.Barrier(2)
            with ctx.Pool(2) as pool:
                # A deadline, not a hang, if a worker dies (Pool would wait forever).
                results = pool.starmap_async(
                    _race, [(name, opts, prefix, rounds, barrier)] * 2).get(timeout=180)
        won = [v for versions, _ in results for v in versions]
        final = backend.apply(RetrieveOp.make("cas"))
        # Each win made exactly one new version: no version was won twice, none was lost.
        assert len(won) == len(set(won))
        assert sorted(won) == list(range(2, final.version + 1))
        assert backend.apply(RetrieveOp.make("counter")).value == 2 * rounds
    finally:
        backend.clear(ClearOp(namespace=None))
        backend.close()


# ---- hostile input -----------------------------------------------------------------

def test_hostile_strings_never_change_the_statement(shared_store):
    """Hostile keys, namespaces, metadata names and values, used in filters and patterns,
    find exactly their own record and nothing else; SQL LIKE and Redis glob characters in
    keys are literals unless the glob says otherwise."""
    name, opts = shared_store
    backend = create_backend(name, opts, prefix=f"hostile-{uuid.uuid4().hex[:8]}")
    try:
        for i, text in enumerate(HOSTILE):
            _put(backend, text, {"i": i}, namespace=text, metadata={text: text, "i": i})
            _put(backend, text, i, metadata={"field": text, "nested": {text: i}})
        for i, text in enumerate(HOSTILE):
            assert backend.apply(RetrieveOp.make(text, namespace=text)).value == {"i": i}
            hits = backend.apply(SearchOp.make(Query(filter={"field": text}, limit=100)))
            assert [r.key for r in hits] == [text]
            if "." not in text and not text.startswith("$"):
                hits = backend.apply(SearchOp.make(Query(filter={f"nested.{text}": i})))
                assert [r.key for r in hits] == [text]
            hits = backend.apply(SearchOp.make(
                Query(pattern=engine.escape_glob(text), limit=100)))
            assert [r.key for r in hits] == [text]
            if not text.startswith("$") and "." not in text:  # operators and paths
                hits = backend.apply(SearchOp.make(Query(filter={text: text}), namespace=text))
                assert [r.key for r in hits] == [text]
        for pattern, keys in [("1%", []), ("%", ["%"]), ("10?%", ["100%"]), ("_", ["_"])]:
            hits = backend.apply(SearchOp.make(Query(pattern=pattern, limit=100)))
            assert [r.key for r in hits] == keys  # '%' and '_' are no wildcards in a glob
        underscore = backend.apply(SearchOp.make(Query(pattern="under_score*", limit=100)))
        assert [r.key for r in underscore] == ["under_score"]
        assert len(backend.apply(SearchOp.make(Query(limit=1000)))) == len(set(HOSTILE))
    finally:
        backend.clear(ClearOp(namespace=None))
        backend.close()


# ---- numbers in jsonb and the SQL translation --------------------------------------

def test_numbers_compare_as_numbers_in_sql(pg):
    for key, n in [("nine", 9), ("nine-and-a-half", 9.5), ("ten", 10), ("hundred", 100),
                   ("text-nine", "9"), ("text-ten", "10"), ("true", True)]:
        _put(pg, key, 0, metadata={"n": n})
    query = Query(filter={"n": {"$lt": 10}}, limit=100)
    _scope, cond = pg._compile("", query, pg.clock())
    assert cond.exact  # decided by SQL alone, not by the engine fallback
    assert [r.key for r in pg.apply(SearchOp.make(query))] == ["nine", "nine-and-a-half"]
    assert [r.key for r in pg.apply(SearchOp.make(Query(filter={"n": {"$gte": 10}})))] == [
        "hundred", "ten"]
    assert [r.key for r in pg.apply(SearchOp.make(Query(filter={"n": {"$lt": "9"}})))] == [
        "text-ten"]  # strings by code point: "10" < "9"
    assert [r.key for r in pg.apply(SearchOp.make(Query(filter={"n": 9})))] == ["nine"]
    assert [r.key for r in pg.apply(SearchOp.make(Query(filter={"n": 10.0})))] == ["ten"]


def test_expired_rows_are_swept_by_delete(pg):
    _put(pg, "short", 1, ttl=5)
    _put(pg, "long", 2)
    pg.clock.advance(5)
    assert pg.apply(RetrieveOp.make("short")) is None
    assert pg.sweep() == 1
    with pg.pool.connection() as conn:
        keys = [r[0] for r in conn.execute(
            "SELECT key FROM memcluster_records WHERE prefix = %s", [pg.prefix])]
    assert keys == ["long"]


_LEAVES: list[Any] = [0, 1, 9, 10, -2.5, 9.0, 1e16, "9", "10", "a", "ab", "", "Ab", True,
                      False, None, b"\x00b", float("nan"), float("inf"), "nul\x00x"]


def _value(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.random()
    if depth < 2 and roll < 0.15:
        return [_value(rng, depth + 1) for _ in range(rng.randrange(3))]
    if depth < 2 and roll < 0.25:
        return {rng.choice("abc"): _value(rng, depth + 1) for _ in range(rng.randrange(3))}
    return rng.choice(_LEAVES)


def _filter(rng: random.Random, depth: int = 0) -> dict[str, Any]:
    roll = rng.random()
    if depth < 2 and roll < 0.1:
        return {"$and": [_filter(rng, depth + 1) for _ in range(rng.randint(1, 2))]}
    if depth < 2 and roll < 0.2:
        return {"$or": [_filter(rng, depth + 1) for _ in range(rng.randint(1, 2))]}
    if depth < 2 and roll < 0.3:
        return {"$not": _filter(rng, depth + 1)}
    path = rng.choice(["a", "b", "c", "a.b", "b.c", "a.0"])
    op = rng.choice(["$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$contains",
                     "$exists", "plain"])
    if op == "plain":
        return {path: _value(rng, 1)}
    if op in ("$gt", "$gte", "$lt", "$lte"):
        arg: Any = rng.choice([0, 9, 10, 9.5, -1, "9", "a", "10", float("nan")])
    elif op in ("$in", "$nin"):
        arg = [_value(rng, 1) for _ in range(rng.randrange(3))]
    elif op == "$exists":
        arg = rng.random() < 0.5
    else:
        arg = _value(rng, 1)
    return {path: {op: arg}}


def test_sql_filters_agree_with_the_engine_on_random_filters(pg):
    """The translation (and its engine fallback) returns exactly what the engine does."""
    rng = random.Random(random_seed())
    records = []
    for i in range(60):
        meta = {k: _value(rng) for k in rng.sample("abc", rng.randint(0, 3))}
        records.append(_put(pg, f"k{i:02d}", rng.choice(_LEAVES[:13]), metadata=meta))
    for _ in range(300):
        flt = _filter(rng)
        query = Query(filter=flt, limit=1000, order_by=rng.choice([None, "-key", "version"]))
        expected = [r.key for r in engine.run(records, query)]
        got = [r.key for r in pg.apply(SearchOp.make(query))]
        assert got == expected, flt
        assert pg.apply(CountOp(query)) == len(expected), flt


def test_nan_metadata_stays_exact(pg):
    rec = _put(pg, "k", 1, metadata={"x": float("nan"), "b": b"\x00"})
    got = pg.apply(RetrieveOp.make("k"))
    assert math.isnan(got.metadata["x"]) and got.metadata["b"] == b"\x00"
    assert rec.version == got.version == 1


def test_store_many_with_a_conflict_writes_nothing(pg):
    _put(pg, "taken", 1)
    with pytest.raises(VersionConflict):
        pg.store_many([StoreOp.make("fresh", 1), StoreOp.make("taken", 2, if_version=0)])
    assert pg.apply(RetrieveOp.make("fresh")) is None
    assert pg.apply(RetrieveOp.make("taken")).version == 1
