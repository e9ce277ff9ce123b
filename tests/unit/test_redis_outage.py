"""The redis backend through an outage, and with a password it must never reveal.

Each test runs its own redis-server (the `redis_server` fixture) so it can stop and restart
it without touching the machine's Redis.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import redis

from memcluster.backends.redis import RedisBackend
from memcluster.backends.registry import create_backend
from memcluster.errors import ConfigError, SourceUnavailable
from memcluster.model import Query
from memcluster.ops import ListKeysOp, RetrieveOp, SearchOp, StoreOp
from memcluster.secrets import redact_text, redact_url
from tests.support import RedisServer, free_port, redis_server_binary, wait_until

PASSWORD = "pa55:w0rd@hush"  # URL-special characters on purpose
QUOTED = "pa55%3Aw0rd%40hush"
FAST = {"connect_timeout": 0.5, "socket_timeout": 2.0}


def _open(url: str, **opts: object) -> RedisBackend:
    backend = create_backend("redis", {"url": url, **FAST, **opts}, prefix="outage")
    assert isinstance(backend, RedisBackend)
    return backend


def test_operations_fail_while_redis_is_down_and_recover_on_the_same_instance(redis_server):
    backend = _open(redis_server.url)
    try:
        backend.store(StoreOp.make("before", 1))
        redis_server.stop()
        for attempt in (
            lambda: backend.store(StoreOp.make("k", 1)),
            lambda: backend.retrieve(RetrieveOp.make("before")),
            lambda: backend.store_many([StoreOp.make("a", 1), StoreOp.make("b", 2)]),
            lambda: backend.list_keys(ListKeysOp.make()),
            lambda: backend.search(SearchOp.make(Query(pattern="*"))),
        ):
            with pytest.raises(SourceUnavailable, match=r"redis at redis://127\.0\.0\.1"):
                attempt()
        redis_server.start()  # a fresh server: no cached Lua scripts, maybe no data
        assert backend.store(StoreOp.make("after", {"v": 2})).version == 1
        assert backend.store_many([StoreOp.make("a", 1), StoreOp.make("b", 2)])[1].version == 1
        assert backend.retrieve(RetrieveOp.make("after")).value == {"v": 2}
        assert {"a", "after", "b"} <= set(backend.list_keys(ListKeysOp.make()).keys)
    finally:
        backend.close()


def test_a_password_never_appears_in_info_or_errors(tmp_path):
    server = RedisServer(tmp_path / "pw", port=free_port(), password=PASSWORD)
    server.start()
    url = f"redis://:{QUOTED}@127.0.0.1:{server.port}/0"
    backend = _open(url)
    try:
        backend.store(StoreOp.make("k", "v"))
        info = repr(backend.info())
        assert PASSWORD not in info and QUOTED not in info and "***" in info
        server.stop()
        with pytest.raises(SourceUnavailable) as caught:
            backend.retrieve(RetrieveOp.make("k"))
        text = str(caught.value) + repr(caught.value) + repr(caught.value.__cause__)
        assert PASSWORD not in text and QUOTED not in text
        assert "***" in text
    finally:
        backend.close()
        server.close()


def test_a_wrong_password_is_unavailable_without_echoing_it(tmp_path):
    server = RedisServer(tmp_path / "pw", port=free_port(), password=PASSWORD)
    server.start()
    try:
        with pytest.raises(SourceUnavailable) as caught:
            _open(f"redis://:not-the-{QUOTED}@127.0.0.1:{server.port}/0")
        assert QUOTED not in str(caught.value) and "not-the" not in str(caught.value)
    finally:
        server.close()


def _tls_server(directory: Path, port: int) -> tuple[subprocess.Popen[bytes], Path]:
    """A redis-server speaking only TLS, with a fresh self-signed certificate."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    proc = subprocess.Popen(
        [redis_server_binary(), "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
         "--tls-cert-file", str(cert), "--tls-key-file", str(key), "--tls-ca-cert-file",
         str(cert), "--tls-auth-clients", "no", "--requirepass", PASSWORD, "--save", "",
         "--dir", str(directory)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc, cert


def test_rediss_urls_speak_tls_with_a_password_that_stays_hidden(tmp_path):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    port = free_port()
    proc, cert = _tls_server(tmp_path / "tls", port)
    url = f"rediss://:{QUOTED}@127.0.0.1:{port}/0?ssl_ca_certs={cert}"
    try:
        backend = wait_until(lambda: _open(url), timeout=10, message="TLS redis-server")
        try:
            assert backend.store(StoreOp.make("k", "over tls")).version == 1
            assert backend.retrieve(RetrieveOp.make("k")).value == "over tls"
            assert QUOTED not in repr(backend.info())
            assert issubclass(backend.client.connection_pool.connection_class,
                              redis.SSLConnection)
        finally:
            backend.close()
        # A plain redis:// client cannot talk to it: unavailable, password masked.
        with pytest.raises(SourceUnavailable) as caught:
            _open(f"redis://:{QUOTED}@127.0.0.1:{port}/0", socket_timeout=0.5)
        assert QUOTED not in str(caught.value) and "***" in str(caught.value)
    finally:
        proc.kill()
        proc.wait(timeout=10)


@pytest.mark.parametrize("opts, field", [
    ({"url": "http://x"}, "url"),
    ({"url": "redis://127.0.0.1:1/0", "prefix": ""}, "prefix"),
    ({"url": "redis://127.0.0.1:1/0", "max_connections": -1}, "max_connections"),
    ({"url": "redis://127.0.0.1:1/0", "socket_timeout": 0}, "socket_timeout"),
    ({"url": "redis://127.0.0.1:1/0", "colour": "red"}, "colour"),
])
def test_bad_options_are_config_errors_naming_the_option(opts, field):
    with pytest.raises(ConfigError, match=field):
        RedisBackend().open(opts)


@pytest.mark.parametrize("url, shown", [
    ("redis://:secret@h:6379/0", "redis://:***@h:6379/0"),
    ("rediss://user:secret@h/1", "rediss://user:***@h/1"),
    ("redis://h:6379/0", "redis://h:6379/0"),
    ("postgresql://app:secret@db:5432/test?sslmode=require", "postgresql://app:***@db:5432/test"
     "?sslmode=require"),
    ("postgresql://db/test?password=secret&x=1", "postgresql://db/test?password=***"),
    ("host=db user=app password='se cret' dbname=test", "host=db user=app password=*** "
     "dbname=test"),
])
def test_redact_url_masks_every_form_of_password(url, shown):
    assert redact_url(url) == shown
    assert "secret" not in redact_url(url) and "cret" not in redact_url(url)


def test_redact_text_masks_a_known_secret_echoed_bare():
    """Drivers sometimes echo the password alone (no URL around it): the caller names it."""
    message = "auth failed for hunter2 at redis://:hunter2@h:6379/0"
    assert redact_text(message, "hunter2") == "auth failed for *** at redis://:***@h:6379/0"
    assert redact_text(message, None) == "auth failed for hunter2 at redis://:***@h:6379/0"
