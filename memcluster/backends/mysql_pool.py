"""A small connection pool for PyMySQL, which has none: bounded, LIFO, checked without a round trip.

Core type: `ConnectionPool(connect, max_size, timeout)`; `with pool.connection() as conn:`
lends one connection. Usage:

    pool = ConnectionPool(lambda: pymysql.connect(...), max_size=4, timeout=5.0)
    with pool.connection() as conn:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
    pool.close()

Decisions:

- **Checked at checkout by the socket, not by a ping.** An idle connection has nothing to
  read; if its socket is readable the server has said something (the error packet and EOF
  of `KILL CONNECTION`, `wait_timeout` or a restart), so the connection is closed and a new
  one made before the caller sees it. The same policy as the postgres backend's
  `_check_idle`; `ping()` on every checkout would double the round trips of every op.
- **A connection that failed is dropped**, never returned: after a connection error or an
  interruption its state (an open transaction, a half-read result) is unknown. Errors that
  follow a complete answer (a duplicate key, a version conflict) return it, unless a
  transaction was left open.
- **LIFO**: the most recently used connection is lent first, so idle ones age out at the
  server instead of every connection being kept barely alive.
- Rejected: DBUtils' `PooledDB` (well kept, but it checks liveness with a ping round trip
  or not at all, and reconnects inside the driver call where a write's outcome is
  ambiguous) and the small `pymysql-pool` packages (thinly maintained). This is 100 lines.
"""

from __future__ import annotations

import contextlib
import select
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pymysql
from pymysql.constants import SERVER_STATUS

from memcluster.errors import SourceUnavailable

_DRIVER_FAILURES = (pymysql.err.OperationalError, pymysql.err.InterfaceError, OSError)


class ConnectionPool:
    """At most `max_size` connections made by `connect`; a caller waits `timeout` s for one."""

    def __init__(self, connect: Callable[[], Any], *, max_size: int, timeout: float) -> None:
        self._connect = connect
        self._timeout = timeout
        self._slots = threading.BoundedSemaphore(max_size)
        self._idle: list[Any] = []
        self._lock = threading.Lock()
        self._closed = False

    @contextlib.contextmanager
    def connection(self) -> Iterator[Any]:
        """Lend a live connection; it goes back afterwards unless the driver failed on it."""
        if self._closed:
            raise SourceUnavailable("mysql connection pool is closed")
        if not self._slots.acquire(timeout=self._timeout):
            raise SourceUnavailable(f"no mysql connection free within {self._timeout}s")
        conn = None
        try:
            conn = self._checkout()
            yield conn
        except Exception as exc:
            if conn is not None and isinstance(exc, _DRIVER_FAILURES):
                self._discard(conn)
                conn = None
            raise  # other errors came after a complete answer: the connection is fine
        except BaseException:  # interrupted mid-call (KeyboardInterrupt): state unknown
            if conn is not None:
                self._discard(conn)
                conn = None
            raise
        finally:
            if conn is not None:
                self._checkin(conn)
            self._slots.release()

    def _checkout(self) -> Any:
        while True:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                return self._connect()
            if healthy(conn):
                return conn
            self._discard(conn)

    def _checkin(self, conn: Any) -> None:
        if conn.server_status & SERVER_STATUS.SERVER_STATUS_IN_TRANS:  # left open: unusable
            self._discard(conn)
            return
        with self._lock:
            if not self._closed:
                self._idle.append(conn)
                return
        self._discard(conn)

    @staticmethod
    def _discard(conn: Any) -> None:
        with contextlib.suppress(Exception):
            conn.close()

    def idle_connections(self) -> list[Any]:
        """The idle connections, most recently used last (for tests and stats)."""
        with self._lock:
            return list(self._idle)

    def close(self) -> None:
        """Close idle connections; lent ones close when they come back."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            self._discard(conn)


def healthy(conn: pymysql.connections.Connection) -> bool:
    """True if `conn` is open and the server has sent nothing since its last answer."""
    sock = getattr(conn, "_sock", None)  # PyMySQL keeps its socket here while open
    if not conn.open or sock is None:
        return False
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return False
    return not readable


__all__ = ["ConnectionPool", "healthy"]
