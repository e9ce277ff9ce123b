"""The README's "Retrieval and lifecycle" examples run as written (hashing embedder: no
model needed), and its REST section names the routes the server has."""

from __future__ import annotations

import re

import pytest

from tests.test_readme import blocks, section


def test_retrieval_and_lifecycle_examples_run_as_written():
    code = blocks(section("Retrieval and lifecycle"), "python")
    assert len(code) == 3
    scope: dict = {"__name__": "readme"}
    for block in code:
        exec(compile(block, "README.md:Retrieval and lifecycle", "exec"), scope)


def test_the_rest_section_names_real_routes():
    pytest.importorskip("fastapi")
    import memcluster as mc
    from memcluster.rest.app import create_app

    with mc.MemoryManager([mc.memory_source("m", "memory")]) as mem:
        paths = {route.path.replace(":path}", "}") for route in create_app(mem).routes}
    named = re.findall(r"`(?:[A-Z/]+ )?(/v1/[^` ]+)`", section("REST API"))
    assert len(named) >= 10
    for route in named:
        route = route.replace("batch-store|batch-get|batch-delete", "batch-store")
        assert route in paths, route
