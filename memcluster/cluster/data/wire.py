"""The compact wire format of shard batches: keyed ops and their results as one msgpack blob.

Core functions: `encode_ops(ops) -> bytes | None` (client side; None when a batch holds an
op the format does not carry), `decode_ops(payload) -> list[Op]` (shard side),
`encode_results(results) -> bytes` (shard side) and `decode_results(ops, payload)`
(client side). Ops travel as short positional lists (a store carries its value still
encoded, as `StoreOp.blob`, so it is encoded exactly once, at the client); a Record comes
back as a list of its fields; a per-op error comes back pickled inside a msgpack ext, since
errors are rare and must keep their type and fields.

The decoder knows which result belongs to which op (it has the ops it sent), so results
need no type tags: a store or retrieve answers a Record (or None), the others a bool.
Only the keyed kinds of the data fast path are carried (store, retrieve, exists, delete,
replicate); scatter ops, `update` (it carries a function) and cluster-internal ops keep
Ray's pickling. The rejected alternative, pickling the frozen dataclasses as they are,
costs three to five times more per op on both ends (pickle rebuilds every dataclass
through its reduce protocol) and was the largest share of a batch's time.

Nothing that does not fit is sent: ops made by their `make` constructors always fit (the
codec bounds versions to 63 bits and text to valid UTF-8, so an `if_version` of 2**64 is an
`InvalidValue` at the caller), and `encode_ops` turns anything else that msgpack refuses
into `InvalidValue` before the batch leaves.

Large batches are the caller's business: `INLINE_LIMIT` is the size above which the
shard handle puts the payload in Ray's object store instead of passing it inline.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from typing import Any

import msgpack

from memcluster.errors import InvalidValue, MemclusterError
from memcluster.model import Record, new_record
from memcluster.ops import DeleteOp, ExistsOp, ReplicateOp, RetrieveOp, new_store_op

INLINE_LIMIT = 100 * 1024  # bytes: larger payloads go through Ray's object store
_ERROR = 1  # msgpack ext code of a pickled MemclusterError

_STORE, _RETRIEVE, _EXISTS, _DELETE, _REPLICATE = range(5)
_CODES = {"store": _STORE, "retrieve": _RETRIEVE, "exists": _EXISTS, "delete": _DELETE,
          "replicate": _REPLICATE}
_RECORD_KINDS = frozenset({"store", "retrieve"})



def encode_ops(ops: Sequence[Any]) -> bytes | None:
    """The batch as one msgpack blob, or None if an op is of a kind the format lacks.

    Each op is packed as soon as its tuple is built (a streaming Packer): twice as fast as
    packing a list of them, and the tuples die at once instead of piling up for the
    garbage collector."""
    packer = msgpack.Packer(use_bin_type=True, autoreset=False)
    packer.pack_array_header(len(ops))
    append = packer.pack
    try:
        for op in ops:
            code = _CODES.get(op.kind)
            if code is None:
                return None
            if code == _STORE:
                append((0, op.key, op.blob, op.namespace, op.metadata or None, op.ttl,
                        op.if_version, op.overwrite, op.op_id))
            elif code in (_RETRIEVE, _EXISTS):
                append((code, op.key, op.namespace))
            elif code == _DELETE:
                append((3, op.key, op.namespace, op.op_id))
            else:
                r = op.record
                append((4, r.key, r.value, r.namespace, r.metadata or None, r.version,
                        r.created_at, r.updated_at, r.expires_at))
    except (OverflowError, TypeError, ValueError) as exc:
        # Ops made by their `make` constructors always fit (versions < 2**63, valid
        # UTF-8); one built by hand that does not is refused here, before it is sent.
        raise InvalidValue(f"an op does not fit the wire format: {type(exc).__name__}: "
                           f"{str(exc)[:200]}") from None
    return packer.bytes()


def decode_ops(payload: bytes) -> list[Any]:
    """The ops of an `encode_ops` blob, rebuilt as `memcluster.ops` values."""
    ops: list[Any] = []
    append = ops.append
    for item in msgpack.unpackb(payload, raw=False):
        code = item[0]
        if code == _STORE:
            _, key, blob, ns, meta, ttl, if_version, overwrite, op_id = item
            append(new_store_op(key, blob, ns, meta or {}, ttl, if_version, overwrite, op_id))
        elif code == _RETRIEVE:
            append(RetrieveOp(item[1], item[2]))
        elif code == _EXISTS:
            append(ExistsOp(item[1], item[2]))
        elif code == _DELETE:
            append(DeleteOp(item[1], item[2], item[3]))
        elif code == _REPLICATE:
            _, key, value, ns, meta, version, created, updated, expires = item
            append(ReplicateOp(Record(key, value, ns, meta or {}, version, created, updated,
                                      expires)))
        else:
            raise ValueError(f"unknown wire op code {code!r}")
    return ops


def _record_fields(r: Record) -> tuple[Any, ...]:
    return (r.key, r.value, r.namespace, r.metadata or None, r.version, r.created_at,
            r.updated_at, r.expires_at, r.score)


def _default(obj: Any) -> Any:
    if isinstance(obj, Record):
        return _record_fields(obj)
    if isinstance(obj, MemclusterError):
        return msgpack.ExtType(_ERROR, pickle.dumps(obj, protocol=5))
    raise TypeError(f"cannot put {type(obj).__name__} on the wire")


def encode_results(results: Sequence[Any]) -> bytes:
    """Per-op results as one blob: Records as field lists, errors pickled in an ext
    (streamed like `encode_ops`)."""
    packer = msgpack.Packer(use_bin_type=True, autoreset=False, default=_default)
    packer.pack_array_header(len(results))
    pack = packer.pack
    for r in results:
        if type(r) is Record:
            pack((r.key, r.value, r.namespace, r.metadata or None, r.version, r.created_at,
                  r.updated_at, r.expires_at, r.score))
        else:
            pack(r)
    return packer.bytes()


def _ext(code: int, data: bytes) -> Any:
    if code == _ERROR:
        return pickle.loads(data)
    return msgpack.ExtType(code, data)


def decode_results(ops: Sequence[Any], payload: bytes) -> list[Any]:
    """The results of `ops` from an `encode_results` blob (Records rebuilt for their kinds)."""
    unpacker = msgpack.Unpacker(raw=False, ext_hook=_ext,
                                max_buffer_size=max(len(payload), 1024))
    unpacker.feed(payload)  # streamed: each field list dies as soon as its Record is built
    if unpacker.read_array_header() != len(ops):
        raise ValueError(f"a reply of the wrong length for {len(ops)} ops")
    out: list[Any] = []
    append = out.append
    unpack = unpacker.unpack
    for op in ops:
        r = unpack()
        if type(r) is list and op.kind in _RECORD_KINDS:
            key, value, ns, meta, version, created, updated, expires, score = r
            append(new_record(key, value, ns, {} if meta is None else meta, version, created,
                              updated, expires, score))
        else:
            append(r)
    return out
