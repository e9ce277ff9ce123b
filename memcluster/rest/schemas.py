"""The REST API's request and response bodies, as pydantic models (they are its OpenAPI).

Values and metadata travel as JSON with memcluster's tags for what JSON cannot carry
exactly (`{"$bytes": base64}`, `{"$float": "nan"}`; see `codec.to_json_safe`). Bodies are
strict (no "5" for 5) and closed (an unknown field is an error): a typo must fail, not be
ignored. Requests are validated again by memcluster itself, so these models describe the
API; the checks that matter (key and value limits, filters) are the library's own.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class StoreBody(Body):
    value: Any = Field(description="Any JSON value (bytes as {\"$bytes\": base64}).")
    metadata: dict[str, Any] | None = Field(None, description="Tags and fields for filters.")
    ttl: float | None = Field(None, description="Seconds until the record expires.")
    if_version: int | None = Field(None, description="Write only if the current version is "
                                   "this (0: only if absent); else 409.")
    overwrite: bool = True
    consolidate: bool | None = Field(None, description="On a source with consolidation: "
                                     "false skips it, true requires it.")


class RememberBody(Body):
    key: str
    value: Any
    metadata: dict[str, Any] | None = None
    ttl: float | None = None


class PatchBody(Body):
    patch: Any = Field(description="A JSON Merge Patch (RFC 7396) applied atomically to "
                       "the value: null removes a field.")
    metadata: dict[str, Any] | None = Field(None, description="Replaces the metadata.")
    ttl: float | None = None


class RankingBody(Body):
    relevance: float = 1.0
    recency: float = 0.0
    importance: float = 0.0
    half_life: float = Field(86400.0, description="Seconds for recency to halve.")
    importance_field: str = "importance"
    importance_scale: float = 1.0


class QueryBody(Body):
    text: str | None = Field(None, description="Substring (key-value sources) or meaning "
                             "(vector sources).")
    pattern: str | None = Field(None, description="Glob on keys.")
    filter: dict[str, Any] | None = Field(None, description="Metadata filter ($eq $gt $in "
                                          "$contains $and ...).")


class SearchBody(QueryBody):
    limit: int = Field(10, ge=0)
    offset: int = Field(0, ge=0)
    order_by: str | None = None
    min_score: float | None = None
    mode: Literal["vector", "keyword", "hybrid"] | None = Field(
        None, description="Vector sources: meaning, BM25 keywords, or both fused.")
    ranking: RankingBody | None = Field(None, description="Mix in recency and importance.")


class Item(Body):
    key: str
    value: Any
    metadata: dict[str, Any] | None = None
    ttl: float | None = None
    if_version: int | None = None
    overwrite: bool = True


class StoreManyBody(Body):
    items: list[Item]


class KeysBody(Body):
    keys: list[str]


class ClearBody(Body):
    confirm: bool = Field(False, description="Must be true: clear removes every record of "
                          "the namespace.")


class RecordOut(BaseModel):
    key: str
    value: Any
    namespace: str
    metadata: dict[str, Any]
    version: int
    created_at: float
    updated_at: float
    expires_at: float | None
    score: float | None = None


class SearchOut(BaseModel):
    results: list[RecordOut]


class RecordsOut(BaseModel):
    records: list[RecordOut]


class FoundOut(BaseModel):
    records: dict[str, RecordOut] = Field(description="Found keys only.")


class CountOut(BaseModel):
    count: int


class KeysOut(BaseModel):
    keys: list[str]
    cursor: str | None = Field(description="Pass back for the next page; null: no more.")


class DeletedOut(BaseModel):
    deleted: int = Field(description="How many records existed and were removed.")


class RememberOut(BaseModel):
    action: Literal["add", "update", "skip"]
    record: RecordOut
    neighbours: list[RecordOut]


class ErrorDetail(BaseModel):
    type: str = Field(description="The memcluster error class, e.g. VersionConflict.")
    message: str
    retryable: bool = Field(description="True for transient errors: retry after a pause.")
    expected: int | None = None
    actual: int | None = None


class ErrorOut(BaseModel):
    error: ErrorDetail


__all__ = [
    "ClearBody",
    "CountOut",
    "DeletedOut",
    "ErrorOut",
    "FoundOut",
    "Item",
    "KeysBody",
    "KeysOut",
    "PatchBody",
    "QueryBody",
    "RecordOut",
    "RecordsOut",
    "RememberBody",
    "RememberOut",
    "SearchBody",
    "SearchOut",
    "StoreBody",
    "StoreManyBody",
]
