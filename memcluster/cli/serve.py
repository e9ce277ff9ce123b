"""`memcluster serve --http HOST:PORT`: the memory from --config/--cluster as a REST API.

Bearer tokens come from `--token-file` or $MEMCLUSTER_TOKENS ("TOKEN NAMESPACE" lines,
see `memcluster.integrations.auth`); without any, the server only binds a loopback
address. The OpenAPI schema is served at /openapi.json, the docs at /docs.
"""

from __future__ import annotations

import argparse
import sys

from memcluster.cli.data import open_surface
from memcluster.cli.output import UsageError


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve until interrupted; the memory is opened first, so a bad config fails fast."""
    try:
        from memcluster.rest import server
    except ImportError as exc:  # fastapi / uvicorn missing
        raise UsageError(f"the REST server needs the rest extra (pip install "
                         f"'memcluster[rest]'): {exc}") from None
    from memcluster.integrations.auth import load_tokens

    host, port = server.parse_address(args.http)
    tokens = load_tokens(args.token_file)
    with open_surface(args) as memory:
        server.build(memory, host, tokens=tokens, namespace=args.namespace)  # checks first
        print(f"memcluster REST on http://{host}:{port} (OpenAPI: /openapi.json, docs: /docs"
              f"{'' if tokens else '; no tokens: loopback only'})", file=sys.stderr)
        server.serve(memory, host, port, tokens=tokens, namespace=args.namespace)
    return 0
