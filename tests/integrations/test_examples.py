"""The examples run as a user would run them, offline, and do what they say."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def run_example(name: str, *args: str, timeout: float = 120, env: dict | None = None
                ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(EXAMPLES / name), *args], capture_output=True,
                          text=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL)


def test_tool_loop_stores_retrieves_and_searches():
    done = run_example("tool_loop.py", "--namespace", "agent-9")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    # the model's calls, each fed back as a tool result, in order
    assert out.index("=> memory_store(") < out.index("=> memory_retrieve(") \
        < out.index("=> memory_search(")
    assert out.count("tool   -> {\"ok\": true") == 3
    assert "Memories about it: user:favourite_colour = teal" in out
    assert "stored in namespace 'agent-9'" in out


def test_tool_loop_functions_in_process():
    sys.path.insert(0, str(EXAMPLES))
    try:
        import tool_loop
    finally:
        sys.path.remove(str(EXAMPLES))
    import memcluster as mc

    with mc.MemoryManager([mc.memory_source("cache", "memory", default=True)]) as mem:
        messages = tool_loop.run_agent(tool_loop.memory_script(), mem, "teal!", namespace="a")
        assert mem.retrieve("user:favourite_colour", namespace="a").value["said"] == "teal!"
        assert mem.retrieve("user:favourite_colour") is None   # bound to namespace "a"
    tool_messages = [m for m in messages if m["role"] == "tool"]
    assert len(tool_messages) == 3 and messages[-1]["role"] == "assistant"


def test_langgraph_graph_remembers_across_sessions(tmp_path):
    db = tmp_path / "memory.db"
    done = run_example("langgraph_graph.py", "--path", str(db))
    assert done.returncode == 0, done.stderr + done.stdout
    assert "What I remember about 'tea': I take my tea with lemon" in done.stdout
    assert "What I remember about 'cat': my cat is called Ziggy" in done.stdout
    assert db.exists()


def _left_behind(name: str) -> list[str]:
    """Processes of the embedded cluster `name` still running: found by its private dirs in
    their command line or in what they hold open (Ray's agents retitle themselves, and
    keep their log files open after the temp dir is removed)."""
    import psutil

    marks = (f"/mc-{name[:12]}-", f"memcluster-{name}-redis-")
    found = []
    for proc in psutil.process_iter(["pid", "name", "cmdline", "status"]):
        if proc.info["status"] == psutil.STATUS_ZOMBIE or proc.pid == os.getpid():
            continue
        seen = " ".join(proc.info["cmdline"] or [])
        fds = Path(f"/proc/{proc.pid}/fd")
        with contextlib.suppress(OSError):
            seen += " ".join(os.readlink(fd) for fd in fds.iterdir())
        if any(mark in seen for mark in marks):
            found.append(f"{proc.pid} {proc.info['name']}")
    return found


@pytest.mark.slow
@pytest.mark.cluster
def test_ray_fleet_shares_memory_across_two_jobs(tmp_path, monkeypatch):
    """Fully embedded (its own Ray head and redis-server), two jobs, then nothing left."""
    from tests.support import wait_until

    name = f"fleet{os.getpid()}"
    state = tmp_path / "state"
    monkeypatch.setenv("MEMCLUSTER_STATE_DIR", str(state))  # also for the cleanup below
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    env = dict(os.environ)
    try:
        done = run_example("ray_fleet.py", "--name", name, "--agents", "3", timeout=150,
                           env=env)
        assert done.returncode == 0, done.stderr[-3000:] + done.stdout
        assert "OK: 2 jobs, 3 shared findings" in done.stdout
        assert done.stdout.count("sees 3 findings") == 3
        assert "driver counts 3 findings" in done.stdout
        assert f"cluster {name!r} stopped" in done.stdout
        wait_until(lambda: not _left_behind(name), timeout=15,
                   message="every process the example started to exit")
        assert list(state.iterdir()) == []          # its state file and Ray token are gone
    finally:
        if _left_behind(name):                      # never leave a daemon running
            from memcluster.cluster.embedded import EmbeddedState, stop_embedded

            leftover = EmbeddedState.load(name)
            if leftover is not None:
                stop_embedded(leftover)


def test_langmem_agent_remembers_each_user_across_threads(tmp_path):
    db = tmp_path / "memory.db"
    done = run_example("langmem_agent.py", "--path", str(db))
    assert done.returncode == 0, done.stderr + done.stdout
    out = done.stdout
    assert "From memory: Ada takes her tea with lemon" in out          # read back by search
    assert "nothing in my memory" in out                                # bob sees none of it
    assert "ada's memories in memcluster: ['Ada takes her tea with milk now']" in out
    assert out.rstrip().endswith("OK") and db.exists()


def test_langmem_tools_write_where_the_memory_tools_read():
    sys.path.insert(0, str(EXAMPLES))
    try:
        import langmem_agent
    finally:
        sys.path.remove(str(EXAMPLES))
    from langchain_core.messages import AIMessage

    import memcluster as mc
    from memcluster.integrations.langgraph import MemclusterStore

    with mc.MemoryManager([mc.memory_source("cache", "memory", default=True)]) as mem:
        store = MemclusterStore(mem, index={"dims": 8, "fields": ["content"],
                                            "embed": lambda texts: [[1.0] * 8 for _ in texts]})
        model = langmem_agent.ScriptedChatModel(script=[
            langmem_agent.call("manage_memory", content="likes jazz", action="create"),
            AIMessage(content="ok")])
        agent = langmem_agent.build_agent(model, store)
        assert langmem_agent.chat(agent, "cy", "remember: I like jazz") == "ok"
        found = mem.call_tool("memory_list_keys", {}, namespace="langgraph/memories/cy")
        (key,) = found["keys"]
        record = mem.retrieve(key, namespace="langgraph/memories/cy")
        assert record.value == {"content": "likes jazz"}
        assert isinstance(record.metadata["langgraph"]["vec"], bytes)   # embedded on put
        (hit,) = store.search(("memories", "cy"), query="jazz")
        assert hit.score == pytest.approx(1.0)
