"""Render the chart with helm and pick objects out of the result: shared by the chart tests.

VALUE_SETS are the value sets the chart must render cleanly (issue 19's list: defaults,
external Redis, GCS fault tolerance with its own and an external Redis, monitoring, worker
groups, existing secrets, auth off, an existing auth secret, everything on), rendered once
per test session (tests/helm/conftest.py). helm comes from $HELM, PATH, or
`.cache/helm/helm` (scripts/fetch_helm.sh puts it there).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "memcluster"
RELEASE = "mc"
NAMESPACE = "memory"
FULLNAME = f"{RELEASE}-memcluster"
K8S_VERSION = "1.33"  # the Kubernetes version the fetched helm (kubectl-v33 layer) targets
CONFIG_PATH = "/etc/memcluster/memcluster.yaml"
LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

WORKER_GROUPS = [
    {"name": "small", "replicas": 2, "minReplicas": 1, "maxReplicas": 3,
     "resources": {"requests": {"cpu": "500m", "memory": "1Gi"},
                   "limits": {"cpu": "1", "memory": "1Gi"}},
     "rayLabels": {"zone": "zone-a"},
     "nodeSelector": {"pool": "memory", "topology.kubernetes.io/zone": "zone-a"},
     "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "memory",
                      "effect": "NoSchedule"}],
     "podDisruptionBudget": {"enabled": True, "maxUnavailable": 1}},
    {"name": "large", "replicas": 1, "minReplicas": 1, "maxReplicas": 5,
     "rayStartParams": {"object-store-memory": "2000000000"},
     "rayResources": {"big": "1", "memory-node": "1"},
     "rayLabels": {"zone": "zone-b"},
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
MONITORING = {
    "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}},
                "podMonitor": {"enabled": True}, "grafanaDashboard": {"enabled": True}},
    "networkPolicy": {"monitoringNamespaces": ["monitoring"]},
}
WORKERS = {
    "ray": {"workerGroups": WORKER_GROUPS},
    "memcluster": {"clusterName": "agents", "sources": SOURCES},
    "extraEnv": [{"name": "PG_DSN", "valueFrom": {"secretKeyRef": {"name": "pg", "key": "dsn"}}}],
    "networkPolicy": {"clientNamespaces": ["agents", "batch"]},
}
EXISTING_SECRETS = {
    "ray": {"auth": {"enabled": True, "existingSecret": "my-ray-token"}},
    "redis": {"auth": {"existingSecret": "my-redis", "existingSecretPasswordKey": "pw"}},
}
# Secrets the value sets name but do not create, and their keys.
EXTERNAL_SECRETS = {"team-redis": {"password"}, "my-ray-token": {"auth_token"},
                    "my-redis": {"pw"}, "pg": {"dsn"}}


def merged(*parts: dict[str, Any]) -> dict[str, Any]:
    """Deep merge of value dicts, later ones winning (as several `-f` files do)."""
    out: dict[str, Any] = {}
    for part in parts:
        for key, value in part.items():
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = merged(out[key], value)
            else:
                out[key] = value
    return out


VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "external-redis": EXTERNAL_REDIS,
    "gcs-ft-own-redis": {"ray": {"gcsFaultTolerance": {
        "enabled": True, "externalStorageNamespace": "mc-gcs"}}},
    "gcs-ft-external-redis": merged(EXTERNAL_REDIS, {"ray": {"gcsFaultTolerance": {
        "enabled": True, "externalStorageNamespace": "mc-gcs"}}}),
    "gcs-ft-off": {"ray": {"gcsFaultTolerance": {"enabled": False}}},
    "monitoring": MONITORING,
    "worker-groups": WORKERS,
    "existing-secrets": EXISTING_SECRETS,
    "auth-off": {"ray": {"auth": {"enabled": False}}},
    "existing-auth-secret": {"ray": {"auth": {"existingSecret": "my-ray-token"}}},
    "everything-on": merged(
        WORKERS, MONITORING, EXISTING_SECRETS,
        {"image": {"repository": "registry.example/team/memcluster", "tag": "0.1.0-custom"},
         "memcluster": {"placement": {"domain": "zone", "resources": {"memory-node": 1}}},
         "ray": {"upgradeStrategy": "Recreate",
                 "head": {"rayStartParams": {"object-store-memory": "500000000"}},
                 "gcsFaultTolerance": {"enabled": True, "externalStorageNamespace": "agents"}},
         "redis": {"maxmemory": "6gb", "resources": {
             "requests": {"cpu": "1", "memory": "8Gi"}, "limits": {"memory": "8Gi"}}},
         "watch": {"intervalSeconds": 5}}),
}


# ---- helm ------------------------------------------------------------------------------


@cache
def helm_binary() -> str | None:
    for candidate in (os.environ.get("HELM"), shutil.which("helm"),
                      str(REPO / ".cache" / "helm" / "helm")):
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def run_helm(helm: str, *args: str, values: dict[str, Any] | None = None,
             tmp_dir: Path) -> subprocess.CompletedProcess[str]:
    cmd = [helm, *args]
    if values is not None:
        digest = hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]
        path = tmp_dir / f"values-{digest}.yaml"
        path.write_text(json.dumps(values))  # JSON is YAML
        cmd += ["-f", str(path)]
    env = {**os.environ, "HELM_CACHE_HOME": str(tmp_dir / "cache"),
           "HELM_CONFIG_HOME": str(tmp_dir / "config"), "HELM_DATA_HOME": str(tmp_dir / "data")}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env, check=False)


def template(helm: str, tmp_dir: Path, values: dict[str, Any] | None = None,
             release: str = RELEASE) -> subprocess.CompletedProcess[str]:
    return run_helm(helm, "template", release, str(CHART), "--namespace", NAMESPACE,
                    "--kube-version", K8S_VERSION, values=values, tmp_dir=tmp_dir)


def render(helm: str, tmp_dir: Path, values: dict[str, Any] | None = None,
           release: str = RELEASE) -> list[dict]:
    result = template(helm, tmp_dir, values, release)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.load_all(result.stdout, Loader=LOADER) if doc]


# ---- picking objects -----------------------------------------------------------------------


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


def watch_pod(docs: list[dict]) -> dict:
    return one(docs, "Deployment", "-watch")["spec"]["template"]


def watch_container(docs: list[dict], name: str = "watch") -> dict:
    return next(c for c in watch_pod(docs)["spec"]["containers"] if c["name"] == name)


def head_container(docs: list[dict]) -> dict:
    return ray_cluster(docs)["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
