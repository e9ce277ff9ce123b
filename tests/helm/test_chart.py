"""The Helm chart `helm/memcluster`: lint, render, validate, and hold it to its promises.

Every value set below is rendered once with `helm template` (fast, no cluster needed); the
tests then check the rendered objects: Kubernetes schemas (`kubernetes-validate`, strict,
offline), the security defaults (token auth, nothing exposed, no empty or inline secrets,
hardened containers with resources), the wiring between objects (secret references,
selectors, ports), the values schema rejecting bad input, and — so chart and code cannot
drift apart — the rendered ConfigMap loaded by memcluster's own config loader and the
Grafana dashboard querying only metrics memcluster exports.

helm comes from $HELM, PATH, or `.cache/helm/helm` (scripts/fetch_helm.sh puts it there).
"""

from __future__ import annotations

import base64
import copy
import json
import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import free_port, redis_server_binary, require_service, wait_until

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "memcluster"
RELEASE = "mc"
NAMESPACE = "memory"
FULLNAME = f"{RELEASE}-memcluster"
K8S_VERSION = "1.33"  # the Kubernetes version the fetched helm (kubectl-v33 layer) targets
STANDARD_LABELS = ("app.kubernetes.io/name", "app.kubernetes.io/instance",
                   "app.kubernetes.io/version", "app.kubernetes.io/component",
                   "app.kubernetes.io/managed-by", "helm.sh/chart")
CRD_KINDS = {"RayCluster", "ServiceMonitor", "PodMonitor"}
CONFIG_PATH = "/etc/memcluster/memcluster.yaml"
LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

WORKER_GROUPS = [
    {"name": "small", "replicas": 2, "minReplicas": 1, "maxReplicas": 3,
     "resources": {"requests": {"cpu": "500m", "memory": "1Gi"},
                   "limits": {"cpu": "1", "memory": "1Gi"}},
     "nodeSelector": {"pool": "memory"},
     "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "memory",
                      "effect": "NoSchedule"}],
     "podDisruptionBudget": {"enabled": True, "maxUnavailable": 1}},
    {"name": "large", "replicas": 1, "minReplicas": 1, "maxReplicas": 5,
     "rayStartParams": {"resources": '{"big": 1}'},
     "resources": {"requests": {"cpu": "2", "memory": "8Gi"},
                   "limits": {"cpu": "2", "memory": "8Gi"}},
     "podDisruptionBudget": {"enabled": True, "maxUnavailable": "50%"}},
    {"name": "spot", "replicas": 0, "minReplicas": 0, "maxReplicas": 10,
     "resources": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "2Gi"}},
     "podDisruptionBudget": {"enabled": False}},
]
SOURCES = [
    {"name": "cache", "backend": "memory", "description": "Session cache", "default": True,
     "shards": 6, "replicas": 3, "write_quorum": 2, "opts": {"cleanup_interval": 10},
     "supervision": {"strategy": "rest_for_one", "intensity": 3, "period": 60}},
    {"name": "facts", "backend": "postgres", "shards": 2, "replicas": 1,
     "opts": {"dsn": "${PG_DSN}", "table_name": "facts"}},
    {"name": "vectors", "backend": "vector", "shards": 3,
     "opts": {"dimension": 384, "embedder": "hash"}},
]
EXTERNAL_REDIS = {
    "redis": {"enabled": False},
    "externalRedis": {"url": "rediss://redis.example.com:6380/3", "username": "memcluster",
                      "existingSecret": "team-redis", "existingSecretPasswordKey": "password"},
}
VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "external-redis": EXTERNAL_REDIS,
    "gcs-ft": {"ray": {"gcsFaultTolerance": {"enabled": True}}},
    "gcs-ft-external": {**EXTERNAL_REDIS, "ray": {"gcsFaultTolerance": {
        "enabled": True, "externalStorageNamespace": "mc-gcs"}}},
    "monitoring": {"metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}},
                               "podMonitor": {"enabled": True},
                               "grafanaDashboard": {"enabled": True}},
                   "networkPolicy": {"monitoringNamespaces": ["monitoring"]}},
    "worker-groups": {"ray": {"workerGroups": WORKER_GROUPS},
                      "memcluster": {"clusterName": "agents", "sources": SOURCES},
                      "extraEnv": [{"name": "PG_DSN", "valueFrom": {"secretKeyRef": {
                          "name": "pg", "key": "dsn"}}}],
                      "networkPolicy": {"clientNamespaces": ["agents", "batch"]}},
    "existing-secrets": {"ray": {"auth": {"enabled": True, "existingSecret": "my-ray-token"}},
                         "redis": {"auth": {"existingSecret": "my-redis",
                                            "existingSecretPasswordKey": "pw"}}},
    "baked-image": {"install": {"enabled": False},
                    "image": {"repository": "registry.example/memcluster", "tag": "0.1.0"}},
}


# ---- helm ------------------------------------------------------------------------------


@cache
def helm_binary() -> str | None:
    for candidate in (os.environ.get("HELM"), shutil.which("helm"),
                      str(REPO / ".cache" / "helm" / "helm")):
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


@pytest.fixture(scope="module")
def helm() -> str:
    found = helm_binary()
    if found is None:
        require_service("helm not found ($HELM, PATH, .cache/helm/helm): "
                        "run scripts/fetch_helm.sh")
    return found


def run_helm(helm: str, *args: str, values: dict[str, Any] | None = None,
             tmp_dir: Path) -> subprocess.CompletedProcess[str]:
    cmd = [helm, *args]
    if values is not None:
        path = tmp_dir / f"values-{abs(hash(json.dumps(values, sort_keys=True)))}.yaml"
        path.write_text(json.dumps(values))  # JSON is YAML
        cmd += ["-f", str(path)]
    env = {**os.environ, "HELM_CACHE_HOME": str(tmp_dir / "cache"),
           "HELM_CONFIG_HOME": str(tmp_dir / "config"), "HELM_DATA_HOME": str(tmp_dir / "data")}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env, check=False)


def template(helm: str, tmp_dir: Path, values: dict[str, Any] | None = None,
             ) -> subprocess.CompletedProcess[str]:
    return run_helm(helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE,
                    "--kube-version", K8S_VERSION, values=values, tmp_dir=tmp_dir)


def render(helm: str, tmp_dir: Path, values: dict[str, Any] | None = None) -> list[dict]:
    result = template(helm, tmp_dir, values)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.load_all(result.stdout, Loader=LOADER) if doc]


@pytest.fixture(scope="module")
def helm_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("helm")


@pytest.fixture(scope="module")
def rendered(helm: str, helm_tmp: Path) -> dict[str, list[dict]]:
    """Every value set, rendered once."""
    return {name: render(helm, helm_tmp, values) for name, values in VALUE_SETS.items()}


def each(rendered: dict[str, list[dict]]) -> Iterator[tuple[str, dict]]:
    for name, docs in rendered.items():
        for doc in docs:
            yield name, doc


def of_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict], kind: str, suffix: str | None = None) -> dict:
    """The one object of `kind` (named FULLNAME + suffix when a suffix is given)."""
    found = [d for d in of_kind(docs, kind)
             if suffix is None or d["metadata"]["name"] == FULLNAME + suffix]
    assert len(found) == 1, f"{kind} {suffix}: {[d['metadata']['name'] for d in found]}"
    return found[0]


def pod_templates(doc: dict) -> list[tuple[str, dict]]:
    """(where, pod template) of every workload object, RayCluster groups included."""
    if doc["kind"] in ("StatefulSet", "Deployment", "Job"):
        return [(doc["metadata"]["name"], doc["spec"]["template"])]
    if doc["kind"] == "RayCluster":
        spec = doc["spec"]
        out = [("head", spec["headGroupSpec"]["template"])]
        out += [(f"group {g['groupName']}", g["template"]) for g in spec["workerGroupSpecs"]]
        return out
    return []


def all_pod_templates(docs: list[dict]) -> list[tuple[str, dict]]:
    return [pt for doc in docs for pt in pod_templates(doc)]


def containers(template: dict) -> list[dict]:
    spec = template["spec"]
    return spec.get("initContainers", []) + spec["containers"]


def env_of(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def config_of(docs: list[dict]) -> dict[str, Any]:
    return yaml.safe_load(one(docs, "ConfigMap", "-config")["data"]["memcluster.yaml"])


def ray_cluster(docs: list[dict]) -> dict:
    return one(docs, "RayCluster")


def bootstrap_container(docs: list[dict]) -> dict:
    return one(docs, "Job")["spec"]["template"]["spec"]["containers"][0]


# ---- lint and schemas ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["defaults", "worker-groups", "external-redis", "monitoring"])
def test_helm_lint_strict_passes(helm: str, helm_tmp: Path, name: str) -> None:
    result = run_helm(helm, "lint", "--strict", str(CHART), "--namespace", NAMESPACE,
                      values=VALUE_SETS[name], tmp_dir=helm_tmp)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


def test_core_objects_validate_against_kubernetes_schemas(rendered) -> None:
    import kubernetes_validate

    checked = set()
    for name, doc in each(rendered):
        if doc["kind"] in CRD_KINDS:
            continue
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"[{name}] {doc['kind']} {doc['metadata']['name']}: {exc.message}")
        checked.add(doc["kind"])
    assert {"StatefulSet", "Service", "Secret", "ConfigMap", "Job", "PodDisruptionBudget",
            "NetworkPolicy", "ServiceAccount"} <= checked


def test_ray_pod_templates_validate_as_kubernetes_pod_templates(rendered) -> None:
    import kubernetes_validate

    for name, docs in rendered.items():
        for where, tmpl in pod_templates(ray_cluster(docs)):
            wrapped = {"apiVersion": "v1", "kind": "PodTemplate",
                       "metadata": {"name": "probe"}, "template": tmpl}
            try:
                kubernetes_validate.validate(wrapped, K8S_VERSION, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"[{name}] RayCluster {where}: {exc.message}")


def test_every_object_carries_the_standard_labels(rendered) -> None:
    for name, doc in each(rendered):
        labels = doc["metadata"].get("labels", {})
        missing = [k for k in STANDARD_LABELS if not labels.get(k)]
        assert not missing, f"[{name}] {doc['kind']} {doc['metadata']['name']} lacks {missing}"
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
    for name, docs in rendered.items():
        for where, tmpl in all_pod_templates(docs):
            labels = tmpl["metadata"]["labels"]
            assert all(labels.get(k) for k in STANDARD_LABELS), f"[{name}] pods of {where}"


# ---- security defaults -----------------------------------------------------------------


def test_every_container_is_hardened_and_has_resources(rendered) -> None:
    for name, docs in rendered.items():
        templates = all_pod_templates(docs)
        assert len(templates) >= 3  # the job, the head, >= 1 worker group (+ redis)
        for where, tmpl in templates:
            spec = tmpl["spec"]
            assert spec["automountServiceAccountToken"] is False, f"[{name}] {where}"
            assert spec["securityContext"]["runAsNonRoot"] is True
            assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
            for c in containers(tmpl):
                ctx = c.get("securityContext", {})
                label = f"[{name}] {where}/{c['name']}"
                assert ctx.get("allowPrivilegeEscalation") is False, label
                assert ctx.get("privileged") is False, label
                assert ctx.get("runAsNonRoot") is True, label
                assert ctx.get("capabilities", {}).get("drop") == ["ALL"], label
                assert ctx.get("seccompProfile") == {"type": "RuntimeDefault"}, label
                res = c.get("resources", {})
                assert {"cpu", "memory"} <= set(res.get("requests", {})), label
                assert "memory" in res.get("limits", {}), label


def test_values_cannot_weaken_the_hardened_security_context(helm, helm_tmp) -> None:
    bad = {"ray": {"securityContext": {"allowPrivilegeEscalation": True}}}
    result = template(helm, helm_tmp, bad)
    assert result.returncode != 0
    assert "allowPrivilegeEscalation" in result.stderr


def test_ray_token_auth_is_on_by_default_with_a_generated_secret(rendered) -> None:
    docs = rendered["defaults"]
    auth = ray_cluster(docs)["spec"]["authOptions"]
    assert auth["mode"] == "token"
    secret = one(docs, "Secret", "-ray-token")
    assert auth["secretName"] == secret["metadata"]["name"]
    token = base64.b64decode(secret["data"]["auth_token"]).decode()
    assert len(token) >= 32 and token.isalnum()
    env = env_of(bootstrap_container(docs))
    assert env["RAY_AUTH_MODE"]["value"] == "token"
    assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": secret["metadata"]["name"], "key": "auth_token"}


def test_generated_secrets_are_random_per_install(rendered, helm, helm_tmp) -> None:
    again = render(helm, helm_tmp)
    for suffix in ("-ray-token", "-redis"):
        first = one(rendered["defaults"], "Secret", suffix)["data"]
        second = one(again, "Secret", suffix)["data"]
        assert first != second, suffix


def test_existing_secrets_replace_the_generated_ones(rendered) -> None:
    docs = rendered["existing-secrets"]
    assert of_kind(docs, "Secret") == []
    assert ray_cluster(docs)["spec"]["authOptions"]["secretName"] == "my-ray-token"
    env = env_of(bootstrap_container(docs))
    assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "my-ray-token"
    assert env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "my-redis", "key": "pw"}
    redis = one(docs, "StatefulSet")["spec"]["template"]["spec"]["containers"][0]
    assert env_of(redis)["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "my-redis", "key": "pw"}


def test_nothing_is_exposed_outside_the_cluster_by_default(rendered) -> None:
    docs = rendered["defaults"]
    assert not [d for d in docs if d["kind"] in ("Ingress", "Route", "Gateway", "HTTPRoute")]
    for svc in of_kind(docs, "Service"):
        assert svc["spec"].get("type", "ClusterIP") == "ClusterIP", svc["metadata"]["name"]
        assert "externalIPs" not in svc["spec"]
    head = ray_cluster(docs)["spec"]["headGroupSpec"]
    assert head["serviceType"] == "ClusterIP"
    assert head["enableIngress"] is False
    assert head["rayStartParams"]["dashboard-host"] == "127.0.0.1"
    assert head["rayStartParams"]["num-cpus"] == "0"  # the head runs no work
    ports = {p["containerPort"] for p in head["template"]["spec"]["containers"][0]["ports"]}
    assert 8265 not in ports  # the dashboard is never published
    for name, docs in rendered.items():
        assert not [s for s in of_kind(docs, "Service")
                    if s["spec"].get("type", "ClusterIP") != "ClusterIP"], name


def test_no_empty_or_inline_secrets(rendered) -> None:
    for name, docs in rendered.items():
        secret_values = []
        for secret in of_kind(docs, "Secret"):
            assert "stringData" not in secret
            assert secret["data"], f"[{name}] empty Secret {secret['metadata']['name']}"
            for key, value in secret["data"].items():
                decoded = base64.b64decode(value).decode()
                assert len(decoded) >= 16, f"[{name}] weak or empty {key}"
                secret_values.append(decoded)
        others = yaml.safe_dump_all([d for d in docs if d["kind"] != "Secret"])
        for value in secret_values:
            assert value not in others, f"[{name}] a secret value leaks outside its Secret"
        for where, tmpl in all_pod_templates(docs):
            for c in containers(tmpl):
                for var, entry in env_of(c).items():
                    if re.search(r"(PASSWORD|TOKEN|SECRET|DSN|AUTH)$", var):
                        assert "value" not in entry, f"[{name}] {where}/{c['name']} {var} inline"
                        assert "secretKeyRef" in entry["valueFrom"], f"[{name}] {var}"


def test_every_secret_reference_resolves(rendered) -> None:
    external = {"team-redis": {"password"}, "my-ray-token": {"auth_token"},
                "my-redis": {"pw"}, "pg": {"dsn"}}
    for name, docs in rendered.items():
        available = {s["metadata"]["name"]: set(s["data"]) for s in of_kind(docs, "Secret")}
        available.update(external)
        refs = []
        for _where, tmpl in all_pod_templates(docs):
            for c in containers(tmpl):
                refs += [e["valueFrom"]["secretKeyRef"] for e in c.get("env", [])
                         if "secretKeyRef" in e.get("valueFrom", {})]
        gcs = ray_cluster(docs)["spec"].get("gcsFaultToleranceOptions")
        if gcs:
            refs.append(gcs["redisPassword"]["valueFrom"]["secretKeyRef"])
        assert refs
        for ref in refs:
            assert ref["key"] in available.get(ref["name"], set()), f"[{name}] {ref}"


# ---- Redis -----------------------------------------------------------------------------


def test_redis_is_a_persistent_statefulset_with_aof_and_noeviction(rendered) -> None:
    docs = rendered["defaults"]
    sts = one(docs, "StatefulSet")
    claims = sts["spec"]["volumeClaimTemplates"]
    assert [c["metadata"]["name"] for c in claims] == ["data"]
    assert claims[0]["spec"]["resources"]["requests"]["storage"] == "8Gi"
    container = sts["spec"]["template"]["spec"]["containers"][0]
    assert {m["mountPath"] for m in container["volumeMounts"]} >= {"/data", "/etc/redis"}
    assert "livenessProbe" in container and "readinessProbe" in container
    conf = one(docs, "ConfigMap", "-redis-config")["data"]["redis.conf"].splitlines()
    assert "appendonly yes" in conf
    assert "maxmemory-policy noeviction" in conf
    assert "dir /data" in conf
    svc = one(docs, "Service", "-redis")
    assert selects(svc["spec"]["selector"], sts["spec"]["template"]["metadata"]["labels"])


def test_the_rendered_redis_config_runs_with_auth_aof_and_noeviction(rendered, tmp_path) -> None:
    """Run the chart's own start script and redis.conf against a real redis-server."""
    import redis

    docs = rendered["defaults"]
    container = one(docs, "StatefulSet")["spec"]["template"]["spec"]["containers"][0]
    script = container["command"][2]
    conf = one(docs, "ConfigMap", "-redis-config")["data"]["redis.conf"]
    (tmp_path / "etc").mkdir()
    (tmp_path / "run").mkdir()
    (tmp_path / "data").mkdir()
    port = free_port()
    conf = (conf.replace("dir /data", f"dir {tmp_path / 'data'}")
            .replace("port 6379", f"port {port}")
            .replace("bind * -::*", "bind 127.0.0.1")
            .replace("/run/redis/", f"{tmp_path / 'run'}/"))
    (tmp_path / "etc" / "redis.conf").write_text(conf)
    script = (script.replace("/run/redis/", f"{tmp_path / 'run'}/")
              .replace("/etc/redis/", f"{tmp_path / 'etc'}/")
              .replace("exec redis-server", f"exec {redis_server_binary()}"))
    password = "s3cret-" + os.urandom(8).hex()
    proc = subprocess.Popen(["sh", "-c", script], env={**os.environ, "REDIS_PASSWORD": password},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        authed = redis.Redis(port=port, password=password, socket_connect_timeout=0.5)
        wait_until(authed.ping, timeout=10, message="the chart's redis-server")
        with socket.create_connection(("127.0.0.1", port), timeout=5) as anonymous:
            anonymous.sendall(b"SET k v\r\n")
            assert anonymous.recv(128).startswith(b"-NOAUTH")
        assert authed.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
        assert authed.config_get("appendonly") == {"appendonly": "yes"}
        assert oct((tmp_path / "run" / "auth.conf").stat().st_mode & 0o777) == "0o600"
        authed.close()
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_external_redis_replaces_the_statefulset(rendered) -> None:
    docs = rendered["external-redis"]
    assert of_kind(docs, "StatefulSet") == []
    assert of_kind(docs, "Secret") == [one(docs, "Secret", "-ray-token")]
    assert not [s for s in of_kind(docs, "Service") if "redis" in s["metadata"]["name"]]
    config = config_of(docs)
    assert config["redis_url"] == "rediss://memcluster:${REDIS_PASSWORD}@redis.example.com:6380/3"
    env = env_of(bootstrap_container(docs))
    assert env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "team-redis", "key": "password"}
    assert "redis.example.com:6380" in env["MEMCLUSTER_WAIT_FOR"]["value"]


@pytest.mark.parametrize("values, message", [
    ({"redis": {"enabled": False}}, "externalRedis.url"),
    ({"redis": {"enabled": False}, "externalRedis": {"url": "redis://r:6379/0"}},
     "externalRedis.existingSecret"),
    ({"redis": {"enabled": False},
      "externalRedis": {"url": "redis://:hunter2@r:6379/0", "existingSecret": "s"}},
     "/externalRedis/url"),
])
def test_external_redis_needs_a_url_without_credentials_and_a_secret(
        helm, helm_tmp, values, message) -> None:
    result = template(helm, helm_tmp, values)
    assert result.returncode != 0
    assert message in result.stderr


# ---- Ray ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name, address", [
    ("gcs-ft", f"{RELEASE}-memcluster-redis.{NAMESPACE}.svc.cluster.local:6379"),
    ("gcs-ft-external", "rediss://redis.example.com:6380"),
])
def test_gcs_fault_tolerance_points_at_redis(rendered, name, address) -> None:
    docs = rendered[name]
    gcs = ray_cluster(docs)["spec"]["gcsFaultToleranceOptions"]
    assert gcs["redisAddress"] == address
    password_ref = gcs["redisPassword"]["valueFrom"]["secretKeyRef"]
    assert password_ref == env_of(bootstrap_container(docs))["REDIS_PASSWORD"]["valueFrom"][
        "secretKeyRef"]
    assert "value" not in gcs["redisPassword"]
    if name == "gcs-ft-external":
        assert gcs["redisUsername"] == {"value": "memcluster"}
        assert gcs["externalStorageNamespace"] == "mc-gcs"
    assert "gcsFaultToleranceOptions" not in ray_cluster(rendered["defaults"])["spec"]


def test_worker_groups_follow_the_values(rendered) -> None:
    spec = ray_cluster(rendered["worker-groups"])["spec"]
    groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    assert list(groups) == [g["name"] for g in WORKER_GROUPS]
    for want in WORKER_GROUPS:
        got = groups[want["name"]]
        assert (got["replicas"], got["minReplicas"], got["maxReplicas"]) == (
            want["replicas"], want["minReplicas"], want["maxReplicas"])
        pod = got["template"]["spec"]
        assert pod["containers"][0]["resources"] == want["resources"]
        assert pod.get("nodeSelector", {}) == want.get("nodeSelector", {})
        assert pod.get("tolerations", []) == want.get("tolerations", [])
    assert groups["large"]["rayStartParams"]["resources"] == '{"big": 1}'


def test_memcluster_is_installed_into_every_ray_pod_unless_baked_in(rendered) -> None:
    for where, tmpl in all_pod_templates(rendered["defaults"]):
        if where.endswith("-redis"):
            continue
        init = tmpl["spec"]["initContainers"]
        assert init[0]["name"] == "install-memcluster"
        assert "memcluster==0.1.0" in init[0]["command"]
        assert env_of(tmpl["spec"]["containers"][0])["PYTHONPATH"]["value"] == "/opt/memcluster"
    for where, tmpl in all_pod_templates(rendered["baked-image"]):
        assert "initContainers" not in tmpl["spec"], where
        if not where.endswith("-redis"):
            assert tmpl["spec"]["containers"][0]["image"] == "registry.example/memcluster:0.1.0"


def test_pod_disruption_budget_per_worker_group(rendered) -> None:
    docs = rendered["worker-groups"]
    templates = dict(pod_templates(ray_cluster(docs)))
    pdbs = of_kind(docs, "PodDisruptionBudget")
    enabled = [g for g in WORKER_GROUPS if g["podDisruptionBudget"]["enabled"]]
    assert len(pdbs) == len(enabled)
    for group, pdb in zip(enabled, pdbs, strict=True):
        assert pdb["spec"]["maxUnavailable"] == group["podDisruptionBudget"]["maxUnavailable"]
        selector = pdb["spec"]["selector"]["matchLabels"]
        matched = [w for w, t in templates.items() if selects(selector, t["metadata"]["labels"])]
        assert matched == [f"group {group['name']}"]


# ---- the configuration contract ----------------------------------------------------------


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_memcluster_loads_the_rendered_config(rendered, monkeypatch, name) -> None:
    """The ConfigMap is read by memcluster's own loader: chart and code cannot drift."""
    from memcluster.config import load_config

    docs = rendered[name]
    data = config_of(docs)
    monkeypatch.setenv("REDIS_PASSWORD", "pw-from-secret")
    monkeypatch.setenv("PG_DSN", "postgresql://db/facts")
    config = load_config(data)

    values = VALUE_SETS[name]
    expected_sources = values.get("memcluster", {}).get("sources") or (
        yaml.safe_load((CHART / "values.yaml").read_text())["memcluster"]["sources"])
    assert config.source_names == [s["name"] for s in expected_sources]
    for want, got in zip(expected_sources, config.sources, strict=True):
        assert got.backend == want["backend"]
        assert got.shards == want["shards"]
        assert got.replicas == want.get("replicas")
        assert got.write_quorum == want.get("write_quorum")
        assert got.default == want.get("default", False)
        for key, value in want.get("supervision", {}).items():
            assert got.supervision[key] == value
    assert config.metrics_port == 9464
    assert config.name == values.get("memcluster", {}).get("clusterName", f"{RELEASE}-memcluster")
    # The secret is resolved from the environment; the stored (raw) form keeps the reference.
    assert ":pw-from-secret@" in config.redis_url
    assert "${REDIS_PASSWORD}" in config.raw["redis_url"]
    # Every process that loads the config gets the variables it references.
    referenced = set(re.findall(r"\$\{(\w+)\}", json.dumps(data)))
    head = ray_cluster(docs)["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    for container in (head, bootstrap_container(docs)):
        assert referenced <= set(env_of(container)), container["name"]


def test_bootstrap_job_runs_memcluster_up_against_the_ray_head(rendered) -> None:
    docs = rendered["defaults"]
    job = one(docs, "Job")
    annotations = job["metadata"]["annotations"]
    assert set(annotations["helm.sh/hook"].split(",")) == {"post-install", "post-upgrade"}
    assert annotations["helm.sh/hook-delete-policy"] == "before-hook-creation"
    container = bootstrap_container(docs)
    script = container["command"][-1]
    assert f"/opt/memcluster/bin/memcluster up {CONFIG_PATH}" in script
    env = env_of(container)
    head_svc = f"{ray_cluster(docs)['metadata']['name']}-head-svc"
    assert env["RAY_ADDRESS"]["value"] == (
        f"ray://{head_svc}.{NAMESPACE}.svc.cluster.local:10001")
    assert env["RAY_ADDRESS"]["value"] == config_of(docs)["ray_address"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
    config_map = volumes[mounts["/etc/memcluster"]]["configMap"]["name"]
    assert config_map == one(docs, "ConfigMap", "-config")["metadata"]["name"]
    baked = bootstrap_container(rendered["baked-image"])["command"][-1]
    assert f"exec memcluster up {CONFIG_PATH}" in baked


def test_bootstrap_script_waits_for_its_targets_then_runs_up(rendered, tmp_path) -> None:
    """Run the Job's own shell script with a stub `memcluster`: up only once the targets answer."""
    script = bootstrap_container(rendered["defaults"])["command"][-1]
    stub = tmp_path / "memcluster"
    stub.write_text(f"#!/bin/sh\necho \"$@\" > {tmp_path / 'called'}\n")
    stub.chmod(0o755)
    script = (script.replace("python -c", f"{sys.executable} -c")
              .replace("/opt/memcluster/bin/memcluster", str(stub)))
    with socket.create_server(("127.0.0.1", 0)) as listener:
        open_port = listener.getsockname()[1]
        ok = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=30,
                            env={**os.environ, "MEMCLUSTER_WAIT_TIMEOUT": "5",
                                 "MEMCLUSTER_WAIT_FOR": f"127.0.0.1:{open_port}"})
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "called").read_text().split() == ["up", CONFIG_PATH]
    (tmp_path / "called").unlink()
    closed = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=30,
                            env={**os.environ, "MEMCLUSTER_WAIT_TIMEOUT": "0",
                                 "MEMCLUSTER_WAIT_FOR": f"127.0.0.1:{free_port()}"})
    assert closed.returncode != 0
    assert "timed out waiting for 127.0.0.1:" in closed.stderr
    assert not (tmp_path / "called").exists()


def test_an_upgrade_with_new_shard_counts_reruns_the_bootstrap(helm, helm_tmp, rendered) -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    sources = copy.deepcopy(values["memcluster"]["sources"])
    sources[0]["shards"] = 8
    docs = render(helm, helm_tmp, {"memcluster": {"sources": sources}})
    assert config_of(docs)["sources"][0]["shards"] == 8
    before = one(rendered["defaults"], "Job")["spec"]["template"]["metadata"]["annotations"]
    after = one(docs, "Job")["spec"]["template"]["metadata"]["annotations"]
    assert before["checksum/config"] != after["checksum/config"]


# ---- metrics, network policy, dashboard ------------------------------------------------


def test_metrics_service_and_monitors_reach_the_ray_pods(rendered) -> None:
    docs = rendered["monitoring"]
    svc = one(docs, "Service", "-metrics")
    ray_templates = pod_templates(ray_cluster(docs))
    for where, tmpl in ray_templates:
        assert selects(svc["spec"]["selector"], tmpl["metadata"]["labels"]), where
        port_names = {p["name"] for p in tmpl["spec"]["containers"][0]["ports"]}
        assert {p["targetPort"] for p in svc["spec"]["ports"]} <= port_names, where
    for where, tmpl in all_pod_templates(docs):
        if where.endswith(("-redis", "-bootstrap")):
            assert not selects(svc["spec"]["selector"], tmpl["metadata"]["labels"]), where
    monitor = one(docs, "ServiceMonitor")
    assert selects(monitor["spec"]["selector"]["matchLabels"], svc["metadata"]["labels"])
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert {e["port"] for e in monitor["spec"]["endpoints"]} == {
        p["name"] for p in svc["spec"]["ports"]}
    pod_monitor = one(docs, "PodMonitor")
    for _where, tmpl in ray_templates:
        assert selects(pod_monitor["spec"]["selector"]["matchLabels"], tmpl["metadata"]["labels"])
    assert not of_kind(rendered["defaults"], "ServiceMonitor")
    assert not of_kind(rendered["defaults"], "PodMonitor")


def test_network_policy_admits_only_the_release_and_configured_namespaces(rendered) -> None:
    for name, docs in rendered.items():
        policy = one(docs, "NetworkPolicy")
        selector = policy["spec"]["podSelector"]["matchLabels"]
        for where, tmpl in all_pod_templates(docs):
            assert selects(selector, tmpl["metadata"]["labels"]), f"[{name}] {where}"
        rules = policy["spec"]["ingress"]
        in_release = rules[0]["from"][0]["podSelector"]["matchLabels"]
        assert in_release == selector and "ports" not in rules[0]
        for rule in rules[1:]:
            assert rule["ports"], f"[{name}] an outside rule must name its ports"
            for peer in rule["from"]:
                assert set(peer) == {"namespaceSelector"}
    default_rules = one(rendered["defaults"], "NetworkPolicy")["spec"]["ingress"]
    assert len(default_rules) == 1
    rules = one(rendered["worker-groups"], "NetworkPolicy")["spec"]["ingress"]
    client_rule = rules[1]
    names = client_rule["from"][0]["namespaceSelector"]["matchExpressions"][0]["values"]
    assert names == ["agents", "batch"]
    assert [p["port"] for p in client_rule["ports"]] == [10001]
    monitoring = one(rendered["monitoring"], "NetworkPolicy")["spec"]["ingress"][1]
    assert {p["port"] for p in monitoring["ports"]} == {9464, 8080}


def test_grafana_dashboard_queries_only_metrics_memcluster_exports(rendered) -> None:
    from memcluster.metrics import ClusterCollector, OpStats

    stats = OpStats()
    stats.observe("store", "ok", 0.001)
    report = {"epoch": 3, "sources": {"cache": {"ring_version": 2, "restarts": 1,
              "replication_failures": 0, "shards": {"cache/0": {
                  "state": "serving", "records": 1, "bytes": 10, "hydration": 1.0,
                  "ops": stats.snapshot()}}}}}
    exported = {sample.name for family in ClusterCollector(lambda: report).collect()
                for sample in family.samples}

    config_map = one(rendered["monitoring"], "ConfigMap", "-dashboard")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(config_map["data"]["memcluster.json"])
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs += [v["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    used = {m for e in exprs for m in re.findall(r"\bmemcluster_[a-z_]+", e)}
    assert len(used) >= 8
    assert used <= exported, f"dashboard uses metrics memcluster does not export: {used - exported}"
    assert not of_kind(rendered["defaults"], "ConfigMap") or all(
        not d["metadata"]["name"].endswith("-dashboard")
        for d in of_kind(rendered["defaults"], "ConfigMap"))


# ---- values schema and cross-field checks -----------------------------------------------


@pytest.mark.parametrize("values, message", [
    ({"unknownKey": 1}, "unknownKey"),
    ({"ray": {"workerGroups": [{"name": "w", "replicas": "two", "minReplicas": 0,
                                "maxReplicas": 3, "resources": WORKER_GROUPS[0]["resources"]}]}},
     "/ray/workerGroups/0/replicas"),
    ({"ray": {"workerGroups": [{**WORKER_GROUPS[0], "gpu": True}]}}, "gpu"),
    ({"ray": {"workerGroups": [{k: v for k, v in WORKER_GROUPS[0].items()
                                if k != "resources"}]}}, "resources"),
    ({"ray": {"head": {"rayStartParams": {"num-cpus": "4"}}}}, "/ray/head/rayStartParams"),
    ({"memcluster": {"sources": [{"name": "c", "backend": "memory", "shards": "4"}]}},
     "/memcluster/sources/0/shards"),
    ({"memcluster": {"sources": [{"name": "c", "backend": "memory",
                                  "supervision": {"strategy": "one_for_some"}}]}},
     "/memcluster/sources/0/supervision/strategy"),
    ({"memcluster": {"sources": [{"name": "c", "backend": "memory", "replica": 2}]}}, "replica"),
    ({"memcluster": {"sources": []}}, "/memcluster/sources"),
    ({"redis": {"persistence": {"size": "lots"}}}, "/redis/persistence/size"),
    ({"metrics": {"serviceMonitor": {"enabled": "yes"}}}, "/metrics/serviceMonitor/enabled"),
    ({"networkPolicy": {"clientNamespaces": ["Not_A_Namespace"]}},
     "/networkPolicy/clientNamespaces/0"),
    ({"redis": {"securityContext": {"privileged": True}}}, "privileged"),
    ({"ray": {"head": {"serviceType": "Ingress"}}}, "/ray/head/serviceType"),
])
def test_values_schema_rejects_bad_values(helm, helm_tmp, values, message) -> None:
    result = template(helm, helm_tmp, values)
    assert result.returncode != 0, f"accepted {values}"
    assert "schema" in result.stderr
    assert message in result.stderr


@pytest.mark.parametrize("values, message", [
    ({"ray": {"workerGroups": [WORKER_GROUPS[0], WORKER_GROUPS[0]]}},
     "ray.workerGroups[1].name"),
    ({"ray": {"workerGroups": [{**WORKER_GROUPS[0], "replicas": 9}]}},
     "ray.workerGroups[0].replicas"),
    ({"memcluster": {"sources": [{"name": "c", "backend": "memory", "shards": 1,
                                  "replicas": 2}]}}, "memcluster.sources[0].replicas"),
    ({"memcluster": {"sources": [{"name": "c", "backend": "memory", "shards": 3,
                                  "replicas": 2, "write_quorum": 3}]}},
     "memcluster.sources[0].write_quorum"),
    ({"memcluster": {"sources": [{"name": "a", "backend": "memory", "default": True},
                                 {"name": "b", "backend": "memory", "default": True}]}},
     "at most one source may be the default"),
])
def test_cross_field_checks_fail_naming_the_field(helm, helm_tmp, values, message) -> None:
    result = template(helm, helm_tmp, values)
    assert result.returncode != 0, f"accepted {values}"
    assert message in result.stderr


def test_the_readme_documents_every_value() -> None:
    readme = (CHART / "README.md").read_text()
    documented = set(re.findall(r"^\| `([^`]+)` \|", readme, flags=re.M))

    def leaves(node: Any, prefix: str = "") -> Iterator[str]:
        if isinstance(node, dict) and node and not prefix.endswith(
                ("resources", "Labels", "labels", "annotations", "Annotations", "nodeSelector",
                 "rayStartParams", "affinity", "requests", "limits", "ecurityContext")):
            for key, value in node.items():
                yield from leaves(value, f"{prefix}.{key}" if prefix else key)
        else:
            yield prefix

    values = yaml.safe_load((CHART / "values.yaml").read_text())
    missing = sorted(set(leaves(values)) - documented)
    assert not missing, f"README.md lacks: {missing}"
