"""Consolidation on store: the nearest memories of the namespace and a policy decide
between add, update (merge) and skip; an LLM policy is driven by a scripted stand-in
chat model."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

import pytest

import memcluster as mc
from memcluster.consolidation import (
    Consolidation,
    Decision,
    LLMPolicy,
    ThresholdPolicy,
)
from memcluster.errors import ConfigError, UnsupportedQuery

OPTS = {"embedder": "hashing", "dimension": 384}


def manager(**consolidation):
    spec = mc.memory_source("facts", "vector", opts=OPTS, consolidation=consolidation or None)
    return mc.MemoryManager([spec, mc.memory_source("kv", "memory")])


def values(mem, namespace="a") -> dict[str, str]:
    return {r.key: r.value["text"] for r in mem.export(source="facts", namespace=namespace)}


def test_threshold_policy_adds_updates_and_skips():
    with manager(policy="threshold", update_above=0.8, skip_above=0.99,
                 min_similarity=0.5) as mem:
        first = mem.remember("k1", {"text": "Ada likes green tea in the morning"},
                             source="facts", namespace="a", metadata={"tags": ["drink"]})
        assert (first.action, first.record.key, first.neighbours) == ("add", "k1", [])
        same = mem.remember("k2", {"text": "Ada likes green tea in the morning"},
                            source="facts", namespace="a")
        assert (same.action, same.record.key) == ("skip", "k1")
        assert same.neighbours[0].score == pytest.approx(1.0, abs=1e-5)
        changed = mem.remember("k3", {"text": "Ada likes green tea in the evening"},
                               source="facts", namespace="a", metadata={"tags": ["habit"]})
        assert (changed.action, changed.record.key, changed.record.version) == ("update", "k1", 2)
        assert changed.record.metadata == {"tags": ["drink", "habit"]}
        other = mem.remember("k4", {"text": "The deploy failed on node seven"},
                             source="facts", namespace="a")
        assert other.action == "add"
        assert values(mem) == {"k1": "Ada likes green tea in the evening",
                               "k4": "The deploy failed on node seven"}
        # another namespace is not a neighbour
        assert mem.remember("k1", {"text": "Ada likes green tea in the evening"},
                            source="facts", namespace="b").action == "add"


def test_plain_store_is_consolidated_unless_told_otherwise():
    with manager(policy="threshold", update_above=0.8, skip_above=0.99) as mem:
        mem.store("k1", {"text": "Ada likes green tea in the morning"}, source="facts",
                  namespace="a")
        rec = mem.store("k2", {"text": "Ada likes green tea in the morning"}, source="facts",
                        namespace="a")
        assert rec.key == "k1"                                   # skipped: k1 holds it
        mem.store("k2", {"text": "Ada likes green tea in the morning"}, source="facts",
                  namespace="a", consolidate=False)
        mem.store("k3", {"text": "Ada likes green tea in the morning"}, source="facts",
                  namespace="a", if_version=0)                   # a CAS write is exact
        assert sorted(values(mem)) == ["k1", "k2", "k3"]
        with pytest.raises(ConfigError):
            mem.store("x", "y", source="kv", consolidate=True)


def test_a_policy_sees_the_new_memory_and_only_close_neighbours():
    seen = []

    class Recording:
        def decide(self, new, neighbours):
            seen.append((new.key, [(n.key, round(n.score, 2)) for n in neighbours]))
            return Decision("add")

    with manager() as mem:
        mem.set_consolidation("facts", Consolidation(Recording(), neighbours=2,
                                                     min_similarity=0.3))
        for i, text in enumerate(["red fox jumps", "red fox sleeps", "red fox eats",
                                  "quarterly tax report"]):
            mem.store(f"k{i}", text, source="facts", namespace="a")
        mem.store("k0", "red fox jumps high", source="facts", namespace="a")
    assert seen[0][0] == "k1" and [k for k, _ in seen[0][1]] == ["k0"]
    assert len(seen[2][1]) == 2                                 # capped at `neighbours`
    assert ("k3", []) not in seen                               # no neighbour: not asked
    assert all(key != "k0" for key, _ in seen[-1][1])           # its own key is excluded


def test_an_update_that_loses_a_race_looks_again_then_adds():
    with manager() as mem:
        mem.store("target", "the office opens at nine", source="facts", namespace="a")

        class Racing:
            """Decides to update, but another writer changes the target first."""

            calls = 0

            def decide(self, new, neighbours):
                Racing.calls += 1
                if Racing.calls <= limit:
                    mem.store("target", "the office opens at nine", source="facts",
                              namespace="a", consolidate=False, metadata={"n": Racing.calls})
                return Decision("update", "target", "the office opens at ten")

        mem.set_consolidation("facts", Consolidation(Racing(), min_similarity=0.5))
        limit = 1
        done = mem.remember("new", "the office opens at nine", source="facts", namespace="a")
        assert (done.action, done.record.key, Racing.calls) == ("update", "target", 2)
        limit, Racing.calls = 99, 0
        done = mem.remember("new", "the office opens at nine", source="facts", namespace="a")
        assert (done.action, done.record.key, Racing.calls) == ("add", "new", 3)


class ScriptedChat:
    """A stand-in chat model: answers from a script, records what it was asked."""

    def __init__(self, replies):
        self.replies = list(replies)
        self.asked: list[list[dict]] = []

    def __call__(self, messages):
        self.asked.append(messages)
        return self.replies.pop(0)


def openai_reply(content: str) -> dict:
    return {"choices": [{"message": {"role": "assistant", "content": content}}]}


def test_llm_policy_follows_the_model_and_never_loses_a_memory():
    chat = ScriptedChat([
        '{"action": "update", "target": "milk", "text": "Ada drinks oat milk now"}',
        openai_reply('```json\n{"action": "skip", "target": "milk"}\n```'),
        SimpleNamespace(choices=[SimpleNamespace(message=SimpleNamespace(
            content='{"action": "skip", "target": "not-a-neighbour"}'))]),
        "I think you should probably keep both.",
        openai_reply('{"action": "add"}'),
    ])
    with manager() as mem:
        mem.store("milk", {"text": "Ada prefers soy milk in her coffee", "who": "ada"},
                  source="facts", namespace="a")
        mem.set_consolidation("facts", Consolidation(LLMPolicy(chat), min_similarity=0.5))
        new = {"text": "Ada now prefers oat milk in her coffee", "who": "ada"}
        done = mem.remember("oat", new, source="facts", namespace="a")
        assert (done.action, done.record.key) == ("update", "milk")
        assert done.record.value == {"text": "Ada drinks oat milk now", "who": "ada"}
        system, user = chat.asked[0]
        assert system["role"] == "system" and '"skip"' in system["content"]
        payload = json.loads(user["content"])
        assert payload["new"] == {"key": "oat", "text": new["text"]}
        assert [e["key"] for e in payload["existing"]] == ["milk"]
        assert mem.remember("oat", new, source="facts", namespace="a").action == "skip"
        for expected in ("add", "add", "add"):      # bad target, prose, explicit add
            assert mem.remember(f"n{len(chat.asked)}", new, source="facts",
                                namespace="a").action == expected
        assert not chat.replies


def scripted_chat(messages):
    """A chat callable importable by dotted path (the config file form)."""
    existing = json.loads(messages[1]["content"])["existing"]
    return json.dumps({"action": "skip", "target": existing[0]["key"]})


def test_consolidation_from_a_config_file_and_bad_configs():
    config = {"sources": [{"name": "facts", "backend": "vector", "opts": OPTS,
                           "consolidation": {"policy": "llm", "min_similarity": 0.5,
                                             "chat": f"{__name__}:scripted_chat"}}]}
    with mc.MemoryManager.from_config(config) as mem:
        mem.store("a", "the red fox", source="facts")
        assert mem.store("b", "the red fox", source="facts").key == "a"
        assert [k for k in mem.list_keys(source="facts")] == ["a"]
    for block, field in (({"policy": "llm"}, "chat"), ({"neighbours": 0}, "neighbours"),
                         ({"min_similarity": 2}, "min_similarity"), ({"polcy": "x"}, "polcy")):
        with pytest.raises(ConfigError, match=field):
            mc.load_config({"sources": [{"name": "f", "backend": "vector",
                                         "consolidation": block}]})
    with pytest.raises(ConfigError, match="skip_above"):
        ThresholdPolicy(update_above=0.9, skip_above=0.5)
    with manager() as mem, pytest.raises(UnsupportedQuery, match="similarity"):
        mem.set_consolidation("kv", {"policy": "threshold"})


def test_the_async_twin_consolidates_too():
    async def run():
        with manager(policy="threshold", update_above=0.8, skip_above=0.99) as mem:
            await mem.astore("k1", "Ada likes green tea in the morning", source="facts")
            done = await mem.aremember("k2", "Ada likes green tea in the morning",
                                       source="facts")
            return done.action
    assert asyncio.run(run()) == "skip"
