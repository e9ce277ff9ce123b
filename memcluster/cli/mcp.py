"""`memcluster mcp`: the memory from --config/--cluster, served as an MCP server on stdio."""

from __future__ import annotations

import argparse

from memcluster.cli.data import open_surface


def cmd_mcp(args: argparse.Namespace) -> int:
    """Serve the memory tools (bound to `--namespace` if given) until the client leaves."""
    import anyio

    from memcluster.integrations.mcp import serve

    namespace = getattr(args, "namespace", None)
    with open_surface(args) as memory:
        anyio.run(serve, memory, namespace)
    return 0
