"""Consolidation: before a memory is stored, its nearest neighbours decide whether it is new.

    mem.set_consolidation("facts", Consolidation(ThresholdPolicy(update_above=0.85)))
    outcome = mem.remember("k9", {"text": "Ada now prefers oat milk"}, source="facts")
    outcome.action, outcome.record.key      # ("update", "k3"): k3 said she liked soy milk

Core types: `Decision` (what a policy says: add, update a target, or skip as a duplicate
of a target), `Consolidated` (what happened: the action, the record now stored, the
neighbours considered), the policies `ThresholdPolicy` and `LLMPolicy`, `Consolidation`
(a source's settings: policy, how many neighbours, how similar they must be) and
`steps`, the generator a `MemorySurface` drives to run it (so local, cluster, sync and
async share it).

How it runs: a semantic search of the same namespace for the new value's text (its
`text_field`) finds up to `neighbours` records with similarity >= `min_similarity` (the
key being written excluded). None found: the memory is added without asking the policy.
Otherwise the policy decides. An update writes the merged value to the target with
`if_version` set to the version the policy saw; if someone wrote the target meanwhile the
whole round runs again (at most `ROUNDS` times), and then the memory is added: a
consolidation never loses a memory. An update keeps the new TTL, or restarts the
target's own. A skip writes nothing and returns the target. A store with `if_version`
or `overwrite=False` says exactly what it wants and is never consolidated.

Decisions:
- **It runs in the caller, not in the shard.** A policy may call an LLM for seconds with
  the caller's credentials; inside a shard it would stall every other operation of that
  shard's mailbox and need the credentials on every node. The cost: the search and the
  write are two round trips, not one atomic step (hence the CAS on update).
- **A policy's answer is checked, never trusted**: an unknown action, a target that was
  not among the neighbours or an unparsable LLM reply falls back to "add".
"""

from __future__ import annotations

import importlib
import json
import logging
import re
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from memcluster.errors import ConfigError, MemclusterError, VersionConflict
from memcluster.logs import event, get_logger
from memcluster.model import Query, Record
from memcluster.ops import SearchOp, StoreOp

ACTIONS = ("add", "update", "skip")
ROUNDS = 3
CONFIG_KEYS = ("policy", "neighbours", "min_similarity", "update_above", "skip_above", "chat",
               "text_field")
_log = get_logger("consolidation")
_JSON_OBJECT = re.compile(r"\{.*\}", re.DOTALL)
_UNSET: Any = object()


@dataclass(frozen=True)
class Decision:
    """A policy's answer. `target`: the neighbour's key (update, skip). `value` and
    `metadata`: the merged record for an update (default: the new value; the target's
    metadata updated with the new one, tags united)."""

    action: str
    target: str | None = None
    value: Any = _UNSET
    metadata: dict[str, Any] | None = None


@dataclass(frozen=True)
class Consolidated:
    """What a consolidated store did: `action` (add, update, skip), `record` (the new
    record, the updated target, or the existing target a skip kept) and the neighbours."""

    action: str
    record: Record
    neighbours: list[Record] = field(default_factory=list)


class Policy(Protocol):
    """Decides for `new` (a Record not yet stored) given its `neighbours`, most similar
    first, each with its similarity in `score`."""

    def decide(self, new: Record, neighbours: Sequence[Record]) -> Decision: ...


class ThresholdPolicy:
    """Skip above `skip_above` (a near-exact duplicate), update the nearest above
    `update_above` (the same fact, restated: the new value replaces it unless `merge`
    says otherwise), add below."""

    def __init__(self, update_above: float = 0.85, skip_above: float = 0.95,
                 merge: Callable[[Any, Any], Any] | None = None) -> None:
        for name, value in (("update_above", update_above), ("skip_above", skip_above)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not -1 <= value <= 1:
                raise ConfigError(f"{name}: must be a number in [-1, 1], got {value!r}")
        if skip_above < update_above:
            raise ConfigError("skip_above: must be >= update_above")
        self.update_above = float(update_above)
        self.skip_above = float(skip_above)
        self.merge = merge

    def decide(self, new: Record, neighbours: Sequence[Record]) -> Decision:
        best = neighbours[0]
        score = best.score or 0.0
        if score >= self.skip_above:
            return Decision("skip", best.key)
        if score >= self.update_above:
            value = new.value if self.merge is None else self.merge(best.value, new.value)
            return Decision("update", best.key, value)
        return Decision("add")


SYSTEM_PROMPT = """You maintain the long-term memory of an AI agent. A new memory is about \
to be stored. Compare it with the existing memories (most similar first) and decide:
- "add": it is new information; keep it as a separate memory.
- "update": it corrects, revises or extends exactly one existing memory; give that \
memory's key as "target" and, as "text", one merged memory that keeps every fact that \
is still true.
- "skip": an existing memory already says the same; give its key as "target".
Answer with one JSON object and nothing else: \
{"action": "add" | "update" | "skip", "target": "<key>", "text": "<merged memory>"}"""


class LLMPolicy:
    """Asks a chat model. `chat(messages)` takes OpenAI-style messages
    ([{"role": "system" | "user", "content": str}]) and returns the reply: a str, an
    OpenAI-style response dict, or an object with `.choices[0].message.content` (the
    openai SDK's). A reply that is not a valid decision means "add"."""

    def __init__(self, chat: Callable[[list[dict[str, str]]], Any], *,
                 instructions: str = SYSTEM_PROMPT, text_field: str = "text") -> None:
        if not callable(chat):
            raise ConfigError(f"chat: must be callable, got {type(chat).__name__}")
        self.chat = chat
        self.instructions = instructions
        self.text_field = text_field

    def messages(self, new: Record, neighbours: Sequence[Record]) -> list[dict[str, str]]:
        payload = {"new": {"key": new.key, "text": text_of(new.value, self.text_field)},
                   "existing": [{"key": r.key, "text": text_of(r.value, self.text_field),
                                 "similarity": round(r.score or 0.0, 3)} for r in neighbours]}
        return [{"role": "system", "content": self.instructions},
                {"role": "user", "content": json.dumps(payload, ensure_ascii=False)}]

    def decide(self, new: Record, neighbours: Sequence[Record]) -> Decision:
        reply = _content(self.chat(self.messages(new, neighbours)))
        found = _JSON_OBJECT.search(reply or "")
        try:
            answer = json.loads(found.group()) if found else None
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            event(_log, "consolidation.unparsable", level=logging.WARNING,
                  reply_chars=len(reply or ""))
            return Decision("add")
        action, target, text = answer.get("action"), answer.get("target"), answer.get("text")
        if action == "update" and isinstance(text, str) and text:
            value = ({**new.value, self.text_field: text} if isinstance(new.value, dict)
                     else text)
            return Decision("update", target, value)
        return Decision(action if action in ACTIONS else "add", target)


def text_of(value: Any, text_field: str) -> str:
    """The text of a value as the vector backends embed it (`embedders.text_of`), imported
    on use so that importing memcluster does not import numpy."""
    from memcluster.backends.embedders import text_of as embedded_text

    return embedded_text(value, text_field)


def _content(reply: Any) -> str | None:
    """The text of a chat reply: a str, an OpenAI-style dict, or an SDK response object."""
    if isinstance(reply, str):
        return reply
    try:
        if isinstance(reply, Mapping):
            return reply["choices"][0]["message"]["content"]
        return reply.choices[0].message.content
    except (KeyError, IndexError, TypeError, AttributeError):
        return None


@dataclass(frozen=True)
class Consolidation:
    """A source's consolidation: the policy, how many neighbours it sees (`neighbours`)
    and how similar they must be to be shown at all (`min_similarity`, on the source's
    similarity score), and the field of a dict value that holds its text."""

    policy: Policy
    neighbours: int = 3
    min_similarity: float = 0.8
    text_field: str = "text"

    def __post_init__(self) -> None:
        if not callable(getattr(self.policy, "decide", None)):
            raise ConfigError("policy: must have a decide(new, neighbours) method")
        check_config({"neighbours": self.neighbours, "min_similarity": self.min_similarity,
                      "text_field": self.text_field}, "consolidation")

    @classmethod
    def from_config(cls, data: Mapping[str, Any], path: str = "consolidation"
                    ) -> Consolidation:
        """From a config file's `consolidation:` block (see `check_config`); imports the
        `chat` callable or policy class a dotted path names."""
        check_config(data, path)
        name = data.get("policy", "threshold")
        if name == "threshold":
            policy: Any = ThresholdPolicy(data.get("update_above", 0.85),
                                          data.get("skip_above", 0.95))
        elif name == "llm":
            policy = LLMPolicy(_import(data["chat"], f"{path}.chat"),
                               text_field=data.get("text_field", "text"))
        else:
            policy = _import(name, f"{path}.policy")()
        return cls(policy, data.get("neighbours", 3), data.get("min_similarity", 0.8),
                   data.get("text_field", "text"))


def check_config(data: Any, path: str) -> None:
    """Check a `consolidation:` block without importing anything; ConfigError names the
    field. Keys: policy (threshold | llm | a dotted path to a policy class), neighbours,
    min_similarity, update_above and skip_above (threshold), chat (llm: a dotted path to
    the chat callable), text_field."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: must be a mapping")
    unknown = sorted(set(data) - set(CONFIG_KEYS))
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(map(str, unknown))}; "
                          f"known: {', '.join(CONFIG_KEYS)}")
    policy = data.get("policy", "threshold")
    if not isinstance(policy, str) or not policy:
        raise ConfigError(f"{path}.policy: must be threshold, llm or a dotted path")
    if policy == "llm" and not isinstance(data.get("chat"), str):
        raise ConfigError(f"{path}.chat: the llm policy needs a dotted path to a chat callable")
    neighbours = data.get("neighbours", 3)
    if isinstance(neighbours, bool) or not isinstance(neighbours, int) or not 1 <= neighbours <= 50:
        raise ConfigError(f"{path}.neighbours: must be an int in 1..50")
    for key in ("min_similarity", "update_above", "skip_above"):
        value = data.get(key, 0.0)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not -1 <= value <= 1:
            raise ConfigError(f"{path}.{key}: must be a number in [-1, 1]")
    text_field = data.get("text_field", "text")
    if not isinstance(text_field, str) or not text_field:
        raise ConfigError(f"{path}.text_field: must be a non-empty str")


def _import(target: str, path: str) -> Any:
    module, _, attr = target.partition(":")
    if not attr:
        module, _, attr = target.rpartition(".")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(f"{path}: {target!r} cannot be imported: {exc}") from exc


def merge_metadata(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """The target's metadata updated with the new memory's; two tag lists are united."""
    merged = {**old, **new}
    if isinstance(old.get("tags"), list) and isinstance(new.get("tags"), list):
        merged["tags"] = list(dict.fromkeys([*old["tags"], *new["tags"]]))
    return merged


Steps = Generator[tuple[str, list[Any]], list[Any], Consolidated]


def steps(source: str, op: StoreOp, settings: Consolidation, mode: str | None, *,
          max_bytes: int) -> Steps:
    """The memory calls of one consolidated store (driven by `MemorySurface`): search
    the neighbours, ask the policy, then add, update (CAS) or skip. `mode` is the search
    mode that gives similarity scores ("vector", or None on a backend without modes)."""
    new = Record(op.key, op.value, op.namespace, dict(op.metadata), 0)
    query = Query(text=text_of(op.value, settings.text_field), limit=settings.neighbours + 1,
                  min_score=settings.min_similarity)
    search = SearchOp.make(query, namespace=op.namespace, mode=mode)
    for _ in range(ROUNDS):
        (found,) = yield source, [search]
        if isinstance(found, BaseException):
            raise found
        neighbours = [r for r in found if r.key != op.key][:settings.neighbours]
        decision = settings.policy.decide(new, neighbours) if neighbours else Decision("add")
        target = next((r for r in neighbours if r.key == decision.target), None)
        if decision.action not in ACTIONS or (decision.action != "add" and target is None):
            event(_log, "consolidation.invalid_decision", level=logging.WARNING,
                  action=str(decision.action)[:20])
            decision = Decision("add")
        if decision.action == "skip":
            return Consolidated("skip", target, neighbours)  # type: ignore[arg-type]
        if decision.action == "add":
            break
        assert target is not None
        value = op.value if decision.value is _UNSET else decision.value
        metadata = decision.metadata if decision.metadata is not None else \
            merge_metadata(target.metadata, op.metadata)
        ttl = op.ttl if op.ttl is not None or target.expires_at is None else \
            max(target.expires_at - target.updated_at, 1e-3)  # restated: its TTL restarts
        update = StoreOp.make(target.key, value, namespace=op.namespace, metadata=metadata,
                              ttl=ttl, if_version=target.version, max_bytes=max_bytes)
        (result,) = yield source, [update]
        if isinstance(result, VersionConflict):  # written meanwhile: look again
            continue
        if isinstance(result, MemclusterError):
            raise result
        return Consolidated("update", result, neighbours)
    (stored,) = yield source, [op]
    if isinstance(stored, BaseException):
        raise stored
    return Consolidated("add", stored, neighbours)


__all__ = [
    "ACTIONS",
    "Consolidated",
    "Consolidation",
    "Decision",
    "LLMPolicy",
    "Policy",
    "ThresholdPolicy",
    "check_config",
    "merge_metadata",
    "steps",
]
