"""The mysql backend where the conformance suite does not reach: killed connections, processes
racing on one key, hostile input near SQL, numbers and strings in JSON, PAD SPACE, and the SQL
translation of filters checked against the engine on random filters. The race, hostile-input
and random-filter checks are the postgres backend's (tests/unit/test_postgres_resilience.py),
run here against MariaDB."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from typing import Any

import pymysql
import pytest

from memcluster import query as engine
from memcluster.backends.mysql import MySQLBackend, parse_dsn
from memcluster.backends.registry import create_backend
from memcluster.errors import ConfigError, InvalidKey, SourceUnavailable, VersionConflict
from memcluster.model import Query
from memcluster.ops import (
    ClearOp,
    CountOp,
    ListKeysOp,
    RetrieveOp,
    SearchOp,
    StoreOp,
    UpdateOp,
)
from memcluster.testing import FakeClock
from memcluster.testing.conformance import random_seed
from tests.support import free_port, wait_until
from tests.unit import test_postgres_resilience as shared


@pytest.fixture
def my(mysql_dsn: str) -> Iterator[MySQLBackend]:
    backend = create_backend("mysql", {"dsn": mysql_dsn},
                             prefix=f"my-{uuid.uuid4().hex[:10]}", clock=FakeClock())
    assert isinstance(backend, MySQLBackend)
    yield backend
    backend.clear(ClearOp(namespace=None))
    backend.close()


def _put(backend: MySQLBackend, key: str, value: Any, **kw: Any) -> Any:
    return backend.apply(StoreOp.make(key, value, **kw))


def _keys(backend: MySQLBackend, **kw: Any) -> list[str]:
    return backend.apply(ListKeysOp.make(limit=1000, **kw)).keys


# ---- a killed connection --------------------------------------------------------------------

def test_a_killed_connection_is_replaced_and_the_next_operation_succeeds(mysql_dsn):
    backend = create_backend("mysql", {"dsn": mysql_dsn, "max_size": 1},
                             prefix=f"kill-{uuid.uuid4().hex[:8]}")
    admin = pymysql.connect(**parse_dsn(mysql_dsn), autocommit=True)
    try:
        _put(backend, "k", 1)
        for attempt in range(2):  # first a read, then a write, right after the kill
            [conn] = backend.pool.idle_connections()  # the pool's only connection
            victim = conn.thread_id()
            with admin.cursor() as cur:
                cur.execute("KILL CONNECTION %s", [victim])

            def gone(victim: int = victim) -> bool:
                with admin.cursor() as cur:
                    cur.execute("SELECT COUNT(*) FROM information_schema.PROCESSLIST "
                                "WHERE ID = %s", [victim])
                    return cur.fetchone()[0] == 0

            wait_until(gone, timeout=10, message="the killed connection to go")
            if attempt == 0:
                assert backend.apply(RetrieveOp.make("k")).value == 1
            else:
                assert _put(backend, "k", 2).version == 2
            [fresh] = backend.pool.idle_connections()
            assert fresh.thread_id() != victim
    finally:
        admin.close()
        backend.clear(ClearOp(namespace=None))
        backend.close()


def test_an_unreachable_server_is_unavailable_and_the_password_stays_hidden():
    dsn = f"mysql://app:hunter2-secret@127.0.0.1:{free_port()}/test"
    with pytest.raises(SourceUnavailable) as caught:
        create_backend("mysql", {"dsn": dsn, "pool_timeout": 0.5, "connect_timeout": 1},
                       prefix="down")
    assert "hunter2" not in str(caught.value)
    assert "mysql://app:***@127.0.0.1" in str(caught.value)


@pytest.mark.parametrize("dsn", ["postgresql://u:pw-secret@h/db", "mysql://u:pw-secret@h",
                                 "mysql://u:pw-secret@h:99999/db", "mysql://u:pw-secret@h/db?x=1"])
def test_a_bad_dsn_is_a_config_error_that_hides_the_password(dsn):
    with pytest.raises(ConfigError) as caught:
        create_backend("mysql", {"dsn": dsn})
    assert "pw-secret" not in str(caught.value)


# ---- processes racing on one key, hostile input, random filters (shared with postgres) -------

def test_two_processes_racing_cas_never_both_win(mysql_dsn):
    shared.test_two_processes_racing_cas_never_both_win(("mysql", {"dsn": mysql_dsn}))


def test_hostile_strings_never_change_the_statement(mysql_dsn):
    shared.test_hostile_strings_never_change_the_statement(("mysql", {"dsn": mysql_dsn}))


def test_sql_filters_agree_with_the_engine_on_random_filters(my):
    shared.test_sql_filters_agree_with_the_engine_on_random_filters(my)


def test_random_filters_mostly_stay_in_sql(my):
    """The agreement above is not the engine doing all the work: most filters are exact."""
    rng = random.Random(random_seed())
    exact = sum(my._compile("", Query(filter=shared._filter(rng)), 0.0)[1].exact
                for _ in range(300))
    assert exact > 150


def test_a_hostile_table_name_is_quoted(mysql_dsn):
    table = "mc`; DROP TABLE t; -- ' \""
    backend = create_backend("mysql", {"dsn": mysql_dsn, "table_name": table}, prefix="q")
    try:
        _put(backend, "k", 1, metadata={"n": 1})
        assert backend.apply(SearchOp.make(Query(filter={"n": 1})))[0].key == "k"
        assert backend.info()["table_name"] == table
    finally:
        backend.close()
        with pymysql.connect(**parse_dsn(mysql_dsn), autocommit=True) as conn, \
                conn.cursor() as cur:
            cur.execute("DROP TABLE `" + table.replace("`", "``") + "`")


# ---- numbers, strings and keys -------------------------------------------------------------

def test_numbers_compare_as_numbers_in_sql(my):
    for key, n in [("nine", 9), ("nine-and-a-half", 9.5), ("ten", 10), ("hundred", 100),
                   ("text-nine", "9"), ("text-ten", "10"), ("true", True), ("big", 1e16)]:
        _put(my, key, 0, metadata={"n": n})
    query = Query(filter={"n": {"$lt": 10}}, limit=100)
    assert my._compile("", query, 0.0)[1].exact  # decided by SQL alone
    assert [r.key for r in my.apply(SearchOp.make(query))] == ["nine", "nine-and-a-half"]
    assert [r.key for r in my.apply(SearchOp.make(Query(filter={"n": {"$gte": 10}})))] == [
        "big", "hundred", "ten"]
    assert [r.key for r in my.apply(SearchOp.make(Query(filter={"n": {"$lt": "9"}})))] == [
        "text-ten"]  # strings by code point: "10" < "9"
    assert [r.key for r in my.apply(SearchOp.make(Query(filter={"n": 9})))] == ["nine"]
    assert [r.key for r in my.apply(SearchOp.make(Query(filter={"n": 10.0})))] == ["ten"]
    assert [r.key for r in my.apply(SearchOp.make(Query(filter={"n": True})))] == ["true"]


def test_ints_beyond_doubles_are_left_to_the_engine(my):
    edge = 1 << 53
    for key, n in [("edge", edge), ("above", edge + 1), ("huge", (1 << 64) - 1)]:
        _put(my, key, 0, metadata={"n": n})
    query = Query(filter={"n": {"$gt": edge}})
    assert [r.key for r in my.apply(SearchOp.make(query))] == ["above", "huge"]
    assert my.apply(CountOp.make(query)) == 2
    assert [r.key for r in my.apply(SearchOp.make(Query(filter={"n": edge + 1})))] == ["above"]
    assert not my._compile("", Query(filter={"n": edge + 1}), 0.0)[1].exact


def test_trailing_spaces_make_distinct_keys_in_code_point_order(my):
    """utf8mb4_bin would PAD SPACE: 'a' and 'a ' one key, and 'a\\t' before 'a'."""
    for i, key in enumerate(["a", "a ", "a\t", "a  ", "b", "é", "😀", "Z"]):
        _put(my, key, i, metadata={"s": key})
    assert _keys(my) == sorted(["a", "a ", "a\t", "a  ", "b", "é", "😀", "Z"])
    assert my.apply(RetrieveOp.make("a ")).value == 1
    hits = my.apply(SearchOp.make(Query(filter={"s": "a"})))
    assert [r.key for r in hits] == ["a"]
    hits = my.apply(SearchOp.make(Query(filter={"s": {"$gt": "a"}}, limit=100)))
    assert [r.key for r in hits] == sorted(["a ", "a\t", "a  ", "b", "é", "😀"])
    assert _keys(my, pattern="a?") == ["a\t", "a "]
    assert _keys(my, pattern="?") == sorted(["a", "b", "é", "😀", "Z"])


def test_lone_surrogates_are_refused_and_nothing_is_written(my):
    with pytest.raises(InvalidKey):
        _put(my, "bad\ud800", 1)
    assert _keys(my) == []


# ---- writes ----------------------------------------------------------------------------------

def test_store_many_with_a_conflict_writes_nothing(my):
    _put(my, "taken", 1)
    with pytest.raises(VersionConflict):
        my.store_many([StoreOp.make("fresh", 1), StoreOp.make("taken", 2, if_version=0)])
    assert my.apply(RetrieveOp.make("fresh")) is None
    assert my.apply(RetrieveOp.make("taken")).version == 1


def test_two_backends_updating_one_key_lose_no_increment(mysql_dsn):
    """Two instances on one prefix (as two processes would be): CAS by version keeps every
    read-modify-write; the pool gives each its own connections."""
    import threading

    prefix = f"upd-{uuid.uuid4().hex[:8]}"
    backends = [create_backend("mysql", {"dsn": mysql_dsn}, prefix=prefix) for _ in range(2)]
    errors: list[BaseException] = []

    def work(backend: MySQLBackend) -> None:
        try:
            for _ in range(60):
                backend.apply(UpdateOp.make("n", lambda v: (v or 0) + 1))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(b,)) for b in backends]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        got = backends[0].apply(RetrieveOp.make("n"))
        assert (got.value, got.version) == (120, 120)
    finally:
        backends[0].clear(ClearOp(namespace=None))
        for b in backends:
            b.close()


def test_expired_rows_are_swept(my):
    _put(my, "short", 1, ttl=5)
    _put(my, "long", 2)
    my.clock.advance(5)
    assert my.apply(RetrieveOp.make("short")) is None
    assert my.sweep() == 1
    rows = my._rows(f"SELECT `key` FROM {my._table} WHERE prefix = %s", [my._prefix])
    assert [r[0] for r in rows] == [b"long"]


def test_text_search_runs_in_sql_and_matches_the_engine(my):
    records = [_put(my, f"k{i}", {"t": t}) for i, t in enumerate(
        ["Ünïcode Text", "plain", "UNICODE", "mixed ünï", "42 apples"])]
    for text in ("ünï", "UNÏ", "42", "text", "zzz", ""):
        query = Query(text=text, limit=100)
        assert my._compile("", query, 0.0)[1].exact
        expected = [r.key for r in engine.run(records, query)]
        assert [r.key for r in my.apply(SearchOp.make(query))] == expected, text
