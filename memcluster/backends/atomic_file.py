"""Crash-safe local files for the backends that keep their data on disk (`files`, `vector`).

Core functions: `replace_file(path, write, sync=)` writes a new version of a file so that a
process killed at any instant leaves the old version or the new one, never a torn mix;
`remove_stale_temps(path)` removes what a writer killed mid-write left behind; and
`lock_exclusive(lock_path, what)` takes a non-blocking `flock`, so that a second process
(or a second backend instance) opening the same store fails at once instead of the two
overwriting each other.

Decisions:
- The POSIX recipe: write a temporary file in the same directory, flush and (with `sync`)
  fsync it, `os.replace` it over the target, then fsync the directory so the rename
  itself is durable. Without `sync` the result is still safe against a killed process,
  not against power loss.
- Temporary files are named `.tmp-<target name>-<random>`: a leading `.tmp-` that no
  store file name starts with, so the clean-up of one store can never match another
  store's file (a `<target>.tmp-*` suffix could: the files backend names a prefix's
  file `<base>.p-<prefix>`, and the prefix `p.tmp-1` gives `<base>.p-p.tmp-1`). They are
  created mode 0600 like the stores (they may hold private memories).
Rejected alternative: each backend keeping its own copy of the recipe; the copies had
already drifted (one removed its temporary file on failure, the other did not).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from memcluster.errors import SourceUnavailable

TEMP_PREFIX = ".tmp-"


def fsync_dir(directory: Path) -> None:
    """Make a rename (or create) inside `directory` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_file(path: Path, write: Callable[[BinaryIO], None], *, sync: bool) -> None:
    """Replace `path` with what `write(handle)` writes, atomically (see the module doc).

    On any failure the temporary file is removed and `path` is left as it was.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{TEMP_PREFIX}{path.name}-")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            if sync:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if sync:
        fsync_dir(path.parent)


def remove_stale_temps(path: Path) -> None:
    """Remove the temporary files of writers of `path` killed mid-write.

    Safe only while holding the store's lock (no live writer can be using them).
    """
    for stale in path.parent.glob(f"{TEMP_PREFIX}{path.name}-*"):
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()


def lock_exclusive(lock_path: Path, what: str) -> int:
    """Lock `lock_path` (created if missing) for this process; returns the descriptor.

    Closing the descriptor releases the lock. SourceUnavailable if another process or
    open instance holds it; an OSError if the file cannot be created.
    """
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise SourceUnavailable(
            f"{what} is already open in another process or backend instance "
            f"(lock {str(lock_path)!r} is held); close that one first") from None
    return fd


__all__ = ["fsync_dir", "lock_exclusive", "remove_stale_temps", "replace_file"]
