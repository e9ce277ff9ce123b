"""Structured logging: `event()` for the things operators need to see, and a JSON formatter.

Supervisor decisions, ring changes, leadership changes and recoveries are logged as
events: a short name plus fields, e.g. `event(log, "ring.switched", source="cache",
version=4)`. `MEMCLUSTER_LOG_FORMAT=json` prints one JSON object a line (for log
shippers); the default is a readable line. `MEMCLUSTER_LOG_LEVEL` sets the level.
Every message and field passes through `secrets.redact_text` so a URL with a password never
reaches a log, whatever the caller forgot.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any

from memcluster.secrets import redact_text as redact

ROOT = "memcluster"


def get_logger(name: str) -> logging.Logger:
    """A logger under the `memcluster` hierarchy (`get_logger("cluster.manager")`)."""
    return logging.getLogger(name if name.startswith(ROOT) else f"{ROOT}.{name}")


def event(logger: logging.Logger, name: str, *, level: int = logging.INFO, **fields: Any) -> None:
    """Log a named event with structured fields (rendered by the formatter)."""
    if logger.isEnabledFor(level):
        logger.log(level, name, extra={"event": name, "fields": fields})


class _RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(str(record.msg))
        if record.args:
            record.args = tuple(redact(a) if isinstance(a, str) else a
                                for a in (record.args if isinstance(record.args, tuple)
                                          else (record.args,)))
        fields = getattr(record, "fields", None)
        if fields:
            record.fields = {k: redact(v) if isinstance(v, str) else v for k, v in fields.items()}
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, event fields, exception."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 6),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if getattr(record, "event", None):
            out["event"] = record.event
            out.update(getattr(record, "fields", {}) or {})
        if record.exc_info:
            out["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(out, default=str)


class TextFormatter(logging.Formatter):
    """`time level logger msg key=value ...` for people."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        fields = getattr(record, "fields", None) or {}
        tail = " ".join(f"{k}={v}" for k, v in fields.items())
        line = f"{stamp} {record.levelname.lower():7} {record.name}: {record.getMessage()}"
        line = f"{line} {tail}" if tail else line
        if record.exc_info:
            line += "\n" + redact(self.formatException(record.exc_info))
        return line


def configure(level: str | int | None = None, fmt: str | None = None,
              stream: Any = None) -> logging.Logger:
    """Configure the `memcluster` logger once (idempotent); env vars fill what is not given."""
    logger = logging.getLogger(ROOT)
    level = level or os.environ.get("MEMCLUSTER_LOG_LEVEL", "WARNING")
    fmt = (fmt or os.environ.get("MEMCLUSTER_LOG_FORMAT", "text")).lower()
    for handler in list(logger.handlers):
        if getattr(handler, "_memcluster", False):
            logger.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler._memcluster = True  # type: ignore[attr-defined]
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(_RedactingFilter())
    logger.addHandler(handler)
    logger.setLevel(level.upper() if isinstance(level, str) else level)
    logger.propagate = False
    return logger
