"""Handoff: moving records between shards, page by page, through the shard contract.

Core functions: `export_pages(lookup)` (every page of one shard's `export`, ending early
when the shard dies, times out or is no longer there), `hand_off(handles, sources,
targets, epoch)` (rebalance: send each exported record to the shards `targets(record)`
names, one `accept_handoff` per target per page, sent concurrently) and `copy_into(...)`
(hydration: send a restarted shard the records of one replica that it should hold).

Decisions:
  * A source shard that dies or times out mid-export ends its pages quietly: every record
    it holds has replicas that are copied too (rebalance exports every old owner, and
    hydration reads every replica). `accept_handoff` errors do propagate: a target that
    missed records must make the rebalance abort or the hydration retry. The rejected
    alternative, failing the whole copy on a dead source, would let one dead replica block
    every scale and every hydration although its records live on elsewhere.
  * The source's handle is looked up again before every page (`lookup`), not held for the
    whole export: hydration runs on its own thread while the supervisor may replace or
    forget the source shard (a vanished source ends the pages); rebalance, which runs under
    the manager's lock, passes a strict `handles[src]`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping

from memcluster.cluster.control.hydration import Hydration
from memcluster.cluster.data.handle import ShardHandle
from memcluster.cluster.data.placement import Placement
from memcluster.errors import ShardDied, Timeout
from memcluster.model import Record

PAGE = 1000


def export_pages(lookup: Callable[[], ShardHandle | None],
                 page: int = PAGE) -> Iterator[list[Record]]:
    """Every page of a shard's export; `lookup()` is asked for its handle before each page.

    Ends when the export is done, when `lookup()` returns None (the shard is gone) or when
    the shard dies or times out (its records' replicas hold them too).
    """
    cursor = None
    while True:
        handle = lookup()
        if handle is None:
            return
        try:
            records, cursor = handle.control("export", cursor, page).result()
        except (ShardDied, Timeout):
            return
        yield records
        if cursor is None:
            return


def hand_off(handles: Mapping[str, ShardHandle], sources: Iterable[str],
             targets: Callable[[Record], list[str]], epoch: int | None
             ) -> dict[str, set[tuple[str, str]]]:
    """Export every record of `sources`; hand each to `targets(record)`. -> keys per target."""
    copied: dict[str, set[tuple[str, str]]] = {}
    for src in sources:
        for records in export_pages(lambda src=src: handles[src]):
            batches: dict[str, list[Record]] = {}
            for r in records:
                for t in targets(r):
                    batches.setdefault(t, []).append(r)
            pendings = [(t, handles[t].control("accept_handoff", epoch, recs))
                        for t, recs in batches.items()]
            for t, pending in pendings:
                pending.result()
                copied.setdefault(t, set()).update((r.namespace, r.key) for r in batches[t])
    return copied


def copy_into(handles: Mapping[str, ShardHandle], handle: ShardHandle, src: str,
              hyd: Hydration, placement: Placement, epoch: int | None) -> None:
    """Copy the records of `src` that `hyd.shard_id` should hold (a dead `src` is skipped:
    its keys' other replicas are read too)."""
    sid = hyd.shard_id
    for records in export_pages(lambda: handles.get(src)):
        mine = [r for r in records if sid in placement.preference(r.key, r.namespace)]
        if mine:
            handle.control("accept_handoff", epoch, mine).result()
        hyd.page_copied(len(mine))


__all__ = ["PAGE", "copy_into", "export_pages", "hand_off"]
