"""What the command line prints: one-line errors, `--json` or human tables, progress.

Core pieces: `emit(args, data, human)` (JSON with `--json`, else the human text),
`table(headers, rows)`, `Progress` (a counter on stderr, only on a terminal),
`parse_json`, and the two CLI errors: `UsageError` (exit 2) and `CommandFailed` (exit 1).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import IO, Any

from memcluster import codec

PROG = "memcluster"
ENV_CLUSTER = "MEMCLUSTER_CLUSTER"


class UsageError(Exception):
    """Bad usage: exit status 2."""


class CommandFailed(Exception):
    """A failed operation that is not a MemclusterError (e.g. a missing key): exit 1."""


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


class Progress:
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




def one_line(message: str) -> str:
    """`message` as one printable line: whitespace folded, and what the terminal cannot
    encode (a lone surrogate from an undecodable argv byte) escaped, not raised."""
    return " ".join(message.split()).encode("utf-8", "backslashreplace").decode("utf-8")


def parse_json(text: str, what: str) -> Any:
    """`text` as JSON (`-` reads stdin), tagged values decoded; UsageError if it is not."""
    if text == "-":
        text = sys.stdin.read()
    try:
        return codec.from_json_safe(json.loads(text))
    except ValueError as exc:
        raise UsageError(f"{what}: not valid JSON ({exc})") from None
