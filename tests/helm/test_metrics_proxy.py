"""The chart's metrics proxy (helm/memcluster/files/metrics_proxy.py) against real servers.

The proxy runs as its own process, as in the watch pod; the "manager" is a real
prometheus-client HTTP server (what the manager actor serves /metrics with), started on
one loopback address and then moved to another, as the manager moves between workers.
"""

from __future__ import annotations

import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from tests.helm.chart_render import CHART
from tests.support import free_port, wait_until

PROXY = CHART / "files" / "metrics_proxy.py"


def get(url: str, accept: str | None = None) -> tuple[int, str, str]:
    request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


def manager(address: str, port: int, epoch: int):
    """A /metrics server like the manager's, with one gauge telling which one answered."""
    registry = CollectorRegistry()
    Gauge("memcluster_manager_epoch", "epoch", registry=registry).set(epoch)
    server, thread = start_http_server(port, addr=address, registry=registry)
    return server, thread


def stop(server_and_thread) -> None:
    server, thread = server_and_thread
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture
def proxy() -> Iterator[tuple[str, int]]:
    """A running proxy whose targets are 127.0.0.1:P and 127.0.0.2:P; yields (url, P)."""
    listen, target = free_port(), free_port()
    proc = subprocess.Popen(
        [sys.executable, str(PROXY), "--listen", f"127.0.0.1:{listen}",
         "--target", f"127.0.0.1:{target}", "--target", f"127.0.0.2:{target}",
         "--timeout", "0.5", "--deadline", "3"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{listen}"
    try:
        wait_until(lambda: get(f"{url}/healthz")[0] == 200, timeout=20,
                   message="the metrics proxy to listen")
        yield url, target
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_proxy_serves_the_manager_wherever_it_runs_and_503_when_none(proxy) -> None:
    url, port = proxy
    status, _, body = get(f"{url}/metrics")
    assert status == 503 and "no memcluster manager" in body

    first = manager("127.0.0.2", port, epoch=1)  # nothing listens on 127.0.0.1:port
    try:
        status, content_type, body = get(f"{url}/metrics")
        assert status == 200, body
        assert content_type.startswith("text/plain")
        assert "memcluster_manager_epoch 1.0" in body
        status, content_type, _ = get(f"{url}/metrics", accept="application/openmetrics-text")
        assert status == 200 and content_type.startswith("application/openmetrics-text")
    finally:
        stop(first)
    assert get(f"{url}/metrics")[0] == 503  # the manager's pod is gone

    moved = manager("127.0.0.1", port, epoch=2)  # restarted on another worker
    try:
        status, _, body = get(f"{url}/metrics")
        assert status == 200 and "memcluster_manager_epoch 2.0" in body
    finally:
        stop(moved)
    assert get(f"{url}/healthz")[0] == 200  # the proxy's own liveness, manager or not
    assert get(f"{url}/other")[0] == 404


def test_proxy_skips_names_that_do_not_resolve() -> None:
    sys.path.insert(0, str(PROXY.parent))
    try:
        import metrics_proxy
    finally:
        sys.path.remove(str(PROXY.parent))
    found = metrics_proxy.resolve([("no-such-host.invalid", 9464), ("127.0.0.1", 9464),
                                   ("127.0.0.1", 9464)])
    assert found == [("127.0.0.1", 9464)]
