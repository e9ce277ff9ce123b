"""The files backend: the conformance suite in every format, plus its file-level promises
(one file per prefix, atomic replace, the lock, clear errors for a bad or foreign file)."""

from __future__ import annotations

import os

import pytest

from memcluster.backends.files import FilesBackend, store_file
from memcluster.backends.registry import create_backend
from memcluster.errors import ConfigError, SourceUnavailable
from memcluster.ops import RetrieveOp, StoreOp
from memcluster.testing import BackendConformance, FakeClock


class TestFilesMsgpackConformance(BackendConformance):
    backend = "files"

    def backend_opts(self, tmp_path):
        return {"path": str(tmp_path / "memory.msgpack")}


class TestFilesJsonConformance(BackendConformance):
    backend = "files"

    def backend_opts(self, tmp_path):
        return {"path": str(tmp_path / "memory.json"), "format": "json"}


class TestFilesYamlConformance(BackendConformance):
    backend = FilesBackend

    def backend_opts(self, tmp_path):
        return {"path": str(tmp_path / "memory.yaml"), "format": "yaml", "sync": "os"}


def open_files(path, prefix="p", **opts) -> FilesBackend:
    backend = create_backend("files", {"path": str(path), **opts}, prefix=prefix,
                             clock=FakeClock())
    assert isinstance(backend, FilesBackend)
    return backend


def test_each_prefix_has_its_own_file_and_survives_the_other(tmp_path):
    base = tmp_path / "m.db"
    a, b = open_files(base, "shard/0"), open_files(base, "shard/1")
    try:
        a.store(StoreOp.make("k", "from a"))
        b.store(StoreOp.make("k", "from b"))
        a.store(StoreOp.make("k2", "a again"))
    finally:
        a.close()
        b.close()
    assert store_file(base, "shard/0") != store_file(base, "shard/1")
    assert store_file(base, "shard/0").parent == tmp_path  # "/" cannot escape the directory
    a, b = open_files(base, "shard/0"), open_files(base, "shard/1")
    try:
        assert a.retrieve(RetrieveOp.make("k")).value == "from a"
        assert b.retrieve(RetrieveOp.make("k")).value == "from b"
        assert b.retrieve(RetrieveOp.make("k2")) is None
    finally:
        a.close()
        b.close()


def test_long_prefixes_get_a_short_distinct_file_name(tmp_path):
    one, two = store_file(tmp_path / "m", "x" * 300), store_file(tmp_path / "m", "x" * 301)
    assert one != two and len(one.name) < 255 and len(two.name) < 255


def test_a_second_open_of_the_same_store_fails_clearly_until_the_first_closes(tmp_path):
    first = open_files(tmp_path / "m.db")
    with pytest.raises(SourceUnavailable, match="already open"):
        open_files(tmp_path / "m.db")
    first.close()
    open_files(tmp_path / "m.db").close()


def test_writes_leave_no_temp_files_and_stale_ones_are_removed(tmp_path):
    stale = tmp_path / f".tmp-{store_file(tmp_path / 'm.db', 'p').name}-dead"
    stale.write_bytes(b"half a write")
    backend = open_files(tmp_path / "m.db")
    try:
        for i in range(5):
            backend.store(StoreOp.make(f"k{i}", i))
    finally:
        backend.close()
    assert sorted(os.listdir(tmp_path)) == ["m.db.p-p", "m.db.p-p.lock"]


def test_cleaning_one_prefix_never_removes_another_prefixs_store(tmp_path):
    """The prefix `p.tmp-1` is stored in `m.db.p-p.tmp-1`: opening prefix `p` (which
    removes the temporary files a killed writer of `m.db.p-p` left) must not take it."""
    other = open_files(tmp_path / "m.db", "p.tmp-1")
    other.store(StoreOp.make("k", "kept"))
    other.close()
    open_files(tmp_path / "m.db", "p").close()
    again = open_files(tmp_path / "m.db", "p.tmp-1")
    try:
        assert again.retrieve(RetrieveOp.make("k")).value == "kept"
    finally:
        again.close()


@pytest.mark.parametrize("content", [b"", b"\x93garbage", b"{not json"])
def test_a_corrupt_or_foreign_file_is_refused_not_emptied(tmp_path, content):
    target = store_file(tmp_path / "m.db", "p")
    target.write_bytes(content)
    with pytest.raises(SourceUnavailable, match="not a valid"):
        open_files(tmp_path / "m.db", format="json")
    assert target.read_bytes() == content


def test_opening_with_the_wrong_format_fails_clearly(tmp_path):
    backend = open_files(tmp_path / "m.db")
    backend.store(StoreOp.make("k", b"\x00bytes"))
    backend.close()
    with pytest.raises(SourceUnavailable, match="check the format option"):
        open_files(tmp_path / "m.db", format="json")


def test_a_failed_write_changes_nothing(tmp_path, monkeypatch):
    backend = open_files(tmp_path / "m.db")
    try:
        backend.store(StoreOp.make("k", 1))

        def disk_full(*args, **kwargs):
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(os, "replace", disk_full)
        with pytest.raises(SourceUnavailable, match="could not be written"):
            backend.store(StoreOp.make("k", 2))
        with pytest.raises(SourceUnavailable):
            backend.store(StoreOp.make("new", 2))
        monkeypatch.undo()
        assert backend.retrieve(RetrieveOp.make("k")).value == 1
        assert backend.retrieve(RetrieveOp.make("new")) is None
        assert sorted(os.listdir(tmp_path)) == ["m.db.p-p", "m.db.p-p.lock"]
    finally:
        backend.close()
    again = open_files(tmp_path / "m.db")
    try:
        assert again.retrieve(RetrieveOp.make("k")).value == 1
    finally:
        again.close()


@pytest.mark.parametrize("opts, field", [
    ({}, "files.path"),
    ({"path": "x", "format": "xml"}, "files.format"),
    ({"path": "x", "sync": "sometimes"}, "files.sync"),
    ({"path": "x", "fromat": "json"}, "fromat"),
    ({"path": "/no/such/dir/x"}, "files.path"),
])
def test_bad_options_raise_config_error_naming_the_option(opts, field):
    with pytest.raises(ConfigError, match=field):
        create_backend("files", opts)


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_values_that_look_like_tags_round_trip_in_text_formats(tmp_path, fmt):
    tricky = {"$bytes": "AAE=", "nested": [{"$float": "nan"}, {"$dict": {}}, b"\x00"],
              "inf": float("-inf"), "big": (1 << 64) - 1}
    backend = open_files(tmp_path / "m", format=fmt)
    backend.store(StoreOp.make("k", [{"$bytes": "x"}, tricky], metadata={"m": {"$dict": 1}}))
    backend.close()
    again = open_files(tmp_path / "m", format=fmt)
    try:
        got = again.retrieve(RetrieveOp.make("k"))
        assert got.value == [{"$bytes": "x"}, tricky] and got.metadata == {"m": {"$dict": 1}}
    finally:
        again.close()
