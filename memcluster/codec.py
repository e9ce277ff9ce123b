"""msgpack encoding plus the key, namespace, value, metadata, TTL and version rules.

Everything that enters memcluster passes through here once, at the edge, so that a bad
value is rejected before anything is written and the encoded bytes can travel to a shard
and into a store without being encoded again. Values are what msgpack carries natively:
None, bool, 64-bit ints, floats, str, bytes, lists and dicts with str keys. Tuples, sets,
custom objects and non-str dict keys are rejected rather than silently converted, because
they would not come back as they went in.

The rules are the same for every backend, so that all of them accept exactly the same
inputs (a store that cannot hold something must not be the one to discover it, halfway
through a write):

- **Text is valid UTF-8.** A str holding a lone surrogate (`"\ud800"`, a legal JSON
  escape) is refused wherever it appears: in a key or namespace (`InvalidKey`), in a value,
  metadata, filter, pattern, query text or cursor (`InvalidValue`). No store can encode it,
  and some (files, SQLite) found out only after they had changed their state.
- **Keys and namespaces hold no NUL** (`InvalidKey`): PostgreSQL text cannot store it, so
  accepting it elsewhere would make backends disagree. Values and metadata may hold NUL;
  every backend stores them exactly (PostgreSQL keeps them in msgpack bytea).
- **Metadata is bounded like a value** when a size limit is given (`StoreOp.make`), and
  nested at most `MAX_METADATA_DEPTH` (16) deep: the stores that index it keep it in a
  JSON column, and MariaDB's refuses JSON nested 32 deep (values, kept as msgpack bytes
  everywhere, may nest 64 deep).
- **TTL is at most `MAX_TTL` (100 years).** Longer is "never" (`ttl=None`); the bound keeps
  `now + ttl` and Redis's PEXPIRE milliseconds far inside what every store represents,
  where 1e17 seconds overflowed Redis after it had already replaced the record.
- **Versions fit a signed 64-bit int** (`MAX_VERSION`): the column type of the SQL stores
  and what the cluster's wire format carries.
"""

from __future__ import annotations

import base64
import math
import threading
from collections.abc import Mapping
from typing import Any

import msgpack

from memcluster.errors import InvalidKey, InvalidValue

MAX_KEY_BYTES = 512
DEFAULT_MAX_VALUE_BYTES = 1 << 20
MAX_DEPTH = 64
MAX_METADATA_DEPTH = 16
MAX_TTL = 100 * 365.25 * 86400.0  # seconds: 100 years
MAX_VERSION = (1 << 63) - 1
_INT_MIN = -(1 << 63)
_INT_MAX = (1 << 64) - 1
_SCALARS = (str, bytes, float, bool, type(None))
_FLAT = frozenset(_SCALARS)
_local = threading.local()  # one Packer per thread: `packb` builds (and frees) one per call


def encode(value: Any) -> bytes:
    """Encode an already validated value (use `encode_value` for untrusted input)."""
    try:
        packer = _local.packer
    except AttributeError:
        packer = _local.packer = msgpack.Packer(use_bin_type=True)
    return packer.pack(value)  # resets its buffer on success and on error


def decode(blob: bytes) -> Any:
    """Decode bytes written by `encode`."""
    return msgpack.unpackb(blob, raw=False)


def check_native(value: Any, *, what: str = "value", depth: int = MAX_DEPTH) -> None:
    """Raise `InvalidValue` unless `value` is msgpack-native and nested at most `depth` deep."""
    kind = type(value)
    if kind in _FLAT:
        return
    if kind is dict and depth > 0:  # the common case, a flat dict of scalars: one pass
        for k, v in value.items():
            if type(k) is not str or type(v) not in _FLAT:
                break
        else:
            return
    stack: list[tuple[Any, int, str]] = [(value, 0, what)]
    while stack:
        item, level, path = stack.pop()
        kind = type(item)
        if kind in _SCALARS:
            continue
        if kind is int:
            if not _INT_MIN <= item <= _INT_MAX:
                raise InvalidValue(f"{path}: integer {item} does not fit in 64 bits")
            continue
        if level >= depth:
            raise InvalidValue(f"{path}: nested deeper than {depth} levels")
        if kind is list:
            stack.extend((v, level + 1, f"{path}[{i}]") for i, v in enumerate(item))
        elif kind is dict:
            for k, v in item.items():
                if type(k) is not str:
                    raise InvalidValue(f"{path}: dict keys must be str, got {type(k).__name__}")
                stack.append((v, level + 1, f"{path}.{k}"))
        elif kind is tuple:
            raise InvalidValue(f"{path}: tuple is not supported, use a list")
        else:
            raise InvalidValue(f"{path}: {kind.__name__} is not a msgpack-native type "
                               "(None, bool, int, float, str, bytes, list, dict)")


def encode_value(value: Any, *, max_bytes: int | None = DEFAULT_MAX_VALUE_BYTES,
                 what: str = "value", depth: int = MAX_DEPTH) -> bytes:
    """Validate `value` and return its encoding; `InvalidValue` if it is not native, nested
    deeper than `depth`, holds a str that is not valid UTF-8, or is larger than
    `max_bytes` (None: no limit)."""
    check_native(value, what=what, depth=depth)
    try:
        blob = encode(value)
    except UnicodeEncodeError:  # msgpack encodes str strictly: a lone surrogate
        raise InvalidValue(f"{what}: a str is not valid UTF-8 "
                           "(it holds a lone surrogate)") from None
    if max_bytes is not None and len(blob) > max_bytes:
        raise InvalidValue(f"{what} is {len(blob)} bytes encoded, over the limit of {max_bytes}")
    return blob


def _check_name(text: str, what: str) -> str:
    """`text` (a key or namespace) if valid UTF-8 of at most 512 bytes without NUL."""
    if text.isascii():
        size = len(text)
    else:
        try:
            size = len(text.encode("utf-8"))
        except UnicodeEncodeError:
            raise InvalidKey(f"{what} is not valid UTF-8 (it holds a lone surrogate)") from None
    if size > MAX_KEY_BYTES:
        raise InvalidKey(f"{what} is longer than {MAX_KEY_BYTES} UTF-8 bytes")
    if "\x00" in text:
        raise InvalidKey(f"{what} must not contain NUL characters")
    return text


def check_key(key: Any) -> str:
    """Return `key` if it is a non-empty str of at most 512 UTF-8 bytes (valid UTF-8, no
    NUL), else `InvalidKey`."""
    if type(key) is not str:
        raise InvalidKey(f"key must be str, got {type(key).__name__}")
    if not key:
        raise InvalidKey("key must not be empty")
    return _check_name(key, "key")


def check_namespace(namespace: Any) -> str:
    """Normalise a namespace: str as is, a tuple of str joined with '/', None as ''."""
    if namespace is None:
        return ""
    if type(namespace) is str:
        ns = namespace
    elif isinstance(namespace, tuple) and all(type(p) is str for p in namespace):
        ns = "/".join(namespace)
    else:
        raise InvalidKey(f"namespace must be str or a tuple of str, got {type(namespace).__name__}")
    return _check_name(ns, "namespace") if ns else ns


def check_text(text: Any, what: str, *, nul: bool = False) -> str:
    """Return `text` if it is a str of valid UTF-8 (and, unless `nul`, without NUL), else
    `InvalidValue`. For what is matched against keys (patterns, cursors: keys hold no NUL)
    and against values (query text: `nul=True`)."""
    if type(text) is not str:
        raise InvalidValue(f"{what} must be str, got {type(text).__name__}")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidValue(f"{what} is not valid UTF-8 (it holds a lone surrogate)") from None
    if not nul and "\x00" in text:
        raise InvalidValue(f"{what} must not contain NUL characters (keys cannot hold them)")
    return text


def check_metadata(metadata: Any, *, max_bytes: int | None = None) -> dict[str, Any]:
    """Return a plain dict copy of `metadata` (None -> {}), validated like a value
    (msgpack-native, valid UTF-8, at most `max_bytes` encoded when given) and nested at
    most `MAX_METADATA_DEPTH` deep."""
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise InvalidValue(f"metadata must be a dict, got {type(metadata).__name__}")
    meta = dict(metadata)
    if meta:
        encode_value(meta, max_bytes=max_bytes, what="metadata", depth=MAX_METADATA_DEPTH)
    return meta


def check_ttl(ttl: Any) -> float | None:
    """Return `ttl` as float seconds in (0, MAX_TTL], or None for never; else `InvalidValue`."""
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)):
        raise InvalidValue(f"ttl must be a number of seconds, got {type(ttl).__name__}")
    seconds = float(ttl) if type(ttl) is float or abs(ttl) <= MAX_TTL else math.inf
    if not (0 < seconds <= MAX_TTL):  # also refuses NaN
        raise InvalidValue(f"ttl must be a positive number of seconds up to {MAX_TTL:.0f} "
                           f"(100 years; None means never), got {_short(ttl)}")
    return seconds


def check_version(version: Any, *, what: str = "if_version") -> int | None:
    """Return an expected version (int in [0, MAX_VERSION]) or None; `InvalidValue` otherwise."""
    if version is None:
        return None
    if isinstance(version, bool) or not isinstance(version, int) \
            or not 0 <= version <= MAX_VERSION:
        raise InvalidValue(f"{what} must be an int from 0 to 2**63-1, got {_short(version)}")
    return version


def _short(value: Any, limit: int = 40) -> str:
    """`repr(value)` cut to `limit` characters, for messages about untrusted input."""
    try:
        text = repr(value)
    except ValueError:  # an int too long for repr
        return f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[:limit - 1] + "…"


# ---- a JSON-safe form of native values (files json/yaml format, SQL JSON metadata) ----------

_TAGS = ("$bytes", "$float", "$dict")


def to_json_safe(value: Any) -> Any:
    """Return `value` with everything JSON cannot carry exactly replaced by a one-key tag dict.

    bytes -> {"$bytes": base64}, a non-finite float -> {"$float": "nan" | "inf" | "-inf"},
    and a real dict whose only key is a tag name -> {"$dict": {...}}, so `from_json_safe`
    restores exactly what went in. Tagging beats storing msgpack-in-base64 because the
    file or column stays readable and queryable for every value without bytes.
    """
    kind = type(value)
    if kind is bytes:
        return {"$bytes": base64.b64encode(value).decode("ascii")}
    if kind is float and not math.isfinite(value):
        return {"$float": repr(value)}
    if kind is list:
        return [to_json_safe(v) for v in value]
    if kind is dict:
        out = {k: to_json_safe(v) for k, v in value.items()}
        return {"$dict": out} if len(out) == 1 and next(iter(out)) in _TAGS else out
    return value


def from_json_safe(data: Any) -> Any:
    """Invert `to_json_safe`."""
    kind = type(data)
    if kind is list:
        return [from_json_safe(v) for v in data]
    if kind is dict:
        if len(data) == 1:
            tag, inner = next(iter(data.items()))
            if tag == "$bytes":
                return base64.b64decode(inner, validate=True)
            if tag == "$float":
                return float(inner)
            if tag == "$dict":
                return {k: from_json_safe(v) for k, v in inner.items()}
        return {k: from_json_safe(v) for k, v in data.items()}
    return data


def from_json_arg(value: Any, what: str) -> Any:
    """`from_json_safe` for a caller's argument (a tool call, a REST body): a malformed
    $-tag is `InvalidValue` naming `what`."""
    try:
        return from_json_safe(value)
    except (ValueError, TypeError, AttributeError) as exc:
        raise InvalidValue(f"{what}: malformed $-tag ({type(exc).__name__})") from None
