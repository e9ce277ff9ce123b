"""The `memcluster` command: data commands on any memory surface, plus the cluster's commands.

Core pieces: `main(argv) -> int` (the console script), `open_surface(args)` (a
`MemoryManager` from `--config FILE`, or a connected cluster from `--cluster NAME` /
`MEMCLUSTER_CLUSTER`), `emit` (a human table or `--json`), and `run_demo(surface)`, the
demo body that works on any surface.

Decisions: the data commands (put, get, search, keys, del, count, tools, export, import,
demo) are written once against `MemorySurface`, so they behave the same locally and on a
cluster. The cluster's own commands (up, down, status, scale, bench) and `mcp` live with
the code they drive and are looked up by name in `DELEGATES` when run, so this module
never imports Ray. Exit status: 0 success, 1 failed operation (a missing key for `get`
or `del` too), 2 bad usage; an error is one line on stderr, a traceback only with
`--debug`. Rejected alternative: argparse's own two-line usage errors and Python
tracebacks, which bury the one line that matters.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any, NoReturn

from memcluster import codec, logs
from memcluster.errors import ConfigError, MemclusterError, UnknownSource
from memcluster.manager.config import memory_source
from memcluster.manager.manager import MemoryManager
from memcluster.manager.surface import MemorySurface
from memcluster.manager.tools import FORMATS, record_json, tags_filter
from memcluster.ops import StoreOp
from memcluster.secrets import redact_text

PROG = "memcluster"
ENV_CLUSTER = "MEMCLUSTER_CLUSTER"
IMPORT_CHUNK = 500

# Commands implemented next to the code they drive: "module:function", called with the
# parsed args and returning an exit status. Each may use `open_surface` and `emit` below.
DELEGATES: dict[str, str] = {
    "up": "memcluster.cluster.commands:up",
    "down": "memcluster.cluster.commands:down",
    "status": "memcluster.cluster.commands:status",
    "scale": "memcluster.cluster.commands:scale",
    "bench": "memcluster.cluster.commands:bench",
}


class _Stderr:
    """Whatever `sys.stderr` is at write time (tests and pagers swap it)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


class UsageError(Exception):
    """Bad usage: exit status 2."""


class CommandFailed(Exception):
    """A failed operation that is not a MemclusterError (e.g. a missing key): exit 1."""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line and exit 2 (no usage dump)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{PROG}: error: {message} (see '{self.prog} --help')\n")


# ---- output --------------------------------------------------------------------------------


def emit(args: argparse.Namespace, data: Any, human: str | Callable[[], str] | None = None,
         *, out: IO[str] | None = None) -> None:
    """Print `data` as JSON with `--json`, else `human` (text, or a function making it)."""
    stream = out or sys.stdout
    if args.json or human is None:
        print(json.dumps(codec.to_json_safe(data), ensure_ascii=False), file=stream)
    else:
        print(human() if callable(human) else human, file=stream)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain left-aligned text table."""
    cells = [[str(h) for h in headers]] + [[_cell(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
             for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _cell(value: Any, width: int = 60) -> str:
    text = value if isinstance(value, str) else json.dumps(codec.to_json_safe(value),
                                                           ensure_ascii=False)
    return text if len(text) <= width else text[: width - 1] + "…"


class _Progress:
    """A one-line counter on stderr, only when stderr is a terminal."""

    def __init__(self, label: str, total: int | None = None) -> None:
        self.label, self.total, self.done = label, total, 0
        self.live = sys.stderr.isatty()

    def advance(self, n: int) -> None:
        self.done += n
        if self.live:
            of = f"/{self.total}" if self.total is not None else ""
            print(f"\r{self.label} {self.done}{of}", end="", file=sys.stderr, flush=True)

    def finish(self) -> None:
        if self.live:
            print(file=sys.stderr)


# ---- the memory to talk to -----------------------------------------------------------------


def open_surface(args: argparse.Namespace) -> MemorySurface:
    """`--config FILE` gives a local MemoryManager; `--cluster NAME` (or env) a cluster."""
    cluster = getattr(args, "cluster", None)
    if args.config and cluster:
        raise UsageError("give either --config or --cluster, not both")
    if args.config:
        return MemoryManager.from_config(args.config)
    name = cluster or os.environ.get(ENV_CLUSTER)
    if name:
        try:
            from memcluster.cluster import connect
        except ImportError as exc:
            raise CommandFailed(f"cluster support is not available: {exc}") from None
        return connect(name)
    raise UsageError(f"no memory to use: give --config FILE or --cluster NAME "
                     f"(or set {ENV_CLUSTER})")


def _parse_json(text: str, what: str) -> Any:
    if text == "-":
        text = sys.stdin.read()
    try:
        return codec.from_json_safe(json.loads(text))
    except ValueError as exc:
        raise UsageError(f"{what}: not valid JSON ({exc})") from None


def _filter(args: argparse.Namespace) -> dict[str, Any] | None:
    extra = _parse_json(args.filter, "--filter") if getattr(args, "filter", None) else None
    return tags_filter(args.tag, extra)


# ---- data commands -------------------------------------------------------------------------


def cmd_put(args: argparse.Namespace, mem: MemorySurface) -> int:
    value = _parse_json(args.value, "JSON")
    metadata = _parse_json(args.metadata, "--metadata") if args.metadata else {}
    if not isinstance(metadata, dict):
        raise UsageError("--metadata: must be a JSON object")
    if args.tag:
        metadata["tags"] = list(dict.fromkeys(args.tag))
    rec = mem.store(args.key, value, source=args.source, namespace=args.namespace,
                    metadata=metadata, ttl=args.ttl, if_version=args.if_version)
    emit(args, record_json(rec), f"stored {rec.key!r} (version {rec.version})")
    return 0


def cmd_get(args: argparse.Namespace, mem: MemorySurface) -> int:
    rec = mem.retrieve(args.key, source=args.source, namespace=args.namespace)
    if rec is None:
        raise CommandFailed(f"key {args.key!r} not found")
    emit(args, record_json(rec, now=time.time()),
         lambda: json.dumps(codec.to_json_safe(rec.value), ensure_ascii=False, indent=2))
    return 0


def cmd_search(args: argparse.Namespace, mem: MemorySurface) -> int:
    filt = _filter(args)
    if args.text is None and args.pattern is None and filt is None:
        raise UsageError("search needs TEXT, --pattern, --tag or --filter")
    found = mem.search(args.text, source=args.source, namespace=args.namespace,
                       limit=args.limit, pattern=args.pattern, filter=filt,
                       order_by=args.order_by)
    scored = any(r.score is not None for r in found)
    emit(args, [record_json(r) for r in found], lambda: table(
        ["KEY", "VERSION", *(["SCORE"] if scored else []), "VALUE"],
        [[r.key, r.version, *([f"{r.score:.3f}"] if scored else []), r.value] for r in found])
        if found else "no matches")
    return 0


def _all_keys(mem: MemorySurface, args: argparse.Namespace) -> Iterator[str]:
    cursor, left = None, args.limit
    while left is None or left > 0:
        page = mem.list_keys(args.pattern, source=args.source, namespace=args.namespace,
                             limit=min(1000, left or 1000), cursor=cursor)
        yield from page.keys
        if left is not None:
            left -= len(page.keys)
        cursor = page.cursor
        if cursor is None:
            return


def cmd_keys(args: argparse.Namespace, mem: MemorySurface) -> int:
    keys = list(_all_keys(mem, args))
    emit(args, keys, lambda: "\n".join(keys) if keys else "no keys")
    return 0


def cmd_del(args: argparse.Namespace, mem: MemorySurface) -> int:
    if not mem.delete(args.key, source=args.source, namespace=args.namespace):
        raise CommandFailed(f"key {args.key!r} not found")
    emit(args, {"deleted": args.key}, f"deleted {args.key!r}")
    return 0


def cmd_count(args: argparse.Namespace, mem: MemorySurface) -> int:
    n = mem.count(args.text, source=args.source, namespace=args.namespace,
                  pattern=args.pattern, filter=_filter(args))
    emit(args, {"count": n}, str(n))
    return 0


def cmd_tools(args: argparse.Namespace, mem: MemorySurface) -> int:
    print(json.dumps(mem.tools(fmt=args.format, namespace=args.namespace), indent=2))
    return 0


def cmd_export(args: argparse.Namespace, mem: MemorySurface) -> int:
    progress = _Progress("exported")
    with contextlib.ExitStack() as stack:
        out = (stack.enter_context(open(args.output, "w", encoding="utf-8"))
               if args.output else sys.stdout)
        for rec in mem.export(source=args.source, namespace=args.namespace):
            line = {"key": rec.key, "value": codec.to_json_safe(rec.value),
                    "namespace": rec.namespace, "metadata": codec.to_json_safe(rec.metadata),
                    "ttl": rec.ttl_left()}
            out.write(json.dumps(line, ensure_ascii=False) + "\n")
            progress.advance(1)
    progress.finish()
    print(f"exported {progress.done} records", file=sys.stderr)
    return 0


def _read_import(lines: Iterator[str], namespace: str | None, max_bytes: int
                 ) -> list[tuple[str, tuple[str, Any, dict[str, Any]]]]:
    """Parse and validate every line first, so a bad line imports nothing."""
    items = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except ValueError as exc:
            raise CommandFailed(f"line {n}: not valid JSON ({exc})") from None
        if not isinstance(data, dict) or "key" not in data or "value" not in data:
            raise CommandFailed(f"line {n}: must be an object with 'key' and 'value'")
        unknown = sorted(set(data) - {"key", "value", "namespace", "metadata", "ttl"})
        if unknown:
            raise CommandFailed(f"line {n}: unknown field(s) {', '.join(unknown)}")
        ttl = data.get("ttl")
        if ttl is not None and isinstance(ttl, (int, float)) and ttl <= 0:
            continue  # expired while exported
        ns = namespace if namespace is not None else data.get("namespace", "")
        try:
            value = codec.from_json_safe(data["value"])
            metadata = codec.from_json_safe(data.get("metadata") or {})
            StoreOp.make(data["key"], value, namespace=ns, metadata=metadata, ttl=ttl,
                         max_bytes=max_bytes)
        except MemclusterError as exc:
            raise CommandFailed(f"line {n}: {exc}") from None
        except (ValueError, TypeError) as exc:
            raise CommandFailed(f"line {n}: malformed tagged value ({exc})") from None
        items.append((ns, (data["key"], value, {"metadata": metadata, "ttl": ttl})))
    return items


def cmd_import(args: argparse.Namespace, mem: MemorySurface) -> int:
    with contextlib.ExitStack() as stack:
        src = (sys.stdin if args.input in (None, "-")
               else stack.enter_context(open(args.input, encoding="utf-8")))
        items = _read_import(iter(src), args.namespace, mem.max_value_bytes)
    progress = _Progress("imported", len(items))
    i = 0
    while i < len(items):
        ns = items[i][0]
        j = i
        while j < len(items) and j - i < IMPORT_CHUNK and items[j][0] == ns:
            j += 1
        mem.store_many([item for _, item in items[i:j]], source=args.source, namespace=ns)
        progress.advance(j - i)
        i = j
    progress.finish()
    emit(args, {"imported": len(items)}, f"imported {len(items)} records")
    return 0


# ---- demo ----------------------------------------------------------------------------------

DEMO_TOPICS = ("astronomy", "botany", "chemistry", "geology", "music", "poetry")
DEMO_BOARD = "demo/board"
DEMO_CLUSTER = "memcluster-demo"


def _demo_agent(mem: MemorySurface, index: int, agents: int, facts: int) -> dict[str, Any]:
    """One agent's session, through the LLM tools only, bound to its own namespace."""
    ns = f"demo/agent-{index}"
    topic = DEMO_TOPICS[index % len(DEMO_TOPICS)]
    errors: list[str] = []

    def call(name: str, **arguments: Any) -> dict[str, Any]:
        result = mem.call_tool(name, arguments, namespace=ns)
        if not result.get("ok"):
            errors.append(f"{name}: {result['error']['message']}")
        return result

    sources = [s["name"] for s in call("memory_list_sources").get("sources", [])]
    durable = next((s for s in sources if s != mem.default_source), mem.default_source)
    stored = 0
    for j in range(facts):
        stored += bool(call("memory_store", key=f"fact:{j}", memory_source=durable,
                            value={"text": f"{topic} note {j} by agent {index}",
                                   "marker": f"secret-{index}"},
                            tags=[topic, "fact"]).get("ok"))
    stored += bool(call("memory_store", key="scratch", value={"step": 1}, ttl=60).get("ok"))
    found = call("memory_search", query=topic, memory_source=durable).get("count", 0)
    tagged = call("memory_count", tags=[topic], memory_source=durable).get("count", 0)
    fact0 = call("memory_retrieve", key="fact:0", memory_source=durable)
    keys = call("memory_list_keys", memory_source=durable).get("keys", [])
    others = [f"secret-{k}" for k in range(agents) if k != index]
    leaked = sum(call("memory_search", query=o, memory_source=durable).get("count", 0)
                 for o in others)
    call("memory_delete", key="scratch")
    return {"agent": f"agent-{index}", "namespace": ns, "topic": topic, "stored": stored,
            "found": found, "tagged": tagged, "keys": len(keys),
            "retrieved": bool(fact0.get("found")), "isolated": leaked == 0,
            "errors": errors}


def run_demo(mem: MemorySurface, *, agents: int = 4, facts: int = 5) -> list[dict[str, Any]]:
    """Run `agents` threads that use memory only through `call_tool`; one row per agent."""
    rows: list[dict[str, Any] | None] = [None] * agents
    failures: list[BaseException] = []

    def work(i: int) -> None:
        try:
            rows[i] = _demo_agent(mem, i, agents, facts)
        except BaseException as exc:  # reported after join
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(i,), name=f"agent-{i}")
               for i in range(agents)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        raise failures[0]
    return [r for r in rows if r is not None]


def _demo_task(cluster: str, index: int, agents: int, facts: int) -> dict[str, Any]:
    """One demo agent as a Ray task: its own process attaches to the cluster by name."""
    from memcluster.cluster import connect

    mem = connect(cluster)
    try:
        row = _demo_agent(mem, index, agents, facts)
        board = mem.store(f"hello:{index}", {"from": f"agent-{index}"}, namespace=DEMO_BOARD)
        row["posted"] = board.version >= 1
        return row
    finally:
        mem.close()


def run_demo_fleet(cluster: str, *, agents: int = 4, facts: int = 5
                   ) -> tuple[list[dict[str, Any]], int]:
    """Run every agent as a Ray task (separate worker processes) against `cluster`;
    -> (one row per agent, notes on the shared board read back by this process)."""
    import ray

    from memcluster.cluster import connect

    task = ray.remote(num_cpus=0, max_retries=0)(_demo_task)
    rows = ray.get([task.remote(cluster, i, agents, facts) for i in range(agents)],
                   timeout=600)
    with connect(cluster) as mem:
        board = len(mem.list_keys("hello:*", namespace=DEMO_BOARD, limit=1000).keys)
        mem.clear(namespace=DEMO_BOARD, confirm=True)
        for source in mem.info():     # leave an attached cluster as it was
            for i in range(agents):
                mem.clear(source=source, namespace=f"demo/agent-{i}", confirm=True)
    return rows, board


@contextlib.contextmanager
def demo_cluster(args: argparse.Namespace) -> Iterator[str]:
    """The cluster the demo runs on: the named one (left running), else the embedded demo
    cluster, started here and stopped at the end unless it was already running."""
    from memcluster.cluster.commands import attach, cluster_name, default_config
    from memcluster.cluster.embedded import find_ray_address, start_cluster, stop_cluster

    named = args.cluster or os.environ.get(ENV_CLUSTER)
    if named:
        attach(named)
        yield named
        return
    name = cluster_name(argparse.Namespace(name=DEMO_CLUSTER))
    config = default_config(name)
    config["metrics_port"] = None
    Path(config["sources"][1]["opts"]["path"]).parent.mkdir(parents=True, exist_ok=True)
    print(f"starting the embedded cluster {name!r} (a local Ray head and a private "
          f"redis-server)...", file=sys.stderr)
    already = find_ray_address(name) is not None
    handle = start_cluster(config, name=name)
    owned = handle.state is not None and not already
    try:
        yield name
    finally:
        if owned:
            print(f"stopping the embedded cluster {name!r}...", file=sys.stderr)
            stop_cluster(name)


@contextlib.contextmanager
def demo_surface(args: argparse.Namespace) -> Iterator[MemorySurface]:
    """The memory the in-process demo runs on: the one named by --config, else a local one
    (a memory cache plus SQLite in a temporary directory)."""
    if args.config:
        with open_surface(args) as mem:
            yield mem
        return
    with tempfile.TemporaryDirectory(prefix="memcluster-demo-") as tmp:
        sources = [
            memory_source("cache", "memory", default=True,
                          description="Fast session cache for short-lived notes"),
            memory_source("persistent", "sqlite", opts={"path": str(Path(tmp) / "memory.db")},
                          description="Long-term facts that survive restarts"),
        ]
        with MemoryManager(sources) as mem:
            yield mem


def cmd_mcp(args: argparse.Namespace) -> int:
    """`memcluster mcp`: the memory tools as an MCP server, on stdio or `--http HOST:PORT`."""
    try:
        from memcluster.integrations import auth, mcp
    except ImportError as exc:
        raise CommandFailed(f"'mcp' needs the mcp extra (pip install 'memcluster[mcp]'): "
                            f"{exc}") from None
    if not args.http:
        if args.token_file:
            raise UsageError("--token-file needs --http (stdio has no bearer tokens)")
        with open_surface(args) as mem:
            mcp.serve_stdio(mem, namespace=args.namespace)
        return 0
    host, port = mcp.parse_address(args.http)
    tokens = auth.load_tokens(args.token_file)
    if tokens is not None and args.namespace is not None:
        raise UsageError("--namespace conflicts with bearer tokens (each token has its own)")
    with open_surface(args) as mem:
        mcp.serve_http(mem, host, port, tokens=tokens, namespace=args.namespace)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    board: int | None = None
    if args.local or args.config:
        with demo_surface(args) as mem:
            rows = run_demo(mem, agents=args.agents, facts=args.facts)
        where = "in this process"
    else:
        with demo_cluster(args) as name:
            rows, board = run_demo_fleet(name, agents=args.agents, facts=args.facts)
        where = f"as Ray tasks on cluster {name!r}"
    ok = all(r["isolated"] and not r["errors"] and r["retrieved"] for r in rows)
    ok = ok and (board is None or board == len(rows))

    def human() -> str:
        body = table(["AGENT", "NAMESPACE", "TOPIC", "STORED", "FOUND", "TAGGED", "KEYS",
                      "ISOLATED", "ERRORS"],
                     [[r["agent"], r["namespace"], r["topic"], r["stored"], r["found"],
                       r["tagged"], r["keys"], "yes" if r["isolated"] else "NO",
                       "; ".join(r["errors"]) or "-"] for r in rows])
        verdict = ("every agent found its own memories and none of the others'" if ok
                   else "FAILED: see the ISOLATED and ERRORS columns")
        shared = ("" if board is None else
                  f"\nshared board: {board} of {len(rows)} agents' notes read back by "
                  f"another process")
        return f"{body}\n\n{len(rows)} agents {where}: {verdict}{shared}"

    emit(args, {"ok": ok, "agents": rows, "where": where, "board": board}, human)
    return 0 if ok else 1


# ---- delegated commands --------------------------------------------------------------------


def run_delegate(command: str, args: argparse.Namespace) -> int:
    """Run a command implemented elsewhere (see DELEGATES)."""
    target = DELEGATES[command]
    module_name, _, func_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise CommandFailed(f"'{command}' is not available in this installation "
                            f"({module_name}: {exc})") from None
    func = getattr(module, func_name, None)
    if func is None:
        raise CommandFailed(f"'{command}' is not available in this installation "
                            f"({target} is missing)")
    return int(func(args) or 0)


# ---- parser and main -----------------------------------------------------------------------


def _global_options(parser: argparse.ArgumentParser, *, sub: bool) -> None:
    """The global options, accepted before or after the command."""
    default = argparse.SUPPRESS if sub else None
    parser.add_argument("--cluster", metavar="NAME", default=default,
                        help=f"the cluster to use (default: ${ENV_CLUSTER})")
    parser.add_argument("--config", metavar="FILE", default=default,
                        help="a memcluster YAML file: use its sources in this process")
    parser.add_argument("--json", action="store_true", default=argparse.SUPPRESS if sub else False,
                        help="machine-readable JSON output")
    parser.add_argument("--debug", action="store_true",
                        default=argparse.SUPPRESS if sub else False,
                        help="debug logging and tracebacks on errors")
    parser.add_argument("--log-level", dest="log_level", metavar="LEVEL", default=default,
                        help="log level (default: $MEMCLUSTER_LOG_LEVEL or WARNING)")
    parser.add_argument("--log-format", dest="log_format", choices=("text", "json"),
                        default=default,
                        help="log format (default: $MEMCLUSTER_LOG_FORMAT or text)")


def _data_options(parser: argparse.ArgumentParser, *, namespace_default: str | None = "") -> None:
    parser.add_argument("--source", "-s", default=None, help="memory source (default: the default)")
    parser.add_argument("--namespace", "-n", default=namespace_default,
                        help="namespace" + (" (default: '')" if namespace_default == ""
                                            else " (default: all)"))


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="A shared, fault-tolerant memory for LLM agents.")
    _global_options(parser, sub=False)
    common = _Parser(add_help=False)
    _global_options(common, sub=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    def add(name: str, help_text: str, **kw: Any) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_text, description=help_text, parents=[common],
                              **kw)

    p = add("up", "start a cluster from a config file (embedded Ray/Redis if none given)")
    p.add_argument("config_file", nargs="?", metavar="CONFIG")
    p.add_argument("--name", help="cluster name (default: the file's name:)")
    add("down", "stop the cluster")
    add("status", "show the cluster's sources, shards and health")
    p = add("scale", "change the number of shards of a source")
    p.add_argument("scale_source", metavar="SOURCE")
    p.add_argument("--shards", type=int, required=True)
    p = add("bench", "measure throughput and latency")
    p.add_argument("--seconds", type=float, default=5.0)
    p = add("mcp", "serve the memory tools as an MCP server (stdio, or streamable HTTP)")
    p.add_argument("--namespace", "-n", default=None, help="bind the tools to a namespace")
    p.add_argument("--http", metavar="HOST:PORT",
                   help="serve streamable HTTP at http://HOST:PORT/mcp instead of stdio")
    p.add_argument("--token-file", dest="token_file", metavar="FILE",
                   help="bearer tokens, one 'TOKEN NAMESPACE' per line (default: "
                        "$MEMCLUSTER_TOKENS); required unless HOST is loopback")

    p = add("demo", "several agents share memory through the LLM tools")
    p.add_argument("--agents", type=int, default=4)
    p.add_argument("--facts", type=int, default=5)
    p.add_argument("--local", action="store_true",
                   help="run the agents as threads on an in-process memory (no Ray)")

    p = add("put", "store a JSON value under KEY")
    p.add_argument("key", metavar="KEY")
    p.add_argument("value", metavar="JSON", help="the value as JSON ('-' reads stdin)")
    p.add_argument("--ttl", type=float, help="seconds until it expires")
    p.add_argument("--tag", action="append", help="a tag (repeatable)")
    p.add_argument("--metadata", metavar="JSON", help="metadata as a JSON object")
    p.add_argument("--if-version", type=int, dest="if_version",
                   help="only write if the current version is this (0: only if absent)")
    _data_options(p)

    p = add("get", "print the value under KEY")
    p.add_argument("key", metavar="KEY")
    _data_options(p)

    for name, help_text in (("search", "find records by text, key pattern or tags"),
                            ("count", "count matching records")):
        p = add(name, help_text)
        p.add_argument("text", nargs="?", metavar="TEXT")
        p.add_argument("--pattern", "-p", metavar="GLOB")
        p.add_argument("--tag", action="append", help="only records with this tag")
        p.add_argument("--filter", metavar="JSON", help="a metadata filter")
        if name == "search":
            p.add_argument("--limit", type=int, default=10)
            p.add_argument("--order-by", dest="order_by")
        _data_options(p)

    p = add("keys", "list keys in key order")
    p.add_argument("--pattern", "-p", metavar="GLOB")
    p.add_argument("--limit", type=int, default=None)
    _data_options(p)

    p = add("del", "delete KEY")
    p.add_argument("key", metavar="KEY")
    _data_options(p)

    p = add("tools", "print the LLM tool schemas")
    p.add_argument("--format", choices=FORMATS, default="openai")
    p.add_argument("--namespace", "-n", default=None, help="bind the tools to a namespace")

    p = add("export", "write records as JSON lines")
    p.add_argument("--output", "-o", metavar="FILE", help="default: stdout")
    _data_options(p, namespace_default=None)

    p = add("import", "read records from JSON lines (as written by export)")
    p.add_argument("input", nargs="?", metavar="FILE", help="default: stdin")
    p.add_argument("--source", "-s", default=None)
    p.add_argument("--namespace", "-n", default=None,
                   help="put every record in this namespace (default: each line's)")
    return parser


SURFACE_COMMANDS: dict[str, Callable[[argparse.Namespace, MemorySurface], int]] = {
    "put": cmd_put, "get": cmd_get, "search": cmd_search, "keys": cmd_keys, "del": cmd_del,
    "count": cmd_count, "tools": cmd_tools, "export": cmd_export, "import": cmd_import,
}
USAGE_ERRORS = (UsageError, ConfigError, UnknownSource)


def _dispatch(args: argparse.Namespace) -> int:
    if args.command in SURFACE_COMMANDS:
        with open_surface(args) as mem:
            return SURFACE_COMMANDS[args.command](args, mem)
    if args.command == "demo":
        return cmd_demo(args)
    if args.command == "mcp":
        return cmd_mcp(args)
    return run_delegate(args.command, args)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 failed, 2 bad usage)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    try:
        logs.configure("DEBUG" if args.debug else args.log_level, args.log_format,
                       stream=_Stderr())
    except ValueError as exc:
        print(f"{PROG}: error: --log-level: {exc}", file=sys.stderr)
        return 2
    try:
        return _dispatch(args)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1
    except Exception as exc:  # one line, never a traceback (unless --debug)
        if args.debug:
            import traceback

            traceback.print_exc()
        if isinstance(exc, (UsageError, CommandFailed)):
            message = str(exc)
        elif isinstance(exc, MemclusterError):
            message = f"{type(exc).__name__}: {exc}"
        else:
            message = f"unexpected {type(exc).__name__}: {exc}"
        one_line = " ".join(redact_text(message).split())
        print(f"{PROG}: error: {one_line}", file=sys.stderr)
        return 2 if isinstance(exc, USAGE_ERRORS) else 1


if __name__ == "__main__":
    # Run the imported module's main, not this __main__ copy: delegates import
    # memcluster.cli, and its UsageError must be the class main() catches.
    from memcluster.cli import main as _main

    sys.exit(_main())
