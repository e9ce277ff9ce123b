"""The data commands, written once against `MemorySurface`: put, get, search, keys, del,
count, tools, export, import. They behave the same on a local `--config FILE` memory and on
a `--cluster NAME`; `open_surface(args)` picks which.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator
from typing import Any

from memcluster import codec
from memcluster.cli.output import (
    ENV_CLUSTER,
    CommandFailed,
    Progress,
    UsageError,
    emit,
    parse_json,
    table,
)
from memcluster.errors import MemclusterError
from memcluster.manager.memory_manager import MemoryManager
from memcluster.manager.surface import MemorySurface
from memcluster.manager.tools import record_json, tags_filter
from memcluster.ops import StoreOp

IMPORT_CHUNK = 500


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


def _filter(args: argparse.Namespace) -> dict[str, Any] | None:
    extra = parse_json(args.filter, "--filter") if getattr(args, "filter", None) else None
    if extra is not None and not isinstance(extra, dict):
        raise UsageError(f"--filter: must be a JSON object, got {type(extra).__name__}")
    return tags_filter(args.tag, extra)




def cmd_put(args: argparse.Namespace, mem: MemorySurface) -> int:
    value = parse_json(args.value, "JSON")
    metadata = parse_json(args.metadata, "--metadata") if args.metadata else {}
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
    progress = Progress("exported")
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
    progress = Progress("imported", len(items))
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


