"""The async client on a real cluster: coalesced Ray calls, dedupe, order, cancellation,
and the same answers as the sync path; plus the wire format's large-value path."""

from __future__ import annotations

import asyncio

import pytest

import memcluster as mc

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def mem(cluster):
    client = mc.connect(cluster.name)
    yield client
    client.close()


def test_concurrent_single_ops_become_one_call_per_shard(mem):
    async def main():  # type: ignore[no-untyped-def]
        before = mem.shard_calls
        records = await asyncio.gather(*(mem.astore(f"c{i}", {"i": i}, source="single",
                                                    namespace="co") for i in range(40)))
        return records, mem.shard_calls - before

    records, calls = asyncio.run(main())
    assert [r.value for r in records] == [{"i": i} for i in range(40)]
    assert calls <= 2  # the source has 2 shards and N=1: one call each at most
    assert mem.retrieve_many([f"c{i}" for i in range(40)], source="single",
                             namespace="co").keys() == {f"c{i}" for i in range(40)}


def test_identical_reads_are_deduplicated(mem):
    mem.store("hot", {"v": 1}, namespace="dd")

    async def main():  # type: ignore[no-untyped-def]
        before = mem.coalescer.deduped
        found = await asyncio.gather(*(mem.aretrieve("hot", namespace="dd") for _ in range(20)))
        return found, mem.coalescer.deduped - before

    found, deduped = asyncio.run(main())
    assert deduped == 19
    assert all(r == found[0] for r in found) and found[0].value == {"v": 1}


def test_per_key_order_under_concurrency_with_replication(mem):
    async def writer(w: int) -> list[int]:
        versions = []
        for i in range(5):
            rec = await mem.astore("ordered", [w, i], namespace="ord")
            versions.append(rec.version)
        return versions

    async def main():  # type: ignore[no-untyped-def]
        burst = await asyncio.gather(*(mem.astore("burst", i, namespace="ord")
                                       for i in range(10)))
        writers = await asyncio.gather(*(writer(w) for w in range(6)))
        return burst, writers

    burst, writers = asyncio.run(main())
    # one tick's writes to one key apply in the order they were made
    assert [r.version for r in burst] == list(range(1, 11))
    assert mem.retrieve("burst", namespace="ord").value == 9
    for versions in writers:  # each writer's own writes of a key land in its order
        assert versions == sorted(versions)
    assert sorted(v for vs in writers for v in vs) == list(range(1, 31))


def test_a_cancelled_op_is_not_sent(mem):
    async def main():  # type: ignore[no-untyped-def]
        doomed = asyncio.ensure_future(mem.astore("never", 1, namespace="cx"))
        kept = asyncio.ensure_future(mem.astore("kept", 1, namespace="cx"))
        await asyncio.sleep(0)  # both requests are queued; the flush has not run yet
        doomed.cancel()
        await kept
        return doomed

    doomed = asyncio.run(main())
    assert doomed.cancelled()
    assert mem.retrieve("never", namespace="cx") is None
    assert mem.retrieve("kept", namespace="cx").value == 1


def test_async_answers_equal_sync_answers(mem):
    mem.store_many([(f"doc{i}", {"text": f"note {i}"}, {"metadata": {"n": i}})
                    for i in range(12)], namespace="eq")

    async def main():  # type: ignore[no-untyped-def]
        return await asyncio.gather(
            mem.aretrieve("doc3", namespace="eq"),
            mem.aretrieve("missing", namespace="eq"),
            mem.asearch("note 1", namespace="eq"),
            mem.acount(namespace="eq"),
            mem.aexists("doc4", namespace="eq"),
            mem.aretrieve_many(["doc1", "doc2", "nope"], namespace="eq"),
            mem.alist_keys(namespace="eq", limit=5))

    got = asyncio.run(main())
    want = [mem.retrieve("doc3", namespace="eq"), mem.retrieve("missing", namespace="eq"),
            mem.search("note 1", namespace="eq"), mem.count(namespace="eq"),
            mem.exists("doc4", namespace="eq"),
            mem.retrieve_many(["doc1", "doc2", "nope"], namespace="eq"),
            mem.list_keys(namespace="eq", limit=5)]
    assert got == want
    with pytest.raises(mc.errors.VersionConflict):
        asyncio.run(mem.astore("doc3", 0, namespace="eq", if_version=99))


@pytest.mark.parametrize("source", ["cache", "single"])
def test_large_values_round_trip_through_the_object_store(mem, source):
    big = {"blob": b"\x01" * (300 * 1024), "text": "y" * 1000}
    rec = mem.store("big", big, source=source, namespace="large")
    assert rec.value == big
    assert mem.retrieve("big", source=source, namespace="large").value == big
    many = mem.store_many([(f"m{i}", {"pad": "z" * 2000}) for i in range(100)],
                          source=source, namespace="large")  # a ~200 KiB batch
    assert [r.version for r in many] == [1] * 100
