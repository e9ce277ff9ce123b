"""The Ray session: joining the Ray that runs a cluster, and calling its manager actor.

Core pieces: `ray_address_for(name)` (where cluster `name` runs), `join(name)` (`ray.init`
once, to that address, in the cluster's Ray namespace), `joined(name)` (the same for the
length of a command), `ManagerHandle` (the one object that calls the manager actor) and
`translate(exc, ...)` (Ray's errors as ours; the shard handle uses it too, so the mapping
is written once).

Decisions:
- Finding a cluster: an explicit address, else `RAY_ADDRESS`, else the embedded state
  file (`$MEMCLUSTER_STATE_DIR/<name>.json`). Rejected alternative: `ray.init("auto")`,
  which silently joins whatever Ray happens to run on the machine.
- Ray's errors never leave this module's callers: an actor that Ray is restarting or that
  died, a call past its deadline and a task that raised come out as memcluster's typed
  errors. What "died" means differs by callee: a shard is gone for good (`ShardDied`),
  the manager is restarted by Ray (`SourceUnavailable`), so the caller says which.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from memcluster.cluster import names
from memcluster.cluster.embedded import find_ray_address, state_dir
from memcluster.errors import (
    InternalError,
    MemclusterError,
    NotFound,
    SourceUnavailable,
    Timeout,
    UnknownOutcome,
)
from memcluster.secrets import redact_text

ENV_RAY_ADDRESS = "RAY_ADDRESS"


def ray_address_for(name: str) -> str | None:
    """Where cluster `name` runs: $RAY_ADDRESS, else the embedded state file's live head."""
    return os.environ.get(ENV_RAY_ADDRESS) or find_ray_address(name)


def join(name: str, address: str | None = None) -> None:
    """`ray.init` to the Ray that runs cluster `name`, unless this process already joined.

    NotFound when nothing says where the cluster runs; SourceUnavailable when Ray there
    cannot be reached (one line, secrets redacted)."""
    import ray

    if ray.is_initialized():
        return
    address = address or ray_address_for(name)
    if address is None:
        raise NotFound(f"no cluster named {name!r}: nothing running is recorded in "
                       f"{state_dir()} and {ENV_RAY_ADDRESS} is not set")
    try:
        ray.init(address=address, namespace=names.ray_namespace(name), log_to_driver=False,
                 configure_logging=False)
    except (ConnectionError, RuntimeError) as exc:
        first = (redact_text(str(exc)).splitlines() or [type(exc).__name__])[0]
        raise SourceUnavailable(f"cannot reach Ray at {address}: {first}") from None


@contextlib.contextmanager
def joined(name: str) -> Iterator[ManagerHandle]:
    """The cluster's manager for the duration of a command; leaves Ray only if it joined it
    here (a process that was already connected, e.g. a test session, stays connected)."""
    import ray

    was = ray.is_initialized()
    try:
        join(name)
        yield ManagerHandle.find(name)
    finally:
        if not was and ray.is_initialized():
            ray.shutdown()


def translate(exc: BaseException, what: str, method: str, timeout: float | None, *,
              died: type[MemclusterError], unavailable: type[MemclusterError]
              ) -> BaseException:
    """Ray's error `exc` from calling `what`.`method` as a memcluster error.

    A memcluster error the callee raised comes out as itself; an actor being restarted is
    `unavailable`, a dead one `died`; a call past `timeout` is `Timeout`; any other Ray
    failure reaching it is `unavailable`. Anything that is not a Ray error is returned as is.
    """
    from ray import exceptions as rex

    if isinstance(exc, rex.RayTaskError):
        cause = getattr(exc, "cause", None)
        if isinstance(cause, MemclusterError):
            return cause
        first = (redact_text(str(cause)).splitlines() or [""])[0] if cause else ""
        return InternalError(f"{what} failed in {method}: {type(cause).__name__}: {first}")
    if isinstance(exc, rex.GetTimeoutError):
        return Timeout(f"{what} did not answer {method} in {timeout}s")
    if isinstance(exc, rex.ActorUnavailableError):
        return unavailable(f"{what} is unreachable now")
    if isinstance(exc, rex.RayActorError):
        return died(f"{what} died")
    if isinstance(exc, rex.RayError):
        return unavailable(f"{what} cannot be reached: {type(exc).__name__}")
    return exc


class ManagerHandle:
    """The one place callers reach the manager actor; Ray's errors come out as ours.

    A manager that Ray is restarting (`max_restarts=-1`) is unreachable or reported dead
    for a moment: `SourceUnavailable`; a call past `timeout`: `Timeout` (both transient).
    A memcluster error the manager raised comes out as itself. For a call that is not
    idempotent (`idempotent=False`, e.g. scale) a manager lost mid-call is `UnknownOutcome`:
    the restarted manager may have finished or rolled back the change, and only its
    status can tell.
    """

    def __init__(self, actor: Any, cluster: str) -> None:
        self.actor = actor
        self.cluster = cluster

    @classmethod
    def find(cls, cluster: str) -> ManagerHandle:
        """The manager actor of cluster `cluster` on the joined Ray (NotFound if none)."""
        import ray

        try:
            actor = ray.get_actor(names.manager_name(cluster),
                                  namespace=names.ray_namespace(cluster))
        except ValueError:
            raise NotFound(f"no memcluster cluster named {cluster!r} is running on this "
                           "Ray") from None
        return cls(actor, cluster)

    def call(self, method: str, *args: Any, timeout: float | None = None,
             idempotent: bool = True) -> Any:
        """`ray.get(manager.<method>.remote(*args), timeout=timeout)`, errors translated."""
        import ray

        try:
            return ray.get(getattr(self.actor, method).remote(*args), timeout=timeout)
        except Exception as exc:
            error = self._translate(exc, method, timeout)
            raised_by_manager = error is getattr(exc, "cause", None)
            if not idempotent and not raised_by_manager \
                    and isinstance(error, (SourceUnavailable, Timeout)):
                error = UnknownOutcome(
                    f"the manager of cluster {self.cluster!r} was lost during {method}: a "
                    "restarted manager finishes or rolls back the change; check status()")
            raise error from exc

    async def acall(self, method: str, *args: Any) -> Any:
        """The async form of `call` (awaits the Ray reference)."""
        try:
            return await getattr(self.actor, method).remote(*args)
        except Exception as exc:
            raise self._translate(exc, method, None) from exc

    def _translate(self, exc: Exception, method: str, timeout: float | None) -> BaseException:
        return translate(exc, f"the manager of cluster {self.cluster!r}", method, timeout,
                         died=SourceUnavailable, unavailable=SourceUnavailable)


__all__ = ["ENV_RAY_ADDRESS", "ManagerHandle", "join", "joined", "ray_address_for",
           "translate"]
