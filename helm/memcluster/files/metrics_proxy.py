"""Serve the memcluster manager's /metrics at one fixed address, wherever the manager runs.

    python metrics_proxy.py --listen 0.0.0.0:9464 --target mc-workers.memory.svc:9464

The manager actor serves /metrics on `metrics_port` of the worker pod it happens to run on,
and it moves when that pod goes. Scraping every worker would give one live target and
up=0 for all the others; this proxy gives Prometheus one target instead. On each scrape
it resolves the targets (a headless Service name resolves to every worker pod), asks the
address that answered last time first, then the others, and relays the first 200. When
none answers it returns 503, so `up` on this target says whether the manager is serving.

GET /healthz answers 200 as long as the proxy runs (its liveness), whatever the manager.

Standard library only (it runs in the memcluster image next to `memcluster up --watch`).
Rejected alternative: a Ray call that asks where the manager is would tie a scrape to the
Ray client connection and to memcluster internals; a TCP probe of a few pods is cheap.
"""

from __future__ import annotations

import argparse
import http.client
import http.server
import socket
import sys
import threading
import time

Address = tuple[str, int]


def split_host_port(text: str) -> Address:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def resolve(targets: list[Address]) -> list[Address]:
    """Every address the targets resolve to, in order, without repeats; unresolvable
    names are skipped (a headless Service with no pods has no addresses)."""
    found: dict[Address, None] = {}
    for host, port in targets:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror:
            continue
        for _family, _type, _proto, _name, sockaddr in infos:
            found[(str(sockaddr[0]), int(sockaddr[1]))] = None
    return list(found)


class ManagerFinder:
    """Finds the address that serves /metrics, trying the last one that did first."""

    def __init__(self, targets: list[Address], timeout: float, deadline: float) -> None:
        self.targets = targets
        self.timeout = timeout
        self.deadline = deadline
        self._last: Address | None = None
        self._lock = threading.Lock()

    def fetch(self, accept: str | None) -> tuple[str, bytes] | None:
        """(content type, body) of the first address that answers 200, or None."""
        candidates = resolve(self.targets)
        with self._lock:
            last = self._last
        if last in candidates:
            candidates.remove(last)
            candidates.insert(0, last)
        give_up = time.monotonic() + self.deadline
        for address in candidates:
            if time.monotonic() > give_up:
                break
            answer = self._get(address, accept)
            if answer is not None:
                with self._lock:
                    if self._last != address:
                        print(f"metrics_proxy: the manager's /metrics is at "
                              f"{address[0]}:{address[1]}", file=sys.stderr, flush=True)
                    self._last = address
                return answer
        return None

    def _get(self, address: Address, accept: str | None) -> tuple[str, bytes] | None:
        conn = http.client.HTTPConnection(address[0], address[1], timeout=self.timeout)
        try:
            conn.request("GET", "/metrics", headers={"Accept": accept} if accept else {})
            response = conn.getresponse()
            body = response.read()
            if response.status != 200:
                return None
            return response.getheader("Content-Type", "text/plain"), body
        except (OSError, http.client.HTTPException):
            return None
        finally:
            conn.close()


def make_handler(finder: ManagerFinder) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # the name http.server dispatches GET to
            path = self.path.split("?", 1)[0]
            if path == "/healthz":
                self._send(200, "text/plain", b"ok\n")
            elif path == "/metrics":
                answer = finder.fetch(self.headers.get("Accept"))
                if answer is None:
                    self._send(503, "text/plain",
                               b"no memcluster manager is serving /metrics right now\n")
                else:
                    self._send(200, *answer)
            else:
                self._send(404, "text/plain", b"not found: try /metrics\n")

        def _send(self, status: int, content_type: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # one line per scrape is noise; address changes are logged instead

    return Handler


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", type=split_host_port, required=True, metavar="HOST:PORT")
    parser.add_argument("--target", type=split_host_port, action="append", required=True,
                        metavar="HOST:PORT", help="where the manager may serve (repeatable)")
    parser.add_argument("--timeout", type=float, default=2.0,
                        help="seconds per address tried (default 2)")
    parser.add_argument("--deadline", type=float, default=8.0,
                        help="seconds per scrape, all addresses together (default 8)")
    args = parser.parse_args(argv)
    finder = ManagerFinder(args.target, args.timeout, args.deadline)
    server = http.server.ThreadingHTTPServer(args.listen, make_handler(finder))
    print(f"metrics_proxy: serving on {args.listen[0]}:{server.server_port}",
          file=sys.stderr, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
