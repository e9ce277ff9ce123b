"""Structured logs: events carry fields, JSON lines parse, secrets never appear."""

from __future__ import annotations

import io
import json
import logging

import pytest

from memcluster import logs


@pytest.fixture(autouse=True)
def _restore_logger():
    root = logging.getLogger(logs.ROOT)
    saved = (list(root.handlers), root.level, root.propagate)
    yield
    root.handlers[:], root.level, root.propagate = saved[0], saved[1], saved[2]


def _capture(fmt: str) -> tuple[io.StringIO, logging.Logger]:
    stream = io.StringIO()
    logs.configure(level="DEBUG", fmt=fmt, stream=stream)
    return stream, logs.get_logger("test")


def test_json_event_has_name_and_fields() -> None:
    stream, log = _capture("json")
    logs.event(log, "ring.switched", source="cache", version=4)
    line = json.loads(stream.getvalue().strip())
    assert line["event"] == "ring.switched"
    assert line["source"] == "cache" and line["version"] == 4
    assert line["logger"] == "memcluster.test" and line["level"] == "info"


def test_passwords_are_redacted_in_messages_fields_and_tracebacks() -> None:
    stream, log = _capture("json")
    secret = "s3cr3t-pa55"
    logs.event(log, "redis.connect", url=f"redis://:{secret}@10.0.0.1:6379/0")
    log.warning("connecting to %s", f"rediss://user:{secret}@host:6380")
    try:
        raise RuntimeError(f"auth failed for postgresql://app:{secret}@db/x password={secret}")
    except RuntimeError:
        log.exception("boom")
    out = stream.getvalue()
    assert secret not in out
    assert "redis://:***@10.0.0.1:6379/0" in out
    assert "rediss://user:***@host:6380" in out


def test_text_format_is_one_readable_line() -> None:
    stream, log = _capture("text")
    logs.event(log, "leader.elected", epoch=7)
    line = stream.getvalue().strip()
    assert "leader.elected" in line and "epoch=7" in line and "\n" not in line


def test_redact_leaves_urls_without_password_alone() -> None:
    assert logs.redact("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    assert logs.redact("redis://user@host/0") == "redis://user@host/0"
