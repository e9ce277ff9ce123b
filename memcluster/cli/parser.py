"""The `memcluster` argument parser: global options accepted before or after the command,
and one sub-parser per command. Errors are one line and exit 2 (no usage dump)."""

from __future__ import annotations

import argparse
from typing import Any, NoReturn

from memcluster.cli.output import ENV_CLUSTER, PROG, one_line
from memcluster.manager.tools import FORMATS
from memcluster.model import MAX_LIMIT


def _count(minimum: int, maximum: int = MAX_LIMIT) -> Any:
    """An argparse type: an int from `minimum` to `maximum` (a usage error otherwise)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if not minimum <= value <= maximum:
            raise argparse.ArgumentTypeError(f"must be from {minimum} to {maximum}, "
                                             f"got {value}")
        return value
    parse.__name__ = "count"  # argparse names the type in its messages
    return parse


def _seconds(text: str) -> float:
    """An argparse type: a finite number of seconds > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of seconds > 0, got {value}")
    return value


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line and exit 2 (no usage dump)."""

    def error(self, message: str) -> NoReturn:
        # argparse may quote what the user typed: newlines, undecodable bytes
        self.exit(2, f"{PROG}: error: {one_line(message)} (see '{self.prog} --help')\n")


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
    p.add_argument("--watch", action="store_true",
                   help="stay, and start the cluster again whenever its manager is missing")
    p.add_argument("--interval", type=_seconds, default=10.0, metavar="SECONDS",
                   help="with --watch: how often to check (default: 10)")
    p = add("down", "stop the cluster")
    p.add_argument("--force", action="store_true",
                   help="do not ask the manager to clean up (for one that does not answer): "
                        "kill its actors and stop the embedded processes")
    add("status", "show the cluster's sources, shards and health")
    add("rebalance", "spread every source's shards over the eligible failure domains")
    p = add("scale", "change the number of shards of a source")
    p.add_argument("scale_source", metavar="SOURCE")
    p.add_argument("--shards", type=_count(1), required=True)
    p = add("bench", "measure throughput and latency")
    p.add_argument("--seconds", type=_seconds, default=5.0)
    p = add("mcp", "serve the memory tools as an MCP server (stdio, or streamable HTTP)")
    p.add_argument("--namespace", "-n", default=None, help="bind the tools to a namespace")
    p.add_argument("--http", metavar="HOST:PORT",
                   help="serve streamable HTTP at http://HOST:PORT/mcp instead of stdio")
    p.add_argument("--token-file", dest="token_file", metavar="FILE",
                   help="bearer tokens, one 'TOKEN NAMESPACE' per line (default: "
                        "$MEMCLUSTER_TOKENS); required unless HOST is loopback")

    p = add("serve", "serve the memory as a REST API (OpenAPI at /openapi.json)")
    p.add_argument("--http", required=True, metavar="HOST:PORT",
                   help="the address to listen on, e.g. 127.0.0.1:8080")
    p.add_argument("--token-file", dest="token_file", metavar="FILE",
                   help="bearer tokens, one 'TOKEN NAMESPACE' per line (default: "
                        "$MEMCLUSTER_TOKENS); required unless HOST is loopback")
    p.add_argument("--namespace", "-n", default=None,
                   help="without tokens: bind every request to this namespace")

    p = add("demo", "several agents share memory through the LLM tools")
    p.add_argument("--agents", type=_count(1, 64), default=4)
    p.add_argument("--facts", type=_count(1, 1000), default=5)
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
            p.add_argument("--limit", type=_count(1), default=10)
            p.add_argument("--order-by", dest="order_by")
        _data_options(p)

    p = add("keys", "list keys in key order")
    p.add_argument("--pattern", "-p", metavar="GLOB")
    p.add_argument("--limit", type=_count(1), default=None)
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


