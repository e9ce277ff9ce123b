"""Lay out LangGraph's store test suites out of tree, with only store construction swapped.

    python prepare.py --langgraph PATH/TO/langgraph.git [--ref REF] --out DIR

Copies the suites from a LangGraph checkout (never into this repository) into DIR/<suite>/
and points their store classes at `mc_parity` (see README.md). Nothing upstream is kept here.
"""
import argparse
import ast
import pathlib
import re
import shutil
import subprocess

ARGS = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ARGS.add_argument("--langgraph", required=True, help="a LangGraph git checkout or git dir")
ARGS.add_argument("--ref", default="HEAD", help="the tag or commit to take the tests from")
ARGS.add_argument("--out", required=True, help="where to lay the suites out")
ARGS.add_argument("--postgres", default="postgres://postgres@127.0.0.1:5432/",
                  help="admin URI for the postgres conftest (its autouse fixture connects)")
OPTS = ARGS.parse_args()
REPO, RUN, PG = OPTS.langgraph, pathlib.Path(OPTS.out), OPTS.postgres

def show(path):
    return subprocess.run(["git", "-C", REPO, "show", f"{OPTS.ref}:{path}"], check=True,
                          capture_output=True, text=True).stdout

SWAPS = [(rf"^from langgraph\.store\.{module} import {name}$", f"from mc_parity import {name}")
         for module, name in [("memory", "InMemoryStore"), ("sqlite", "SqliteStore"),
                              ("sqlite", "AsyncSqliteStore"), (r"sqlite\.aio", "AsyncSqliteStore"),
                              ("postgres", "PostgresStore"),
                              ("postgres", "AsyncPostgresStore")]]

def swap(text):
    for pat, rep in SWAPS:
        text = re.sub(pat, rep, text, flags=re.M)
    return text

INI = """[pytest]
asyncio_mode = auto
asyncio_default_fixture_loop_scope = function
timeout = 120
"""

def suite(name, files, extra=None):
    d = RUN / name
    if d.exists():
        shutil.rmtree(d)
    (d / "tests").mkdir(parents=True)
    (d / "tests" / "__init__.py").write_text("")
    (d / "pytest.ini").write_text(INI)
    for src, dst, do_swap in files:
        text = show(src)
        if do_swap:
            text = swap(text)
        if extra:
            text = extra(dst, text)
        (d / "tests" / dst).write_text(text)

PG_FIXTURES = {
"test_store.py": {
"store": '''@pytest.fixture(scope="function", params=["default", "pipe", "pool"])
def store(request) -> PostgresStore:
    ttl_config = {
        "default_ttl": TTL_MINUTES,
        "refresh_on_read": True,
        "sweep_interval_minutes": TTL_MINUTES / 2,
    }
    with PostgresStore.from_conn_string("unused", ttl=ttl_config) as store:
        store.start_ttl_sweeper()
        yield store
        store.stop_ttl_sweeper()
''',
"_create_vector_store": '''@contextmanager
def _create_vector_store(
    vector_type: str,
    distance_type: str,
    fake_embeddings: Embeddings,
    text_fields: list[str] | None = None,
    enable_ttl: bool = True,
) -> PostgresStore:
    index_config = {
        "dims": fake_embeddings.dims,
        "embed": fake_embeddings,
        "ann_index_config": {"vector_type": vector_type},
        "distance_type": distance_type,
        "fields": text_fields,
    }
    with PostgresStore.from_conn_string(
        "unused",
        index=index_config,
        ttl={"default_ttl": 2, "refresh_on_read": True} if enable_ttl else None,
    ) as store:
        store.setup()
        yield store
'''},
"test_async_store.py": {
"store": '''@pytest.fixture(scope="function", params=["default", "pipe", "pool"])
async def store(request) -> AsyncIterator[AsyncPostgresStore]:
    ttl_config = {
        "default_ttl": TTL_MINUTES,
        "refresh_on_read": True,
        "sweep_interval_minutes": TTL_MINUTES / 2,
    }
    async with AsyncPostgresStore.from_conn_string("unused", ttl=ttl_config) as store:
        await store.start_ttl_sweeper()
        yield store
        await store.stop_ttl_sweeper()
''',
"_create_pool_store": '''@asynccontextmanager
async def _create_pool_store() -> AsyncIterator[AsyncPostgresStore]:
    async with AsyncPostgresStore.from_conn_string("unused") as store:
        await store.setup()
        yield store
''',
"_create_vector_store": '''@asynccontextmanager
async def _create_vector_store(
    vector_type: str,
    distance_type: str,
    fake_embeddings: CharacterEmbeddings,
    text_fields: list[str] | None = None,
) -> AsyncIterator[AsyncPostgresStore]:
    index_config = {
        "dims": fake_embeddings.dims,
        "embed": fake_embeddings,
        "ann_index_config": {"vector_type": vector_type},
        "distance_type": distance_type,
        "fields": text_fields,
    }
    async with AsyncPostgresStore.from_conn_string("unused", index=index_config) as store:
        await store.setup()
        yield store
'''}}


def replace_functions(text, replacements):
    tree = ast.parse(text)
    lines = text.splitlines()
    spans = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name in replacements:
            start = min([node.lineno] + [d.lineno for d in node.decorator_list])
            spans.append((start, node.end_lineno, replacements[node.name]))
    assert len(spans) == len(replacements), (sorted(replacements), spans)
    for start, end, new in sorted(spans, reverse=True):
        lines[start - 1:end] = new.rstrip("\n").splitlines()
    return "\n".join(lines) + "\n"


def pg_conftest(dst, text):
    if dst in PG_FIXTURES:
        text = replace_functions(text, PG_FIXTURES[dst])
    if dst == "conftest.py":
        text = text.replace('"postgres://postgres:postgres@localhost:5441/postgres?sslmode=disable"',
                            f'"{PG}mcparity?sslmode=disable"')
        text = text.replace('"postgres://postgres:postgres@localhost:5441/"', f'"{PG}"')
    return text

suite("checkpoint", [("libs/checkpoint/tests/test_store.py", "test_store.py", True),
                     ("libs/checkpoint/tests/embed_test_utils.py", "embed_test_utils.py", False)])
suite("sqlite", [("libs/checkpoint-sqlite/tests/test_store.py", "test_store.py", True),
                 ("libs/checkpoint-sqlite/tests/test_async_store.py", "test_async_store.py", True),
                 ("libs/checkpoint-sqlite/tests/test_ttl.py", "test_ttl.py", True)])
PG_TESTS = "libs/checkpoint-postgres/tests"
suite("postgres", [(f"{PG_TESTS}/test_store.py", "test_store.py", True),
                   (f"{PG_TESTS}/test_async_store.py", "test_async_store.py", True),
                   (f"{PG_TESTS}/conftest.py", "conftest.py", False),
                   (f"{PG_TESTS}/embed_test_utils.py", "embed_test_utils.py", False)],
      extra=pg_conftest)

# graph tests that take a store: the test functions verbatim, fixtures replaced
WANT = {"libs/langgraph/tests/test_pregel.py":
        ["test_store_injected", "test_overriding_injectable_args_with_tasks"],
        "libs/langgraph/tests/test_pregel_async.py":
        ["test_store_injected_async", "test_overriding_injectable_args_with_async_task"]}
HEADER = '''import operator, sys, uuid
from typing import Annotated, Any
import pytest
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.func import entrypoint, task
from langgraph.graph import StateGraph
from langgraph.store.base import BaseStore
from langgraph.types import StreamWriter
from typing_extensions import TypedDict
NEEDS_CONTEXTVARS = pytest.mark.skipif(sys.version_info < (3, 11), reason="needs contextvars")
'''
CONFTEST = '''import pytest
from langgraph.checkpoint.memory import InMemorySaver
from mc_parity import make_store, AsyncParity, SyncParity

@pytest.fixture
def sync_checkpointer():
    return InMemorySaver()

@pytest.fixture
def async_checkpointer():
    return InMemorySaver()

@pytest.fixture
def sync_store():
    store = make_store(SyncParity)
    yield store
    store.memory.close()

@pytest.fixture
async def async_store():
    store = make_store(AsyncParity)
    yield store
    store.memory.close()
'''
d = RUN / "graph"
if d.exists():
    shutil.rmtree(d)
(d / "tests").mkdir(parents=True)
(d / "tests" / "__init__.py").write_text("")
(d / "pytest.ini").write_text(INI)
(d / "tests" / "conftest.py").write_text(CONFTEST)
parts = [HEADER]
for path, names in WANT.items():
    src = show(path)
    tree = ast.parse(src)
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name in names:
            start = min([node.lineno] + [dec.lineno for dec in node.decorator_list])
            parts.append("\n".join(src.splitlines()[start - 1: node.end_lineno]))
(d / "tests" / "test_graph_store.py").write_text("\n\n\n".join(parts) + "\n")
print("prepared", sorted(p.name for p in RUN.iterdir()))
