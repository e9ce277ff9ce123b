"""The supervisor with fake children and a fake clock: strategies, restart types, intensity,
escalation, ordered start and reverse shutdown, graceful stop then kill."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from memcluster.cluster.control.supervisor import (
    ROOT_SUPERVISION,
    SOURCE_SUPERVISION,
    CallbackTerminator,
    ChildSpec,
    SupervisionSpec,
    Supervisor,
    SupervisorGaveUp,
)
from memcluster.errors import ConfigError
from memcluster.testing.clock import FakeClock


@dataclass(eq=False)
class Handle:
    id: str
    incarnation: int
    graceful: bool = True


@dataclass
class World:
    """Fake children: records every start/stop/kill in order."""

    log: list[tuple[str, str]] = field(default_factory=list)
    incarnations: dict[str, int] = field(default_factory=dict)
    stubborn: set[str] = field(default_factory=set)     # these ignore a graceful stop
    failing: set[str] = field(default_factory=set)      # these fail to start
    timeouts: list[float] = field(default_factory=list)

    def spec(self, child_id: str, restart: str = "permanent", timeout: float = 5.0) -> ChildSpec:
        def start() -> Handle:
            if child_id in self.failing:
                raise RuntimeError(f"{child_id} cannot start")
            n = self.incarnations.get(child_id, 0) + 1
            self.incarnations[child_id] = n
            self.log.append(("start", child_id))
            return Handle(child_id, n, graceful=child_id not in self.stubborn)

        return ChildSpec(child_id, start, restart, timeout)  # type: ignore[arg-type]

    def terminator(self) -> CallbackTerminator:
        def stop(handle: Handle, timeout: float) -> bool:
            self.log.append(("stop", handle.id))
            self.timeouts.append(timeout)
            return handle.graceful

        def kill(handle: Handle) -> None:
            self.log.append(("kill", handle.id))

        return CallbackTerminator(stop, kill)

    def take(self) -> list[tuple[str, str]]:
        out, self.log = self.log, []
        return out


def make(world: World, ids: list[str], strategy: str = "one_for_one", *,
         restart: str = "permanent", intensity: int = 5, period: float = 30.0,
         clock: FakeClock | None = None, **kwargs: Any) -> Supervisor:
    return Supervisor([world.spec(i, restart) for i in ids], strategy,  # type: ignore[arg-type]
                      intensity, period, clock or FakeClock(), terminator=world.terminator(),
                      **kwargs)


def states(sup: Supervisor) -> dict[str, str]:
    return {c.id: c.state for c in sup.children()}


def test_start_is_in_order_and_shutdown_in_reverse_order() -> None:
    world = World()
    sup = make(world, ["a", "b", "c"])
    sup.start()
    assert world.take() == [("start", "a"), ("start", "b"), ("start", "c")]
    assert states(sup) == {"a": "running", "b": "running", "c": "running"}
    sup.shutdown()
    assert world.take() == [("stop", "c"), ("stop", "b"), ("stop", "a")]
    assert set(states(sup).values()) == {"stopped"}
    sup.child_exited("a", "crash")          # after shutdown exits change nothing
    assert world.take() == []


def test_graceful_stop_that_times_out_is_followed_by_kill_with_the_childs_timeout() -> None:
    world = World(stubborn={"b"})
    sup = Supervisor([world.spec("a", timeout=1.5), world.spec("b", timeout=2.5)],
                     clock=FakeClock(), terminator=world.terminator())
    sup.start()
    world.take()
    sup.shutdown()
    assert world.take() == [("stop", "b"), ("kill", "b"), ("stop", "a")]
    assert world.timeouts == [2.5, 1.5]
    assert [e.kind for e in sup.events() if e.child == "b"][-1] == "killed"


def test_a_failing_graceful_stop_also_ends_in_kill() -> None:
    log: list[str] = []

    def stop(handle: Any, timeout: float) -> bool:
        raise RuntimeError("actor unreachable")

    sup = Supervisor([ChildSpec("a", lambda: "h")], clock=FakeClock(),
                     terminator=CallbackTerminator(stop, lambda h: log.append(f"kill {h}")))
    sup.start()
    sup.shutdown()
    assert log == ["kill h"]


def test_one_for_one_restarts_only_the_crashed_child() -> None:
    world = World()
    sup = make(world, ["a", "b", "c"], "one_for_one")
    sup.start()
    world.take()
    old = sup.child("b").handle
    sup.child_exited("b", "crash")
    assert world.take() == [("start", "b")]
    assert sup.child("b").handle is not old and sup.child("b").handle.incarnation == 2
    assert {c.id: c.restarts for c in sup.children()} == {"a": 0, "b": 1, "c": 0}


def test_one_for_all_stops_the_others_in_reverse_then_starts_all_in_order() -> None:
    world = World()
    sup = make(world, ["a", "b", "c", "d"], "one_for_all")
    sup.start()
    world.take()
    sup.child_exited("b", "crash")
    assert world.take() == [("stop", "d"), ("stop", "c"), ("stop", "a"),
                            ("start", "a"), ("start", "b"), ("start", "c"), ("start", "d")]
    assert set(states(sup).values()) == {"running"}


def test_rest_for_one_restarts_the_child_and_those_started_after_it() -> None:
    world = World()
    sup = make(world, ["a", "b", "c", "d"], "rest_for_one")
    sup.start()
    world.take()
    sup.child_exited("b", "crash")
    assert world.take() == [("stop", "d"), ("stop", "c"),
                            ("start", "b"), ("start", "c"), ("start", "d")]
    assert sup.child("a").restarts == 0 and sup.child("d").restarts == 1


@pytest.mark.parametrize(("restart", "reason", "restarted"), [
    ("permanent", "normal", True), ("permanent", "shutdown", True), ("permanent", "crash", True),
    ("transient", "normal", False), ("transient", "shutdown", False),
    ("transient", "crash", True),
    ("temporary", "normal", False), ("temporary", "shutdown", False),
    ("temporary", "crash", False),
])
def test_restart_types(restart: str, reason: str, restarted: bool) -> None:
    world = World()
    sup = make(world, ["a", "b"], restart=restart)
    sup.start()
    world.take()
    sup.child_exited("a", reason)  # type: ignore[arg-type]
    assert (world.take() == [("start", "a")]) is restarted
    assert sup.child("a").state == ("running" if restarted else "exited")
    assert sup.child("b").state == "running"


def test_temporary_sibling_is_stopped_but_not_restarted_by_one_for_all() -> None:
    world = World()
    sup = Supervisor([world.spec("a"), world.spec("tmp", "temporary"), world.spec("c")],
                     "one_for_all", clock=FakeClock(), terminator=world.terminator())
    sup.start()
    world.take()
    sup.child_exited("a", "crash")
    assert world.take() == [("stop", "c"), ("stop", "tmp"), ("start", "a"), ("start", "c")]
    assert states(sup) == {"a": "running", "tmp": "stopped", "c": "running"}


def test_duplicate_or_stale_exit_reports_are_ignored() -> None:
    world = World()
    sup = make(world, ["a"])
    sup.start()
    first = sup.child("a").handle
    sup.child_exited("a", "crash", handle=first)
    world.take()
    sup.child_exited("a", "crash", handle=first)      # about the old incarnation
    assert world.take() == []
    assert sup.child("a").restarts == 1


def test_intensity_exceeded_stops_children_and_gives_up() -> None:
    world = World()
    given_up: list[Supervisor] = []
    sup = make(world, ["a", "b", "c"], intensity=2, period=10.0, on_give_up=given_up.append)
    sup.start()
    world.take()
    sup.child_exited("b", "crash")
    sup.child_exited("b", "crash")
    assert given_up == [] and sup.restarts_in_window() == 2
    world.take()
    sup.child_exited("b", "crash")           # the third restart within 10 s: too many
    assert world.take() == [("stop", "c"), ("stop", "a")]
    assert given_up == [sup]
    assert sup.state == "gave_up"
    assert "gave_up" in [e.kind for e in sup.events()]


def test_intensity_window_slides_with_the_clock() -> None:
    world = World()
    clock = FakeClock()
    given_up: list[Supervisor] = []
    sup = make(world, ["a"], intensity=2, period=10.0, clock=clock,
               on_give_up=given_up.append)
    sup.start()
    for _ in range(10):                       # 2 restarts every 10.5 s never exceed 2 in 10 s
        sup.child_exited("a", "crash")
        clock.advance(0.5)
        sup.child_exited("a", "crash")
        clock.advance(10.0)
    assert given_up == [] and sup.child("a").restarts == 20
    sup.child_exited("a", "crash")
    sup.child_exited("a", "crash")
    sup.child_exited("a", "crash")
    assert given_up == [sup]


@pytest.mark.parametrize(("last_gap", "gives_up"), [(0.0, True), (0.3, False)])
def test_restarts_count_until_they_are_period_old(last_gap: float, gives_up: bool) -> None:
    world = World()
    clock = FakeClock()
    given_up: list[Supervisor] = []
    sup = make(world, ["a"], intensity=2, period=10.0, clock=clock,
               on_give_up=given_up.append)
    sup.start()
    sup.child_exited("a", "crash")            # t = 0
    clock.advance(9.8)
    sup.child_exited("a", "crash")            # t = 9.8
    clock.advance(last_gap + 0.1)             # t = 9.9 (first still counts) or 10.2
    sup.child_exited("a", "crash")
    assert (given_up == [sup]) is gives_up
    assert sup.restarts_in_window() == (3 if gives_up else 2)


def test_zero_intensity_gives_up_on_the_first_restart_and_root_without_callback_raises() -> None:
    world = World()
    sup = make(world, ["a"], intensity=0)
    sup.start()
    with pytest.raises(SupervisorGaveUp):
        sup.child_exited("a", "crash")
    assert sup.child("a").state == "exited"


def test_a_child_that_fails_to_restart_counts_against_intensity() -> None:
    world = World()
    given_up: list[Supervisor] = []
    sup = make(world, ["a", "b"], intensity=3, on_give_up=given_up.append)
    sup.start()
    world.failing.add("b")
    sup.child_exited("b", "crash")            # 3 failed starts, then the 4th restart gives up
    assert given_up == [sup]
    assert [e.kind for e in sup.events()].count("start_failed") == 3


def test_initial_start_failure_stops_started_children_and_raises() -> None:
    world = World(failing={"c"})
    sup = make(world, ["a", "b", "c"])
    with pytest.raises(RuntimeError, match="c cannot start"):
        sup.start()
    assert world.take() == [("start", "a"), ("start", "b"), ("stop", "b"), ("stop", "a")]


def test_nested_supervisor_escalates_to_the_root_which_gives_up() -> None:
    world = World()
    clock = FakeClock()
    given_up: list[str] = []
    source = Supervisor([world.spec("s0"), world.spec("s1")], "one_for_one", 1, 30.0, clock,
                        name="cache", terminator=world.terminator())
    root = Supervisor([world.spec("router"), source.as_child()], "one_for_one", 1, 300.0,
                      clock, terminator=world.terminator(),
                      on_give_up=lambda s: given_up.append(s.name))
    root.start()
    assert world.take() == [("start", "router"), ("start", "s0"), ("start", "s1")]
    assert source.parent is root

    source.child_exited("s1", "crash")        # within the source's intensity
    assert world.take() == [("start", "s1")]
    source.child_exited("s1", "crash")        # source gives up -> root restarts the source
    assert world.take() == [("stop", "s0"), ("start", "s0"), ("start", "s1")]
    assert root.child("cache").restarts == 1 and source.state == "running"

    source.child_exited("s0", "crash")
    source.child_exited("s0", "crash")        # source gives up again -> root exceeds 1 in 300
    assert given_up == ["root"]
    assert root.state == "gave_up" and source.state == "gave_up"
    assert world.take()[-2:] == [("stop", "s1"), ("stop", "router")]


def test_add_and_remove_children_while_running() -> None:
    world = World()
    sup = make(world, ["a"], "rest_for_one")
    sup.start()
    sup.add_child(world.spec("b"))
    assert world.take() == [("start", "a"), ("start", "b")]
    sup.child_exited("a", "crash")
    assert world.take() == [("stop", "b"), ("start", "a"), ("start", "b")]
    sup.remove_child("b")
    assert world.take() == [("stop", "b")]
    assert [c.id for c in sup.children()] == ["a"]
    with pytest.raises(ValueError, match="already has"):
        sup.add_child(world.spec("a"))


def test_events_are_passed_to_the_callback() -> None:
    seen: list[str] = []
    world = World()
    sup = make(world, ["a"], on_event=lambda e: seen.append(f"{e.kind}:{e.child}"))
    sup.start()
    sup.child_exited("a", "crash")
    assert seen == ["starting:None", "started:a", "exited:a", "restarting:a", "started:a"]


def test_supervision_spec_from_dict() -> None:
    assert SupervisionSpec.from_dict(None) == SOURCE_SUPERVISION
    assert (SOURCE_SUPERVISION.intensity, SOURCE_SUPERVISION.period) == (5, 30.0)
    assert (ROOT_SUPERVISION.intensity, ROOT_SUPERVISION.period) == (3, 300.0)
    spec = SupervisionSpec.from_dict({"strategy": "rest_for_one", "period": 12})
    assert spec == SupervisionSpec("rest_for_one", 5, 12.0)
    assert SupervisionSpec.from_dict(spec.to_dict()) == spec
    sup = Supervisor.with_spec([], spec, clock=FakeClock())
    assert (sup.strategy, sup.intensity, sup.period) == ("rest_for_one", 5, 12.0)


@pytest.mark.parametrize(("data", "field_name"), [
    ({"strategy": "one_for_some"}, "sources[2].supervision.strategy"),
    ({"intensity": -1}, "sources[2].supervision.intensity"),
    ({"intensity": True}, "sources[2].supervision.intensity"),
    ({"intensity": 2.5}, "sources[2].supervision.intensity"),
    ({"period": 0}, "sources[2].supervision.period"),
    ({"period": "30s"}, "sources[2].supervision.period"),
    ({"periods": 3}, "sources[2].supervision.periods"),
    ([1, 2], "sources[2].supervision"),
])
def test_supervision_spec_errors_name_the_field(data: Any, field_name: str) -> None:
    with pytest.raises(ConfigError) as info:
        SupervisionSpec.from_dict(data, path="sources[2].supervision")
    assert str(info.value).startswith(f"{field_name}:")


# -- model test ------------------------------------------------------------------------

class SupervisorMachine(RuleBasedStateMachine):
    """Random exits and clock ticks against a model of which children must be running and
    when the supervisor must give up."""

    IDS = ("a", "b", "c", "d")

    def __init__(self) -> None:
        super().__init__()
        self.sup: Supervisor | None = None

    @initialize(strategy=st.sampled_from(["one_for_one", "one_for_all", "rest_for_one"]),
                types=st.lists(st.sampled_from(["permanent", "transient", "temporary"]),
                               min_size=4, max_size=4))
    def setup(self, strategy: str, types: list[str]) -> None:
        self.world = World()
        self.clock = FakeClock()
        self.gave_up = False
        self.strategy = strategy
        self.types = dict(zip(self.IDS, types, strict=True))
        self.sup = Supervisor([self.world.spec(i, self.types[i]) for i in self.IDS],
                              strategy, 3, 10.0, self.clock,  # type: ignore[arg-type]
                              terminator=self.world.terminator(),
                              on_give_up=lambda s: setattr(self, "gave_up", True))
        self.sup.start()
        self.running = set(self.IDS)
        self.restart_times: list[float] = []

    @precondition(lambda self: not self.gave_up)
    @rule(child=st.sampled_from(IDS), reason=st.sampled_from(["normal", "shutdown", "crash"]))
    def exit(self, child: str, reason: str) -> None:
        was_running = child in self.running
        self.sup.child_exited(child, reason)  # type: ignore[arg-type]
        if not was_running:
            return
        self.running.discard(child)
        kind = self.types[child]
        if kind == "temporary" or (kind == "transient" and reason != "crash"):
            return
        now = self.clock()
        self.restart_times = [t for t in self.restart_times if now - t <= 10.0] + [now]
        if len(self.restart_times) > 3:
            self.gave_up = True
            self.running.clear()
            return
        index = self.IDS.index(child)
        group = {"one_for_one": [child], "one_for_all": list(self.IDS),
                 "rest_for_one": list(self.IDS[index:])}[self.strategy]
        for other in group:
            if other == child or self.types[other] != "temporary":
                self.running.add(other)
            else:
                self.running.discard(other)

    @rule(seconds=st.sampled_from([0.5, 2.5, 3.0, 11.0]))
    def tick(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @invariant()
    def running_children_match_the_model(self) -> None:
        if self.sup is None:
            return
        assert {c.id for c in self.sup.children() if c.state == "running"} == self.running
        assert (self.sup.state == "gave_up") is self.gave_up


TestSupervisorMachine = SupervisorMachine.TestCase
TestSupervisorMachine.settings = settings(max_examples=60, stateful_step_count=30,
                                          deadline=None)
