"""The edge rules: keys, namespaces, values, metadata, TTLs and versions, and the encoding."""

from __future__ import annotations

import math

import pytest

from memcluster import codec
from memcluster.errors import InvalidKey, InvalidValue
from memcluster.ops import StoreOp


@pytest.mark.parametrize("key", ["k", "x" * 512, "é" * 256, "😀" * 128, "a b\n;--'\"", "*"])
def test_keys_up_to_512_utf8_bytes_are_accepted(key):
    assert codec.check_key(key) == key


@pytest.mark.parametrize("key", ["", "x" * 513, "é" * 257, "😀" * 129, None, 1, b"k", ["k"]])
def test_other_keys_are_rejected(key):
    with pytest.raises(InvalidKey):
        codec.check_key(key)


def test_namespaces_normalise_and_are_bounded():
    assert codec.check_namespace(None) == ""
    assert codec.check_namespace("") == ""
    assert codec.check_namespace("agent-7") == "agent-7"
    assert codec.check_namespace(("org", "agent")) == "org/agent"
    assert codec.check_namespace(("é" * 256,)) == "é" * 256
    for bad in (5, ("a", 1), ["a"], "n" * 513, ("n" * 300, "n" * 300)):
        with pytest.raises(InvalidKey):
            codec.check_namespace(bad)


NATIVE = [None, True, 0, (1 << 64) - 1, -(1 << 63), 1.5, math.inf, "", "ünï 😀", b"\x00",
          [], {}, [1, [2, [3]]], {"a": {"b": [None, b"x", {"c": 1.0}]}}]


@pytest.mark.parametrize("value", NATIVE)
def test_native_values_round_trip_with_their_types(value):
    back = codec.decode(codec.encode_value(value))
    assert back == value and type(back) is type(value)


@pytest.mark.parametrize("value, fragment", [
    ((1, 2), "tuple"), ({1, 2}, "set"), ({1: "a"}, "dict keys"), (object(), "object"),
    (1 << 64, "64 bits"), (-(1 << 63) - 1, "64 bits"), ([1, {"k": (2,)}], r"value\[1\]\.k"),
    (bytearray(b"x"), "bytearray"),
])
def test_non_native_values_are_rejected_with_a_precise_message(value, fragment):
    with pytest.raises(InvalidValue, match=fragment):
        codec.encode_value(value)


def test_nesting_is_bounded():
    value: list = []
    for _ in range(codec.MAX_DEPTH - 1):
        value = [value]
    codec.encode_value(value)  # MAX_DEPTH nested lists in all
    with pytest.raises(InvalidValue, match="deeper"):
        codec.encode_value([value])


def test_size_limit_is_one_mib_by_default_and_configurable():
    overhead = len(codec.encode(b"")) + 4  # the bin32 header
    fits = b"x" * (codec.DEFAULT_MAX_VALUE_BYTES - overhead)
    assert len(codec.encode_value(fits)) <= codec.DEFAULT_MAX_VALUE_BYTES
    with pytest.raises(InvalidValue, match="over the limit"):
        codec.encode_value(fits + b"x" * 8)
    with pytest.raises(InvalidValue):
        StoreOp.make("k", "x" * 100, max_bytes=50)
    assert StoreOp.make("k", "x" * 100, max_bytes=200).value == "x" * 100
    big = b"y" * (2 * codec.DEFAULT_MAX_VALUE_BYTES)
    assert StoreOp.make("k", big, max_bytes=3 * codec.DEFAULT_MAX_VALUE_BYTES).value == big


def test_metadata_is_a_validated_copy():
    given = {"tags": ["a"]}
    meta = codec.check_metadata(given)
    assert meta == given and meta is not given
    assert codec.check_metadata(None) == {}
    for bad in ("tags", ["a"], {"a": (1,)}, {1: "a"}):
        with pytest.raises(InvalidValue):
            codec.check_metadata(bad)


def test_ttl_rules():
    assert codec.check_ttl(None) is None
    assert codec.check_ttl(5) == 5.0 and isinstance(codec.check_ttl(5), float)
    assert codec.check_ttl(0.25) == 0.25
    assert codec.check_ttl(codec.MAX_TTL) == codec.MAX_TTL          # 100 years: the bound
    assert codec.check_ttl(int(codec.MAX_TTL)) == int(codec.MAX_TTL)
    for bad in (0, -1, math.nan, math.inf, True, "5", [5], codec.MAX_TTL * 1.000001,
                int(codec.MAX_TTL) + 1, 1e17, 10**30, -(10**30)):
        with pytest.raises(InvalidValue):
            codec.check_ttl(bad)


def test_version_rules():
    assert codec.check_version(None) is None
    assert codec.check_version(0) == 0 and codec.check_version(7) == 7
    assert codec.check_version(2**63 - 1) == codec.MAX_VERSION       # a signed 64-bit int
    for bad in (-1, True, 1.0, "1", 2**63, 2**64, -(2**63)):
        with pytest.raises(InvalidValue):
            codec.check_version(bad)


def test_store_op_carries_the_encoded_value_and_the_cas_condition():
    op = StoreOp.make("k", {"a": [1, b"x"]}, namespace=("a", "b"), metadata={"m": 1}, ttl=3)
    assert op.blob == codec.encode({"a": [1, b"x"]})
    assert op.value == {"a": [1, b"x"]} and op.namespace == "a/b" and op.ttl == 3.0
    assert op.expected_version is None
    assert StoreOp.make("k", 1, overwrite=False).expected_version == 0
    assert StoreOp.make("k", 1, if_version=4, overwrite=False).expected_version == 4
