"""A linearizability checker for a CAS counter register, per key (Wing & Gong, with Lowe's
memoisation, as Knossos and Porcupine do). Written for these tests; shared by the
simulator (`tests/sim`) and the chaos suite.

Core types: `Call` (one operation as a client saw it: invoke and complete times, kind,
argument, outcome, result), `check(calls) -> Verdict` (per key: linearizable or the
smallest failing key's explanation) and `counter_check(calls, final)`.

The model: each key holds an integer, 0 when absent, that only ever grows by one:
  * "read" -> the value;
  * "cas" with argument n: if the value is n it becomes n + 1 ("ok"), else nothing
    happens ("fail"): the workload's compare-and-set on the version it read with n, which
    is the same test because every write adds one (no ABA);
  * "incr" -> the new value (an `update(+1)`).
An "unknown" outcome (UnknownOutcome, QuorumNotReached, a lost reply) may take effect at
any moment after its invocation, or never: it is given an infinite completion time and
no constraint on its result, so the search may linearize it last, where it changes
nothing observed. "aborted" calls (refused before they applied: a transient error for a
call that was never sent) and unknown reads are dropped; a "fail"ed cas (VersionConflict)
stays: it observed that the value was not n. The search is exponential in the worst case,
so histories are kept short per key (the workload spreads over many keys).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

OK, FAIL, UNKNOWN, ABORTED = "ok", "fail", "unknown", "aborted"


@dataclass(slots=True)
class Call:
    client: str
    key: str
    kind: str                    # "read" | "cas" | "incr"
    invoke: float
    complete: float | None = None
    outcome: str | None = None   # OK | FAIL | UNKNOWN | ABORTED
    arg: int | None = None       # cas: the value it expects
    result: int | None = None    # read: the value; incr: the new value


@dataclass
class Verdict:
    keys: int = 0
    calls: int = 0
    violations: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations


def _step(state: int, call: Call) -> tuple[bool, int]:
    """Can `call` take effect on `state`? -> (possible, the state after it)."""
    kind, outcome = call.kind, call.outcome
    if kind == "read":
        return call.result == state, state
    if kind == "incr":
        if outcome == UNKNOWN:
            return True, state + 1
        return call.result == state + 1, state + 1
    if kind == "cas":
        if outcome == OK:
            return state == call.arg, state + 1
        if outcome == FAIL:
            return state != call.arg, state
        return True, state + 1 if state == call.arg else state
    raise ValueError(f"unknown call kind {kind!r}")


def linearizable(calls: Sequence[Call], initial: int = 0) -> bool:
    """Wing & Gong's search over one key's history (calls with an outcome)."""
    ops = [c for c in calls if c.outcome in (OK, FAIL)
           or (c.outcome == UNKNOWN and c.kind != "read")]
    if not ops:
        return True
    # Entries: (time, is_return, op index); calls sort before returns at the same time.
    entries: list[tuple[float, int, int]] = []
    for i, c in enumerate(ops):
        end = math.inf if c.outcome == UNKNOWN or c.complete is None else c.complete
        entries.append((c.invoke, 0, i))
        entries.append((end, 1, i))
    entries.sort()
    n = len(entries)
    nxt = list(range(1, n + 1))
    prv = list(range(-1, n - 1))
    match = [0] * n                      # a call entry -> its return entry
    where: dict[int, int] = {}
    for pos, (_t, is_ret, i) in enumerate(entries):
        if is_ret:
            match[where[i]] = pos
        else:
            where[i] = pos
    head = -1                            # sentinel before the first entry
    nxt_head = 0

    def first() -> int:
        return nxt_head

    def lift(pos: int) -> None:
        nonlocal nxt_head
        for p in (pos, match[pos]):
            a, b = prv[p], nxt[p]
            if a == head:
                nxt_head = b
            else:
                nxt[a] = b
            if b < n:
                prv[b] = a

    def unlift(pos: int) -> None:
        nonlocal nxt_head
        for p in (match[pos], pos):
            a, b = prv[p], nxt[p]
            if a == head:
                nxt_head = p
            else:
                nxt[a] = p
            if b < n:
                prv[b] = p

    state = initial
    linearized = 0
    cache: set[tuple[int, int]] = {(0, initial)}
    stack: list[tuple[int, int]] = []
    entry = first()
    while nxt_head < n:
        if entry >= n:                   # walked off the end: backtrack
            if not stack:
                return False
            entry, state = stack.pop()
            linearized &= ~(1 << entries[entry][2])
            unlift(entry)
            entry = nxt[entry]
            continue
        _t, is_ret, i = entries[entry]
        if not is_ret:
            possible, after = _step(state, ops[i])
            key = (linearized | (1 << i), after)
            if possible and key not in cache:
                cache.add(key)
                stack.append((entry, state))
                state, linearized = after, key[0]
                lift(entry)
                entry = first()
            else:
                entry = nxt[entry]
        else:                            # an op returned before any order explained it
            if not stack:
                return False
            entry, state = stack.pop()
            linearized &= ~(1 << entries[entry][2])
            unlift(entry)
            entry = nxt[entry]
    return True


def check(calls: Iterable[Call]) -> Verdict:
    """Check every key's history; a violation names the key and its calls."""
    by_key: dict[str, list[Call]] = defaultdict(list)
    for c in calls:
        if c.outcome is not None:
            by_key[c.key].append(c)
    verdict = Verdict(keys=len(by_key), calls=sum(len(v) for v in by_key.values()))
    for key, history in sorted(by_key.items()):
        if not linearizable(history):
            lines = ", ".join(f"{c.client}:{c.kind}({c.arg})->{c.outcome}:{c.result}"
                              f"@[{c.invoke:.4f},{c.complete or math.inf:.4f}]"
                              for c in sorted(history, key=lambda c: c.invoke))
            verdict.violations.append(f"{key}: not linearizable: {lines}")
    return verdict


def counter_check(calls: Iterable[Call], final: Mapping[str, int]) -> list[str]:
    """Each key's final value is its acknowledged increments plus at most its unknown
    ones (cas ok and incr ok count as acknowledged)."""
    acked: dict[str, int] = defaultdict(int)
    unknown: dict[str, int] = defaultdict(int)
    for c in calls:
        if c.kind in ("cas", "incr"):
            if c.outcome == OK:
                acked[c.key] += 1
            elif c.outcome == UNKNOWN:
                unknown[c.key] += 1
    problems = []
    for key in set(acked) | set(unknown) | set(final):
        value = final.get(key, 0)
        if not acked[key] <= value <= acked[key] + unknown[key]:
            problems.append(f"{key}: final {value}, acknowledged {acked[key]}, unknown "
                            f"{unknown[key]}")
    return sorted(problems)


__all__ = ["ABORTED", "FAIL", "OK", "UNKNOWN", "Call", "Verdict", "check", "counter_check",
           "linearizable"]
