"""A Redis connection for the coordination recipes, with its errors mapped to ours.

Core type: `RedisConn` — a redis-py client plus the redacted address that errors name.
`RedisConn.of(url_or_client)` builds one without any I/O (redis-py connects lazily);
`link.guard("what")` turns connection failures and timeouts into `SourceUnavailable`
naming the redacted URL, never the password.

Decision: one wrapper shared by every recipe (lease, ring store, membership, hints)
instead of each recipe catching redis-py's exceptions itself, so "Redis is down" reads
the same wherever it happens. The rejected alternative, a custom connection pool, would
duplicate redis-py's reconnect logic for no gain.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis
import redis.exceptions as rexc

from memcluster.errors import SourceUnavailable
from memcluster.secrets import redact_text, redact_url

CONNECT_TIMEOUT = 2.0
SOCKET_TIMEOUT = 5.0
_UNAVAILABLE = (rexc.ConnectionError, rexc.TimeoutError, rexc.ReadOnlyError)


def _describe(client: redis.Redis) -> str:
    kwargs = client.connection_pool.connection_kwargs
    if "path" in kwargs:
        return f"unix://{kwargs['path']}"
    return f"redis://{kwargs.get('host', '?')}:{kwargs.get('port', '?')}/{kwargs.get('db', 0)}"


def text(value: Any) -> str:
    """A Redis reply (bytes or str, depending on `decode_responses`) as str."""
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisConn:
    """A redis-py client and the redacted address used in error messages."""

    __slots__ = ("client", "where")

    def __init__(self, client: redis.Redis, where: str) -> None:
        self.client = client
        self.where = where

    @classmethod
    def of(cls, target: str | redis.Redis | RedisConn) -> RedisConn:
        """A link from a URL, an existing client, or a link (returned as is). No I/O."""
        if isinstance(target, RedisConn):
            return target
        if isinstance(target, redis.Redis):
            return cls(target, _describe(target))
        if isinstance(target, str):
            client = redis.Redis.from_url(target, socket_connect_timeout=CONNECT_TIMEOUT,
                                          socket_timeout=SOCKET_TIMEOUT)
            return cls(client, redact_url(target))
        raise TypeError("expected a redis URL, a redis.Redis client or a RedisConn")

    @contextmanager
    def guard(self, what: str) -> Iterator[None]:
        """Map redis-py's connection errors inside the block to `SourceUnavailable`."""
        try:
            yield
        except _UNAVAILABLE as exc:
            raise SourceUnavailable(
                f"Redis at {self.where} unavailable during {what}: "
                f"{type(exc).__name__}: {redact_text(str(exc))}") from None

    def script(self, lua: str) -> Any:
        """A registered Lua script (EVALSHA, falling back to EVAL after a Redis restart)."""
        return self.client.register_script(lua)

    def close(self) -> None:
        self.client.close()


__all__ = ["RedisConn", "text"]
