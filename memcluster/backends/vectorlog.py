"""Persistence for the vector backend: a snapshot plus an append-only log, per prefix.

Core types: `VectorJournal` (open/replay, append, commit, compact, close) and the entries
it replays: `Put(record, vector)`, `Drop(namespace, key)`, `Wipe(namespace or None)`.

Layout under the `path` directory: `p-<percent-encoded prefix>/` (or `h-<sha256>` when too
long for a file name) holding `snapshot.mpk`, `log.mpk` and a `lock` file. Both data files
are streams of msgpack objects: a header (`{"format", "dimension", "embedder"}`) and then
entries; a put carries the encoded value and the float32 vector, so a reopen never calls
the embedder (re-embedding 100k records with a model would take minutes).

Decisions:

- **Append + fsync per batch, not rewrite per write.** A write appends its entries and
  fsyncs once per batch (`store_many` is one fsync); the files backend's rewrite-the-
  whole-file scheme would make each write O(store), hopeless for 100k vectors.
- **Compaction** replaces the snapshot with every live record (`atomic_file.replace_file`:
  temporary file, fsync, rename, directory fsync), and only then truncates the log. A crash
  between the rename and the truncation replays the old log over the new snapshot, which
  is harmless: every entry sets a key's state absolutely, so replay is idempotent.
- **A torn tail** (a crash mid-append) is cut off at the last complete entry on open.
- **Headers are checked**: data written with another embedder or dimension is a
  `ConfigError` at open, not a silent mix of incomparable vectors. (Re-embedding
  automatically was rejected: with a model it can take minutes, hidden in `open`.)
- A `lock` file (`atomic_file.lock_exclusive`) keeps a second instance off the directory.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote

import msgpack
import numpy as np

from memcluster import codec
from memcluster.backends.atomic_file import lock_exclusive, remove_stale_temps, replace_file
from memcluster.errors import ConfigError, SourceUnavailable
from memcluster.logs import event, get_logger
from memcluster.model import Record

FORMAT = "memcluster-vector/1"
SNAPSHOT = "snapshot.mpk"
LOG = "log.mpk"
_MAX_ENCODED_PREFIX = 120
_log = get_logger("backends.vector")


@dataclass(frozen=True, slots=True)
class Put:
    record: Record
    vector: np.ndarray


@dataclass(frozen=True, slots=True)
class Drop:
    namespace: str
    key: str


@dataclass(frozen=True, slots=True)
class Wipe:
    namespace: str | None


Entry = Put | Drop | Wipe


def prefix_dir(path: str | os.PathLike[str], prefix: str) -> Path:
    """The directory holding one prefix's files under `path`."""
    encoded = quote(prefix, safe="-_.")
    if len(encoded) > _MAX_ENCODED_PREFIX:
        digest = hashlib.sha256(prefix.encode("utf-8", "surrogatepass")).hexdigest()
        return Path(path) / f"h-{digest}"
    return Path(path) / f"p-{encoded}"


def _put_entry(record: Record, vector: np.ndarray) -> list[Any]:
    return ["p", record.namespace, record.key, codec.encode(record.value), record.metadata,
            record.version, record.created_at, record.updated_at, record.expires_at,
            np.asarray(vector, dtype=np.float32).tobytes()]


class VectorJournal:
    """Snapshot + append-only log of one prefix's records and vectors."""

    def __init__(self, path: str | os.PathLike[str], prefix: str, *, dimension: int,
                 embedder: str, sync: bool = True) -> None:
        self.directory = prefix_dir(path, prefix)
        self.header = {"format": FORMAT, "dimension": dimension, "embedder": embedder}
        self.sync = sync
        self.log_entries = 0
        self._pending: list[bytes] = []
        self._log: BinaryIO | None = None
        self._lock_fd: int | None = None

    # ---- open and replay ----------------------------------------------------------------------

    def open(self) -> Iterator[Entry]:
        """Lock the directory and yield every entry of the snapshot, then of the log.

        The log is opened for appending only after the replay is complete (a torn tail is
        cut off first). Raises SourceUnavailable if another instance holds the lock and
        ConfigError if the data was written with another embedder or dimension.
        """
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._lock_fd = lock_exclusive(self.directory / "lock",
                                           f"vector store {str(self.directory)!r}")
        except OSError as exc:
            raise ConfigError(f"path: cannot create {str(self.directory)!r}: "
                              f"{exc.strerror or exc}") from exc
        snapshot = self.directory / SNAPSHOT
        remove_stale_temps(snapshot)
        if snapshot.exists():
            yield from self._replay(snapshot, truncate=False)
        log = self.directory / LOG
        if log.exists():
            yield from self._replay(log, truncate=True)
        fresh = not log.exists() or log.stat().st_size == 0
        self._log = open(log, "ab")  # noqa: SIM115 - held open until close()
        if fresh:
            self._pending.append(msgpack.packb(self.header, use_bin_type=True))
            self.commit()

    def _replay(self, file: Path, *, truncate: bool) -> Iterator[Entry]:
        good = 0
        count = 0
        with open(file, "rb") as fh:
            unpacker = msgpack.Unpacker(fh, raw=False, strict_map_key=False)
            try:
                for item in unpacker:
                    entry = self._decode(item, file)
                    good = unpacker.tell()
                    if entry is not None:
                        count += 1
                        yield entry
            except ConfigError:
                raise
            except (msgpack.ExtraData, msgpack.FormatError, msgpack.StackError,
                    ValueError) as exc:
                event(_log, "vector.log.corrupt", level=30, file=str(file),
                      offset=good, error=type(exc).__name__)
            size = file.stat().st_size
        if truncate:
            self.log_entries = count
            if good < size:
                event(_log, "vector.log.truncated", level=30, file=str(file),
                      offset=good, dropped_bytes=size - good)
                os.truncate(file, good)

    def _decode(self, item: Any, file: Path) -> Entry | None:
        if isinstance(item, dict):
            self._check_header(item, file)
            return None
        tag = item[0]
        if tag == "p":
            _, ns, key, blob, meta, version, created, updated, expires, vec = item
            vector = np.frombuffer(vec, dtype=np.float32)
            if vector.shape[0] != self.header["dimension"]:
                raise ConfigError(f"dimension: {str(file)!r} holds {vector.shape[0]}-dimensional "
                                  f"vectors, this source is configured for "
                                  f"{self.header['dimension']}")
            return Put(Record(key, codec.decode(blob), ns, meta, version, created, updated,
                              expires), vector)
        if tag == "d":
            return Drop(item[1], item[2])
        if tag == "c":
            return Wipe(item[1])
        raise ValueError(f"unknown entry tag {tag!r}")

    def _check_header(self, header: dict[str, Any], file: Path) -> None:
        if header.get("format") != FORMAT:
            raise ConfigError(f"path: {str(file)!r} is not a memcluster vector store "
                              f"(format {header.get('format')!r})")
        for field in ("embedder", "dimension"):
            if header.get(field) != self.header[field]:
                raise ConfigError(
                    f"{field}: {str(file)!r} was written with embedder "
                    f"{header.get('embedder')!r} (dimension {header.get('dimension')}); this "
                    f"source uses {self.header['embedder']!r} (dimension "
                    f"{self.header['dimension']}). Use the same embedder or a new path.")

    # ---- writes -------------------------------------------------------------------------------

    def put(self, record: Record, vector: np.ndarray) -> None:
        self._pending.append(msgpack.packb(_put_entry(record, vector), use_bin_type=True))

    def drop(self, namespace: str, key: str) -> None:
        self._pending.append(msgpack.packb(["d", namespace, key], use_bin_type=True))

    def wipe(self, namespace: str | None) -> None:
        self._pending.append(msgpack.packb(["c", namespace], use_bin_type=True))

    def discard(self) -> None:
        """Forget entries appended since the last commit (the batch failed before commit)."""
        self._pending.clear()

    def commit(self) -> None:
        """Write the pending entries and fsync; SourceUnavailable (nothing applied) on failure."""
        if not self._pending:
            return
        if self._log is None:
            self._pending.clear()
            raise SourceUnavailable("vector store is closed")
        data = b"".join(self._pending)
        count = len(self._pending)
        self._pending.clear()
        start = self._log.tell()
        try:
            self._log.write(data)
            self._log.flush()
            if self.sync:
                os.fsync(self._log.fileno())
        except OSError as exc:
            with contextlib.suppress(OSError):
                self._log.truncate(start)
            raise SourceUnavailable(f"vector store {str(self.directory)!r} could not be "
                                    f"written: {exc.strerror or exc}") from exc
        self.log_entries += count

    def compact(self, live: Iterable[tuple[Record, np.ndarray]]) -> None:
        """Replace the snapshot with `live` (every live record) and empty the log."""
        if self._log is None:
            raise SourceUnavailable("vector store is closed")
        packer = msgpack.Packer(use_bin_type=True)

        def write(fh: BinaryIO) -> None:
            fh.write(packer.pack(self.header))
            for record, vector in live:
                fh.write(packer.pack(_put_entry(record, vector)))

        try:
            replace_file(self.directory / SNAPSHOT, write, sync=self.sync)
            self._log.seek(0)
            self._log.truncate(0)
            self._log.write(packer.pack(self.header))
            self._log.flush()
            if self.sync:
                os.fsync(self._log.fileno())
        except OSError as exc:
            raise SourceUnavailable(f"vector store {str(self.directory)!r} could not be "
                                    f"compacted: {exc.strerror or exc}") from exc
        self.log_entries = 0

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


__all__ = ["Drop", "Entry", "Put", "VectorJournal", "Wipe", "prefix_dir"]
