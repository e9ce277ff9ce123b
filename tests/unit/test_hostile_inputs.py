"""Hostile input never breaks a store (issue 15), on every local backend side by side.

`BACKENDS` lists the backends; a new backend joins every test here by adding one entry
(its options, the service fixture it needs, whether it persists and whether its text
search is semantic). The property test runs random sequences of adversarial calls
(`tests.hostile`: lone surrogates, NUL, huge ints, NaN and inf, deep nesting, giant
strings, wrong types) through one `MemoryManager` holding a source per backend, and checks
that each call answers (as the model says) or raises a typed `MemclusterError`, that
every backend refuses exactly the same inputs, that a refused call changes nothing, and
that the records survive a restart. Seeded from MEMCLUSTER_TEST_SEED (printed in the
pytest header and in every failure) for replay. The numbered tests reproduce the
issue's findings one by one.
"""

from __future__ import annotations

import os
import secrets
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

import memcluster as mc
from memcluster.backends.files import FilesBackend
from memcluster.errors import InvalidKey, InvalidValue, MemclusterError
from memcluster.model import Query
from memcluster.ops import new_store_op
from tests import hostile

SEED = int(os.environ.get("MEMCLUSTER_TEST_SEED", "0"))
WHERE = f"(MEMCLUSTER_TEST_SEED={SEED})"
EXAMPLES = int(os.environ.get("MEMCLUSTER_HOSTILE_EXAMPLES", "30"))  # more: a longer hunt


@dataclass(frozen=True)
class BackendCase:
    """How to run one backend here: `opts(tmp_dir, service, tag)` -> its options, where
    `service` is the value of the named fixture (None without one) and `tag` a name unique
    to this run (for tables and key prefixes in shared services)."""

    backend: str
    opts: Callable[[Path, Any, str], dict[str, Any]]
    service: str | None = None
    persistent: bool = True
    semantic: bool = False
    cleanup: Callable[[Any, str], None] | None = None


def _drop_postgres_table(dsn: str, tag: str) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP TABLE IF EXISTS public."{tag}"')


def _drop_mysql_table(dsn: str, tag: str) -> None:
    from urllib.parse import urlsplit

    import pymysql

    url = urlsplit(dsn)
    conn = pymysql.connect(host=url.hostname, port=url.port or 3306, user=url.username,
                           password=url.password or "", database=url.path.lstrip("/"))
    try:
        with conn.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS `{tag}`")
    finally:
        conn.close()


BACKENDS: dict[str, BackendCase] = {
    "memory": BackendCase("memory", lambda tmp, svc, tag: {"cleanup_interval": 0},
                          persistent=False),
    "files-json": BackendCase("files", lambda tmp, svc, tag: {
        "path": str(tmp / "store.json"), "format": "json", "sync": "os"}),
    "files-yaml": BackendCase("files", lambda tmp, svc, tag: {
        "path": str(tmp / "store.yaml"), "format": "yaml", "sync": "os"}),
    "files-msgpack": BackendCase("files", lambda tmp, svc, tag: {
        "path": str(tmp / "store.mpk"), "format": "msgpack", "sync": "os"}),
    "sqlite": BackendCase("sqlite", lambda tmp, svc, tag: {
        "path": str(tmp / "store.db"), "synchronous": "normal"}),
    "redis": BackendCase("redis", lambda tmp, url, tag: {"url": url, "prefix": tag},
                         service="redis_url"),
    "postgres": BackendCase("postgres", lambda tmp, dsn, tag: {"dsn": dsn, "table_name": tag},
                            service="postgres_dsn", cleanup=_drop_postgres_table),
    "vector": BackendCase("vector", lambda tmp, svc, tag: {
        "path": str(tmp / "vectors"), "dimension": 32, "sync": "os"}, semantic=True),
    "mysql": BackendCase("mysql", lambda tmp, dsn, tag: {"dsn": dsn, "table_name": tag},
                         service="mysql_dsn", cleanup=_drop_mysql_table),
    "qdrant": BackendCase("qdrant", lambda tmp, svc, tag: {
        "path": str(tmp / "qdrant"), "embedder": "hashing", "dimension": 32}, semantic=True),
}


class World:
    """The sources of every backend case, opened (and reopened) as one MemoryManager."""

    def __init__(self, specs: list[Any], cases: dict[str, BackendCase]) -> None:
        self.specs, self.cases = specs, cases
        self.mem: mc.MemoryManager | None = None

    def open(self) -> list[hostile.Target]:
        self.close()
        self.mem = mc.MemoryManager(self.specs)
        return [hostile.Target(label, self.mem, label, semantic=case.semantic,
                               persistent=case.persistent)
                for label, case in self.cases.items()]

    def close(self) -> None:
        if self.mem is not None:
            self.mem.close()
            self.mem = None


@pytest.fixture(scope="module")
def world(request, tmp_path_factory):
    """Every backend whose service is there (with MEMCLUSTER_REQUIRE_SERVICES=1, as in CI,
    a missing service fails the tests; otherwise only that backend is left out)."""
    tag = f"mc_hostile_{os.getpid()}_{secrets.token_hex(3)}"
    tmp = tmp_path_factory.mktemp("hostile")
    services: dict[str, Any] = {}
    for label, case in BACKENDS.items():
        try:
            services[label] = request.getfixturevalue(case.service) if case.service else None
        except pytest.skip.Exception as why:
            warnings.warn(f"hostile-input tests run without {label}: {why}", stacklevel=1)
    cases = {label: case for label, case in BACKENDS.items() if label in services}
    specs = [mc.memory_source(label, case.backend, opts=case.opts(tmp, services[label], tag))
             for label, case in cases.items()]
    w = World(specs, cases)
    yield w
    w.open()
    assert w.mem is not None
    for label in cases:
        w.mem.clear(source=label, all_namespaces=True, confirm=True)
    w.close()
    for label, case in cases.items():
        if case.cleanup is not None:
            case.cleanup(services[label], tag)


@pytest.fixture
def targets(world):
    opened = world.open()
    for t in opened:
        t.surface.clear(source=t.source, all_namespaces=True, confirm=True)
    yield opened
    world.close()


# ---- the property -----------------------------------------------------------------------------

@seed(SEED)
@settings(max_examples=EXAMPLES, deadline=None, print_blob=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.large_base_example])
@given(calls=st.lists(hostile.calls(), min_size=1, max_size=8))
def test_hostile_calls_are_answered_or_refused_alike_and_refusals_change_nothing(world, calls):
    targets = world.open()
    try:
        hostile.run_example(targets, calls, WHERE, reopen=world.open)
    finally:
        world.close()


# ---- the findings, one by one -----------------------------------------------------------

def _each(targets: list[hostile.Target], call: hostile.Call) -> dict[str, Any]:
    return {t.label: hostile.invoke(t, call) for t in targets}


def test_1_a_surrogate_key_is_refused_and_the_files_store_keeps_working(tmp_path):
    """Item 1: `{"key": "x\\ud800"}` through the tools used to wedge a files source for
    every tenant (later writes failed, a failed delete came back after a restart)."""
    spec = [mc.memory_source("f", "files", opts={"path": str(tmp_path / "s.json"),
                                                 "format": "json"})]
    with mc.MemoryManager(spec) as mem:
        mem.store("kept", 1, namespace="other-tenant")
        out = mem.call_tool("memory_store", '{"key": "x\\ud800", "value": 1}', namespace="a")
        assert out["ok"] is False and out["error"]["type"] == "InvalidKey"
        assert mem.store("after", 2, namespace="a").version == 1
        assert mem.delete("kept", namespace="other-tenant") is True
    with mc.MemoryManager(spec) as mem:
        assert mem.retrieve("after", namespace="a").value == 2
        assert mem.retrieve("kept", namespace="other-tenant") is None


def test_1_a_files_write_that_fails_in_any_way_rolls_back(tmp_path, monkeypatch):
    """Item 1: `_commit` put memory back only on OSError; any failure must restore it."""
    spec = [mc.memory_source("f", "files", opts={"path": str(tmp_path / "s.yaml"),
                                                 "format": "yaml"})]
    with mc.MemoryManager(spec) as mem:
        mem.store("a", 1)
        real = FilesBackend._write

        def broken(self: FilesBackend) -> None:
            raise RuntimeError("the encoder choked")

        monkeypatch.setattr(FilesBackend, "_write", broken)
        with pytest.raises(InvalidValue, match="nothing was changed"):
            mem.store("b", 2)
        with pytest.raises(InvalidValue):
            mem.delete("a")
        monkeypatch.setattr(FilesBackend, "_write", real)
        assert mem.retrieve("b") is None and mem.retrieve("a").value == 1
        assert [k for k in mem.list_keys()] == ["a"]
        assert mem.store("c", 3).version == 1
    with mc.MemoryManager(spec) as mem:
        assert sorted(mem.list_keys()) == ["a", "c"]


@pytest.mark.parametrize(("call", "error"), [
    (hostile.Call("store", ("x\ud800", 1)), InvalidKey),
    (hostile.Call("store", ("x", 1), {"namespace": "n\udfff"}), InvalidKey),
    (hostile.Call("store", ("x", "v\ud800")), InvalidValue),
    (hostile.Call("store", ("x", {"k\ud800": 1})), InvalidValue),
    (hostile.Call("store", ("x", 1), {"metadata": {"m": ["\ud800"]}}), InvalidValue),
    (hostile.Call("store", ("x\x00", 1)), InvalidKey),
    (hostile.Call("retrieve", ("x\ud800",)), InvalidKey),
    (hostile.Call("search", ("\ud800",)), InvalidValue),
    (hostile.Call("list_keys", ("\ud800*",)), InvalidValue),
])
def test_2_surrogates_and_nul_are_typed_errors_on_every_backend(targets, call, error):
    """Item 2: a lone surrogate raised a raw UnicodeEncodeError (in a value or metadata
    on every backend, in a key or namespace on sqlite and files)."""
    outcomes = _each(targets, call)
    assert all(type(o) is error for o in outcomes.values()), outcomes
    assert all(not list(t.surface.export(source=t.source)) for t in targets)


def test_3_a_huge_ttl_never_half_writes_redis(redis_url):
    """Item 3: TTL 1e17 made PEXPIRE fail after DEL and HSET had run. The codec refuses it
    for every backend; the script itself refuses it before its first write."""
    from memcluster.backends.redis import RedisBackend
    from memcluster.ops import ListKeysOp, SearchOp, StoreOp

    opts = {"url": redis_url, "prefix": f"mc_item3_{secrets.token_hex(3)}"}
    with mc.MemoryManager([mc.memory_source("r", "redis", opts=opts)]) as mem:
        mem.store("k", "old", metadata={"m": 1})
        with pytest.raises(InvalidValue, match="ttl"):
            mem.store("k", "new", ttl=1e17)
        backend = RedisBackend(prefix="r")  # the source's own store, reached directly
        backend.open(opts)
        try:
            raw = new_store_op("k", StoreOp.make("k", "new").blob, "", {}, 1e17, None, True,
                               None)  # past the edge checks, as a buggy caller might
            with pytest.raises(InvalidValue, match="ttl"):
                backend.store(raw)
            fresh = new_store_op("fresh", raw.blob, "", {}, 1e17, None, True, None)
            with pytest.raises(InvalidValue):
                backend.store(fresh)
            assert backend.list_keys(ListKeysOp()).keys == ["k"]
            assert [r.value for r in backend.search(SearchOp(Query()))] == ["old"]
        finally:
            backend.close()
        rec = mem.retrieve("k")
        assert (rec.value, rec.metadata, rec.version) == ("old", {"m": 1}, 1)
        mem.clear(confirm=True)


@pytest.mark.parametrize("path", ["labels.+0", "labels. 0", "labels.\t-1", "labels.0"])
def test_4_index_like_paths_mean_the_same_on_every_backend(targets, path):
    """Item 4: postgres read `labels.+0` and `labels. 0` as array index 0 (jsonb `#>`
    accepts them), so its count disagreed with its own search and with the others."""
    mem = targets[0].surface
    for t in targets:
        mem.store("list", 1, source=t.source, metadata={"labels": ["x", "y"]})
        mem.store("dict", 1, source=t.source, metadata={"labels": {path.split(".")[1]: "x"}})
    for t in targets:
        q = Query(filter={path: "x"})
        assert mem.count(q, source=t.source) == 1, t.label
        assert [r.key for r in mem.search(q, source=t.source)] == ["dict"], t.label


@pytest.mark.parametrize("call", [
    hostile.Call("search", (None,), {"limit": 1 << 63}),
    hostile.Call("search", (None,), {"offset": 1 << 63, "pattern": "*"}),
    hostile.Call("search", (None,), {"limit": 1 << 31}),
    hostile.Call("list_keys", (None,), {"limit": 1 << 63}),
    hostile.Call("list_keys", ("a\x00*",)),
    hostile.Call("list_keys", (None,), {"cursor": "a\x00"}),
    hostile.Call("search", (None,), {"filter": "t"}),
    hostile.Call("search", (None,), {"filter": [("a", 1)]}),
    hostile.Call("count", (None,), {"filter": [("a", 1)]}),
    hostile.Call("store", ("k", 1), {"if_version": 1 << 64}),
    hostile.Call("store", ("k", 1), {"if_version": 1 << 63}),
    hostile.Call("store", ("k", 1), {"overwrite": "no"}),
])
def test_5_out_of_range_and_wrongly_shaped_arguments_are_invalid_everywhere(targets, call):
    """Item 5: limit/offset >= 2**63 (OverflowError on sqlite, NumericValueOutOfRange on
    postgres), `list_keys("a\\x00*")` (psycopg DataError), `filter="t"` (ValueError), a list
    of pairs silently taken as a filter, and `if_version` >= 2**64."""
    outcomes = _each(targets, call)
    assert all(type(o) is InvalidValue for o in outcomes.values()), outcomes


def test_5_the_largest_accepted_limit_and_version_work_everywhere(targets):
    """The bounds are usable, not only refused beyond: 2**31-1 and 2**63-1 reach every
    store (and come back as a VersionConflict, not an overflow)."""
    mem = targets[0].surface
    for t in targets:
        mem.store("k", 1, source=t.source)
        assert [r.key for r in mem.search(limit=(1 << 31) - 1, offset=0, source=t.source)] \
            == ["k"]
        assert mem.search(offset=(1 << 31) - 1, source=t.source) == []
        assert list(mem.list_keys(limit=(1 << 31) - 1, source=t.source)) == ["k"]
        outcome = hostile.invoke(t, hostile.Call("store", ("k", 2),
                                                 {"if_version": (1 << 63) - 1}))
        assert isinstance(outcome, MemclusterError) and type(outcome).__name__ == \
            "VersionConflict", (t.label, outcome)


def test_metadata_nested_beyond_16_is_refused_by_every_backend(targets):
    """Found by the property: MariaDB's JSON column refuses metadata nested 32 deep (a raw
    CONSTRAINT failure) where every other backend stored it; metadata is now bounded at
    16 levels for all, values stay at 64."""
    deep = {"deep": hostile._nested(16)}
    outcomes = _each(targets, hostile.Call("store", ("k", 1), {"metadata": deep}))
    assert all(type(o) is InvalidValue for o in outcomes.values()), outcomes
    at_limit = {"deep": hostile._nested(15)}
    for t in targets:
        rec = t.surface.store("k", hostile._nested(64), source=t.source, metadata=at_limit)
        assert t.surface.retrieve("k", source=t.source).metadata == at_limit == rec.metadata
