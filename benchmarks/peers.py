"""The agent-fleet workload on the stores memcluster is compared to, for `benchmarks/harness.py`.

Each adapter gives `_Fleet` the same four coroutines (setup(k), retrieve, store, search;
optionally close): `RedisAgentOps` (redis-py asyncio, one hash per agent),
`LangGraphAgentOps` (LangGraph's in-process `InMemoryStore`) and `DictAgentOps` (a
hand-written Ray actor holding one dict per agent namespace, `NsDictStore`: the raw-Ray
ceiling for the same workload). `seed_items(a)` is every store's starting data for agent a.
"""

from __future__ import annotations

import random
from typing import Any

KEYS_PER_AGENT = 20


def seed_items(a: int) -> list[tuple[str, dict[str, Any]]]:
    return [(f"m{i}", {"text": f"memory {a} seed {i}", "pad": "x" * 60})
            for i in range(KEYS_PER_AGENT)]




class RedisAgentOps:
    """redis-py used directly: one hash per agent namespace, msgpack values."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.client: Any = None
        self.prefix = f"memcluster-bench:{random.randrange(1 << 30)}:"

    async def setup(self, k: int) -> None:
        import msgpack
        import redis.asyncio as aredis

        if self.client is None:
            self.client = aredis.Redis.from_url(self.url, max_connections=512)
        for a in range(k):
            await self.client.hset(self.prefix + f"agent-{a}", mapping={
                key: msgpack.packb(v) for key, v in seed_items(a)})

    async def retrieve(self, ns: str, key: str) -> Any:
        import msgpack

        raw = await self.client.hget(self.prefix + ns, key)
        return None if raw is None else msgpack.unpackb(raw)

    async def store(self, ns: str, key: str, value: Any) -> Any:
        import msgpack

        return await self.client.hset(self.prefix + ns, key, msgpack.packb(value))

    async def search(self, ns: str, text: str) -> Any:
        import msgpack

        found = await self.client.hgetall(self.prefix + ns)
        hits = []
        for key, raw in sorted(found.items()):
            value = msgpack.unpackb(raw)
            if text in str(value.get("text", "")).lower():
                hits.append((key, value))
        return hits[:10]

    async def close(self) -> None:
        if self.client is not None:
            keys = [k async for k in self.client.scan_iter(match=self.prefix + "*")]
            if keys:
                await self.client.delete(*keys)
            await self.client.aclose()


class LangGraphAgentOps:
    def __init__(self) -> None:
        from langgraph.store.memory import InMemoryStore

        self.store_ = InMemoryStore()

    async def setup(self, k: int) -> None:
        for a in range(k):
            for key, value in seed_items(a):
                await self.store_.aput(("agents", f"agent-{a}"), key, value)

    async def retrieve(self, ns: str, key: str) -> Any:
        return await self.store_.aget(("agents", ns), key)

    async def store(self, ns: str, key: str, value: Any) -> Any:
        return await self.store_.aput(("agents", ns), key, value)

    async def search(self, ns: str, text: str) -> Any:
        return await self.store_.asearch(("agents", ns), query=text, limit=10)


class NsDictStore:
    """The fleet's raw-Ray baseline: one dict per agent namespace behind one Ray actor (as
    redis-py keeps one hash per agent), searched by a substring of the value's text."""

    def __init__(self) -> None:
        self.data: dict[str, dict[str, Any]] = {}

    def put_many(self, ns: str, items: list[tuple[str, Any]]) -> int:
        self.data.setdefault(ns, {}).update(items)
        return len(items)

    def put(self, ns: str, key: str, value: Any) -> None:
        self.data.setdefault(ns, {})[key] = value

    def get(self, ns: str, key: str) -> Any:
        return self.data.get(ns, {}).get(key)

    def search(self, ns: str, text: str, limit: int) -> list[tuple[str, Any]]:
        found = sorted(self.data.get(ns, {}).items())
        return [(k, v) for k, v in found if text in str(v.get("text", "")).lower()][:limit]


class DictAgentOps:
    """The fleet over one `NsDictStore` actor, its calls awaited as Ray object refs."""

    def __init__(self) -> None:
        import ray

        self.actor = ray.remote(num_cpus=0)(NsDictStore).remote()

    async def setup(self, k: int) -> None:
        for a in range(k):
            await self.actor.put_many.remote(f"agent-{a}", seed_items(a))

    async def retrieve(self, ns: str, key: str) -> Any:
        return await self.actor.get.remote(ns, key)

    async def store(self, ns: str, key: str, value: Any) -> Any:
        return await self.actor.put.remote(ns, key, value)

    async def search(self, ns: str, text: str) -> Any:
        return await self.actor.search.remote(ns, text, 10)

    async def close(self) -> None:
        import ray

        ray.kill(self.actor)
