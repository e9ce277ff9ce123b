"""The `files` backend: the whole store in memory, written through to one file per prefix.

Core type: `FilesBackend`. Options: `path` (the base file, required), `format`
(msgpack | json | yaml, default msgpack) and `sync` (always | os, default always).

Decisions:

- **One file per prefix.** Shards that share a `path` get separate files, so two backends
  with different prefixes can never clobber each other's records and each can be locked on
  its own. The empty prefix uses `path` itself; any other prefix gets
  `<path>.p-<percent-encoded prefix>` (or `<path>.h-<sha256>` when that would be too long
  for a file name). The rejected alternative, one shared file holding every prefix, would
  need a cross-process read-modify-write of the whole file on every store.
- **Atomic replace on every acknowledged write** (`atomic_file.replace_file`). The document
  is written to a temporary file in the same directory, flushed and fsynced, renamed over
  the store with `os.replace`, and the directory is fsynced. A process killed at any
  instant leaves either the old or the new file, never a torn one; with `sync: always`
  the write is also on disk when `store()` returns. `sync: os` skips the fsyncs (still
  safe against a killed process, not against power loss). `store_many` writes once for
  the whole batch. Rewriting the whole file makes a write O(store size): this backend is
  for small, human-inspectable stores.
- **A lock file** (`<file>.lock`, `fcntl.flock`, non-blocking) keeps a second process (or a
  second instance) from opening the same store: it gets `SourceUnavailable` at once.
- **Formats.** msgpack carries every native value as is. json and yaml carry the
  `codec.to_json_safe` form (bytes and non-finite floats as one-key tags), so every native
  value round-trips and the file stays readable.
- **TTL** is lazy: an expired record is invisible at once and dropped on the next write.
- Reads return copies (a caller mutating a returned value cannot change the store), every
  public operation runs under one thread lock (a CAS check and its commit never
  interleave), and the store file is created mode 0600 (it may hold private memories).
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import json
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import msgpack
import yaml

from memcluster import codec, query
from memcluster.backends.atomic_file import lock_exclusive, remove_stale_temps, replace_file
from memcluster.backends.base import Capabilities, MemoryBackend, chain_stores, check_options
from memcluster.errors import ConfigError, InvalidValue, MemclusterError, SourceUnavailable
from memcluster.model import Page, Query, Record
from memcluster.ops import (
    CountOp,
    DeleteOp,
    ListKeysOp,
    ReplicateOp,
    RetrieveOp,
    SearchOp,
    StoreOp,
)

FORMATS = ("msgpack", "json", "yaml")
SYNC_MODES = ("always", "os")
MAGIC = "memcluster-files/1"
T = TypeVar("T")
_MAX_ENCODED_PREFIX = 120
_FIELDS = ("namespace", "key", "value", "metadata", "version", "created_at", "updated_at",
           "expires_at")


def store_file(path: str | os.PathLike[str], prefix: str) -> Path:
    """The file that holds `prefix`'s records under the base `path` (see the module doc)."""
    base = Path(path)
    if not prefix:
        return base
    encoded = quote(prefix, safe="")
    if len(encoded) <= _MAX_ENCODED_PREFIX:
        return base.with_name(f"{base.name}.p-{encoded}")
    digest = hashlib.sha256(prefix.encode("utf-8", "surrogatepass")).hexdigest()
    return base.with_name(f"{base.name}.h-{digest}")


def _dump(doc: dict[str, Any], fmt: str) -> bytes:
    if fmt == "msgpack":
        return msgpack.packb(doc, use_bin_type=True)
    safe = codec.to_json_safe(doc)
    if fmt == "json":
        return json.dumps(safe, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    return yaml.dump(safe, Dumper=dumper, allow_unicode=True, sort_keys=False).encode("utf-8")


def _load(data: bytes, fmt: str) -> Any:
    if fmt == "msgpack":
        return msgpack.unpackb(data, raw=False, strict_map_key=False)
    if fmt == "json":
        return codec.from_json_safe(json.loads(data.decode("utf-8")))
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return codec.from_json_safe(yaml.load(data.decode("utf-8"), Loader=loader))


def _detached(record: Record) -> Record:
    """A copy sharing no mutable object with the store, so callers cannot change it behind
    our back (and the store cannot change what a caller holds)."""
    value, metadata = codec.decode(codec.encode([record.value, record.metadata]))
    return replace(record, value=value, metadata=metadata)


def _serialised(method: Callable[..., T]) -> Callable[..., T]:
    """Run `method` under the instance lock: a check-then-commit (CAS) and a snapshot
    write must not interleave with another thread's, even if the behaviour promises
    one caller at a time."""
    @functools.wraps(method)
    def locked(self: FilesBackend, *args: Any, **kwargs: Any) -> T:
        with self._lock:
            return method(self, *args, **kwargs)
    return locked


class FilesBackend(MemoryBackend):
    """Records held in a dict, every write persisted by atomic replace of the prefix's file."""

    name = "files"
    capabilities = Capabilities(text="substring", ttl="lazy", durable=False)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._data: dict[str, dict[str, Record]] = {}
        self._file: Path | None = None
        self._format = "msgpack"
        self._fsync = True
        self._lock_fd: int | None = None
        self._lock = threading.RLock()

    # ---- lifecycle ------------------------------------------------------------------------

    @classmethod
    def node_local(cls, opts: Mapping[str, Any]) -> bool:
        return True

    def open(self, opts: Mapping[str, Any]) -> None:
        check_options("files", opts, ("path", "format", "sync"))
        path = opts.get("path")
        if not isinstance(path, (str, os.PathLike)) or not str(path):
            raise ConfigError("files.path: required, the store's base file path")
        fmt = opts.get("format", "msgpack")
        if fmt not in FORMATS:
            raise ConfigError(f"files.format: must be one of {', '.join(FORMATS)}, got {fmt!r}")
        sync = opts.get("sync", "always")
        if sync not in SYNC_MODES:
            raise ConfigError(f"files.sync: must be one of {', '.join(SYNC_MODES)}, got {sync!r}")
        self._format, self._fsync = fmt, sync == "always"
        file = store_file(path, self.prefix)
        if not file.parent.is_dir():
            raise ConfigError(f"files.path: directory {str(file.parent)!r} does not exist")
        self._lock_fd = lock_exclusive(file.with_name(file.name + ".lock"),
                                       f"files store {str(file)!r}")
        try:
            self._file = file
            remove_stale_temps(file)
            self._data = self._read()
        except BaseException:
            self.close()
            raise

    @_serialised
    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None
        self._data = {}

    # ---- the file ----------------------------------------------------------------------------

    def _read(self) -> dict[str, dict[str, Record]]:
        assert self._file is not None
        try:
            data = self._file.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise SourceUnavailable(f"files store {str(self._file)!r} cannot be read: "
                                    f"{exc.strerror}") from exc
        try:
            doc = _load(data, self._format)
            if not isinstance(doc, dict) or doc.get("memcluster") != MAGIC:
                raise ValueError("not a memcluster files store")
            if doc.get("prefix") != self.prefix:
                raise ValueError(f"it holds prefix {doc.get('prefix')!r}")
            out: dict[str, dict[str, Record]] = {}
            for row in doc["records"]:
                record = Record(**dict(zip(_FIELDS, row, strict=True)))
                out.setdefault(record.namespace, {})[record.key] = record
            return out
        except Exception as exc:  # any decoding failure means the same thing
            raise SourceUnavailable(
                f"files store {str(self._file)!r} is not a valid {self._format} store "
                f"({type(exc).__name__}: {exc}); check the format option") from exc

    def _write(self) -> None:
        """Persist the whole store by atomic replace (see the module docstring)."""
        assert self._file is not None
        doc = {"memcluster": MAGIC, "prefix": self.prefix, "records": [
            [r.namespace, r.key, r.value, r.metadata, r.version, r.created_at, r.updated_at,
             r.expires_at]
            for records in self._data.values() for r in records.values()]}
        blob = _dump(doc, self._format)
        replace_file(self._file, lambda handle: handle.write(blob), sync=self._fsync)

    def _commit(self, changes: dict[tuple[str, str], Record | None]) -> None:
        """Apply `changes` ((namespace, key) -> record or None to delete) and persist them.

        Expired records are purged first. If the write fails for any reason (not only an
        OSError: a document the format cannot encode, an interrupt), the in-memory state is
        put back before the error leaves, so memory never claims what the file does not
        hold and one bad write cannot wedge the store for every later one.
        """
        self._check_open()
        self._purge()
        undo: dict[tuple[str, str], Record | None] = {}
        for (ns, key), record in changes.items():
            records = self._data.setdefault(ns, {})
            undo.setdefault((ns, key), records.get(key))
            if record is None:
                records.pop(key, None)
            else:
                records[key] = record
        try:
            self._write()
        except BaseException as exc:
            for (ns, key), record in undo.items():
                if record is None:
                    self._data.get(ns, {}).pop(key, None)
                else:
                    self._data.setdefault(ns, {})[key] = record
            if isinstance(exc, OSError):
                raise SourceUnavailable(f"files store {str(self._file)!r} could not be "
                                        f"written: {exc.strerror or exc}") from exc
            if isinstance(exc, Exception) and not isinstance(exc, MemclusterError):
                raise InvalidValue(f"files store {str(self._file)!r} cannot encode this write "
                                   f"as {self._format} ({type(exc).__name__}); nothing was "
                                   "changed") from exc
            raise
        finally:
            for ns in {ns for ns, _ in changes}:
                if not self._data.get(ns):
                    self._data.pop(ns, None)

    def _purge(self) -> None:
        now = self.clock()
        for ns in list(self._data):
            records = self._data[ns]
            for key in [k for k, r in records.items() if r.expired(now)]:
                del records[key]
            if not records:
                del self._data[ns]

    # ---- reads -------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._lock_fd is None:
            raise SourceUnavailable("files backend is closed")

    def _live(self, namespace: str, key: str, now: float) -> Record | None:
        self._check_open()
        record = self._data.get(namespace, {}).get(key)
        return None if record is None or record.expired(now) else record

    def _live_records(self, namespace: str) -> list[Record]:
        self._check_open()
        now = self.clock()
        return [r for r in self._data.get(namespace, {}).values() if not r.expired(now)]

    @_serialised
    def retrieve(self, op: RetrieveOp) -> Record | None:
        record = self._live(op.namespace, op.key, self.clock())
        return None if record is None else _detached(record)

    @_serialised
    def search(self, op: SearchOp) -> list[Record]:
        return [_detached(r) for r in query.run(self._live_records(op.namespace), op.query)]

    @_serialised
    def count(self, op: CountOp) -> int:
        unlimited = Query(text=op.query.text, pattern=op.query.pattern, filter=op.query.filter)
        query.check_filter(unlimited.filter)
        return sum(1 for r in self._live_records(op.namespace) if query.matches(r, unlimited))

    @_serialised
    def list_keys(self, op: ListKeysOp) -> Page:
        keys = sorted(r.key for r in self._live_records(op.namespace)
                      if query.match_pattern(r.key, op.pattern))
        start = 0 if op.cursor is None else bisect.bisect_right(keys, op.cursor)
        page = keys[start:start + op.limit]
        more = start + op.limit < len(keys)
        return Page(page, page[-1] if more and page else None)

    @_serialised
    def export(self, *, cursor: str | None = None, limit: int = 1000
               ) -> tuple[list[Record], str | None]:
        self._check_open()
        now = self.clock()
        records = sorted((r for recs in self._data.values() for r in recs.values()
                          if not r.expired(now)), key=lambda r: (r.namespace, r.key))
        start = 0
        if cursor is not None:
            after = tuple(json.loads(cursor))
            start = bisect.bisect_right([(r.namespace, r.key) for r in records], after)
        page = [_detached(r) for r in records[start:start + limit]]
        more = start + limit < len(records)
        return page, json.dumps([page[-1].namespace, page[-1].key]) if more and page else None

    # ---- writes ------------------------------------------------------------------------------

    def store(self, op: StoreOp) -> Record:
        return self.store_many([op])[0]

    @_serialised
    def store_many(self, ops: Sequence[StoreOp]) -> list[Record]:
        """All or nothing: a CAS conflict anywhere leaves the store unchanged; one write."""
        now = self.clock()
        records = chain_stores(ops, lambda ns, key: self._live(ns, key, now), now)
        if records:
            self._commit({(r.namespace, r.key): _detached(r) for r in records})
        return [_detached(r) for r in records]

    def delete(self, op: DeleteOp) -> bool:
        return self.delete_many([op]) == 1

    @_serialised
    def delete_many(self, ops: Sequence[DeleteOp]) -> int:
        now = self.clock()
        gone = {(op.namespace, op.key) for op in ops if self._live(op.namespace, op.key, now)}
        if gone:
            self._commit(dict.fromkeys(gone))
        return len(gone)

    @_serialised
    def replicate(self, op: ReplicateOp) -> bool:
        incoming = op.record
        current = self._live(incoming.namespace, incoming.key, self.clock())
        if current is not None and current.version >= incoming.version:
            return False
        self._commit({(incoming.namespace, incoming.key): _detached(incoming.with_score(None))})
        return True

    @_serialised
    def info(self) -> dict[str, Any]:
        now = self.clock()
        live = sum(1 for recs in self._data.values() for r in recs.values() if not r.expired(now))
        return {**super().info(), "format": self._format, "records": live,
                "fsync": self._fsync}
