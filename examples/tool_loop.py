"""An agent loop that gives an LLM memcluster's memory tools, OpenAI tool-calling style.

    python examples/tool_loop.py                 # offline: a scripted stand-in model
    python examples/tool_loop.py --config memory.yaml --namespace agent-7

The loop is the usual one: send the conversation and the tool schemas
(`memory.tools(fmt="openai", namespace=...)`) to the model; if it answers with
`tool_calls`, run each with `memory.call_tool(name, arguments_json, namespace=...)` and
append the results as `role: "tool"` messages; repeat until it answers in plain text.
`call_tool` validates the arguments against the same schemas and never raises, so a bad
call from the model comes back as an error it can read, not a crash of the loop.

To run without an API key (and in CI), `ScriptedModel` stands in for
`client.chat.completions.create`: it returns OpenAI-shaped assistant messages, one per
turn, calling only tools it was offered, and writes its final answer from the tool
results it was fed back. To use a real model, replace `ScriptedModel.create` with a
call to your client and pass `reply.choices[0].message` on as a dict.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

import memcluster as mc

Message = dict[str, Any]
Turn = Callable[[list[Message]], Message]


def tool_call(call_id: str, name: str, **arguments: Any) -> dict[str, Any]:
    """One OpenAI-style tool call (arguments travel as JSON text, as the API sends them)."""
    return {"id": call_id, "type": "function",
            "function": {"name": name, "arguments": json.dumps(arguments)}}


def last_tool_result(messages: list[Message]) -> dict[str, Any]:
    return json.loads(next(m for m in reversed(messages) if m["role"] == "tool")["content"])


class ScriptedModel:
    """A stand-in for a chat model: each turn is a function of the conversation so far."""

    def __init__(self, turns: Sequence[Turn]) -> None:
        self.turns = list(turns)
        self.calls = 0

    def create(self, *, messages: list[Message], tools: list[dict[str, Any]]) -> Message:
        offered = {t["function"]["name"] for t in tools}
        reply = self.turns[min(self.calls, len(self.turns) - 1)](messages)
        self.calls += 1
        for call in reply.get("tool_calls") or ():
            if call["function"]["name"] not in offered:
                raise RuntimeError(f"the model called a tool it was not given: {call}")
        return reply


def memory_script() -> ScriptedModel:
    """Remember a fact, read it back, search for it, then answer from what was found."""
    return ScriptedModel([
        lambda m: {"role": "assistant", "content": None, "tool_calls": [
            tool_call("call_1", "memory_store", key="user:favourite_colour",
                      value={"colour": "teal", "said": m[-1]["content"]},
                      tags=["preference"])]},
        lambda m: {"role": "assistant", "content": None, "tool_calls": [
            tool_call("call_2", "memory_retrieve", key="user:favourite_colour")]},
        lambda m: {"role": "assistant", "content": None, "tool_calls": [
            tool_call("call_3", "memory_search", query="teal", tags=["preference"])]},
        lambda m: {"role": "assistant", "content": "I will remember that. Memories about it: "
                   + ", ".join(f"{r['key']} = {r['value']['colour']}"
                               for r in last_tool_result(m)["results"])},
    ])


def run_agent(model: ScriptedModel, memory: mc.MemorySurface, user_message: str, *,
              namespace: str, max_turns: int = 8) -> list[Message]:
    """The tool-calling loop; returns the whole conversation."""
    tools = memory.tools(fmt="openai", namespace=namespace)
    messages: list[Message] = [
        {"role": "system", "content": "You are a helpful assistant with long-term memory."},
        {"role": "user", "content": user_message},
    ]
    for _ in range(max_turns):
        reply = model.create(messages=messages, tools=tools)
        messages.append(reply)
        if not reply.get("tool_calls"):
            return messages
        for call in reply["tool_calls"]:
            result = memory.call_tool(call["function"]["name"], call["function"]["arguments"],
                                      namespace=namespace)
            messages.append({"role": "tool", "tool_call_id": call["id"],
                             "content": json.dumps(result)})
    raise RuntimeError(f"no final answer after {max_turns} turns")


def transcript(messages: list[Message]) -> str:
    lines = []
    for m in messages:
        if m["role"] == "tool":
            lines.append(f"  tool   -> {m['content']}")
        elif m.get("tool_calls"):
            for call in m["tool_calls"]:
                fn = call["function"]
                lines.append(f"  model  => {fn['name']}({fn['arguments']})")
        else:
            lines.append(f"  {m['role']:<6} : {m['content']}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="a memcluster YAML file (default: an in-memory cache)")
    parser.add_argument("--namespace", default="agent-1", help="the agent's namespace")
    args = parser.parse_args(argv)
    memory = (mc.MemoryManager.from_config(args.config) if args.config else
              mc.MemoryManager([mc.memory_source("cache", "memory", default=True,
                                                 description="Session memory")]))
    with memory:
        messages = run_agent(memory_script(), memory, "My favourite colour is teal.",
                             namespace=args.namespace)
        print(transcript(messages))
        stored = memory.retrieve("user:favourite_colour", namespace=args.namespace)
    ok = stored is not None and "teal" in messages[-1]["content"]
    print(f"\nstored in namespace {args.namespace!r}: {stored.value if stored else None}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
