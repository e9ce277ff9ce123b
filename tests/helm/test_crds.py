"""The chart's custom resources against the upstream CRDs and KubeRay's controller rules.

Every value set (chart_render.VALUE_SETS) must render a RayCluster, and ServiceMonitor /
PodMonitor where enabled, with no violation of the JSON schemas in fixtures/ (cut from the
KubeRay v1.6.0 and prometheus-operator v0.93.0 CRDs by fixtures/derive_crd_schemas.py,
closed to unknown fields, list-map keys unique as the API server requires) and no
violation of the rules KubeRay's operator enforces (kuberay_rules.py). The negative tests
feed known-bad objects, among them the GCS fault tolerance wiring issue 19 found, to show
each check catches what it is for.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from tests.helm.chart_render import (
    FULLNAME,
    VALUE_SETS,
    all_pod_templates,
    head_container,
    of_kind,
    ray_cluster,
    render,
)
from tests.helm.fixtures.derive_crd_schemas import DeriveError, derive
from tests.helm.kuberay_rules import ray_start_options, violations

FIXTURES = Path(__file__).parent / "fixtures"
SCHEMA_FILES = {
    "RayCluster": "raycluster.kuberay-v1.6.0.schema.json",
    "ServiceMonitor": "servicemonitor.prometheus-operator-v0.93.0.schema.json",
    "PodMonitor": "podmonitor.prometheus-operator-v0.93.0.schema.json",
}


def _unique_list_map_keys(validator: Any, keys: list[str], instance: Any,
                          schema: dict) -> Iterator[jsonschema.ValidationError]:
    """x-kubernetes-list-map-keys: the API server refuses two items with the same keys."""
    if not isinstance(instance, list):
        return
    seen: set[tuple] = set()
    for item in instance:
        if not isinstance(item, dict):
            continue
        key = tuple(json.dumps(item.get(k), sort_keys=True) for k in keys)
        if key in seen:
            named = dict(zip(keys, key, strict=True))
            yield jsonschema.ValidationError(f"duplicate list-map key {named}")
        seen.add(key)


CrdValidator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator, {"x-kubernetes-list-map-keys": _unique_list_map_keys})


@cache
def validator(kind: str) -> Any:
    schema = json.loads((FIXTURES / SCHEMA_FILES[kind]).read_text())
    CrdValidator.check_schema(schema)
    return CrdValidator(schema)


def crd_violations(doc: dict) -> list[str]:
    """Schema errors of a custom resource, one line each with the JSON path."""
    errors = validator(doc["kind"]).iter_errors(doc)
    return sorted(f"{e.json_path}: {e.message}" for e in errors)


@pytest.fixture(scope="session")
def ray_options() -> set[str]:
    return ray_start_options()


# ---- every value set: 0 violations --------------------------------------------------------


@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_value_set_has_no_crd_or_controller_rule_violations(rendered, ray_options, name):
    docs = rendered[name]
    custom = [d for d in docs if d["kind"] in SCHEMA_FILES]
    assert [d["kind"] for d in custom].count("RayCluster") == 1
    found = {f"{d['kind']} {d['metadata']['name']}": crd_violations(d) for d in custom}
    found["KubeRay rules"] = violations(ray_cluster(docs), ray_options)
    assert {k: v for k, v in found.items() if v} == {}


def test_the_monitors_are_checked_where_enabled(rendered) -> None:
    for name in ("monitoring", "everything-on"):
        kinds = {d["kind"] for d in rendered[name]}
        assert {"ServiceMonitor", "PodMonitor"} <= kinds, name
    assert not of_kind(rendered["defaults"], "ServiceMonitor")


def test_default_render_has_gcs_fault_tolerance_and_installs_nothing_at_start(rendered):
    """Issue 19's "done when": GCS FT in the default render, no install step in any pod."""
    docs = rendered["defaults"]
    spec = ray_cluster(docs)["spec"]
    assert spec["gcsFaultToleranceOptions"]["redisAddress"]
    assert spec["upgradeStrategy"] == {"type": "Recreate"}
    for where, template in all_pod_templates(docs):
        assert "initContainers" not in template["spec"], where
        for c in template["spec"]["containers"]:
            assert "pip" not in json.dumps(c.get("command", []) + c.get("args", [])), where


# ---- the checks catch what they are for ----------------------------------------------------


def broken(docs: list[dict], change) -> dict:
    cluster = copy.deepcopy(ray_cluster(docs))
    change(cluster)
    return cluster


def test_rules_catch_redis_password_on_the_head_with_gcs_ft(rendered, ray_options) -> None:
    """What the chart used to render: KubeRay refused it with InvalidRayClusterSpec."""
    def add_env(cluster):
        head = cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
        head["env"].append({"name": "REDIS_PASSWORD", "valueFrom": {"secretKeyRef": {
            "name": "x", "key": "y"}}})

    found = violations(broken(rendered["defaults"], add_env), ray_options)
    assert found == ["head env REDIS_PASSWORD with gcsFaultToleranceOptions"]
    assert "REDIS_PASSWORD" not in {e["name"] for e in head_container(rendered["defaults"])["env"]}


@pytest.mark.parametrize("change, expected", [
    (lambda c: c["metadata"].update(name="1st-memcluster"), "not a DNS-1035 label"),
    (lambda c: c["metadata"].update(name="a" * 54), "longer than 53"),
    (lambda c: c["spec"]["workerGroupSpecs"][0]["rayStartParams"].update(labels="zone=a"),
     "rayStartParams['labels'] is not supported"),
    (lambda c: c["spec"]["workerGroupSpecs"][0]["rayStartParams"].update(
        {"no-such-option": "1"}), "are not `ray start` options"),
    (lambda c: c["spec"]["workerGroupSpecs"][0].update(minReplicas=5, maxReplicas=2),
     "minReplicas 5 > maxReplicas 2"),
    (lambda c: c["spec"]["workerGroupSpecs"][0].pop("maxReplicas"),
     "minReplicas and maxReplicas are required"),
    (lambda c: c["spec"].update(rayVersion="2.51.0"), "needs Ray >= 2.52.0"),
    (lambda c: c["spec"]["headGroupSpec"]["rayStartParams"].update(
        {"redis-password": "x"}), "redis-password"),
    (lambda c: c["spec"]["workerGroupSpecs"][0].update(
        resources={"CPU": "1"}, rayStartParams={"num-cpus": "1"}), "resources set both"),
    (lambda c: c["spec"]["workerGroupSpecs"][0].update(labels={"ray.io/x/y": "a"}),
     "label key"),
    (lambda c: c["spec"].update(upgradeStrategy={"type": "RollingUpdate"}),
     "upgradeStrategy"),
])
def test_rules_catch_each_controller_rule(rendered, ray_options, change, expected) -> None:
    found = violations(broken(rendered["defaults"], change), ray_options)
    assert any(expected in v for v in found), found


@pytest.mark.parametrize("change, expected", [
    (lambda c: c["spec"].update(unknownField=1), "unknownField"),
    (lambda c: c["spec"]["workerGroupSpecs"][0].update(replicas="2"), "is not of type"),
    (lambda c: c["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["env"].append(
        {"name": "MEMCLUSTER_CLUSTER", "value": "again"}), "duplicate list-map key"),
    (lambda c: c["spec"]["authOptions"].update(mode="password"), "is not one of"),
    (lambda c: c["spec"]["headGroupSpec"].pop("template"), "'template' is a required"),
    (lambda c: c["spec"]["headGroupSpec"]["rayStartParams"].update({"num-cpus": 0}),
     "is not of type 'string'"),
])
def test_crd_schema_catches_unknown_fields_types_and_duplicates(rendered, change, expected):
    found = crd_violations(broken(rendered["defaults"], change))
    assert any(expected in v for v in found), found


def test_the_fixtures_name_their_upstream() -> None:
    for kind, file in SCHEMA_FILES.items():
        schema = json.loads((FIXTURES / file).read_text())
        source = schema["x-derived-from"]["source"]
        assert ("kuberay@v1.6.0" if kind == "RayCluster" else "prometheus-operator@v") in source
        assert schema["properties"]["kind"] == {"const": kind}


def test_derive_refuses_fields_upstream_lacks_and_required_fields_left_out() -> None:
    crd = {"spec": {"group": "ray.io", "names": {"kind": "RayCluster"}, "versions": [{
        "name": "v1", "storage": True, "schema": {"openAPIV3Schema": {
            "type": "object", "properties": {"spec": {
                "type": "object", "required": ["headGroupSpec"],
                "properties": {"rayVersion": {"type": "string"},
                               "headGroupSpec": {"type": "object"}}}}}}}]}}
    with pytest.raises(DeriveError, match="upstream has no field"):
        derive("raycluster", crd, "test", "0")
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"] = {
        "type": "object", "required": ["suspend"], "properties": {"suspend": {"type": "boolean"}}}
    with pytest.raises(DeriveError):
        derive("raycluster", crd, "test", "0")


# ---- names ---------------------------------------------------------------------------------


@pytest.mark.parametrize("release", ["1st", "9-lives", "a.b", "x" * 53])
def test_any_release_name_gives_valid_object_names(helm, helm_tmp, ray_options, release):
    docs = render(helm, helm_tmp, release=release)
    assert violations(ray_cluster(docs), ray_options) == []
    for doc in docs:
        name = doc["metadata"]["name"]
        if doc["kind"] in ("Service", "RayCluster", "Deployment", "StatefulSet"):
            assert name[0].isalpha() and len(name) <= 63 and "." not in name, (doc["kind"], name)
    assert FULLNAME not in {d["metadata"]["name"] for d in docs}
