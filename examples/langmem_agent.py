"""LangMem's memory tools on memcluster: an agent that remembers users across threads.

    python examples/langmem_agent.py               # offline: a scripted stand-in model
    python examples/langmem_agent.py --path memory.db

LangMem's `create_manage_memory_tool` and `create_search_memory_tool` read and write the
LangGraph store the graph was compiled with. Here that store is `MemclusterStore` over a
memcluster SQLite source, with LangGraph's own `index=` config, so `search_memory` ranks
memories by meaning (the embedder is memcluster's offline hashing one; put any
LangChain `Embeddings` there). Memories live in the namespace ("memories", <user>), so
each user only ever sees their own.

The agent is the usual loop (model -> tools -> model) with LangGraph's `ToolNode`. So that
it runs without an API key (and in CI), `ScriptedChatModel` stands in for a chat model:
it answers each turn from a script, calling the tools LangMem gave it; a scripted step
may read the tool results it was fed back (to quote a memory, or to update one by id).
To use a real model, pass e.g. `init_chat_model("openai:gpt-4o")` to `build_agent`.

The run: Ada asks the agent to remember how she takes her tea; in a new thread she asks,
and the answer comes from the store; Bob asks the same and the agent knows nothing about
him; Ada changes her mind and the agent updates the same memory, found by search.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.prebuilt import ToolNode, tools_condition
from langmem import create_manage_memory_tool, create_search_memory_tool

import memcluster as mc
from memcluster.backends.embedders import resolve_embedder
from memcluster.integrations.langgraph import MemclusterStore

NAMESPACE = ("memories", "{langgraph_user_id}")
Step = AIMessage | Callable[[list[BaseMessage]], AIMessage]


# ---- a scripted stand-in for a chat model ------------------------------------------------------


class ScriptedChatModel(BaseChatModel):
    """Answers each call with the next step of `script` (an AIMessage, or a function of the
    conversation so far that returns one). `bind_tools` is accepted and ignored: the
    script already knows which tools exist."""

    script: list[Any]

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> ScriptedChatModel:
        return self

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None,
                  **kwargs: Any) -> ChatResult:
        if not self.script:
            raise RuntimeError("the scripted model ran out of steps")
        step = self.script.pop(0)
        message = step(messages) if callable(step) else step
        return ChatResult(generations=[ChatGeneration(message=message)])


def call(name: str, **args: Any) -> AIMessage:
    """An assistant turn that calls one tool."""
    return AIMessage(content="", tool_calls=[{"name": name, "args": args,
                                              "id": f"call-{uuid.uuid4().hex[:8]}"}])


def found_memories(messages: list[BaseMessage]) -> list[dict[str, Any]]:
    """The memories the last search_memory call returned (LangMem sends them as JSON)."""
    last = next(m for m in reversed(messages) if isinstance(m, ToolMessage))
    return json.loads(last.content)


def answer_from_memory(messages: list[BaseMessage]) -> AIMessage:
    memories = found_memories(messages)
    if not memories:
        return AIMessage(content="I don't know yet: nothing in my memory about that.")
    return AIMessage(content=f"From memory: {memories[0]['value']['content']}")


def update_first_found(content: str) -> Callable[[list[BaseMessage]], AIMessage]:
    def step(messages: list[BaseMessage]) -> AIMessage:
        memory_id = found_memories(messages)[0]["key"]
        return call("manage_memory", content=content, action="update", id=memory_id)
    return step


def script() -> list[Step]:
    """The model's side of the four conversations in `main`, in order."""
    return [
        call("manage_memory", content="Ada takes her tea with lemon", action="create"),
        AIMessage(content="Noted, I will remember that."),
        call("search_memory", query="how does the user take tea"),
        answer_from_memory,
        call("search_memory", query="how does the user take tea"),
        answer_from_memory,
        call("search_memory", query="tea"),
        update_first_found("Ada takes her tea with milk now"),
        AIMessage(content="Updated: milk from now on."),
    ]


# ---- the agent ---------------------------------------------------------------------------------


def build_agent(model: BaseChatModel, store: MemclusterStore) -> CompiledStateGraph:
    """model -> (tools -> model)* with LangMem's two memory tools, on `store`."""
    tools = [create_manage_memory_tool(namespace=NAMESPACE),
             create_search_memory_tool(namespace=NAMESPACE)]
    bound = model.bind_tools(tools)

    def agent(state: MessagesState) -> dict[str, list[BaseMessage]]:
        return {"messages": [bound.invoke(state["messages"])]}

    graph = StateGraph(MessagesState)
    graph.add_node("agent", agent)
    graph.add_node("tools", ToolNode(tools))
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", tools_condition)
    graph.add_edge("tools", "agent")
    return graph.compile(store=store, checkpointer=InMemorySaver())


def open_store(path: Path) -> tuple[mc.MemoryManager, MemclusterStore]:
    memory = mc.MemoryManager([mc.memory_source("longterm", "sqlite", default=True,
                                                opts={"path": str(path)})])
    embedder = resolve_embedder("hashing", 256)
    store = MemclusterStore(memory, index={
        "dims": embedder.dimension, "fields": ["content"],
        "embed": lambda texts: embedder.embed(texts).tolist()})
    return memory, store


def chat(agent: CompiledStateGraph, user: str, text: str) -> str:
    config = {"configurable": {"thread_id": uuid.uuid4().hex, "langgraph_user_id": user}}
    reply = agent.invoke({"messages": [HumanMessage(content=text)]}, config)
    answer = reply["messages"][-1].content
    print(f"  {user:<4} > {text}\n         {answer}")
    return answer


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", help="the SQLite file (default: one in a temp directory)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="memcluster-langmem-") as tmp:
        memory, store = open_store(Path(args.path or Path(tmp) / "memory.db"))
        with memory:
            agent = build_agent(ScriptedChatModel(script=script()), store)
            chat(agent, "ada", "Please remember that I take my tea with lemon.")
            ada = chat(agent, "ada", "How do I like my tea?")
            bob = chat(agent, "bob", "How do I like my tea?")
            chat(agent, "ada", "Actually, I switched to milk in my tea.")
            kept = [item.value["content"] for item in store.search(("memories", "ada"))]
            print(f"  ada's memories in memcluster: {kept}")
            print(f"  bob's memories in memcluster: {store.search(('memories', 'bob'))}")
    ok = "lemon" in ada and "nothing" in bob and kept == ["Ada takes her tea with milk now"]
    print("OK" if ok else "UNEXPECTED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
