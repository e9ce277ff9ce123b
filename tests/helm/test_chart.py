"""The Helm chart `helm/memcluster`: lint, render, validate, and hold it to its promises.

Every value set (chart_render.VALUE_SETS) is rendered once with `helm template` (fast, no
cluster needed); the tests then check the rendered objects: Kubernetes schemas
(`kubernetes-validate`, strict, offline), the security defaults (token auth, nothing
exposed, no empty or inline secrets, hardened containers with resources), the wiring
between objects (secret references, selectors, ports), self-healing (the watch
Deployment), metrics only where served, the values schema rejecting bad input, and — so
chart and code cannot drift apart — the rendered ConfigMap loaded by memcluster's own
config loader and the Grafana dashboard querying only metrics memcluster exports. The
custom resources are checked against the upstream CRDs and KubeRay's rules in
test_crds.py; the image the chart runs in test_image.py.
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
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.helm.chart_render import (
    CHART,
    CONFIG_PATH,
    EXTERNAL_SECRETS,
    K8S_VERSION,
    NAMESPACE,
    RELEASE,
    REPO,
    VALUE_SETS,
    WORKER_GROUPS,
    all_pod_templates,
    config_of,
    containers,
    env_of,
    head_container,
    of_kind,
    one,
    pod_templates,
    ray_cluster,
    render,
    run_helm,
    selects,
    template,
    watch_container,
    watch_pod,
)
from tests.support import free_port, redis_server_binary, wait_until

STANDARD_LABELS = ("app.kubernetes.io/name", "app.kubernetes.io/instance",
                   "app.kubernetes.io/version", "app.kubernetes.io/component",
                   "app.kubernetes.io/managed-by", "helm.sh/chart")
CRD_KINDS = {"RayCluster", "ServiceMonitor", "PodMonitor"}
HEAD_SVC = f"{RELEASE}-memcluster-head-svc.{NAMESPACE}.svc.cluster.local"
OWN_REDIS = f"{RELEASE}-memcluster-redis.{NAMESPACE}.svc.cluster.local:6379"


def each(rendered: dict[str, list[dict]]) -> Iterator[tuple[str, dict]]:
    for name, docs in rendered.items():
        for doc in docs:
            yield name, doc


def memcluster_containers(docs: list[dict]) -> list[tuple[str, dict]]:
    """(where, container) of every container that runs memcluster (all but Redis)."""
    return [(where, c) for where, tmpl in all_pod_templates(docs) if not where.endswith("-redis")
            for c in containers(tmpl) if c["name"] != "metrics-proxy"]


# ---- lint and schemas ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["defaults", "worker-groups", "external-redis", "everything-on"])
def test_helm_lint_strict_passes(helm, helm_tmp, name: str) -> None:
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
    assert {"StatefulSet", "Deployment", "Service", "Secret", "ConfigMap",
            "PodDisruptionBudget", "NetworkPolicy", "ServiceAccount"} <= checked


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
            # Ray pods: no chart or app version, which would make KubeRay's Recreate
            # restart the whole Ray cluster on every chart upgrade.
            ray_pod = where == "head" or where.startswith("group ")
            wanted = STANDARD_LABELS if not ray_pod else (
                "app.kubernetes.io/name", "app.kubernetes.io/instance",
                "app.kubernetes.io/component")
            assert all(labels.get(k) for k in wanted), f"[{name}] pods of {where}"
            if ray_pod:
                assert not {"helm.sh/chart", "app.kubernetes.io/version"} & set(labels)


def test_no_helm_hooks_so_install_waits_on_nothing_but_its_objects(rendered) -> None:
    """`memcluster up` runs in the watch Deployment, not in a hook Helm must wait for."""
    for name, doc in each(rendered):
        annotations = doc["metadata"].get("annotations", {})
        assert not any(k.startswith("helm.sh/hook") for k in annotations), (name, doc["kind"])
    readme = (REPO / "README.md").read_text()
    install = next(line for line in readme.splitlines() if line.startswith("helm install"))
    assert "--wait" in install and "--timeout" in install


# ---- the image -------------------------------------------------------------------------


def test_every_memcluster_container_runs_the_image_and_nothing_installs_at_start(rendered):
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    image = f"{values['image']['repository']}:{values['image']['tag']}"
    for name, docs in rendered.items():
        want = image if name != "everything-on" else "registry.example/team/memcluster:0.1.0-custom"
        for where, c in memcluster_containers(docs):
            assert c["image"] == want, f"[{name}] {where}/{c['name']}"
        for where, tmpl in all_pod_templates(docs):
            assert "initContainers" not in tmpl["spec"], f"[{name}] {where}"
            for c in containers(tmpl):
                assert "PYTHONPATH" not in env_of(c)
                assert not re.search(r"\bpip\b", json.dumps(c.get("command", []))), where


def test_default_image_is_what_the_build_script_builds_for_the_charts_ray() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    printed = subprocess.run(["bash", str(REPO / "scripts" / "build_image.sh"), "--print"],
                             capture_output=True, text=True, check=True, timeout=30,
                             env={k: v for k, v in os.environ.items()
                                  if k not in ("IMAGE", "TAG", "RAY_VERSION", "PYTHON_TAG")})
    assert printed.stdout.splitlines()[0] == (
        f"{values['image']['repository']}:{values['image']['tag']}")
    dockerfile = (REPO / "Dockerfile").read_text()
    ray_version = re.search(r"^ARG RAY_VERSION=(\S+)$", dockerfile, re.M).group(1)
    assert values["ray"]["version"] == ray_version
    assert f"-ray{ray_version}-" in values["image"]["tag"]


# ---- security defaults -----------------------------------------------------------------


def test_every_container_is_hardened_and_has_resources(rendered) -> None:
    for name, docs in rendered.items():
        templates = all_pod_templates(docs)
        assert len(templates) >= 3  # the watch pod, the head, >= 1 worker group (+ redis)
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
    env = env_of(watch_container(docs))
    assert env["RAY_AUTH_MODE"]["value"] == "token"
    assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": secret["metadata"]["name"], "key": "auth_token"}


def test_auth_off_renders_no_token_anywhere(rendered) -> None:
    docs = rendered["auth-off"]
    assert "authOptions" not in ray_cluster(docs)["spec"]
    assert not [s for s in of_kind(docs, "Secret") if s["metadata"]["name"].endswith("-token")]
    assert "RAY_AUTH_TOKEN" not in env_of(watch_container(docs))


def test_generated_secrets_are_random_per_install(rendered, helm, helm_tmp) -> None:
    again = render(helm, helm_tmp)
    for suffix in ("-ray-token", "-redis"):
        first = one(rendered["defaults"], "Secret", suffix)["data"]
        second = one(again, "Secret", suffix)["data"]
        assert first != second, suffix


@pytest.mark.parametrize("name", ["existing-secrets", "everything-on"])
def test_existing_secrets_make_helm_template_deterministic_for_gitops(helm, helm_tmp, name):
    """Argo CD and Flux render with `helm template`: no lookup, so nothing may be random."""
    first = template(helm, helm_tmp, VALUE_SETS[name])
    second = template(helm, helm_tmp, VALUE_SETS[name])
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout
    assert "kind: Secret" not in first.stdout


def test_existing_secrets_replace_the_generated_ones(rendered) -> None:
    docs = rendered["existing-secrets"]
    assert of_kind(docs, "Secret") == []
    assert ray_cluster(docs)["spec"]["authOptions"]["secretName"] == "my-ray-token"
    env = env_of(watch_container(docs))
    assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "my-ray-token"
    assert env["MEMCLUSTER_REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "my-redis", "key": "pw"}
    redis = one(docs, "StatefulSet")["spec"]["template"]["spec"]["containers"][0]
    assert env_of(redis)["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "my-redis", "key": "pw"}
    auth_only = rendered["existing-auth-secret"]
    assert [s["metadata"]["name"] for s in of_kind(auth_only, "Secret")] == [
        f"{RELEASE}-memcluster-redis"]
    assert ray_cluster(auth_only)["spec"]["authOptions"]["secretName"] == "my-ray-token"


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
    for name, docs in rendered.items():
        available = {s["metadata"]["name"]: set(s["data"]) for s in of_kind(docs, "Secret")}
        available.update(EXTERNAL_SECRETS)
        refs = []
        for _where, tmpl in all_pod_templates(docs):
            for c in containers(tmpl):
                refs += [e["valueFrom"]["secretKeyRef"] for e in c.get("env", [])
                         if "secretKeyRef" in e.get("valueFrom", {})]
        gcs = ray_cluster(docs)["spec"].get("gcsFaultToleranceOptions")
        if gcs:
            refs.append(gcs["redisPassword"]["valueFrom"]["secretKeyRef"])
        auth = ray_cluster(docs)["spec"].get("authOptions")
        if auth:
            refs.append({"name": auth["secretName"], "key": "auth_token"})
        assert refs
        for ref in refs:
            assert ref["key"] in available.get(ref["name"], set()), f"[{name}] {ref}"


# ---- Redis -----------------------------------------------------------------------------


def test_redis_is_a_persistent_statefulset_with_aof_noeviction_and_maxmemory(rendered) -> None:
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
    assert "maxmemory 640mb" in conf  # below the 1Gi limit, with room for the AOF rewrite
    assert container["resources"]["limits"]["memory"] == "1Gi"
    svc = one(docs, "Service", "-redis")
    assert selects(svc["spec"]["selector"], sts["spec"]["template"]["metadata"]["labels"])


def test_the_rendered_redis_config_runs_with_auth_aof_and_noeviction(rendered, tmp_path) -> None:
    """Run the chart's own start script and redis.conf against a real redis-server."""
    import redis

    docs = rendered["defaults"]
    container = one(docs, "StatefulSet")["spec"]["template"]["spec"]["containers"][0]
    script = container["command"][2]
    conf = one(docs, "ConfigMap", "-redis-config")["data"]["redis.conf"]
    for sub in ("etc", "run", "data"):
        (tmp_path / sub).mkdir()
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
        assert authed.config_get("maxmemory") == {"maxmemory": str(640 * 1024 * 1024)}
        assert authed.config_get("appendonly") == {"appendonly": "yes"}
        assert int(authed.config_get("databases")["databases"]) >= 2  # memcluster uses db 1
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
    assert config["redis_url"] == (
        "rediss://memcluster:${MEMCLUSTER_REDIS_PASSWORD}@redis.example.com:6380/3")
    env = env_of(watch_container(docs))
    assert env["MEMCLUSTER_REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "team-redis", "key": "password"}


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


@pytest.mark.parametrize("name, address, db", [
    ("defaults", OWN_REDIS, "1"),
    ("gcs-ft-own-redis", OWN_REDIS, "1"),
    ("gcs-ft-external-redis", "rediss://redis.example.com:6380", "3"),
])
def test_gcs_fault_tolerance_is_on_and_kept_apart_from_memcluster(rendered, name, address, db):
    docs = rendered[name]
    gcs = ray_cluster(docs)["spec"]["gcsFaultToleranceOptions"]
    assert gcs["redisAddress"] == address  # Ray's GCS: database 0, no database setting
    secret_ref = gcs["redisPassword"]["valueFrom"]["secretKeyRef"]
    assert "value" not in gcs["redisPassword"]
    # memcluster: the same password under its own env name, in another database.
    head_env = env_of(head_container(docs))
    assert head_env["MEMCLUSTER_REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == secret_ref
    assert not {"REDIS_PASSWORD", "REDIS_USERNAME", "RAY_REDIS_ADDRESS"} & set(head_env)
    assert "redis-password" not in ray_cluster(docs)["spec"]["headGroupSpec"]["rayStartParams"]
    assert config_of(docs)["redis_url"].endswith(f"/{db}")
    if name != "defaults":
        assert gcs["externalStorageNamespace"] == "mc-gcs"
    if name == "gcs-ft-external-redis":
        assert gcs["redisUsername"] == {"value": "memcluster"}
    assert "gcsFaultToleranceOptions" not in ray_cluster(rendered["gcs-ft-off"])["spec"]


def test_the_head_hosts_nothing_and_placement_reaches_the_config(rendered) -> None:
    for docs in rendered.values():
        assert ray_cluster(docs)["spec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    assert config_of(rendered["defaults"])["placement"] == {"domain": "node", "resources": None}
    assert config_of(rendered["everything-on"])["placement"] == {
        "domain": "zone", "resources": {"memory-node": 1}}


def test_head_ray_start_params_merge_without_duplicate_keys(helm, helm_tmp) -> None:
    values = {"ray": {"head": {"rayStartParams": {"object-store-memory": "100000000"}}}}
    text = template(helm, helm_tmp, values).stdout
    block = text.split("rayStartParams:", 1)[1].split("template:", 1)[0]
    keys = re.findall(r'^\s+"([a-z-]+)":', block, re.M)
    assert sorted(keys) == sorted(set(keys))
    assert {"object-store-memory", "num-cpus", "metrics-export-port"} <= set(keys)


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
        assert got.get("labels", {}) == want.get("rayLabels", {})
        assert got.get("resources", {}) == want.get("rayResources", {})
        assert got["rayStartParams"]["metrics-export-port"] == "8080"
    assert groups["large"]["rayStartParams"]["object-store-memory"] == "2000000000"


def test_an_upgrade_strategy_rolls_ray_pods_on_image_changes_only(
        helm, helm_tmp, rendered) -> None:
    """KubeRay's Recreate hashes the pod templates: an image change must change them (the
    upgrade takes effect); a shard-count change or a new chart version that changes nothing
    in the pods must not (either would restart all of Ray)."""
    base = rendered["defaults"]
    assert ray_cluster(base)["spec"]["upgradeStrategy"] == {"type": "Recreate"}
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    sources = copy.deepcopy(values["memcluster"]["sources"])
    sources[0]["shards"] = 8
    rescaled = render(helm, helm_tmp, {"memcluster": {"sources": sources}})
    new_image = render(helm, helm_tmp, {"image": {"tag": "0.1.1-ray2.60.0-py311"}})
    chart = helm_tmp / "newer-chart"
    shutil.copytree(CHART, chart, dirs_exist_ok=True)
    meta = (chart / "Chart.yaml").read_text()
    (chart / "Chart.yaml").write_text(meta.replace("version: 0.", "version: 9.")
                                      .replace('appVersion: "0.1.0"', 'appVersion: "0.9.0"'))
    newer_chart = run_helm(helm, "template", RELEASE, str(chart), "--namespace", NAMESPACE,
                           tmp_dir=helm_tmp)
    assert newer_chart.returncode == 0, newer_chart.stderr
    newer_docs = [d for d in yaml.safe_load_all(newer_chart.stdout) if d]
    templates = [t for _, t in pod_templates(ray_cluster(base))]
    assert [t for _, t in pod_templates(ray_cluster(rescaled))] == templates
    assert [t for _, t in pod_templates(ray_cluster(newer_docs))] == templates
    assert [t for _, t in pod_templates(ray_cluster(new_image))] != templates
    assert config_of(rescaled)["sources"][0]["shards"] == 8
    # ... and the config change rolls the watch pod, whose `up` applies it.
    before = watch_pod(base)["metadata"]["annotations"]["checksum/config"]
    assert watch_pod(rescaled)["metadata"]["annotations"]["checksum/config"] != before


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


# ---- self-healing: the watch Deployment ------------------------------------------------


def test_watch_deployment_runs_memcluster_up_watch_against_the_ray_head(rendered) -> None:
    docs = rendered["defaults"]
    deployment = one(docs, "Deployment", "-watch")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    pod = watch_pod(docs)
    assert pod["spec"].get("restartPolicy", "Always") == "Always"
    container = watch_container(docs)
    assert container["command"] == ["memcluster", "up", CONFIG_PATH, "--watch",
                                    "--interval", "10"]
    env = env_of(container)
    assert env["RAY_ADDRESS"]["value"] == f"ray://{HEAD_SVC}:10001"
    assert env["RAY_ADDRESS"]["value"] == config_of(docs)["ray_address"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    config_map = volumes[mounts["/etc/memcluster"]]["configMap"]["name"]
    assert config_map == one(docs, "ConfigMap", "-config")["metadata"]["name"]
    assert watch_container(rendered["everything-on"])["command"][-1] == "5"


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_memcluster_loads_the_rendered_config(rendered, monkeypatch, name) -> None:
    """The ConfigMap is read by memcluster's own loader: chart and code cannot drift."""
    from memcluster import load_config

    docs = rendered[name]
    data = config_of(docs)
    monkeypatch.setenv("MEMCLUSTER_REDIS_PASSWORD", "pw-from-secret")
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
    assert "${MEMCLUSTER_REDIS_PASSWORD}" in config.raw["redis_url"]
    # Every process that loads the config gets the variables it references.
    referenced = set(re.findall(r"\$\{(\w+)\}", json.dumps(data)))
    for container in (head_container(docs), watch_container(docs)):
        assert referenced <= set(env_of(container)), container["name"]


# ---- metrics, network policy, dashboard ------------------------------------------------


def declared_ports(template: dict) -> set[str]:
    return {p["name"] for c in template["spec"]["containers"] for p in c.get("ports", [])}


def test_metrics_are_scraped_only_where_they_are_served(rendered) -> None:
    """mc-metrics only on the watch pod's proxy, Ray's metrics port on every Ray pod: each
    ServiceMonitor / PodMonitor endpoint lands only on pods that declare that port."""
    docs = rendered["monitoring"]
    pods = {where: t for where, t in all_pod_templates(docs)}
    watch = f"{RELEASE}-memcluster-watch"
    ray_pods = [w for w in pods if w == "head" or w.startswith("group ")]
    assert declared_ports(pods[watch]) == {"mc-metrics"}
    for where in ray_pods:
        assert "mc-metrics" not in declared_ports(pods[where]), where
        assert "metrics" in declared_ports(pods[where]), where

    services = {s["metadata"]["name"]: s for s in of_kind(docs, "Service")}
    memcluster_svc = services[f"{RELEASE}-memcluster-metrics"]
    ray_svc = services[f"{RELEASE}-memcluster-ray-metrics"]
    assert [w for w, t in pods.items()
            if selects(memcluster_svc["spec"]["selector"], t["metadata"]["labels"])] == [watch]
    assert sorted(w for w, t in pods.items()
                  if selects(ray_svc["spec"]["selector"], t["metadata"]["labels"])) == sorted(
        ray_pods)

    monitor = one(docs, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prom"
    scraped = [s for s in services.values()
               if selects(monitor["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])]
    assert sorted(s["metadata"]["name"] for s in scraped) == sorted(
        [memcluster_svc["metadata"]["name"], ray_svc["metadata"]["name"]])
    endpoint_ports = {e["port"] for e in monitor["spec"]["endpoints"]}
    assert endpoint_ports == {p["name"] for s in scraped for p in s["spec"]["ports"]}

    pod_monitor = one(docs, "PodMonitor")
    selected = [w for w, t in pods.items()
                if selects(pod_monitor["spec"]["selector"]["matchLabels"], t["metadata"]["labels"])]
    assert sorted(selected) == sorted([watch, *ray_pods])
    for endpoint in pod_monitor["spec"]["podMetricsEndpoints"]:
        serving = [w for w in selected if endpoint["port"] in declared_ports(pods[w])]
        assert serving == ([watch] if endpoint["port"] == "mc-metrics" else ray_pods)
    assert not of_kind(rendered["defaults"], "ServiceMonitor")
    assert not of_kind(rendered["defaults"], "PodMonitor")


def test_the_metrics_proxy_looks_for_the_manager_among_the_workers(rendered) -> None:
    docs = rendered["defaults"]
    proxy = watch_container(docs, "metrics-proxy")
    target = proxy["command"][proxy["command"].index("--target") + 1]
    host, port = target.rsplit(":", 1)
    assert port == "9464"
    workers = one(docs, "Service", "-workers")
    assert host == f"{workers['metadata']['name']}.{NAMESPACE}.svc.cluster.local"
    assert workers["spec"]["clusterIP"] == "None"
    assert workers["spec"]["publishNotReadyAddresses"] is True
    selected = [w for w, t in all_pod_templates(docs)
                if selects(workers["spec"]["selector"], t["metadata"]["labels"])]
    assert selected == ["group workers"]
    script = one(docs, "ConfigMap", "-metrics-proxy")["data"]["metrics_proxy.py"]
    assert script == (CHART / "files" / "metrics_proxy.py").read_text().rstrip("\n")


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
    assert not [d for d in of_kind(rendered["defaults"], "ConfigMap")
                if d["metadata"]["name"].endswith("-dashboard")]


# ---- values schema and cross-field checks -----------------------------------------------


@pytest.mark.parametrize("values, message", [
    ({"unknownKey": 1}, "unknownKey"),
    ({"install": {"enabled": True}}, "install"),
    ({"ray": {"workerGroups": [{"name": "w", "replicas": "two", "minReplicas": 0,
                                "maxReplicas": 3, "resources": WORKER_GROUPS[0]["resources"]}]}},
     "/ray/workerGroups/0/replicas"),
    ({"ray": {"workerGroups": [{**WORKER_GROUPS[0], "gpu": True}]}}, "gpu"),
    ({"ray": {"workerGroups": [{k: v for k, v in WORKER_GROUPS[0].items()
                                if k != "resources"}]}}, "resources"),
    ({"ray": {"head": {"rayStartParams": {"num-cpus": "4"}}}}, "/ray/head/rayStartParams"),
    ({"ray": {"head": {"rayStartParams": {"metrics-export-port": "9090"}}}},
     "/ray/head/rayStartParams"),
    ({"ray": {"workerGroups": [{**WORKER_GROUPS[0], "rayStartParams": {"labels": "a=b"}}]}},
     "/ray/workerGroups/0/rayStartParams"),
    ({"ray": {"workerGroups": [{**WORKER_GROUPS[0],
                                "rayStartParams": {"resources": '{"x": 1}'}}]}},
     "/ray/workerGroups/0/rayStartParams"),
    ({"ray": {"workerGroups": [{**WORKER_GROUPS[0], "rayLabels": {"ray.io/zone": "a"}}]}},
     "ray.io/zone"),
    ({"ray": {"upgradeStrategy": "RollingUpdate"}}, "/ray/upgradeStrategy"),
    ({"ray": {"version": "latest"}}, "/ray/version"),
    ({"fullnameOverride": "1st"}, "/fullnameOverride"),
    ({"memcluster": {"sources": [{"name": "c", "backend": "memory", "shards": "4"}]}},
     "/memcluster/sources/0/shards"),
    ({"memcluster": {"sources": [{"name": "c", "backend": "memory",
                                  "supervision": {"strategy": "one_for_some"}}]}},
     "/memcluster/sources/0/supervision/strategy"),
    ({"memcluster": {"sources": [{"name": "c", "backend": "memory", "replica": 2}]}}, "replica"),
    ({"memcluster": {"sources": []}}, "/memcluster/sources"),
    ({"memcluster": {"placement": {"domain": "node", "resources": {"gpu": 0}}}},
     "/memcluster/placement/resources"),
    ({"memcluster": {"placement": {"domain": "node", "other": 1}}}, "other"),
    ({"redis": {"persistence": {"size": "lots"}}}, "/redis/persistence/size"),
    ({"redis": {"maxmemory": ""}}, "/redis/maxmemory"),
    ({"metrics": {"serviceMonitor": {"enabled": "yes"}}}, "/metrics/serviceMonitor/enabled"),
    ({"networkPolicy": {"clientNamespaces": ["Not_A_Namespace"]}},
     "/networkPolicy/clientNamespaces/0"),
    ({"redis": {"securityContext": {"privileged": True}}}, "privileged"),
    ({"ray": {"head": {"serviceType": "Ingress"}}}, "/ray/head/serviceType"),
    ({"watch": {"intervalSeconds": 0}}, "/watch/intervalSeconds"),
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
    ({"ray": {"workerGroups": [{**WORKER_GROUPS[0], "minReplicas": 4, "maxReplicas": 3,
                                "replicas": 3}]}}, "ray.workerGroups[0].minReplicas"),
    ({"memcluster": {"sources": [{"name": "c", "backend": "memory", "shards": 1,
                                  "replicas": 2}]}}, "memcluster.sources[0].replicas"),
    ({"memcluster": {"sources": [{"name": "c", "backend": "memory", "shards": 3,
                                  "replicas": 2, "write_quorum": 3}]}},
     "memcluster.sources[0].write_quorum"),
    ({"memcluster": {"sources": [{"name": "a", "backend": "memory", "default": True},
                                 {"name": "b", "backend": "memory", "default": True}]}},
     "at most one source may be the default"),
    ({"redis": {"maxmemory": "1gb"}}, "redis.maxmemory"),
    ({"redis": {"maxmemory": "1000mb"}}, "redis.maxmemory"),
    ({"memcluster": {"placement": {"domain": "node", "resources": {"memcluster": 1}}}},
     "memcluster.placement.resources"),
    ({"memcluster": {"placement": {"domain": "zone"}}}, "memcluster.placement.domain"),
    ({"ray": {"version": "2.51.0"}}, "ray.version"),
    ({"metrics": {"enabled": False, "podMonitor": {"enabled": True}}}, "metrics.enabled"),
])
def test_cross_field_checks_fail_naming_the_field(helm, helm_tmp, values, message) -> None:
    result = template(helm, helm_tmp, values)
    assert result.returncode != 0, f"accepted {values}"
    assert message in result.stderr


def test_token_auth_off_allows_an_older_ray(helm, helm_tmp) -> None:
    result = template(helm, helm_tmp, {"ray": {"version": "2.51.0", "auth": {"enabled": False}}})
    assert result.returncode == 0, result.stderr


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
