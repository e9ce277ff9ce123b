"""The client's calls to the manager: Ray's errors come out as ours, and a ring re-read that
fails while the manager restarts is retried by the router instead of ending the operation.

No Ray cluster: `ray.get` is replaced by a scripted one, shards are in-process cores.
"""

from __future__ import annotations

from typing import Any

import pytest
import ray
from ray import exceptions as rex

from memcluster.cluster.data.client import ClientDirectory
from memcluster.cluster.data.local import local_shards
from memcluster.cluster.data.placement import Placement
from memcluster.cluster.data.ring import Ring
from memcluster.cluster.data.router import Router
from memcluster.cluster.data.shard import ShardCore
from memcluster.cluster.retry import Retry
from memcluster.cluster.session import ManagerHandle
from memcluster.errors import (
    InternalError,
    MemclusterError,
    ShardDied,
    SourceUnavailable,
    Timeout,
    TransientError,
    UnknownSource,
)
from memcluster.model import Record
from memcluster.ops import RetrieveOp, StoreOp


class _Actor:
    """Stands in for the manager's actor handle: `<method>.remote(*args)` -> (method, args)."""

    def __getattr__(self, method: str) -> Any:
        class _Method:
            @staticmethod
            def remote(*args: Any) -> tuple[str, tuple]:
                return (method, args)

        return _Method()


def _task_error(cause: BaseException) -> rex.RayTaskError:
    return rex.RayTaskError("routing_table", "Traceback (most recent call last): ...", cause)


@pytest.mark.parametrize(("raised", "expected"), [
    (rex.ActorUnavailableError("restarting", None), SourceUnavailable),
    (rex.ActorDiedError(), SourceUnavailable),
    (rex.RayActorError(), SourceUnavailable),
    (rex.GetTimeoutError("slow"), Timeout),
    (_task_error(UnknownSource("no such source")), UnknownSource),
])
def test_manager_link_turns_ray_errors_into_ours(monkeypatch, raised, expected):
    def get(ref: Any, timeout: float | None = None) -> Any:
        raise raised

    monkeypatch.setattr(ray, "get", get)
    with pytest.raises(expected) as info:
        ManagerHandle(_Actor(), "agents").call("routing_table", timeout=1.0)
    assert not isinstance(info.value, rex.RayError)
    assert "agents" in str(info.value) or expected is UnknownSource


def test_manager_link_lets_a_programming_error_through(monkeypatch):
    def get(ref: Any, timeout: float | None = None) -> Any:
        raise _task_error(ZeroDivisionError("bug"))

    monkeypatch.setattr(ray, "get", get)
    with pytest.raises(InternalError, match="ZeroDivisionError: bug") as info:
        ManagerHandle(_Actor(), "agents").call("status")
    assert not isinstance(info.value, TransientError)   # not disguised as a transient one


class _Directory(ClientDirectory):
    """The real client directory, with in-process shards instead of Ray actors."""

    cores: dict[str, ShardCore]

    def link(self, sid: str) -> Any:
        self.calls += 1
        return local_shards(list(self.cores.values()))[sid]


def test_stale_ring_while_the_manager_restarts_is_retried_then_succeeds(monkeypatch):
    ids = ["c/0", "c/1"]
    cores = {sid: ShardCore("memory", {}, prefix=f"t/{sid}", shard_id=sid) for sid in ids}
    for core in cores.values():
        core.open()

    def info(version: int) -> dict[str, Any]:
        return {"sources": {"c": {"ring": Ring(version, ids).to_dict(), "replicas": 2,
                                  "write_quorum": 2}},
                "default": "c", "call_timeout": 0.5}

    # The manager answers v1, then is restarting (Ray's errors) for a while, then v2.
    script: list[Any] = [info(1), rex.ActorUnavailableError("restarting", None),
                         rex.ActorDiedError(), rex.GetTimeoutError("slow"), info(2)]
    asked: list[str] = []

    def get(ref: Any, timeout: float | None = None) -> Any:
        asked.append(ref[0])
        step = script.pop(0) if len(script) > 1 else script[0]
        if isinstance(step, BaseException):
            raise step
        return step

    monkeypatch.setattr(ray, "get", get)
    directory = _Directory.__new__(_Directory)
    directory.cores = cores
    ClientDirectory.__init__(directory, "agents", ManagerHandle(_Actor(), "agents"))
    router = Router(directory, retry=Retry(deadline=5.0, delay=0.001, max_delay=0.01,
                                          retry_on=(TransientError, ShardDied)))
    for core in cores.values():            # the cluster moved on to ring 2
        core.set_placement(1, Placement("c", Ring(2, ids), 2, 2))

    (record,) = router.execute("c", [StoreOp.make("k", {"v": 1})])
    assert isinstance(record, Record) and record.version == 1
    assert directory.placement("c").ring.version == 2
    assert asked == ["routing_table"] * 5                 # every failed re-read was retried
    (found,) = router.execute("c", [RetrieveOp.make("k")])
    assert found.value == {"v": 1}


def test_a_manager_down_past_the_deadline_fails_with_our_transient_error(monkeypatch):
    ids = ["c/0"]
    cores = {"c/0": ShardCore("memory", {}, prefix="t/d", shard_id="c/0")}
    cores["c/0"].open()
    first = {"sources": {"c": {"ring": Ring(1, ids).to_dict(), "replicas": 1,
                               "write_quorum": 1}}, "default": "c", "call_timeout": 0.1}
    answers: list[Any] = [first]

    def get(ref: Any, timeout: float | None = None) -> Any:
        if answers:
            return answers.pop()
        raise rex.ActorUnavailableError("restarting", None)

    monkeypatch.setattr(ray, "get", get)
    directory = _Directory.__new__(_Directory)
    directory.cores = cores
    ClientDirectory.__init__(directory, "agents", ManagerHandle(_Actor(), "agents"))
    router = Router(directory, retry=Retry(deadline=0.05, delay=0.001, max_delay=0.005,
                                          retry_on=(TransientError, ShardDied)))
    cores["c/0"].set_placement(1, Placement("c", Ring(2, ids), 1, 1))
    (result,) = router.execute("c", [StoreOp.make("k", 1)])
    assert isinstance(result, SourceUnavailable) and isinstance(result, MemclusterError)


def test_a_dead_shard_while_the_manager_is_down_keeps_the_cached_ring(monkeypatch):
    ids = ["c/0", "c/1"]
    answers: list[Any] = [{"sources": {"c": {"ring": Ring(3, ids).to_dict(), "replicas": 2,
                                             "write_quorum": 1}}, "default": "c"}]

    def get(ref: Any, timeout: float | None = None) -> Any:
        if answers:
            return answers.pop()
        raise rex.ActorDiedError()

    monkeypatch.setattr(ray, "get", get)
    directory = ClientDirectory("agents", ManagerHandle(_Actor(), "agents"))
    directory.forget("c/0")             # re-reading fails: Ray's error neither leaks nor
    assert directory.placement("c").ring.version == 3   # stops routing on the cache


def test_a_manager_lost_during_a_non_idempotent_call_is_an_unknown_outcome() -> None:
    """scale() whose manager dies mid-call cannot say whether the change happened."""
    import ray.exceptions as rex

    from memcluster.cluster.session import ManagerHandle
    from memcluster.errors import SourceUnavailable, UnknownOutcome

    class _Method:
        def __init__(self, exc: Exception) -> None:
            self.exc = exc

        def remote(self, *args: object) -> object:
            raise self.exc

    class _Actor:
        def __init__(self, exc: Exception) -> None:
            self.scale = self.status = _Method(exc)

    lost = rex.ActorUnavailableError("gone", b"\x00" * 16)
    with pytest.raises(UnknownOutcome):
        ManagerHandle(_Actor(lost), "c").call("scale", "cache", 4, idempotent=False)
    with pytest.raises(SourceUnavailable):
        ManagerHandle(_Actor(lost), "c").call("status")
