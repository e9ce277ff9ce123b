"""Shared fixtures: real services (or a skip, or a failure under MEMCLUSTER_REQUIRE_SERVICES=1),
private redis-servers that tests may break, and one local Ray per session."""

from __future__ import annotations

import os
import random

import pytest

from tests.support import RedisServer, free_port, require_service


def pytest_configure(config: pytest.Config) -> None:
    """Choose the session's seed before any test module is imported (modules read it at
    import). Set here, not in `pytest_report_header`: pytest skips the header under -q,
    which is how CI runs, and the seed was then never set."""
    seed = os.environ.get("MEMCLUSTER_TEST_SEED") or str(random.randrange(1 << 30))
    os.environ["MEMCLUSTER_TEST_SEED"] = seed


def _seed_line() -> str:
    return (f"memcluster test seed: {os.environ['MEMCLUSTER_TEST_SEED']} "
            "(set MEMCLUSTER_TEST_SEED to replay)")


def pytest_report_header(config: pytest.Config) -> str:
    return _seed_line()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int,
                            config: pytest.Config) -> None:
    """The seed again at the end, where -q (no header) still prints it."""
    terminalreporter.write_line(_seed_line())


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The machine's Redis (MEMCLUSTER_TEST_REDIS_URL, default 127.0.0.1:6379/0)."""
    url = os.environ.get("MEMCLUSTER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except Exception as exc:  # any failure means "not reachable"
        require_service(f"Redis at {url} is not reachable: {type(exc).__name__}")
    return url


@pytest.fixture(scope="session")
def postgres_dsn() -> str:
    """The machine's PostgreSQL (MEMCLUSTER_TEST_POSTGRES_DSN, default database `test`)."""
    dsn = os.environ.get("MEMCLUSTER_TEST_POSTGRES_DSN",
                         "postgresql://postgres@127.0.0.1:5432/test")
    try:
        import psycopg
    except ImportError:
        require_service("psycopg is not installed (pip install 'memcluster[postgres]')")
    try:
        with psycopg.connect(dsn, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:
        require_service(f"PostgreSQL at {dsn} is not reachable: {type(exc).__name__}")
    return dsn


@pytest.fixture(scope="session")
def mysql_dsn() -> str:
    """The machine's MariaDB or MySQL (MEMCLUSTER_TEST_MYSQL_DSN, default database `test`)."""
    dsn = os.environ.get("MEMCLUSTER_TEST_MYSQL_DSN", "mysql://root@127.0.0.1:3306/test")
    try:
        import pymysql

        from memcluster.backends.mysql import parse_dsn
    except ImportError:
        require_service("PyMySQL is not installed (pip install 'memcluster[mysql]')")
    try:
        pymysql.connect(**parse_dsn(dsn), connect_timeout=3).close()
    except Exception as exc:
        require_service(f"MySQL at {dsn} is not reachable: {type(exc).__name__}")
    return dsn


@pytest.fixture
def redis_server(tmp_path):
    """A private redis-server on a free port that the test may stop, freeze and restart."""
    server = RedisServer(tmp_path / "redis", port=free_port())
    server.start()
    yield server
    server.close()


@pytest.fixture(scope="module")
def module_redis(tmp_path_factory):
    """A private redis-server shared by one test module (which may freeze or restart it)."""
    server = RedisServer(tmp_path_factory.mktemp("redis"), port=free_port())
    server.start()
    yield server
    server.close()


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for the whole session (num_cpus=2); shut down at the end. Always a new
    instance (`address="local"`): never one another job started on this machine."""
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
    yield ray
    ray.shutdown()
