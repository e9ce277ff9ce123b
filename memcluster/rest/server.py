"""Running the REST app: `serve` (blocking, for `memcluster serve`) and `start` (a server
on a thread, for tests and benchmarks), over uvicorn.

Without tokens the server refuses any address but a loopback one, where, as with the MCP
server over stdio, local processes are trusted (the namespace is then the request's
`?namespace=`, or the one `--namespace` binds). A server reachable from other hosts
always needs bearer tokens.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from typing import Any

from memcluster.errors import ConfigError, Timeout
from memcluster.integrations.auth import TokenTable
from memcluster.manager.surface import MemorySurface


def parse_address(address: str) -> tuple[str, int]:
    """"HOST:PORT" (IPv6 as "[::1]:PORT") -> (host, port); ConfigError if malformed."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"--http: expected HOST:PORT (e.g. 127.0.0.1:8080), got {address!r}")
    return host.strip("[]"), int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def build(memory: MemorySurface, host: str, *, tokens: TokenTable | None,
          namespace: str | None) -> Any:
    """The app for `host`, refusing a token-less server on a non-loopback address."""
    from memcluster.rest.app import create_app

    if tokens is None and not is_loopback(host):
        raise ConfigError(f"--http: {host} is not a loopback address; serving it needs "
                          "bearer tokens (--token-file or $MEMCLUSTER_TOKENS)")
    if tokens is not None and namespace is not None:
        raise ConfigError("--namespace conflicts with bearer tokens (each has its own)")
    return create_app(memory, tokens=tokens, namespace=namespace)


def serve(memory: MemorySurface, host: str, port: int, *, tokens: TokenTable | None = None,
          namespace: str | None = None) -> None:
    """Serve until interrupted (SIGINT/SIGTERM)."""
    import uvicorn

    uvicorn.run(build(memory, host, tokens=tokens, namespace=namespace), host=host, port=port,
                log_level="warning", access_log=False)


class Running:
    """A server on a background thread: `url`, and `stop()` (also a context manager)."""

    def __init__(self, server: Any, thread: threading.Thread, url: str) -> None:
        self.server, self.thread, self.url = server, thread, url

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

    def __enter__(self) -> Running:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start(memory: MemorySurface, host: str, port: int, *, tokens: TokenTable | None = None,
          namespace: str | None = None, timeout: float = 10.0) -> Running:
    """Start serving on a thread and return once it accepts connections."""
    import uvicorn

    config = uvicorn.Config(build(memory, host, tokens=tokens, namespace=namespace),
                            host=host, port=port, log_level="warning", access_log=False,
                            lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="memcluster-rest", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise Timeout(f"the REST server on {host}:{port} did not start")
        time.sleep(0.02)
    return Running(server, thread, f"http://{host}:{port}")


__all__ = ["Running", "build", "is_loopback", "parse_address", "serve", "start"]
