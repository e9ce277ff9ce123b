"""The `memcluster` command: data commands on any memory surface, plus the cluster's commands.

One module per concern: `parser` (the argument parser), `output` (emit, tables, the CLI's
errors), `data` (put, get, search, keys, del, count, tools, export, import, written once
against `MemorySurface`), `cluster` (up, down, status, scale, rebalance, bench), `demo`,
and `mcp` (the MCP server command). `main(argv) -> int` is the console script.

Exit status: 0 success, 1 failed operation (a missing key for `get` or `del` too), 2 bad
usage (the shape of the command line: an unknown option, a `--filter` that is not a JSON
object, a `--limit` below 1; the memory judging what it is given, e.g. an empty key, is a
failed operation); an error is one line on stderr, a traceback only with `--debug`.
Drivers' own log lines (psycopg_pool logs each failed connection attempt as a WARNING)
show only with `--debug`, through memcluster's redacting handler; otherwise the one error
line says what failed. Rejected
alternative: argparse's own two-line usage errors and Python tracebacks, which bury the one
line that matters. Importing this package does not import Ray: the cluster commands import
it when they run.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from memcluster import logs
from memcluster.cli import cluster, data, demo, mcp, serve
from memcluster.cli.output import (
    ENV_CLUSTER,
    PROG,
    CommandFailed,
    UsageError,
    emit,
    one_line,
    table,
)
from memcluster.cli.parser import build_parser
from memcluster.errors import ConfigError, MemclusterError, UnknownSource
from memcluster.manager.surface import MemorySurface
from memcluster.secrets import redact_text

SURFACE_COMMANDS: dict[str, Callable[[argparse.Namespace, MemorySurface], int]] = {
    "put": data.cmd_put, "get": data.cmd_get, "search": data.cmd_search,
    "keys": data.cmd_keys, "del": data.cmd_del, "count": data.cmd_count,
    "tools": data.cmd_tools, "export": data.cmd_export, "import": data.cmd_import,
}
COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "up": cluster.up, "down": cluster.down, "status": cluster.status, "scale": cluster.scale,
    "rebalance": cluster.rebalance,
    "bench": cluster.bench, "demo": demo.cmd_demo, "mcp": mcp.cmd_mcp,
    "serve": serve.cmd_serve,
}
USAGE_ERRORS = (UsageError, ConfigError, UnknownSource)


class _Stderr:
    """Whatever `sys.stderr` is at write time (tests and pagers swap it)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def _dispatch(args: argparse.Namespace) -> int:
    if args.command in SURFACE_COMMANDS:
        with data.open_surface(args) as mem:
            return SURFACE_COMMANDS[args.command](args, mem)
    return int(COMMANDS[args.command](args) or 0)


DRIVER_LOGGERS = ("psycopg",)


def _route_driver_logs(debug: bool) -> None:
    """Drivers' loggers through memcluster's handler with `--debug`, else silent (see the
    module docstring); never Python's last-resort handler, which prints unredacted."""
    handlers = logging.getLogger(logs.ROOT).handlers if debug else [logging.NullHandler()]
    for name in DRIVER_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers[:] = list(handlers)
        logger.propagate = False
        logger.setLevel(logging.DEBUG if debug else logging.CRITICAL)


def _error(message: str) -> None:
    """Print `message` as the one error line (whitespace folded, secrets masked)."""
    print(f"{PROG}: error: {one_line(redact_text(message))}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 failed, 2 bad usage)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        return exc.code if exc.code in (0, 1, 2) else 2
    try:
        logs.configure("DEBUG" if args.debug else args.log_level, args.log_format,
                       stream=_Stderr())
    except (ValueError, TypeError) as exc:
        _error(f"--log-level: {exc}")
        return 2
    _route_driver_logs(args.debug)
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
        elif isinstance(exc, OSError):  # a file the command was pointed at, not a bug
            where = f": {exc.filename}" if exc.filename else ""
            message = f"{exc.strerror or type(exc).__name__}{where}"
        else:
            message = f"unexpected {type(exc).__name__}: {exc}"
        _error(message)
        return 2 if isinstance(exc, USAGE_ERRORS) else 1




__all__ = ["ENV_CLUSTER", "CommandFailed", "UsageError", "build_parser", "emit", "main", "table"]
