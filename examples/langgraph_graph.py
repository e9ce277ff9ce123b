"""A LangGraph graph whose long-term memory is memcluster, through `MemclusterStore`.

    python examples/langgraph_graph.py            # offline, a SQLite file in a temp dir

The graph has two nodes. `remember` stores what the user asks it to remember in the
namespace ("memories", <user>) of the store given to `compile(store=...)`; `recall`
searches that namespace and answers with what it found. Nodes reach the store through
LangGraph's `Runtime`, exactly as they would reach `InMemoryStore` or `PostgresStore`.
The store is made with `substring_query=True`: with no embedding index, LangGraph's
stores ignore a search's `query`; this opt-in matches it as a substring of the memories
instead (give `index={...}` or use a vector source for semantic search).

The run shows three things: memories written in one invocation are found by the next;
each user sees only their own; and they survive a restart, because the store here is a
memcluster SQLite source (a new `MemoryManager` on the same file finds them). Swap the
manager for `mc.connect("agents")` and the same graph uses a cluster's memory.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime

import memcluster as mc
from memcluster.integrations.langgraph import MemclusterStore

PREFIX = "remember:"


class State(TypedDict, total=False):
    user: str
    message: str
    reply: str


def remember(state: State, runtime: Runtime) -> State:
    """Store the fact when the message starts with 'remember:'."""
    message = state["message"]
    if message.lower().startswith(PREFIX):
        fact = message[len(PREFIX):].strip()
        namespace = ("memories", state["user"])
        count = len(runtime.store.search(namespace, limit=1000))
        runtime.store.put(namespace, f"fact-{count + 1}", {"text": fact})
        return {"reply": f"Noted: {fact}"}
    return {}


def recall(state: State, runtime: Runtime) -> State:
    """Answer a question with the memories that match it."""
    if state.get("reply"):
        return {}
    found = runtime.store.search(("memories", state["user"]), query=state["message"], limit=5)
    facts = "; ".join(item.value["text"] for item in found) or "nothing yet"
    return {"reply": f"What I remember about {state['message']!r}: {facts}"}


def build_graph(store: MemclusterStore) -> CompiledStateGraph:
    graph = StateGraph(State)
    graph.add_node("remember", remember)
    graph.add_node("recall", recall)
    graph.add_edge(START, "remember")
    graph.add_edge("remember", "recall")
    graph.add_edge("recall", END)
    return graph.compile(store=store)


def open_memory(path: Path) -> mc.MemoryManager:
    return mc.MemoryManager([mc.memory_source("longterm", "sqlite", default=True,
                                              opts={"path": str(path)},
                                              description="Facts users asked us to keep")])


def chat(app: CompiledStateGraph, user: str, message: str) -> str:
    reply = app.invoke({"user": user, "message": message})["reply"]
    print(f"  {user:<5} > {message}\n          {reply}")
    return reply


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", help="the SQLite file (default: one in a temp directory)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="memcluster-langgraph-") as tmp:
        path = Path(args.path or Path(tmp) / "memory.db")
        print("session 1")
        with open_memory(path) as memory:
            app = build_graph(MemclusterStore(memory, substring_query=True))
            chat(app, "ada", "remember: I take my tea with lemon")
            chat(app, "ada", "remember: my cat is called Ziggy")
            chat(app, "bob", "remember: I prefer coffee")
            ada_tea = chat(app, "ada", "tea")
            bob_tea = chat(app, "bob", "tea")
        print("session 2 (a new process would see the same)")
        with open_memory(path) as memory:
            store = MemclusterStore(memory, substring_query=True)
            app = build_graph(store)
            later = chat(app, "ada", "cat")
            users = store.list_namespaces(prefix=("memories",))
            print(f"  namespaces: {users}")
    ok = ("lemon" in ada_tea and "lemon" not in bob_tea and "Ziggy" in later
          and users == [("memories", "ada"), ("memories", "bob")])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
