"""The mysql backend against the conformance suite, on the machine's MariaDB (database `test`,
or MEMCLUSTER_TEST_MYSQL_DSN). Each test uses fresh random prefixes in the shared table, and
the suite clears them afterwards."""

from __future__ import annotations

from typing import Any

import pytest

from memcluster.testing import BackendConformance


class TestMySQLConformance(BackendConformance):
    backend = "mysql"
    fake_clock = True  # expiry is compared with the injected clock in every statement

    @pytest.fixture(autouse=True)
    def _service(self, mysql_dsn: str) -> None:
        self.dsn = mysql_dsn

    def backend_opts(self, tmp_path: Any) -> dict[str, Any]:
        return {"dsn": self.dsn}
