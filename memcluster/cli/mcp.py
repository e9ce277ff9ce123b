"""`memcluster mcp`: the memory from --config/--cluster as an MCP server, on stdio or
streamable HTTP (`--http HOST:PORT`, with bearer tokens each bound to a namespace)."""

from __future__ import annotations

import argparse

from memcluster.cli.data import open_surface
from memcluster.cli.output import CommandFailed, UsageError


def cmd_mcp(args: argparse.Namespace) -> int:
    """Serve the memory tools until the client leaves (stdio) or the process is stopped."""
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
