"""The linearizability checker itself: it must accept real orders and reject impossible
ones (a lost write, a stale read, a CAS that both won and lost, an effect applied twice)."""

from __future__ import annotations

from tests.lincheck import ABORTED, FAIL, OK, UNKNOWN, Call, check, counter_check


def c(client, kind, t0, t1, outcome=OK, arg=None, result=None):  # type: ignore[no-untyped-def]
    return Call(client, "k", kind, t0, t1, outcome, arg, result)


def test_sequential_history_is_linearizable():
    h = [c("a", "incr", 0, 1, result=1), c("b", "read", 2, 3, result=1),
         c("b", "cas", 4, 5, arg=1, result=2), c("a", "cas", 6, 7, FAIL, arg=1),
         c("a", "read", 8, 9, result=2)]
    assert check(h).ok
    assert counter_check(h, {"k": 2}) == []


def test_concurrent_calls_may_take_effect_in_either_order():
    h = [c("a", "incr", 0, 10, result=2), c("b", "incr", 1, 9, result=1),
         c("c", "read", 2, 8, result=1)]
    assert check(h).ok


def test_a_lost_acknowledged_write_is_caught():
    h = [c("a", "incr", 0, 1, result=1), c("b", "read", 2, 3, result=0)]
    assert not check(h).ok
    assert counter_check(h, {"k": 0})


def test_a_read_going_back_is_caught():
    h = [c("a", "incr", 0, 1, result=1), c("a", "incr", 2, 3, result=2),
         c("b", "read", 4, 5, result=2), c("b", "read", 6, 7, result=1)]
    assert not check(h).ok


def test_two_winners_of_one_cas_are_caught():
    h = [c("a", "cas", 0, 5, arg=0, result=1), c("b", "cas", 1, 6, arg=0, result=1)]
    assert not check(h).ok


def test_an_unknown_write_may_land_late_or_never_but_once():
    late = [c("a", "incr", 0, None, UNKNOWN), c("b", "read", 5, 6, result=0),
            c("b", "read", 7, 8, result=1)]
    assert check(late).ok
    assert counter_check(late, {"k": 1}) == [] and counter_check(late, {"k": 0}) == []
    twice = [c("a", "incr", 0, None, UNKNOWN), c("b", "read", 5, 6, result=2)]
    assert not check(twice).ok
    assert counter_check(twice, {"k": 2})


def test_aborted_calls_are_no_ops_but_a_failed_cas_is_an_observation():
    h = [c("a", "incr", 0, 1, ABORTED), c("b", "read", 2, 3, result=0)]
    assert check(h).ok
    wrong = [c("a", "cas", 0, 1, FAIL, arg=0), c("b", "read", 2, 3, result=0)]
    assert not check(wrong).ok          # it said the value was not 0, then 0 was read
