"""Fixtures of the chart tests: the helm binary and every value set rendered once."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helm.chart_render import VALUE_SETS, helm_binary, render
from tests.support import require_service


@pytest.fixture(scope="session")
def helm() -> str:
    found = helm_binary()
    if found is None:
        require_service("helm not found ($HELM, PATH, .cache/helm/helm): "
                        "run scripts/fetch_helm.sh")
    return found


@pytest.fixture(scope="session")
def helm_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("helm")


@pytest.fixture(scope="session")
def rendered(helm: str, helm_tmp: Path) -> dict[str, list[dict]]:
    """Every value set of VALUE_SETS, rendered once."""
    return {name: render(helm, helm_tmp, values) for name, values in VALUE_SETS.items()}
