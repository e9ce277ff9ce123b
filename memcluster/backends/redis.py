"""The `redis` backend: records as Redis hashes, expiry by Redis itself, CAS in Lua.

Core type: `RedisBackend`. Layout, all under the user's `prefix` option (default
`memcluster`) and then the backend's own scope prefix, length-prefixed so that no scope,
namespace or key (all may contain ':') can ever produce another one's Redis key:

    base   = <prefix>:<len(scope)>:<scope>
    record = <base>:r:<len(ns)>:<ns>:<key>   hash: v (msgpack value), m (msgpack metadata),
                                             ver, c (created), u (updated), e (expires)
    index  = <base>:i:<len(ns)>:<ns>         zset of keys, score 0, so ZRANGEBYLEX walks
                                             them in byte (= code-point) order
    spaces = <base>:n                        zset of namespaces (for export and clear-all)

Lengths count UTF-8 bytes. Writes, deletes and replication run as Lua scripts (EVALSHA,
reloaded on NOSCRIPT by redis-py), so reading the version, checking it, writing, setting
PEXPIRE and updating the index happen atomically on the server: two processes racing a
CAS on one key cannot both win. Batches are pipelines (one round trip).

Expiry is native (PEXPIRE), so no sweeper runs. Redis drops an expired hash but not its
member in the key index; those stale members are skipped on read and pruned lazily by
`list_keys`/`search`/`count` (and by `clear`). The `e` field is also checked against the
clock so a record is invisible from its expiry time even if Redis expires it a few ms late.

Decision: a per-namespace sorted-set index, rejected alternative SCAN MATCH over record
keys: SCAN returns keys in hash order and may repeat them, so it cannot give `list_keys`
its ascending order and exact resume-after-the-last-key cursor without reading every key
on every page; the index costs one ZADD per write instead. `KEYS` is never used.

Connection failures (refused, reset, timeout) surface as `SourceUnavailable` carrying the
URL with its password masked; the pool reconnects by itself once Redis is back.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import redis
import redis.exceptions

from memcluster import codec
from memcluster import query as engine
from memcluster.backends.base import Capabilities, MemoryBackend, check_options
from memcluster.errors import ConfigError, InvalidValue, SourceUnavailable, VersionConflict
from memcluster.model import Page, Query, Record
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
)
from memcluster.secrets import redact_text, redact_url

T = TypeVar("T")
_FIELDS = ("v", "m", "ver", "c", "u", "e")
_CHUNK = 500
_GLOB = "*?["

# Every script checks its arguments before its first write: Redis does not roll a script
# back when a later command fails, so a PEXPIRE refused after DEL and HSET would leave half
# a record (retrievable, but missing from the key index). The check's error starts with
# this marker and becomes InvalidValue.
_ARG_ERROR = "memcluster-invalid-argument"
_CHECK_TTL = """
if ARGV[{i}] ~= '' then
  local ms = tonumber(ARGV[{i}])
  if not ms or ms < 1 or ms > {max_ms} or ms ~= math.floor(ms) then
    return redis.error_reply('{marker}: ttl_ms ' .. ARGV[{i}])
  end
end
"""
_MAX_TTL_MS = int(codec.MAX_TTL * 1000) + 1000


def _check_ttl_lua(index: int) -> str:
    return _CHECK_TTL.format(i=index, max_ms=_MAX_TTL_MS, marker=_ARG_ERROR)


# KEYS: record, index, spaces. ARGV: expected (-1 = none), value, meta, now, expires
# ("" = never), ttl_ms ("" = never), key, namespace.
# Returns {version, created} or {-1, actual} on a CAS conflict.
_STORE = _check_ttl_lua(6) + """
local cur = redis.call('HMGET', KEYS[1], 'ver', 'c', 'e')
local now = tonumber(ARGV[4])
local version = 0
local created = ARGV[4]
if cur[1] and not (cur[3] and cur[3] ~= '' and tonumber(cur[3]) <= now) then
  version = tonumber(cur[1])
  created = cur[2]
end
local expected = tonumber(ARGV[1])
if expected >= 0 and expected ~= version then
  return {-1, tostring(version)}
end
version = version + 1
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'v', ARGV[2], 'm', ARGV[3], 'ver', version, 'c', created,
           'u', ARGV[4], 'e', ARGV[5])
if ARGV[6] ~= '' then redis.call('PEXPIRE', KEYS[1], ARGV[6]) end
redis.call('ZADD', KEYS[2], 0, ARGV[7])
redis.call('ZADD', KEYS[3], 0, ARGV[8])
return {version, created}
"""

# Same KEYS; ARGV: now, value, meta, version, created, updated, expires, ttl_ms, key, ns.
# Installs the record unless a live copy has version >= it. Returns 1 if installed.
_REPLICATE = _check_ttl_lua(8) + """
local cur = redis.call('HMGET', KEYS[1], 'ver', 'e')
local now = tonumber(ARGV[1])
if cur[1] and not (cur[2] and cur[2] ~= '' and tonumber(cur[2]) <= now)
   and tonumber(cur[1]) >= tonumber(ARGV[4]) then
  return 0
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'v', ARGV[2], 'm', ARGV[3], 'ver', ARGV[4], 'c', ARGV[5],
           'u', ARGV[6], 'e', ARGV[7])
if ARGV[8] ~= '' then redis.call('PEXPIRE', KEYS[1], ARGV[8]) end
redis.call('ZADD', KEYS[2], 0, ARGV[9])
redis.call('ZADD', KEYS[3], 0, ARGV[10])
return 1
"""

# KEYS: record, index, spaces. ARGV: now, key, namespace. Returns 1 if a live record existed.
_DELETE = """
local e = redis.call('HGET', KEYS[1], 'e')
local live = redis.call('EXISTS', KEYS[1]) == 1
if live and e and e ~= '' and tonumber(e) <= tonumber(ARGV[1]) then live = false end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[2])
if redis.call('ZCARD', KEYS[2]) == 0 then redis.call('ZREM', KEYS[3], ARGV[3]) end
if live then return 1 end
return 0
"""

# KEYS: index. ARGV: keys whose records are gone (checked again here: a racing store may
# have re-created one since we looked).
_PRUNE = """
local base = KEYS[2]
local removed = 0
for i, k in ipairs(ARGV) do
  if redis.call('EXISTS', base .. k) == 0 then
    removed = removed + redis.call('ZREM', KEYS[1], k)
  end
end
return removed
"""


def _b(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def _s(data: bytes) -> str:
    return data.decode("utf-8", "surrogatepass")


def _lp(text: str) -> bytes:
    """Length-prefixed segment: `<utf8 length>:<text>`."""
    data = _b(text)
    return b"%d:%s" % (len(data), data)


def _num(value: float | None) -> bytes:
    return b"" if value is None else repr(float(value)).encode()


def _ttl_ms(expires_at: float | None, now: float) -> bytes:
    if expires_at is None:
        return b""
    return b"%d" % max(1, math.ceil((expires_at - now) * 1000))


def _unavailable(method: Callable[..., T]) -> Callable[..., T]:
    """Turn redis errors into ours (password masked): connection and timeout errors are
    SourceUnavailable, a script's argument check InvalidValue, any other error reply
    (OOM, READONLY, ...) SourceUnavailable: the server refused the command."""

    @functools.wraps(method)
    def wrapper(self: RedisBackend, *args: Any, **kwargs: Any) -> T:
        try:
            return method(self, *args, **kwargs)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            raise SourceUnavailable(
                f"redis at {self.safe_url} is unavailable: "
                f"{type(exc).__name__}: {redact_text(str(exc), self._password)}") from None
        except redis.exceptions.ResponseError as exc:
            message = redact_text(str(exc), self._password)
            if _ARG_ERROR in message:
                raise InvalidValue(f"redis refused an argument before writing anything: "
                                   f"{message}") from None
            raise SourceUnavailable(f"redis at {self.safe_url} refused the command: "
                                    f"{message}") from None

    return wrapper


class RedisBackend(MemoryBackend):
    """Records in Redis: native TTL, server-side CAS, pipelined batches, ordered key index."""

    name = "redis"
    capabilities = Capabilities(ttl="native", durable=True, native_batch=True)
    OPTIONS: Mapping[str, Any] = {
        "url": "redis://127.0.0.1:6379/0", "prefix": "memcluster", "max_connections": 16,
        "socket_timeout": 5.0, "connect_timeout": 2.0, "health_check_interval": 10,
    }

    def __init__(self, *, prefix: str = "", clock: Callable[[], float] | None = None) -> None:
        if clock is None:
            super().__init__(prefix=prefix)
        else:
            super().__init__(prefix=prefix, clock=clock)
        self.client: redis.Redis | None = None
        self.safe_url = ""
        self._password: str | None = None
        self._base = b""

    # ---- lifecycle ----------------------------------------------------------------------

    def open(self, opts: Mapping[str, Any]) -> None:
        check_options("redis", opts, self.OPTIONS)
        cfg = {**self.OPTIONS, **opts}
        url = cfg["url"]
        if not isinstance(url, str) or not url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError("redis: url must be a redis://, rediss:// or unix:// URL")
        if not isinstance(cfg["prefix"], str) or not cfg["prefix"]:
            raise ConfigError("redis: prefix must be a non-empty str")
        for name in ("max_connections", "health_check_interval"):
            if isinstance(cfg[name], bool) or not isinstance(cfg[name], int) or cfg[name] < 0:
                raise ConfigError(f"redis: {name} must be an int >= 0")
        for name in ("socket_timeout", "connect_timeout"):
            if isinstance(cfg[name], bool) or not isinstance(cfg[name], (int, float)) \
                    or cfg[name] <= 0:
                raise ConfigError(f"redis: {name} must be a number of seconds > 0")
        self.safe_url = redact_url(url)
        try:
            client = redis.Redis.from_url(
                url, max_connections=cfg["max_connections"] or None,
                socket_timeout=cfg["socket_timeout"],
                socket_connect_timeout=cfg["connect_timeout"],
                health_check_interval=cfg["health_check_interval"])
        except ValueError as exc:
            raise ConfigError(f"redis: bad url {self.safe_url}: "
                              f"{redact_text(str(exc)).replace(url, self.safe_url)}") from None
        self._password = client.connection_pool.connection_kwargs.get("password")
        self.client = client
        self._base = _b(cfg["prefix"]) + b":" + _lp(self.prefix)
        self._store_lua = client.register_script(_STORE)
        self._replicate_lua = client.register_script(_REPLICATE)
        self._delete_lua = client.register_script(_DELETE)
        self._prune_lua = client.register_script(_PRUNE)
        self._ping()

    @_unavailable
    def _ping(self) -> None:
        assert self.client is not None
        self.client.ping()

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client.connection_pool.disconnect()
            self.client = None

    def info(self) -> dict[str, Any]:
        return {**super().info(), "url": self.safe_url, "prefix": self._base.decode(
            "utf-8", "replace")}

    # ---- keys ---------------------------------------------------------------------------

    def _record_key(self, namespace: str, key: str) -> bytes:
        return self._record_base(namespace) + _b(key)

    def _record_base(self, namespace: str) -> bytes:
        return self._base + b":r:" + _lp(namespace) + b":"

    def _index_key(self, namespace: str) -> bytes:
        return self._base + b":i:" + _lp(namespace)

    @property
    def _spaces_key(self) -> bytes:
        return self._base + b":n"

    def _keys(self, namespace: str, key: str) -> list[bytes]:
        return [self._record_key(namespace, key), self._index_key(namespace), self._spaces_key]

    def _record(self, key: str, namespace: str, fields: Sequence[bytes | None],
                now: float) -> Record | None:
        """A Record from HMGET fields (v, m, ver, c, u, e), or None if absent or expired."""
        value, meta, ver, created, updated, expires = fields
        if ver is None:
            return None
        expires_at = float(expires) if expires else None
        if expires_at is not None and expires_at <= now:
            return None
        return Record(key, codec.decode(value or b"\xc0"), namespace,
                      codec.decode(meta) if meta else {}, int(ver), float(created or 0),
                      float(updated or 0), expires_at)

    # ---- single-key operations ----------------------------------------------------------

    def _store_args(self, op: StoreOp, now: float) -> list[bytes]:
        expected = op.expected_version
        expires_at = None if op.ttl is None else now + op.ttl
        return [b"%d" % (-1 if expected is None else expected), op.blob,
                codec.encode(op.metadata), _num(now), _num(expires_at),
                b"" if op.ttl is None else b"%d" % max(1, math.ceil(op.ttl * 1000)),
                _b(op.key), _b(op.namespace)]

    def _stored(self, op: StoreOp, now: float, reply: list[Any]) -> Record:
        version, created = int(reply[0]), reply[1]
        if version < 0:
            actual = int(created)
            raise VersionConflict(
                f"{op.key!r} is at version {actual}, expected {op.expected_version}",
                key=op.key, expected=op.expected_version, actual=actual)
        return Record(op.key, op.value, op.namespace, dict(op.metadata), version,
                      float(created), now, None if op.ttl is None else now + op.ttl)

    @_unavailable
    def store(self, op: StoreOp) -> Record:
        now = self.clock()
        reply = self._store_lua(keys=self._keys(op.namespace, op.key),
                                args=self._store_args(op, now))
        return self._stored(op, now, reply)

    @_unavailable
    def retrieve(self, op: RetrieveOp) -> Record | None:
        assert self.client is not None
        fields = self.client.hmget(self._record_key(op.namespace, op.key), _FIELDS)
        return self._record(op.key, op.namespace, fields, self.clock())

    def exists(self, op: ExistsOp) -> bool:
        return self.retrieve(RetrieveOp(op.key, op.namespace)) is not None

    @_unavailable
    def delete(self, op: DeleteOp) -> bool:
        reply = self._delete_lua(keys=self._keys(op.namespace, op.key),
                                 args=[_num(self.clock()), _b(op.key), _b(op.namespace)])
        return bool(reply)

    @_unavailable
    def replicate(self, op: ReplicateOp) -> bool:
        rec, now = op.record, self.clock()
        if rec.expired(now):
            return False
        codec.check_key(rec.key)
        namespace = codec.check_namespace(rec.namespace)
        reply = self._replicate_lua(
            keys=self._keys(namespace, rec.key),
            args=[_num(now), codec.encode_value(rec.value),
                  codec.encode(codec.check_metadata(rec.metadata)), b"%d" % rec.version,
                  _num(rec.created_at), _num(rec.updated_at), _num(rec.expires_at),
                  _ttl_ms(rec.expires_at, now), _b(rec.key), _b(namespace)])
        return bool(reply)

    # ---- batches: one pipeline, one round trip ------------------------------------------

    @_unavailable
    def store_many(self, ops: Sequence[StoreOp]) -> list[Record]:
        if any(op.expected_version is not None for op in ops):
            # A conflict must stop the batch where it happens, as one-by-one stores would.
            return [self.store(op) for op in ops]
        assert self.client is not None
        now = self.clock()
        with self.client.pipeline(transaction=False) as pipe:
            for op in ops:
                self._store_lua(keys=self._keys(op.namespace, op.key),
                                args=self._store_args(op, now), client=pipe)
            replies = pipe.execute()
        return [self._stored(op, now, reply) for op, reply in zip(ops, replies, strict=True)]

    @_unavailable
    def retrieve_many(self, ops: Sequence[RetrieveOp]) -> list[Record | None]:
        assert self.client is not None
        with self.client.pipeline(transaction=False) as pipe:
            for op in ops:
                pipe.hmget(self._record_key(op.namespace, op.key), _FIELDS)
            replies = pipe.execute()
        now = self.clock()
        return [self._record(op.key, op.namespace, fields, now)
                for op, fields in zip(ops, replies, strict=True)]

    @_unavailable
    def delete_many(self, ops: Sequence[DeleteOp]) -> int:
        assert self.client is not None
        now = _num(self.clock())
        with self.client.pipeline(transaction=False) as pipe:
            for op in ops:
                self._delete_lua(keys=self._keys(op.namespace, op.key),
                                 args=[now, _b(op.key), _b(op.namespace)], client=pipe)
            return sum(int(r) for r in pipe.execute())

    # ---- scans over the key index -------------------------------------------------------

    def _index_pages(self, namespace: str, after: str | None = None,
                     pattern: str | None = None) -> Iterator[list[str]]:
        """Chunks of indexed keys (live or stale) after `after`, ascending, narrowed to the
        literal prefix of `pattern` when it has one."""
        assert self.client is not None
        index = self._index_key(namespace)
        literal = b""
        if pattern:
            cut = min((i for i, ch in enumerate(pattern) if ch in _GLOB), default=len(pattern))
            literal = _b(pattern[:cut])
        start = b"[" + literal if literal else b"-"
        if after is not None and (not literal or _b(after) >= literal):
            start = b"(" + _b(after)
        stop = b"[" + literal + b"\xff" if literal else b"+"
        while True:
            members = self.client.zrangebylex(index, start, stop, start=0, num=_CHUNK)
            if not members:
                return
            yield [_s(m) for m in members]
            if len(members) < _CHUNK:
                return
            start = b"(" + members[-1]

    def _fetch(self, namespace: str, keys: list[str], now: float) -> list[Record]:
        """Live records for `keys` (one pipeline); prunes index members whose hash is gone."""
        assert self.client is not None
        with self.client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hmget(self._record_key(namespace, key), _FIELDS)
            replies = pipe.execute()
        records, gone = [], []
        for key, fields in zip(keys, replies, strict=True):
            if fields[2] is None:
                gone.append(key)
            rec = self._record(key, namespace, fields, now)
            if rec is not None:
                records.append(rec)
        if gone:
            self._prune_lua(keys=[self._index_key(namespace), self._record_base(namespace)],
                            args=[_b(k) for k in gone])
        return records

    def _scan(self, namespace: str, query: Query) -> Iterator[Record]:
        """Every live record of `namespace` whose key fits the query's pattern, key order."""
        now = self.clock()
        for keys in self._index_pages(namespace, pattern=query.pattern):
            if query.pattern is not None:
                keys = [k for k in keys if engine.match_pattern(k, query.pattern)]
            if keys:
                yield from self._fetch(namespace, keys, now)

    @_unavailable
    def search(self, op: SearchOp) -> list[Record]:
        return engine.run(self._scan(op.namespace, op.query), op.query, key_ordered=True)

    @_unavailable
    def count(self, op: CountOp) -> int:
        query = op.query
        engine.check_filter(query.filter)
        return sum(1 for rec in self._scan(op.namespace, query) if engine.matches(rec, query))

    @_unavailable
    def list_keys(self, op: ListKeysOp) -> Page:
        now = self.clock()
        found: list[str] = []
        for keys in self._index_pages(op.namespace, op.cursor, op.pattern):
            if op.pattern is not None:
                keys = [k for k in keys if engine.match_pattern(k, op.pattern)]
            found.extend(rec.key for rec in self._fetch(op.namespace, keys, now))
            if len(found) > op.limit:
                break
        if len(found) > op.limit:
            return Page(found[:op.limit], found[op.limit - 1])
        return Page(found, None)

    @_unavailable
    def export(self, *, cursor: str | None = None, limit: int = 1000
               ) -> tuple[list[Record], str | None]:
        """Records of every namespace in (namespace, key) order; cursor = JSON [ns, key]."""
        assert self.client is not None
        after_ns, after_key = _parse_export_cursor(cursor)
        now = self.clock()
        start = b"-" if after_ns is None else b"[" + _b(after_ns)
        out: list[Record] = []
        for raw_ns in self.client.zrangebylex(self._spaces_key, start, b"+"):
            namespace = _s(raw_ns)
            after = after_key if namespace == after_ns else None
            for keys in self._index_pages(namespace, after):
                out.extend(self._fetch(namespace, keys, now))
                if len(out) > limit:
                    last = out[limit - 1]
                    return out[:limit], json.dumps([last.namespace, last.key])
        return out, None

    @_unavailable
    def clear(self, op: ClearOp) -> int:
        assert self.client is not None
        if op.namespace is None:
            spaces = [_s(ns) for ns in self.client.zrange(self._spaces_key, 0, -1)]
        else:
            spaces = [op.namespace]
        removed = 0
        for namespace in spaces:
            for keys in self._index_pages(namespace):
                removed += self.delete_many([DeleteOp(k, namespace) for k in keys])
        return removed


def _parse_export_cursor(cursor: str | None) -> tuple[str | None, str | None]:
    if cursor is None:
        return None, None
    try:
        namespace, key = json.loads(cursor)
    except (ValueError, TypeError):
        raise InvalidValue(f"not an export cursor: {cursor!r}") from None
    if not isinstance(namespace, str) or not isinstance(key, str):
        raise InvalidValue(f"not an export cursor: {cursor!r}")
    return namespace, key
