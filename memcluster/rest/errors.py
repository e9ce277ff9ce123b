"""memcluster's typed errors as HTTP responses: one status per error class, one body shape.

Every error answer is `{"error": {"type", "message", "retryable", ...}}` with the
memcluster class name as `type` (the same names the LLM tools return), so a client in any
language switches on `type` and retries when `retryable` says so (transient errors also
carry `Retry-After: 1`). Messages pass through `secrets.redact_text`; an unexpected
exception answers 500 "InternalError" with no detail (it is logged, never sent).

| status | errors |
|---|---|
| 400 | InvalidKey, InvalidValue, UnsupportedQuery, ConfirmationRequired, bad request bodies |
| 401 / 403 | no or unknown bearer token / a namespace other than the token's |
| 404 | NotFound (also a missing key on GET), UnknownSource |
| 409 | VersionConflict (with `expected` and `actual`) |
| 501 | UnsupportedOperation |
| 503 | SourceUnavailable, QuorumNotReached, StaleRing, ShardUnavailable, other transient |
| 504 | Timeout |
| 507 | CapacityExceeded |
| 500 | ConfigError, UnknownOutcome, anything else |
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from memcluster import errors
from memcluster.logs import event, get_logger
from memcluster.secrets import redact_text

STATUS: dict[type[errors.MemclusterError], int] = {
    errors.InvalidKey: 400, errors.InvalidValue: 400, errors.UnsupportedQuery: 400,
    errors.ConfirmationRequired: 400, errors.NotFound: 404, errors.UnknownSource: 404,
    errors.VersionConflict: 409, errors.UnsupportedOperation: 501, errors.Timeout: 504,
    errors.CapacityExceeded: 507, errors.UnknownOutcome: 500,
}
_log = get_logger("rest")


class Refused(Exception):
    """An authentication or authorisation failure (401 or 403)."""

    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind


def status_of(exc: errors.MemclusterError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]  # type: ignore[index]
    return 503 if isinstance(exc, errors.TransientError) else 500


def error_response(status: int, kind: str, message: str, *, retryable: bool = False,
                   headers: dict[str, str] | None = None, **fields: Any) -> JSONResponse:
    detail = {"type": kind, "message": redact_text(message), "retryable": retryable,
              **{k: v for k, v in fields.items() if v is not None}}
    return JSONResponse({"error": detail}, status_code=status, headers=headers)


async def on_memcluster_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, errors.MemclusterError)
    retryable = isinstance(exc, errors.TransientError)
    return error_response(status_of(exc), type(exc).__name__, str(exc), retryable=retryable,
                          headers={"Retry-After": "1"} if retryable else None,
                          expected=getattr(exc, "expected", None),
                          actual=getattr(exc, "actual", None))


async def on_refused(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Refused)
    headers = {"WWW-Authenticate": 'Bearer error="invalid_token"'} if exc.status == 401 else None
    return error_response(exc.status, exc.kind, str(exc), headers=headers)


async def on_bad_request(request: Request, exc: Exception) -> JSONResponse:
    """A body or parameter that fails the schema: 400 InvalidValue naming the field."""
    assert isinstance(exc, RequestValidationError)
    problems = []
    for err in exc.errors()[:3]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        problems.append(f"{where}: {err.get('msg', 'invalid')}")
    return error_response(400, "InvalidValue", "; ".join(problems) or "invalid request")


async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    event(_log, "rest.internal_error", level=logging.ERROR, path=request.url.path,
          error=type(exc).__name__)
    return error_response(500, "InternalError", "internal error")


HANDLERS = {errors.MemclusterError: on_memcluster_error, Refused: on_refused,
            RequestValidationError: on_bad_request, Exception: on_unexpected}

__all__ = ["HANDLERS", "STATUS", "Refused", "error_response", "status_of"]
