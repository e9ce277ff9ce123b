"""The REST API over any memory surface: `create_app(memory, tokens=...)` -> a FastAPI app.

    app = create_app(mc.MemoryManager.from_config("memory.yaml"), tokens=load_tokens(path))
    uvicorn.run(app, host="127.0.0.1", port=8080)       # or: memcluster serve --http ...

Routes (all under /v1; `?source=` picks a source, default the default one):

    GET    /health                        liveness, no token needed
    GET    /sources                       every source's backend, capabilities, description
    PUT    /records/{key}                 store (if_version, overwrite, ttl, metadata)
    GET    /records/{key}                 retrieve (404 NotFound when absent)
    HEAD   /records/{key}                 exists (200 or 404)
    PATCH  /records/{key}                 atomic update by JSON Merge Patch (RFC 7396)
    DELETE /records/{key}                 delete -> {"deleted": 0 | 1}
    POST   /search, /count                a query (text, pattern, filter; search: limit,
                                          offset, order_by, min_score, mode, ranking)
    GET    /keys                          one page of keys (pattern, limit, cursor)
    POST   /records:batch-store, :batch-get, :batch-delete      store_many etc.
    POST   /remember                      consolidated store -> {action, record, neighbours}
    POST   /clear                         {"confirm": true} -> {"deleted": n}
    GET    /export                        every record as NDJSON, streamed (the CLI's
                                          `memcluster import` reads it back)
    GET    /tools, POST /tools/{name}     the LLM tools' schemas, and a tool call

The OpenAPI schema is at /openapi.json (interactive docs at /docs).

Decisions:
- **The namespace comes from the bearer token** (`integrations.auth`, shared with the MCP
  HTTP server): a request never names its namespace; `?namespace=` is accepted only when
  the server runs without tokens (loopback only, see `serve`), or when it equals the
  token's own. A caller cannot reach another tenant by any argument.
- **Async handlers over the surface's async twins**: a cluster client coalesces
  concurrent requests into per-shard batches; a local manager runs each call in a worker
  thread (its backends are synchronous).
- **Typed errors** map to statuses in one table (`rest.errors`).
"""


import asyncio
import json
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import Body, Depends, FastAPI, Path, Query
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from memcluster import __version__, codec
from memcluster.errors import NotFound
from memcluster.integrations.auth import TokenTable
from memcluster.manager.surface import MemorySurface
from memcluster.manager.tools import FORMATS, record_json
from memcluster.model import Query as MemQuery
from memcluster.model import Record
from memcluster.rest import schemas
from memcluster.rest.errors import HANDLERS, Refused

NDJSON = "application/x-ndjson"
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": schemas.ErrorOut} for code in (400, 401, 403, 404, 409, 503)}


def export_line(record: Record) -> dict[str, Any]:
    """One record as a line of `memcluster export` / `import` (JSON-safe; ttl = seconds left)."""
    return {"key": record.key, "value": codec.to_json_safe(record.value),
            "namespace": record.namespace, "metadata": codec.to_json_safe(record.metadata),
            "ttl": record.ttl_left()}


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396 JSON Merge Patch: dicts merge recursively, null removes, the rest replaces."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for name, value in patch.items():
        if value is None:
            out.pop(name, None)
        else:
            out[name] = merge_patch(out.get(name), value)
    return out


def _ok(data: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(data, status_code=status)


def create_app(memory: MemorySurface, *, tokens: TokenTable | None = None,
               namespace: str | None = None) -> FastAPI:
    """The REST app over `memory`. With `tokens`, every request (but /v1/health) needs
    `Authorization: Bearer <token>` and acts in that token's namespace; without, in
    `namespace` if given, else in the request's `?namespace=` (default "")."""
    app = FastAPI(title="memcluster", version=__version__,
                  description="A shared, fault-tolerant memory for LLM agents. Every call "
                              "acts in the namespace of its bearer token.",
                  responses=_ERRORS)
    for exc_class, handler in HANDLERS.items():
        app.add_exception_handler(exc_class, handler)
    bearer = HTTPBearer(auto_error=False, description="A token bound to one namespace.")

    async def caller(  # async: FastAPI would run a plain function in a thread per request
            credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
            asked: Annotated[str | None, Query(
                alias="namespace",
                description="Only without tokens (or equal to the token's own).")] = None
            ) -> str:
        """The namespace this request acts in (see the module docstring)."""
        if tokens is None:
            return namespace if namespace is not None else codec.check_namespace(asked or "")
        principal = tokens.lookup(credentials.credentials) if credentials else None
        if principal is None:
            raise Refused(401, "Unauthorized", "a valid bearer token is required")
        if asked is not None and asked != principal.namespace:
            raise Refused(403, "Forbidden", "this token may only use its own namespace")
        return principal.namespace

    Namespace = Annotated[str, Depends(caller)]
    Source = Annotated[str | None, Query(description="The memory source (default: the "
                                                      "default source).")]
    Key = Annotated[str, Path(description="The record's key (URL-encoded).")]
    v1 = "/v1"

    @app.get(f"{v1}/health", tags=["meta"])
    async def health() -> dict[str, bool]:
        return {"ok": True}

    @app.get(f"{v1}/sources", tags=["meta"])
    async def sources(ns: Namespace):
        return _ok(await memory.ainfo())  # type: ignore[attr-defined]

    @app.put(f"{v1}/records/{{key:path}}", response_model=schemas.RecordOut, tags=["records"])
    async def store(key: Key, body: schemas.StoreBody, ns: Namespace, source: Source = None):
        record = await memory.astore(  # type: ignore[attr-defined]
            key, codec.from_json_arg(body.value, "value"), source=source, namespace=ns,
            metadata=codec.from_json_arg(body.metadata, "metadata"), ttl=body.ttl,
            if_version=body.if_version, overwrite=body.overwrite,
            consolidate=body.consolidate)
        return _ok(record_json(record))

    @app.get(f"{v1}/records/{{key:path}}", response_model=schemas.RecordOut, tags=["records"])
    async def retrieve(key: Key, ns: Namespace, source: Source = None):
        record = await memory.aretrieve(key, source=source, namespace=ns)  # type: ignore
        if record is None:
            raise NotFound(f"no record under key {key!r}")
        return _ok(record_json(record))

    @app.head(f"{v1}/records/{{key:path}}", tags=["records"])
    async def exists(key: Key, ns: Namespace, source: Source = None) -> Response:
        found = await memory.aexists(key, source=source, namespace=ns)  # type: ignore
        return Response(status_code=200 if found else 404)

    @app.patch(f"{v1}/records/{{key:path}}", response_model=schemas.RecordOut,
               tags=["records"])
    async def update(key: Key, body: schemas.PatchBody, ns: Namespace, source: Source = None):
        patch = codec.from_json_arg(body.patch, "patch")
        record = await memory.aupdate(  # type: ignore[attr-defined]
            key, lambda old: merge_patch(old, patch), source=source, namespace=ns,
            metadata=codec.from_json_arg(body.metadata, "metadata"), ttl=body.ttl)
        return _ok(record_json(record))

    @app.delete(f"{v1}/records/{{key:path}}", response_model=schemas.DeletedOut,
                tags=["records"])
    async def delete(key: Key, ns: Namespace, source: Source = None):
        found = await memory.adelete(key, source=source, namespace=ns)  # type: ignore
        return _ok({"deleted": int(found)})

    @app.post(f"{v1}/search", response_model=schemas.SearchOut, tags=["queries"])
    async def search(body: schemas.SearchBody, ns: Namespace, source: Source = None):
        query = MemQuery(text=body.text, pattern=body.pattern, filter=body.filter,
                         limit=body.limit, offset=body.offset, order_by=body.order_by,
                         min_score=body.min_score)
        found = await memory.asearch(  # type: ignore[attr-defined]
            query, source=source, namespace=ns, mode=body.mode,
            ranking=None if body.ranking is None else body.ranking.model_dump())
        return _ok({"results": [record_json(r) for r in found]})

    @app.post(f"{v1}/count", response_model=schemas.CountOut, tags=["queries"])
    async def count(body: schemas.QueryBody, ns: Namespace, source: Source = None):
        query = MemQuery(text=body.text, pattern=body.pattern, filter=body.filter)
        return _ok({"count": await memory.acount(query, source=source,  # type: ignore
                                                 namespace=ns)})

    @app.get(f"{v1}/keys", response_model=schemas.KeysOut, tags=["queries"])
    async def keys(ns: Namespace, source: Source = None, pattern: str | None = None,
                   limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
                   cursor: str | None = None):
        page = await memory.alist_keys(pattern, source=source, namespace=ns,  # type: ignore
                                       limit=limit, cursor=cursor)
        return _ok({"keys": page.keys, "cursor": page.cursor})

    @app.post(f"{v1}/records:batch-store", response_model=schemas.RecordsOut, tags=["batches"])
    async def store_many(body: schemas.StoreManyBody, ns: Namespace, source: Source = None):
        items = [(i.key, codec.from_json_arg(i.value, f"items[{n}].value"),
                  {"metadata": codec.from_json_arg(i.metadata, f"items[{n}].metadata"),
                   "ttl": i.ttl, "if_version": i.if_version, "overwrite": i.overwrite})
                 for n, i in enumerate(body.items)]
        records = await memory.astore_many(items, source=source, namespace=ns)  # type: ignore
        return _ok({"records": [record_json(r) for r in records]})

    @app.post(f"{v1}/records:batch-get", response_model=schemas.FoundOut, tags=["batches"])
    async def retrieve_many(body: schemas.KeysBody, ns: Namespace, source: Source = None):
        found = await memory.aretrieve_many(body.keys, source=source,  # type: ignore
                                            namespace=ns)
        return _ok({"records": {k: record_json(r) for k, r in found.items()}})

    @app.post(f"{v1}/records:batch-delete", response_model=schemas.DeletedOut,
              tags=["batches"])
    async def delete_many(body: schemas.KeysBody, ns: Namespace, source: Source = None):
        return _ok({"deleted": await memory.adelete_many(body.keys, source=source,  # type: ignore
                                                         namespace=ns)})

    @app.post(f"{v1}/remember", response_model=schemas.RememberOut, tags=["records"])
    async def remember(body: schemas.RememberBody, ns: Namespace, source: Source = None):
        done = await memory.aremember(  # type: ignore[attr-defined]
            body.key, codec.from_json_arg(body.value, "value"), source=source, namespace=ns,
            metadata=codec.from_json_arg(body.metadata, "metadata"), ttl=body.ttl)
        return _ok({"action": done.action, "record": record_json(done.record),
                    "neighbours": [record_json(r) for r in done.neighbours]})

    @app.post(f"{v1}/clear", response_model=schemas.DeletedOut, tags=["batches"])
    async def clear(body: schemas.ClearBody, ns: Namespace, source: Source = None):
        removed = await memory.aclear(source=source, namespace=ns,  # type: ignore
                                      confirm=body.confirm)
        return _ok({"deleted": removed})

    @app.get(f"{v1}/export", tags=["batches"], response_class=StreamingResponse,
             responses={200: {"content": {NDJSON: {}},
                              "description": "One JSON record per line."}})
    async def export(ns: Namespace, source: Source = None) -> StreamingResponse:
        records = memory.export(source=source, namespace=ns)
        first = await asyncio.to_thread(next, records, None)  # errors before the 200

        def lines() -> Iterator[str]:
            if first is not None:
                yield json.dumps(export_line(first), ensure_ascii=False) + "\n"
                for record in records:
                    yield json.dumps(export_line(record), ensure_ascii=False) + "\n"

        return StreamingResponse(lines(), media_type=NDJSON)

    @app.get(f"{v1}/tools", tags=["tools"])
    async def tools(ns: Namespace, fmt: Annotated[str, Query(
            description=f"One of {', '.join(FORMATS)}.")] = "openai"):
        return _ok(await asyncio.to_thread(memory.tools, fmt, ns))

    @app.post(f"{v1}/tools/{{name}}", tags=["tools"])
    async def call_tool(name: str, ns: Namespace,
                        arguments: Annotated[dict[str, Any] | None, Body()] = None):
        """Run one tool call; errors come back in the body (`ok: false`), as to an LLM."""
        return _ok(await asyncio.to_thread(memory.call_tool, name, arguments or {}, ns))

    return app


__all__ = ["NDJSON", "create_app", "export_line", "merge_patch"]
