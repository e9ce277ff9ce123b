"""The conformance suite every backend runs, ours and a user's: one contract, one test class.

Core type: `BackendConformance`, a pytest mixin (not collected itself: its name does not
start with "Test"). Subclass it in a test module, name the backend, give its options:

    from memcluster.testing import BackendConformance

    class TestSQLiteConformance(BackendConformance):
        backend = "sqlite"                     # a registered name or the class
        fake_clock = True                      # False for stores with native TTL (redis)
        def backend_opts(self, tmp_path):      # options passed to open()
            return {"path": str(tmp_path / "m.db")}

Class attributes: `fake_clock` (True: the backend gets a `FakeClock` and TTL tests advance
it; False: `time.time`, short TTLs and polling with a deadline), `persistent` (the store
outlives an instance: checked with `reopen()`), `thread_safe` (False: the concurrent
`update` test serialises callers with a lock and still proves the read-modify-write is
exact). Fixtures: `clock`, `backend` (prefix "conf-a-<random>"), `sibling` (same options,
prefix "conf-b-<random>") and `reopen` (a callable returning a fresh instance on the same
store and prefix).

Query results are compared with the pure engine (`memcluster.query.run`) on the same
records, for every feature the backend declares in its capabilities; every feature it does
not declare must raise `UnsupportedQuery`. Writing the expectations as a second model was
rejected: the engine is the definition, so the suite and the backends cannot drift apart.
Randomised tests print their seed (env MEMCLUSTER_TEST_SEED replays one).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from memcluster.backends.base import Capabilities, MemoryBackend
from memcluster.backends.registry import create_backend
from memcluster.errors import (
    InvalidKey,
    InvalidValue,
    UnsupportedOperation,
    UnsupportedQuery,
    VersionConflict,
)
from memcluster.model import Query, Record
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
from memcluster.query import escape_glob, run
from memcluster.testing.clock import FakeClock

EVERYTHING = 1_000_000
HOSTILE = ["it's", 'say "hi"', "a;b", "x'; DROP TABLE memory; --", "--", "/* c */",
           "*?[]", "[!a]", "back\\slash", "\\", "100%", "%", "under_score", "_", "ünï cødé",
           "日本語", "emoji 😀", "new\nline", "tab\there", " padded ", "{json}", "$eq",
           "a.b.c", "a/b", ":", "..", "NULL"]
NATIVE_VALUES: list[Any] = [
    None, True, False, 0, 1, -1, (1 << 63) - 1, -(1 << 63), (1 << 64) - 1, 1.5, -2.25,
    float("inf"), "", "plain", "ünïcødé 日本語 😀", "quote ' \" ; -- %_", b"", b"\x00\xff\x10",
    [], {}, [1, "two", 3.0, None, [True, b"x"]],
    {"a": {"b": {"c": [1, {"d": "deep"}]}}, "n": None, "b": b"\x01", "t": False},
    "x" * 10_000,
]


def same(a: Any, b: Any) -> bool:
    """Deep equality that also compares types (so True != 1 and 1.0 != 1) and NaN == NaN."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return bool(a == b)


def random_seed() -> int:
    """The seed for randomised tests: env MEMCLUSTER_TEST_SEED or a fresh one (printed)."""
    env = os.environ.get("MEMCLUSTER_TEST_SEED")
    seed = int(env) if env else random.randrange(1 << 30)
    print(f"memcluster test seed: {seed} (set MEMCLUSTER_TEST_SEED to replay)")
    return seed


def _poll(condition: Callable[[], Any], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def _dispose(backend: MemoryBackend) -> None:
    """Remove what a test wrote (shared stores outlive the test), then close."""
    with contextlib.suppress(Exception):
        backend.apply(ClearOp(namespace=None))
    backend.close()


class BackendConformance:
    """The behaviour's contract as tests; see the module docstring for how to use it."""

    backend: ClassVar[Any] = None  # a registered name or a MemoryBackend subclass
    fake_clock: ClassVar[bool] = True
    persistent: ClassVar[bool] = True
    thread_safe: ClassVar[bool] = True
    ttl: ClassVar[float] = 10.0  # with the fake clock
    real_ttl: ClassVar[float] = 1.0  # with the real clock: long enough to see the record first

    def backend_opts(self, tmp_path: Path) -> dict[str, Any]:
        """Options for `open()`; override (e.g. a database path under `tmp_path`)."""
        return {}

    # ---- fixtures ----------------------------------------------------------------------

    @pytest.fixture
    def clock(self) -> Callable[[], float]:
        return FakeClock() if self.fake_clock else time.time

    @pytest.fixture
    def conformance_opts(self, tmp_path: Path) -> dict[str, Any]:
        return dict(self.backend_opts(tmp_path))

    def open_backend(self, opts: dict[str, Any], prefix: str,
                     clock: Callable[[], float]) -> MemoryBackend:
        return create_backend(self.backend, opts, prefix=prefix, clock=clock)

    @pytest.fixture(name="backend")  # the attribute `backend` names the backend under test
    def backend_fixture(self, clock: Callable[[], float],
                conformance_opts: dict[str, Any]) -> Iterator[MemoryBackend]:
        instance = self.open_backend(conformance_opts, f"conf-a-{uuid.uuid4().hex[:10]}", clock)
        yield instance
        _dispose(instance)

    @pytest.fixture
    def sibling(self, clock: Callable[[], float], conformance_opts: dict[str, Any],
                backend: MemoryBackend) -> Iterator[MemoryBackend]:
        instance = self.open_backend(conformance_opts, f"conf-b-{uuid.uuid4().hex[:10]}", clock)
        yield instance
        _dispose(instance)

    @pytest.fixture
    def reopen(self, clock: Callable[[], float], conformance_opts: dict[str, Any],
               backend: MemoryBackend) -> Iterator[Callable[[], MemoryBackend]]:
        opened: list[MemoryBackend] = []

        def _reopen() -> MemoryBackend:
            instance = self.open_backend(conformance_opts, backend.prefix, clock)
            opened.append(instance)
            return instance

        yield _reopen
        for instance in reversed(opened):
            _dispose(instance)

    # ---- helpers -----------------------------------------------------------------------

    @staticmethod
    def caps(backend: MemoryBackend) -> Capabilities:
        return backend.capabilities

    @staticmethod
    def put(backend: MemoryBackend, key: str, value: Any, ns: str = "", **kw: Any) -> Record:
        return backend.apply(StoreOp.make(key, value, namespace=ns, **kw))

    @staticmethod
    def get(backend: MemoryBackend, key: str, ns: str = "") -> Record | None:
        return backend.apply(RetrieveOp.make(key, namespace=ns))

    @staticmethod
    def keys(backend: MemoryBackend, ns: str = "", pattern: str | None = None,
             limit: int = 1000) -> list[str]:
        out: list[str] = []
        cursor = None
        while True:
            page = backend.apply(ListKeysOp.make(namespace=ns, pattern=pattern, limit=limit,
                                                 cursor=cursor))
            out.extend(page.keys)
            cursor = page.cursor
            if cursor is None:
                return out

    @staticmethod
    def search(backend: MemoryBackend, ns: str = "", **query: Any) -> list[Record]:
        return backend.apply(SearchOp(Query(**query), ns))

    def short_ttl(self) -> float:
        """The TTL tests use: `ttl` with the fake clock, `real_ttl` with the real one."""
        return self.ttl if self.fake_clock else self.real_ttl

    def expire(self, clock: Any, backend: MemoryBackend, key: str, ns: str = "") -> None:
        """Let a record stored just now with `short_ttl()` expire."""
        if self.fake_clock:
            clock.advance(self.ttl)
        else:
            _poll(lambda: self.get(backend, key, ns) is None, timeout=self.real_ttl + 10,
                  what=f"{key!r} to expire")

    def state(self, backend: MemoryBackend, namespaces: list[str]) -> dict[tuple[str, str], Any]:
        """Every live record of `namespaces`, for "nothing changed" checks."""
        out = {}
        for ns in namespaces:
            for key in self.keys(backend, ns):
                rec = self.get(backend, key, ns)
                assert rec is not None
                out[ns, key] = (rec.version, rec.value, rec.metadata, rec.expires_at)
        return out

    # ---- round trip and versions ---------------------------------------------------------

    def test_round_trip_of_every_native_type(self, backend: MemoryBackend) -> None:
        for i, value in enumerate(NATIVE_VALUES):
            stored = self.put(backend, f"v{i}", value, "types", metadata={"i": i, "v": value})
            assert stored.key == f"v{i}" and stored.namespace == "types"
            assert stored.version == 1
            got = self.get(backend, f"v{i}", "types")
            assert got is not None, value
            assert same(got.value, value), (value, got.value)
            assert same(got.metadata, {"i": i, "v": value}), (value, got.metadata)
            assert got.version == 1 and got.expires_at is None
            assert got.created_at == pytest.approx(got.updated_at, abs=1e-3)
        assert self.get(backend, "v0", "") is None

    def test_store_returns_the_record_it_wrote(self, backend: MemoryBackend, clock: Any) -> None:
        ttl = self.short_ttl()
        before = clock()
        rec = self.put(backend, "k", {"a": [1]}, "ns", metadata={"m": 1}, ttl=ttl)
        got = self.get(backend, "k", "ns")
        assert got is not None
        assert (rec.key, rec.namespace, rec.version) == ("k", "ns", 1)
        assert same(rec.value, {"a": [1]}) and rec.metadata == {"m": 1}
        assert (got.version, got.metadata) == (rec.version, rec.metadata)
        assert rec.created_at == pytest.approx(got.created_at, abs=1e-3)
        assert rec.expires_at == pytest.approx(got.expires_at, abs=1e-2)
        assert got.expires_at == pytest.approx(got.created_at + ttl, abs=0.05)
        if self.fake_clock:
            assert got.created_at == pytest.approx(before, abs=1e-3)

    def test_versions_count_writes_and_restart_after_delete_and_expiry(
            self, backend: MemoryBackend, clock: Any) -> None:
        assert [self.put(backend, "k", n).version for n in range(3)] == [1, 2, 3]
        first = self.get(backend, "k")
        assert first is not None and first.version == 3 and first.value == 2
        if self.fake_clock:
            clock.advance(5)
            rec = self.put(backend, "k", "later")
            assert rec.created_at == pytest.approx(first.created_at, abs=1e-3)
            assert rec.updated_at == pytest.approx(first.updated_at + 5, abs=1e-3)
        assert backend.apply(DeleteOp.make("k")) is True
        assert backend.apply(DeleteOp.make("k")) is False
        assert self.put(backend, "k", "again").version == 1
        self.put(backend, "k", "twice", ttl=self.short_ttl())
        self.expire(clock, backend, "k")
        assert self.put(backend, "k", "after expiry").version == 1

    # ---- TTL --------------------------------------------------------------------------

    def test_expired_records_are_invisible_to_every_read_at_once(
            self, backend: MemoryBackend, clock: Any) -> None:
        ttl = self.short_ttl()
        ns = "ttl"
        self.put(backend, "short", "gone soon", ns, ttl=ttl, metadata={"t": 1})
        self.put(backend, "long", "stays", ns, ttl=ttl * 1000, metadata={"t": 1})
        self.put(backend, "never", "stays", ns, metadata={"t": 1})
        assert backend.apply(ExistsOp.make("short", namespace=ns)) is True
        if self.fake_clock:
            clock.advance(ttl / 2)
            assert self.get(backend, "short", ns) is not None
            clock.advance(ttl / 2)  # expires_at <= now: expired exactly at its time
        else:
            self.expire(clock, backend, "short", ns)
        live = ["long", "never"]
        assert self.get(backend, "short", ns) is None
        assert backend.apply(ExistsOp.make("short", namespace=ns)) is False
        assert self.keys(backend, ns) == live
        assert self.keys(backend, ns, pattern="s*") == []
        got = backend.retrieve_many([RetrieveOp.make(k, namespace=ns) for k in
                                     ("short", "long", "never")])
        assert got[0] is None and [r.key for r in got[1:]] == live  # type: ignore[union-attr]
        assert backend.apply(CountOp.make(namespace=ns)) == 2
        caps = self.caps(backend)
        if caps.pattern:
            assert [r.key for r in self.search(backend, ns, pattern="*", limit=10)] == live
        if caps.filter:
            assert [r.key for r in self.search(backend, ns, filter={"t": 1})] == live
        if caps.text == "substring":
            assert [r.key for r in self.search(backend, ns, text="s")] == live
        assert backend.apply(DeleteOp.make("short", namespace=ns)) is False
        seen = backend.apply(UpdateOp.make("short", lambda old: [old], namespace=ns))
        assert seen.value == [None] and seen.version == 1 and seen.expires_at is None

    # ---- compare-and-set and update -----------------------------------------------------

    def test_compare_and_set(self, backend: MemoryBackend) -> None:
        self.put(backend, "k", "v1", metadata={"m": 1})
        for kwargs in ({"if_version": 2}, {"if_version": 0}, {"overwrite": False}):
            with pytest.raises(VersionConflict):
                self.put(backend, "k", "lost", metadata={"m": 2}, **kwargs)
        got = self.get(backend, "k")
        assert got is not None and (got.value, got.version, got.metadata) == ("v1", 1, {"m": 1})
        assert self.put(backend, "k", "v2", if_version=1).version == 2
        with pytest.raises(VersionConflict):
            self.put(backend, "absent", "x", if_version=3)
        assert self.get(backend, "absent") is None
        assert self.put(backend, "absent", "x", overwrite=False).version == 1
        assert self.put(backend, "other", "x", if_version=0).version == 1
        with pytest.raises(VersionConflict):
            self.put(backend, "k", "v1", overwrite=False, if_version=1)
        assert self.put(backend, "k", "v3", overwrite=False, if_version=2).version == 3  # wins

    def test_update_keeps_metadata_and_expiry_unless_given(
            self, backend: MemoryBackend, clock: Any) -> None:
        ttl = self.short_ttl() * 100
        first = self.put(backend, "n", 1, "u", metadata={"m": "keep"}, ttl=ttl)
        rec = backend.apply(UpdateOp.make("n", lambda v: v + 1, namespace="u"))
        assert (rec.value, rec.version, rec.metadata) == (2, 2, {"m": "keep"})
        assert rec.expires_at == pytest.approx(first.expires_at, abs=0.05)
        rec = backend.apply(UpdateOp.make("n", lambda v: v * 10, namespace="u",
                                          metadata={"m": "new"}))
        got = self.get(backend, "n", "u")
        assert got is not None and (got.value, got.version, got.metadata) == (20, 3, {"m": "new"})
        fresh = backend.apply(UpdateOp.make("fresh", lambda v: {"was": v}, namespace="u"))
        assert fresh.version == 1 and same(fresh.value, {"was": None})

    def test_update_is_atomic_under_concurrent_callers(self, backend: MemoryBackend) -> None:
        threads_n, per_thread = 8, 50
        gate = threading.Lock() if not self.thread_safe else contextlib.nullcontext()
        errors: list[BaseException] = []

        def work() -> None:
            try:
                for _ in range(per_thread):
                    with gate:
                        backend.apply(UpdateOp.make("counter", lambda v: (v or 0) + 1,
                                                    namespace="cas"))
            except BaseException as exc:  # reported below, in the test's thread
                errors.append(exc)

        workers = [threading.Thread(target=work) for _ in range(threads_n)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        assert not errors, errors
        got = self.get(backend, "counter", "cas")
        assert got is not None
        assert got.value == threads_n * per_thread
        assert got.version == threads_n * per_thread

    # ---- isolation ---------------------------------------------------------------------

    def test_namespaces_are_isolated(self, backend: MemoryBackend) -> None:
        spaces = ["", "a", "b", "a/b", "A"]
        for i, ns in enumerate(spaces):
            self.put(backend, "same", i, ns)
            self.put(backend, f"only-{i}", i, ns)
        for i, ns in enumerate(spaces):
            got = self.get(backend, "same", ns)
            assert got is not None and got.value == i and got.namespace == ns
            assert self.keys(backend, ns) == sorted(["same", f"only-{i}"])
            assert backend.apply(CountOp.make(namespace=ns)) == 2
            if self.caps(backend).pattern:
                assert {r.namespace for r in self.search(backend, ns, pattern="*")} == {ns}
        assert backend.apply(DeleteOp.make("same", namespace="a")) is True
        assert self.get(backend, "same", "a") is None and self.get(backend, "same", "b")
        assert backend.apply(ClearOp.make(namespace="a")) == 1
        assert self.keys(backend, "a") == []
        assert self.keys(backend, "a/b") == ["only-3", "same"]
        assert self.put(backend, "t", 1, ("x", "y")).namespace == "x/y"
        assert self.get(backend, "t", "x/y") is not None

    def test_prefixes_are_isolated(self, backend: MemoryBackend, sibling: MemoryBackend) -> None:
        for b, tag in ((backend, "a"), (sibling, "b")):
            for ns in ("", "n"):
                self.put(b, "shared", tag, ns)
                self.put(b, f"own-{tag}", tag, ns)
        assert self.keys(backend, "n") == ["own-a", "shared"]
        assert self.keys(sibling, "n") == ["own-b", "shared"]
        got = self.get(sibling, "shared", "n")
        assert got is not None and got.value == "b" and got.version == 1
        if self.caps(backend).pattern:
            assert [r.value for r in self.search(backend, "n", pattern="*")] == ["a", "a"]
        if self.caps(backend).handoff:
            records, _ = backend.export(limit=EVERYTHING)
            assert {r.value for r in records} == {"a"} and len(records) == 4
        assert sibling.apply(ClearOp.make(namespace="n")) == 2
        self._clear_all(sibling)
        assert self.keys(sibling, "") == []
        assert self.keys(backend, "n") == ["own-a", "shared"]
        assert self.keys(backend, "") == ["own-a", "shared"]

    def _clear_all(self, backend: MemoryBackend) -> int | None:
        """clear(None); a backend without export may refuse it, typed."""
        if self.caps(backend).handoff:
            return backend.apply(ClearOp.make(namespace=None))
        try:
            return backend.apply(ClearOp.make(namespace=None))
        except UnsupportedOperation:
            for ns in ("", "n"):
                backend.apply(ClearOp.make(namespace=ns))
            return None

    # ---- paging --------------------------------------------------------------------------

    def test_paging_covers_every_key_exactly_once(self, backend: MemoryBackend) -> None:
        rng = random.Random(random_seed())
        alphabet = "abcXYZ09:_-/%*[]. éü😀"
        keys = {"".join(rng.choice(alphabet) for _ in range(rng.randint(1, 8)))
                for _ in range(rng.randint(0, 120))}
        keys.discard("")
        backend.store_many([StoreOp.make(k, i, namespace="p") for i, k in enumerate(keys)])
        self.put(backend, "outsider", 1, "p-other")
        for limit in (1, rng.randint(2, 9), rng.randint(10, 200)):
            pages = []
            cursor = None
            while True:
                page = backend.apply(ListKeysOp.make(namespace="p", limit=limit, cursor=cursor))
                assert len(page.keys) <= limit
                pages.append(page.keys)
                cursor = page.cursor
                if cursor is None:
                    break
                assert len(pages) <= len(keys) + 1, "paging does not end"
            assert [k for p in pages for k in p] == sorted(keys), f"limit={limit}"
        pattern = "*[a0]*"
        assert self.keys(backend, "p", pattern, rng.randint(1, 7)) == sorted(
            k for k in keys if "a" in k or "0" in k)

    def test_last_page_has_no_cursor_when_the_keys_run_out_at_its_end(
            self, backend: MemoryBackend, clock: Any) -> None:
        """A full page is the last one (cursor None) when no later key would match: not
        a further key of another pattern, namespace or an expired one."""
        backend.store_many([StoreOp.make(f"a{i}", i, namespace="pe") for i in range(6)])
        self.put(backend, "b0", 0, "pe")      # after the a* keys, matches no a* pattern
        self.put(backend, "z0", 0, "pe-z")    # another namespace
        if self.fake_clock:                   # expired: invisible, so no next page either
            self.put(backend, "a9", 9, "pe", ttl=self.ttl)
            clock.advance(self.ttl)
        first = backend.apply(ListKeysOp.make(namespace="pe", pattern="a*", limit=3))
        assert first.keys == ["a0", "a1", "a2"] and first.cursor is not None
        last = backend.apply(ListKeysOp.make(namespace="pe", pattern="a*", limit=3,
                                             cursor=first.cursor))
        assert last.keys == ["a3", "a4", "a5"] and last.cursor is None
        page = backend.apply(ListKeysOp.make(namespace="pe", limit=7))
        assert page.keys == [*(f"a{i}" for i in range(6)), "b0"] and page.cursor is None

    def test_paging_while_keys_are_added_and_removed(self, backend: MemoryBackend) -> None:
        rng = random.Random(random_seed())
        start = {f"k{rng.randrange(10_000):04d}" for _ in range(60)}
        backend.store_many([StoreOp.make(k, 0, namespace="pm") for k in start])
        seen: list[str] = []
        removed: set[str] = set()
        must_see = set(start)
        cursor = None
        added = 0
        while True:
            page = backend.apply(ListKeysOp.make(namespace="pm", limit=rng.randint(1, 9),
                                                 cursor=cursor))
            seen.extend(page.keys)
            cursor = page.cursor
            if cursor is None:
                break
            last = seen[-1]
            for _ in range(2):  # one new key after the cursor must be seen; one before, never
                added += 1
                new = f"k{rng.randrange(10_000):04d}x{added}"
                self.put(backend, new, 1, "pm")
                if new > last:
                    must_see.add(new)
            ahead = sorted(k for k in must_see if k > last and k not in removed)
            if ahead and rng.random() < 0.5:
                gone = rng.choice(ahead)
                backend.apply(DeleteOp.make(gone, namespace="pm"))
                removed.add(gone)
        assert seen == sorted(set(seen)), "keys repeated or out of order"
        assert must_see - removed <= set(seen)
        assert not (removed & set(seen))

    # ---- bad input ------------------------------------------------------------------------

    def test_bad_input_raises_a_typed_error_and_changes_nothing(
            self, backend: MemoryBackend) -> None:
        self.put(backend, "k", {"v": 1}, metadata={"m": 1})
        self.put(backend, "k", {"v": 2}, "ns")
        before = self.state(backend, ["", "ns"])
        bad_keys: list[Any] = ["", 5, None, b"k", "x" * 513, "é" * 257]
        for key in bad_keys:
            with pytest.raises(InvalidKey):
                StoreOp.make(key, 1)
            with pytest.raises(InvalidKey):
                RetrieveOp.make(key)
        for ns in (5, ("a", 1), ["a"], "n" * 513):
            with pytest.raises(InvalidKey):
                StoreOp.make("k", 1, namespace=ns)
        bad_values: list[Any] = [object(), (1, 2), {1, 2}, {1: "a"}, [1, (2,)], 1 << 64,
                                 -(1 << 63) - 1, b"x" * ((1 << 20) + 1), {"a": {"b": set()}}]
        deep: Any = []
        for _ in range(100):
            deep = [deep]
        bad_values.append(deep)
        for value in bad_values:
            with pytest.raises(InvalidValue):
                StoreOp.make("k", value)
        for kwargs in ({"metadata": "tags"}, {"metadata": {"a": object()}}, {"ttl": 0},
                       {"ttl": -1}, {"ttl": "5"}, {"ttl": float("nan")}, {"ttl": True},
                       {"if_version": -1}, {"if_version": True}):
            with pytest.raises(InvalidValue):
                StoreOp.make("k", 1, **kwargs)
        with pytest.raises(InvalidValue):
            backend.apply(UpdateOp.make("k", lambda v: object()))
        with pytest.raises(InvalidValue):
            backend.apply(UpdateOp.make("k", lambda v: "x" * 100, max_bytes=50))
        with pytest.raises(ZeroDivisionError):
            backend.apply(UpdateOp.make("k", lambda v: 1 / 0))
        with pytest.raises(InvalidValue):
            ListKeysOp.make(limit=0)
        if self.caps(backend).filter:
            with pytest.raises(InvalidValue):
                self.search(backend, filter={"m": {"$in": 1}})
        assert self.state(backend, ["", "ns"]) == before

    # ---- queries ----------------------------------------------------------------------------

    QUERY_DATA: ClassVar[list[tuple[str, Any, dict[str, Any]]]] = [
        ("user:1", {"name": "Ada Lovelace", "age": 36},
         {"kind": "user", "age": 36, "tags": ["math", "poet"], "nested": {"level": 2},
          "flag": True, "name": "ada"}),
        ("user:2", {"name": "Alan", "langs": ["ACE", 42]},
         {"kind": "user", "age": 41.5, "tags": ["crypto"], "nested": {"level": 1},
          "flag": False, "name": "Alan"}),
        ("user:10", "Grace 9", {"kind": "user", "age": 9, "tags": [], "flag": 1}),
        ("user:x", None, {"kind": "bot", "age": "10", "name": "zed"}),
        ("doc:1", "Ünïcode ADA text", {"kind": "doc", "title": "Intro", "tags": ["intro", "math"],
                                       "nested": {"level": 3, "deep": {"x": "y"}}}),
        ("doc:2", {"body": ["a", {"b": "needle 7"}]}, {"kind": "doc", "title": "intro"}),
        ("doc:[3]", b"bytes here", {"kind": "doc", "n": None}),
        ("note*", 3.25, {}),
        ("Note-upper", True, {"kind": "note", "age": 10}),
        ("zzz", [1, 2, 3], {"kind": "note", "age": 10.0, "tags": "math class"}),
        *[(f"gen:{i:02d}", {"i": i}, {"kind": "gen", "i": i, "even": i % 2 == 0})
          for i in range(12)],
    ]
    PATTERNS: ClassVar[list[str]] = [
        "user:*", "user:?", "user:[0-9]*", "[!u]*", "*", "nothing*", "doc:[[]3]", "note[*]",
        "*:1", "Note*", "note*", "gen:0?", "*e*", "?oc:*"]
    FILTERS: ClassVar[list[dict[str, Any]]] = [
        {"kind": "user"}, {"kind": "User"}, {"age": 10}, {"age": 10.0}, {"age": {"$gt": 9}},
        {"age": {"$gte": 9, "$lt": 40}}, {"age": {"$lte": 9}}, {"age": {"$gt": "1"}},
        {"age": {"$in": [9, "10"]}}, {"age": {"$nin": [10, 36]}}, {"age": {"$ne": 10}},
        {"age": {"$exists": True}}, {"age": {"$exists": False}},
        {"tags": {"$contains": "math"}}, {"tags": {"$contains": "mat"}}, {"tags": ["crypto"]},
        {"title": {"$contains": "ntro"}}, {"flag": True}, {"flag": 1}, {"flag": {"$ne": True}},
        {"nested.level": {"$gte": 2}}, {"nested.deep.x": "y"}, {"nested": {"level": 1}},
        {"n": None}, {"n": {"$exists": True}}, {"kind": "doc", "title": "intro"},
        {"$or": [{"kind": "bot"}, {"age": {"$lt": 10}}]},
        {"$and": [{"kind": "user"}, {"age": {"$gt": 30}}]},
        {"$not": {"kind": "user"}}, {"$not": {"age": {"$gt": 9}}},
        {"name": {"$gte": "a", "$lt": "zz"}}, {"i": {"$in": [1, 2, 3.0]}}, {"even": False},
        {"kind": {"$in": []}}, {"i": {"$gt": 3, "$lte": 8}, "even": True}]
    TEXTS: ClassVar[list[str]] = ["ada", "ADA", "user", "42", "ünï", "ÜNÏ", "needle", "9",
                                  "math", "zzz", "3.25", "true", "bytes", "gen:1", "Lovelace"]
    ORDERS: ClassVar[list[str]] = ["key", "-key", "created_at", "-created_at", "updated_at",
                                   "-updated_at", "version", "-version"]

    def _load_query_data(self, backend: MemoryBackend, clock: Any) -> list[Record]:
        for key, value, meta in self.QUERY_DATA:
            self.put(backend, key, value, "q", metadata=meta)
            self.put(backend, key, "decoy", "q-other", metadata=meta)
            if self.fake_clock:
                clock.advance(1)
        for key in ("user:2", "doc:1", "user:2", "gen:05"):  # distinct versions, updated_at
            old = self.get(backend, key, "q")
            assert old is not None
            self.put(backend, key, old.value, "q", metadata=old.metadata)
            if self.fake_clock:
                clock.advance(1)
        records = [self.get(backend, key, "q") for key, _, _ in self.QUERY_DATA]
        assert all(r is not None for r in records)
        return records  # type: ignore[return-value]

    def _check_query(self, backend: MemoryBackend, records: list[Record], query: Query) -> None:
        expected = run(records, query)
        got = backend.apply(SearchOp(query, "q"))
        assert [r.key for r in got] == [r.key for r in expected], query
        for g, e in zip(got, expected, strict=True):
            assert g.namespace == "q" and g.version == e.version, query
            assert same(g.value, e.value) and same(g.metadata, e.metadata), query
        everything = dataclasses.replace(query, limit=EVERYTHING, offset=0)
        assert backend.apply(CountOp(query, "q")) == len(run(records, everything)), query

    def test_declared_query_features_agree_with_the_engine(
            self, backend: MemoryBackend, clock: Any) -> None:
        records = self._load_query_data(backend, clock)
        caps = self.caps(backend)
        queries: list[Query] = [Query(limit=100), Query(limit=5), Query(limit=5, offset=18),
                                Query(limit=0), Query(offset=100)]
        if caps.pattern:
            queries += [Query(pattern=p, limit=100) for p in self.PATTERNS]
        if caps.filter:
            queries += [Query(filter=f, limit=100) for f in self.FILTERS]
        if caps.text == "substring":
            queries += [Query(text=t, limit=100) for t in self.TEXTS]
        if caps.order_by:
            queries += [Query(order_by=o, limit=7, offset=2) for o in self.ORDERS]
            queries += [Query(order_by=o, limit=100) for o in self.ORDERS]
        if caps.pattern and caps.filter and caps.order_by:
            queries.append(Query(pattern="*:*", filter={"age": {"$gte": 9}},
                                 order_by="-updated_at", limit=2, offset=1))
        if caps.text == "substring" and caps.filter and caps.order_by:
            queries.append(Query(text="a", filter={"kind": {"$in": ["user", "doc"]}},
                                 order_by="-version", limit=3))
        for query in queries:
            self._check_query(backend, records, query)

    def test_undeclared_query_features_raise(self, backend: MemoryBackend) -> None:
        self.put(backend, "k", "v", "q", metadata={"a": 1})
        caps = self.caps(backend)
        unsupported: list[Query] = []
        if caps.text is None:
            unsupported.append(Query(text="v"))
        if not caps.pattern:
            unsupported.append(Query(pattern="*"))
        if not caps.filter:
            unsupported.append(Query(filter={"a": 1}))
        if not caps.order_by:
            unsupported.append(Query(order_by="key"))
        if caps.text != "semantic":
            unsupported += [Query(min_score=0.5), Query(order_by="-score")]
        if caps.filter:
            unsupported += [Query(filter={"a": {"$regex": "v"}}), Query(filter={"$where": "1"}),
                            Query(filter={"$or": [{"a": {"$like": "%"}}]})]
        for query in unsupported:
            with pytest.raises(UnsupportedQuery):
                backend.apply(SearchOp(query, "q"))
            with pytest.raises(UnsupportedQuery):
                backend.apply(CountOp(query, "q"))
        if caps.filter:
            for flt in ({"a": {"$in": 1}}, {"$or": {"a": 1}}, {"$and": []},
                        {"a": {"$exists": "yes"}}, {"a": {"$gt": [1]}}, {"a": {"$eq": 1, "b": 2}}):
                with pytest.raises(InvalidValue):
                    backend.apply(SearchOp(Query(filter=flt), "q"))

    # ---- the optional operations --------------------------------------------------------

    def test_many_operations_and_counts(self, backend: MemoryBackend) -> None:
        recs = backend.store_many([StoreOp.make("a", 1, namespace="m"),
                                   StoreOp.make("b", 2, namespace="m", metadata={"x": 1}),
                                   StoreOp.make("a", 3, namespace="m")])
        assert [(r.key, r.version) for r in recs] == [("a", 1), ("b", 1), ("a", 2)]
        got = backend.retrieve_many([RetrieveOp.make(k, namespace="m") for k in ("a", "zz", "b")])
        assert [None if r is None else (r.key, r.value) for r in got] == [
            ("a", 3), None, ("b", 2)]
        assert got[2] is not None and got[2].metadata == {"x": 1}
        assert backend.apply(ExistsOp.make("a", namespace="m")) is True
        assert backend.apply(ExistsOp.make("a", namespace="")) is False
        self.put(backend, "c", 3, "m2")
        assert backend.apply(CountOp.make(namespace="m")) == 2
        if self.caps(backend).pattern:
            assert backend.apply(CountOp.make(Query(pattern="[ab]"), namespace="m")) == 2
        assert backend.delete_many([DeleteOp.make(k, namespace="m") for k in ("a", "zz")]) == 1
        assert self.keys(backend, "m") == ["b"]
        assert backend.apply(ClearOp.make(namespace="m")) == 1
        assert backend.apply(ClearOp.make(namespace="m")) == 0
        assert self.keys(backend, "m2") == ["c"]
        self.put(backend, "d", 4, "")
        removed = self._clear_all(backend)
        if removed is not None:
            assert removed == 2
            assert self.keys(backend, "m2") == [] and self.keys(backend, "") == []
        info = backend.info()
        assert info["backend"] == type(backend).name
        assert info["capabilities"] == self.caps(backend).as_dict()

    def test_apply_batch_gives_each_op_its_own_outcome(self, backend: MemoryBackend) -> None:
        self.put(backend, "a", 0)
        results = backend.apply_batch([
            StoreOp.make("a", 1), StoreOp.make("b", 1),
            StoreOp.make("a", 2, if_version=7), StoreOp.make("c", 1, overwrite=False),
            RetrieveOp.make("a"), RetrieveOp.make("zz"), DeleteOp.make("b"), DeleteOp.make("b"),
            ExistsOp.make("c"), CountOp.make()])
        assert [r.version for r in results[:2]] == [2, 1]
        assert isinstance(results[2], VersionConflict)
        assert results[3].version == 1
        assert results[4].value == 1 and results[5] is None
        assert results[6:] == [True, False, True, 2]
        with pytest.raises(VersionConflict):
            backend.apply_batch([StoreOp.make("a", 9, if_version=1)], return_exceptions=False)

    def test_close_twice_is_harmless(self, backend: MemoryBackend) -> None:
        backend.close()
        backend.close()

    # ---- handoff -------------------------------------------------------------------------

    def test_replicate_keeps_the_higher_version(self, backend: MemoryBackend, clock: Any) -> None:
        if not self.caps(backend).handoff:
            pytest.skip("backend does not declare handoff")
        now = clock()
        rec = Record("r", {"x": [1, b"b"]}, "ns", {"m": "v"}, version=3, created_at=now - 100,
                     updated_at=now - 50, expires_at=now + 1000)
        assert backend.apply(ReplicateOp(rec)) is True
        got = self.get(backend, "r", "ns")
        assert got is not None and got.version == 3
        assert same(got.value, rec.value) and got.metadata == {"m": "v"}
        for name in ("created_at", "updated_at", "expires_at"):
            assert getattr(got, name) == pytest.approx(getattr(rec, name), abs=1e-3), name
        assert backend.apply(ReplicateOp(rec)) is False
        older = dataclasses.replace(rec, value="old", version=2)
        assert backend.apply(ReplicateOp(older)) is False
        got = self.get(backend, "r", "ns")
        assert got is not None and got.version == 3 and same(got.value, rec.value)
        newer = dataclasses.replace(rec, value="new", version=5, expires_at=None)
        assert backend.apply(ReplicateOp(newer)) is True
        got = self.get(backend, "r", "ns")
        assert got is not None and (got.value, got.version, got.expires_at) == ("new", 5, None)
        assert self.put(backend, "r", "local", "ns").version == 6
        self.put(backend, "e", "short", "ns", ttl=self.short_ttl())
        self.put(backend, "e", "short", "ns", ttl=self.short_ttl())
        self.expire(clock, backend, "e", "ns")
        late = Record("e", "back", "ns", version=1, created_at=now, updated_at=now)
        assert backend.apply(ReplicateOp(late)) is True  # an expired copy is no copy
        got = self.get(backend, "e", "ns")
        assert got is not None and (got.value, got.version) == ("back", 1)

    def test_export_covers_every_namespace_exactly_once(
            self, backend: MemoryBackend, sibling: MemoryBackend, clock: Any) -> None:
        if not self.caps(backend).handoff:
            pytest.skip("backend does not declare handoff")
        written = {}
        for ns in ("", "a", "b/c", *HOSTILE[:6]):
            for i in range(4):
                key = f"{ns}-{i}"
                written[ns, key] = self.put(backend, key, [ns, i], ns, metadata={"i": i})
        self.put(sibling, "-0", "theirs", "")
        self.put(backend, "gone", "x", "a", ttl=self.short_ttl())
        self.expire(clock, backend, "gone", "a")
        seen: Counter[tuple[str, str]] = Counter()
        cursor = None
        pages = 0
        while True:
            records, cursor = backend.export(cursor=cursor, limit=5)
            pages += 1
            assert len(records) <= 5
            for r in records:
                seen[r.namespace, r.key] += 1
                w = written[r.namespace, r.key]
                assert same(r.value, w.value)
                assert (r.version, r.metadata) == (w.version, w.metadata)
            if cursor is None:
                break
            assert pages <= len(written) + 1, "export does not end"
        assert set(seen) == set(written)
        assert set(seen.values()) == {1}

    # ---- persistence ------------------------------------------------------------------------

    def test_records_survive_reopen(self, backend: MemoryBackend, clock: Any,
                                    reopen: Callable[[], MemoryBackend]) -> None:
        if not self.persistent:
            pytest.skip("backend is not persistent")
        self.put(backend, "k", {"v": [1, b"x"]}, "n1", metadata={"m": 1})
        self.put(backend, "k", {"v": [2, b"y"]}, "n1", metadata={"m": 2})
        self.put(backend, "k", "other", "n2", ttl=self.short_ttl() * 1000)
        self.put(backend, "short", "x", "n2", ttl=self.short_ttl())
        backend.close()
        again = reopen()
        got = self.get(again, "k", "n1")
        assert got is not None and got.version == 2 and got.metadata == {"m": 2}
        assert same(got.value, {"v": [2, b"y"]})
        other = self.get(again, "k", "n2")
        assert other is not None and other.expires_at is not None
        assert self.put(again, "k", 3, "n1").version == 3
        self.expire(clock, again, "short", "n2")
        assert self.keys(again, "n2") == ["k"]

    # ---- hostile names -------------------------------------------------------------------

    def test_hostile_keys_namespaces_and_metadata_round_trip(self, backend: MemoryBackend) -> None:
        caps = self.caps(backend)
        for i, name in enumerate(HOSTILE):
            self.put(backend, name, {"v": name}, name, metadata={"m": name, name: i})
            self.put(backend, name, name, "h", metadata={"m": name})
        decoys = ["1000", "underXscore", "u_", "back/slash", "*?[]x", "xit's", "NULLS"]
        for d in decoys:
            self.put(backend, d, d, "h")
        assert self.keys(backend, "h") == sorted([*HOSTILE, *decoys])
        for i, name in enumerate(HOSTILE):
            got = self.get(backend, name, name)
            assert got is not None and got.key == name and got.namespace == name
            assert same(got.value, {"v": name}) and got.metadata == {"m": name, name: i}
            assert self.keys(backend, name) == [name]
            if caps.pattern:
                assert self.keys(backend, "h", escape_glob(name)) == [name], name
                hits = self.search(backend, "h", pattern=escape_glob(name))
                assert [r.key for r in hits] == [name], name
            if caps.filter:
                hits = self.search(backend, "h", filter={"m": name})
                assert [r.key for r in hits] == [name], name
        if caps.pattern:
            assert self.keys(backend, "h", "100%") == ["100%"]
            assert self.keys(backend, "h", "under_score") == ["under_score"]
            assert self.keys(backend, "h", "back\\slash") == ["back\\slash"]
            assert self.keys(backend, "h", "[[]!a]") == ["[!a]"]
            assert self.keys(backend, "h", "*[*]*") == sorted(
                k for k in [*HOSTILE, *decoys] if "*" in k)
            assert self.keys(backend, "h", "_") == ["_"]
            assert self.keys(backend, "h", "%") == ["%"]
        for name in HOSTILE:
            assert backend.apply(DeleteOp.make(name, namespace=name)) is True
        assert self.keys(backend, "h") == sorted([*HOSTILE, *decoys])
