"""The pure query engine: what patterns, filters, text, order, offset and limit mean."""

from __future__ import annotations

import pytest

from memcluster.errors import InvalidValue, UnsupportedQuery
from memcluster.model import Query, Record
from memcluster.query import (
    check_filter,
    escape_glob,
    match_filter,
    match_pattern,
    matches,
    run,
    searchable_text,
    sort_records,
)

META = {"age": 9, "score": 2.5, "name": "ada", "flag": True, "tags": ["a", "b", 3],
        "nested": {"level": 2, "deep": {"x": "y"}}, "none": None, "text": "hello world"}


@pytest.mark.parametrize("key, pattern, expected", [
    ("user:1", "user:*", True), ("user:1", "User:*", False), ("user:10", "user:?", False),
    ("user:1", None, True), ("a*b", "a[*]b", True), ("axb", "a[*]b", False),
    ("[x]", "[[]x]", True), ("line\nbreak", "line*", True), ("100%", "100%", True),
    ("1000", "100%", False), ("a_b", "a_b", True), ("axb", "a_b", False),
    ("back\\slash", "back\\slash", True), ("b", "[!a]", True), ("a", "[!a]", False),
])
def test_match_pattern_is_a_case_sensitive_glob(key, pattern, expected):
    assert match_pattern(key, pattern) is expected


@pytest.mark.parametrize("text", ["*?[]", "[!a]", "plain", "a[b]*c?", "\\", "ü😀"])
def test_escape_glob_matches_only_the_literal_text(text):
    assert match_pattern(text, escape_glob(text))
    assert not match_pattern(text + "x", escape_glob(text))
    assert not match_pattern("y" + text, escape_glob(text))


@pytest.mark.parametrize("flt, expected", [
    ({"age": 9}, True), ({"age": 9.0}, True), ({"age": "9"}, False),
    ({"age": {"$lt": 10}}, True),          # numbers compare as numbers: 9 < 10
    ({"age": {"$gt": "10"}}, False),       # type mismatch: no match
    ({"name": {"$lt": "b"}}, True), ({"name": {"$gt": "B"}}, True),  # code point order
    ({"flag": True}, True), ({"flag": 1}, False),  # bool is not a number
    ({"flag": {"$gt": 0}}, False), ({"age": True}, False),
    ({"age": {"$gte": 9, "$lte": 9}}, True), ({"age": {"$gt": 9}}, False),
    ({"score": {"$gt": 2, "$lt": 3}}, True),
    ({"age": {"$ne": 9}}, False), ({"age": {"$ne": "9"}}, True),
    ({"missing": {"$ne": 1}}, True), ({"missing": {"$nin": [1]}}, True),
    ({"missing": {"$gt": 0}}, False), ({"missing": {"$in": [None]}}, False),
    ({"missing": None}, False), ({"none": None}, True), ({"none": {"$exists": True}}, True),
    ({"missing": {"$exists": False}}, True), ({"age": {"$exists": False}}, False),
    ({"age": {"$in": [1, 9]}}, True), ({"age": {"$in": ["9", True]}}, False),
    ({"age": {"$nin": [9]}}, False), ({"flag": {"$in": [1]}}, False),
    ({"tags": {"$contains": "a"}}, True), ({"tags": {"$contains": 3.0}}, True),
    ({"tags": {"$contains": "c"}}, False), ({"text": {"$contains": "lo wo"}}, True),
    ({"text": {"$contains": "LO"}}, False), ({"age": {"$contains": 9}}, False),
    ({"tags": ["a", "b", 3]}, True), ({"tags": ["b", "a", 3]}, False),
    ({"nested.level": 2}, True), ({"nested.deep.x": "y"}, True),
    ({"nested.level.x": 2}, False), ({"nested": {"level": 2, "deep": {"x": "y"}}}, True),
    ({"nested": {"level": 2}}, False),
    ({"age": 9, "name": "ada"}, True), ({"age": 9, "name": "bob"}, False),
    ({"$and": [{"age": 9}, {"name": "ada"}]}, True),
    ({"$or": [{"age": 1}, {"name": "ada"}]}, True), ({"$or": [{"age": 1}, {"x": 1}]}, False),
    ({"$not": {"age": 9}}, False), ({"$not": {"age": {"$gt": 100}}}, True),
    ({"$not": {"$or": [{"age": 1}, {"flag": False}]}}, True),
    ({"age": {"$in": []}}, False), ({}, True),
])
def test_filter_semantics(flt, expected):
    check_filter(flt)
    assert match_filter(META, flt) is expected


@pytest.mark.parametrize("flt, name", [
    ({"age": {"$regex": "9"}}, "$regex"), ({"$where": "1"}, "$where"),
    ({"$or": [{"a": {"$like": "%"}}]}, "$like"), ({"$not": {"$nor": []}}, "$nor"),
])
def test_unknown_operators_raise_unsupported_query_naming_them(flt, name):
    with pytest.raises(UnsupportedQuery, match=name.replace("$", r"\$")):
        check_filter(flt)
    with pytest.raises(UnsupportedQuery):
        match_filter(META, flt)
    with pytest.raises(UnsupportedQuery):
        run([Record("k", 1)], Query(filter=flt))


@pytest.mark.parametrize("flt", [
    {"age": {"$in": 9}}, {"age": {"$nin": "9"}}, {"$and": {"age": 9}}, {"$or": []},
    {"$and": [1]}, {"$not": [{"age": 9}]}, {"age": {"$exists": 1}}, {"age": {"$gt": None}},
    {"age": {"$lt": [1]}}, {"age": {"$gt": True}}, {"age": {"$eq": 9, "plain": 1}},
    {"$eq": 9}, {"age": {"$not": {"$gt": 1}}}, {"": 1},
])
def test_malformed_filters_raise_invalid_value(flt):
    with pytest.raises(InvalidValue):
        check_filter(flt)


def test_check_filter_accepts_none_and_rejects_a_non_dict():
    check_filter(None)
    with pytest.raises(InvalidValue):
        check_filter([{"a": 1}])  # type: ignore[arg-type]


def test_searchable_text_covers_key_and_str_and_number_leaves_only():
    text = searchable_text("User:1", {"Name": "ÄDA", "n": [42, 1.5, {"x": "Deep"}],
                                       "b": b"BYTES", "t": True, "none": None})
    for part in ("user:1", "äda", "42", "1.5", "deep"):
        assert part in text
    for absent in ("bytes", "true", "none", "name"):
        assert absent not in text
    assert "user:1äda" not in text  # leaves are separated: no match across a boundary


def test_text_matching_is_a_case_insensitive_substring():
    rec = Record("note:1", {"body": "Hello Wörld"})
    assert matches(rec, Query(text="WÖRLD"))
    assert matches(rec, Query(text="NOTE:"))
    assert not matches(rec, Query(text="hello world!"))


def _records() -> list[Record]:
    return [
        Record("b", 1, "n1", {"k": 1}, version=2, created_at=10, updated_at=30, score=0.5),
        Record("a", 2, "n1", {"k": 2}, version=1, created_at=20, updated_at=20, score=None),
        Record("c", 3, "n1", {"k": 1}, version=2, created_at=10, updated_at=10, score=0.9),
        Record("a", 4, "n0", {"k": 3}, version=3, created_at=5, updated_at=40, score=0.1),
    ]


@pytest.mark.parametrize("order_by, expected", [
    (None, [("a", "n0"), ("a", "n1"), ("b", "n1"), ("c", "n1")]),
    ("key", [("a", "n0"), ("a", "n1"), ("b", "n1"), ("c", "n1")]),
    ("-key", [("c", "n1"), ("b", "n1"), ("a", "n0"), ("a", "n1")]),
    ("created_at", [("a", "n0"), ("b", "n1"), ("c", "n1"), ("a", "n1")]),
    ("-created_at", [("a", "n1"), ("b", "n1"), ("c", "n1"), ("a", "n0")]),
    ("-updated_at", [("a", "n0"), ("b", "n1"), ("a", "n1"), ("c", "n1")]),
    ("version", [("a", "n1"), ("b", "n1"), ("c", "n1"), ("a", "n0")]),
    ("-version", [("a", "n0"), ("b", "n1"), ("c", "n1"), ("a", "n1")]),
    ("score", [("a", "n0"), ("b", "n1"), ("c", "n1"), ("a", "n1")]),
    ("-score", [("c", "n1"), ("b", "n1"), ("a", "n0"), ("a", "n1")]),  # None scores last
])
def test_sort_records_orders_with_deterministic_ties(order_by, expected):
    assert [(r.key, r.namespace) for r in sort_records(_records(), order_by)] == expected


def test_run_filters_sorts_then_applies_offset_and_limit():
    recs = _records()
    assert [r.value for r in run(recs, Query(filter={"k": 1}))] == [1, 3]
    assert [r.value for r in run(recs, Query(order_by="-version", limit=2, offset=1))] == [1, 3]
    assert run(recs, Query(limit=0)) == []
    assert run(recs, Query(offset=4)) == []
    assert [r.value for r in run(recs, Query(pattern="[ab]", text="2"))] == [2]
    assert [r.value for r in run(recs, Query(min_score=0.5))] == [1, 3]
    assert run(iter(recs), Query(limit=100)) == sort_records(recs, None)


def test_run_on_a_key_ordered_stream_stops_after_offset_plus_limit() -> None:
    from memcluster.model import Query, Record
    from memcluster.query import run

    consumed: list[str] = []

    def stream():
        for i in range(100):
            consumed.append(f"k{i:03d}")
            yield Record(key=f"k{i:03d}", value=i, metadata={"even": i % 2 == 0})

    query = Query(filter={"even": True}, limit=3, offset=2)
    got = run(stream(), query, key_ordered=True)
    assert [r.key for r in got] == ["k004", "k006", "k008"]
    assert len(consumed) == 9  # stopped at the fifth match
    assert [r.key for r in run(stream(), query)] == [r.key for r in got]
    ordered = Query(filter={"even": True}, limit=3, order_by="-key")
    assert [r.key for r in run(stream(), ordered, key_ordered=True)] == ["k098", "k096", "k094"]
