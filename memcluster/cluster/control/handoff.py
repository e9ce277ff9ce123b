"""Handoff: copying records between shards, page by page, where a timeout is never "done".

Core functions: `export_pages(lookup, retry)` (every page of one shard's export),
`hand_off(handles, sources, targets, epoch, retry)` (rebalance: send each record to the
shards `targets(record)` names; returns what each target received), `verify(handles,
copied, retry)` (ask every target to confirm it holds what it was sent) and
`copy_into(...)` (hydration: copy one source's records that a recovering shard holds).

The rules (the control-plane contract for every copy):
  * A copy from a source is complete only when the source answered a page with cursor
    None ("no more pages"). A page that times out, or a source that is busy, is asked
    again with the same cursor, with backoff, until the copy's `Retry` deadline; past it
    the copy fails (`CopyFailed`). Never is a failed page treated as the end.
  * A source that died, or was replaced by a new incarnation between two pages (its
    cursor means nothing to the new one), ends the copy with `SourceLost`: rebalance rolls
    back; hydration starts that source over with its replacement.
  * A target that refuses or misses records makes the copy fail; `accept_handoff` keeps the
    higher version, so sending a page twice is harmless.
The rejected alternative (the previous one): ending a source's pages quietly on a timeout
or death and counting on other replicas, which let a scale drop the only copy of a key.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from memcluster.cluster.control.hydration import Hydration
from memcluster.cluster.data.contract import EXPORT_PAGE, EXPORT_PAGE_BYTES, ShardControl
from memcluster.cluster.data.placement import Placement
from memcluster.cluster.retry import Retry
from memcluster.errors import (
    MemclusterError,
    ShardDied,
    ShardUnavailable,
    SourceUnavailable,
    Timeout,
)
from memcluster.model import Record

Lookup = Callable[[], ShardControl | None]
Copied = dict[str, dict[tuple[str, str], int]]   # target -> (namespace, key) -> version
PAGE_RETRY_ON = (Timeout, ShardUnavailable)


class CopyFailed(SourceUnavailable):
    """A copy could not complete before its deadline (a source or target kept timing out,
    or a target did not confirm what it was sent). Nothing was dropped; retry later."""


class SourceLost(SourceUnavailable):
    """The source of a copy died, or was replaced, before its last page."""


def export_pages(lookup: Lookup, retry: Retry, *, name: str = "source",
                 page: int = EXPORT_PAGE, page_bytes: int = EXPORT_PAGE_BYTES,
                 fence: tuple[str, str] | None = None) -> Iterator[list[Record]]:
    """Every page of one shard's export, the last one ending with cursor None.

    `lookup()` gives the source's current handle before each page; None or a different
    handle than the first (a new incarnation) raises `SourceLost`, as does `ShardDied`.
    A timed-out or refused page is asked again (same cursor) under `retry`.
    """
    first = lookup()
    if first is None:
        raise SourceLost(f"{name} is not running")
    cursor: str | None = None
    while True:
        handle = lookup()
        if handle is not first:
            raise SourceLost(f"{name} was replaced during the copy")
        records, cursor = _retrying(retry, lambda h=handle, c=cursor: h.export(
            c, page, page_bytes, fence).result(), name)
        yield records
        if cursor is None:
            return


def _retrying(retry: Retry, fn: Callable[[], Any], what: str) -> Any:
    """`fn()` under `retry` for timeouts and busy answers; death is `SourceLost`."""
    try:
        return retry.run(fn)
    except ShardDied as exc:
        raise SourceLost(f"{what} died during the copy") from exc
    except PAGE_RETRY_ON as exc:
        raise CopyFailed(f"{what} did not answer in time: {exc}") from exc


def hand_off(handles: Mapping[str, ShardControl], sources: Iterable[str],
             targets: Callable[[Record], list[str]], epoch: int, retry: Retry) -> Copied:
    """Export every record of `sources`; hand each to `targets(record)` (one
    `accept_handoff` per target per page, concurrently). -> what each target got."""
    copied: Copied = {}
    for src in sources:
        for records in export_pages(lambda src=src: handles.get(src), retry,
                                    name=f"shard {src}"):
            batches: dict[str, list[Record]] = {}
            for r in records:
                for t in targets(r):
                    batches.setdefault(t, []).append(r)
            _accept(handles, batches, epoch, retry)
            for t, recs in batches.items():
                got = copied.setdefault(t, {})
                for r in recs:
                    where = (r.namespace, r.key)
                    got[where] = max(got.get(where, 0), r.version)
    return copied


def _accept(handles: Mapping[str, ShardControl], batches: Mapping[str, list[Record]],
            epoch: int, retry: Retry) -> None:
    """Send each target its batch (all at once), then wait for every answer, even after a
    failure: no copy may land after the caller gave up and cleaned up (rolled back)."""
    pendings = [(t, handles[t].accept_handoff(epoch, recs)) for t, recs in batches.items()]
    failure: BaseException | None = None
    for t, pending in pendings:
        try:
            pending.result()
        except PAGE_RETRY_ON:       # installing twice keeps the higher version: resend
            try:
                _retrying(retry, lambda t=t: handles[t].accept_handoff(epoch, batches[t])
                          .result(), f"shard {t}")
            except SourceUnavailable as exc:
                failure = failure or exc
        except ShardDied as exc:
            failure = failure or CopyFailed(f"shard {t} died while receiving a handoff")
            failure.__cause__ = exc
        except MemclusterError as exc:
            failure = failure or exc
    if failure is not None:
        raise failure


def verify(handles: Mapping[str, ShardControl], copied: Copied, retry: Retry,
           chunk: int = EXPORT_PAGE) -> None:
    """Every target confirms it holds each record it was sent (that version or newer,
    or deleted since); `CopyFailed` naming the first gap otherwise."""
    for target, keys in copied.items():
        items = [(ns, key, version) for (ns, key), version in keys.items()]
        for i in range(0, len(items), chunk):
            part = items[i:i + chunk]
            missing = _retrying(retry, lambda t=target, p=part: handles[t].holds(p).result(),
                                f"shard {target}")
            if missing:
                ns, key = missing[0]
                raise CopyFailed(f"shard {target} is missing {len(missing)} moved record(s), "
                                 f"e.g. {key!r} in namespace {ns!r}")


def copy_into(handles: Mapping[str, ShardControl], target: ShardControl, src: str,
              hyd: Hydration, placement: Placement, epoch: int, retry: Retry) -> None:
    """Copy to `target` every record of `src` that `hyd.shard_id` holds under `placement`,
    completely (see the rules in the module docstring)."""
    sid = hyd.shard_id
    for records in export_pages(lambda: handles.get(src), retry, name=f"shard {src}",
                                fence=(sid, hyd.incarnation)):
        mine = [r for r in records if sid in placement.preference(r.key, r.namespace)]
        if mine:
            try:
                _retrying(retry, lambda m=mine: target.accept_handoff(epoch, m).result(),
                          f"shard {sid}")
            except SourceLost as exc:       # the target itself died: not the source's fault
                raise ShardDied(f"shard {sid} died while hydrating") from exc
        hyd.page_copied(len(mine))


__all__ = [
    "Copied",
    "CopyFailed",
    "SourceLost",
    "copy_into",
    "export_pages",
    "hand_off",
    "verify",
]

