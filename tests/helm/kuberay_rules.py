"""The KubeRay controller's rules for a RayCluster, as a pure function over the object.

A RayCluster can pass the CRD schema and still be refused by the operator: it then records
an `InvalidRayClusterSpec` event and starts no pod (issue 19: GCS fault tolerance with a
REDIS_PASSWORD env on the head). `violations(raycluster)` lists every rule a rendered
RayCluster breaks, one readable line each. The rules mirror KubeRay v1.6.0
(ray-operator/controllers/ray/utils/validation.go: ValidateRayClusterMetadata,
ValidateRayClusterSpec, ValidateRayClusterUpgradeOptions; names and limits from
utils/constant.go; the rayStartParams the operator sets itself from common/pod.go), and
the rules that apply to what this chart renders: autoscaling off, no RayJob/RayService
owner, no autoscaler options.

`ray start` options: KubeRay turns rayStartParams into `--key=value` flags of `ray start`,
so a key `ray start` does not know fails every pod at start; `violations` takes the option
names of the installed Ray (the image's Ray) to check them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

MAX_RAYCLUSTER_NAME = 53  # utils.MaxRayClusterNameLength
DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
DNS_1123_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
DNS_1123_SUBDOMAIN = re.compile(rf"^{DNS_1123_LABEL}(\.{DNS_1123_LABEL})*$")
LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
RESOURCE_PARAMS = ("num-cpus", "num-gpus", "memory", "resources")
UPGRADE_TYPES = ("Recreate", "None")
MIN_TOKEN_AUTH_RAY = (2, 52, 0)
FT_ANNOTATION = "ray.io/ft-enabled"
STORAGE_NS_ANNOTATION = "ray.io/external-storage-namespace"


def ray_start_options() -> set[str]:
    """The long option names of the installed Ray's `ray start` (without the dashes)."""
    import warnings

    with warnings.catch_warnings():  # importing Ray's CLI imports Serve, which warns
        warnings.simplefilter("ignore")
        from ray.scripts.scripts import start
    return {opt[2:] for param in start.params for opt in param.opts if opt.startswith("--")}


def parse_version(text: str) -> tuple[int, ...] | None:
    """Major, minor, patch of a version such as 2.52.1 or 2.52 (k8s version.ParseGeneric)."""
    match = re.fullmatch(r"v?(\d+)\.(\d+)(?:\.(\d+))?", text.strip())
    if not match:
        return None
    return tuple(int(part or 0) for part in match.groups())


def qualified_name_errors(key: str) -> list[str]:
    """k8s validation.IsQualifiedName: [prefix/]name, prefix a DNS-1123 subdomain."""
    prefix, _, name = key.rpartition("/")
    errors = []
    if prefix and (len(prefix) > 253 or not DNS_1123_SUBDOMAIN.match(prefix)):
        errors.append(f"prefix {prefix!r} is not a DNS-1123 subdomain")
    if not name or len(name) > 63 or not LABEL_NAME.match(name):
        errors.append(f"name part {name!r} is not a valid label name")
    return errors


def _env_names(container: dict[str, Any]) -> set[str]:
    return {e.get("name") for e in container.get("env", [])}


def _groups(spec: dict[str, Any]) -> Iterable[tuple[str, dict[str, Any]]]:
    yield "Head", spec.get("headGroupSpec", {})
    for group in spec.get("workerGroupSpecs", []):
        yield group.get("groupName", "?"), group


def violations(raycluster: dict[str, Any], ray_options: set[str] | None = None) -> list[str]:
    """Every KubeRay controller rule `raycluster` breaks (empty: the operator accepts it)."""
    out: list[str] = []
    meta = raycluster.get("metadata", {})
    spec = raycluster.get("spec", {})
    annotations = meta.get("annotations", {}) or {}
    name = meta.get("name", "")

    # ValidateRayClusterMetadata
    if len(name) > MAX_RAYCLUSTER_NAME:
        out.append(f"metadata.name {name!r}: longer than {MAX_RAYCLUSTER_NAME} characters")
    if not DNS_1035.match(name) or len(name) > 63:
        out.append(f"metadata.name {name!r}: not a DNS-1035 label")

    # ValidateRayClusterUpgradeOptions
    upgrade = (spec.get("upgradeStrategy") or {}).get("type")
    if upgrade is not None and upgrade not in UPGRADE_TYPES:
        out.append(f"spec.upgradeStrategy.type {upgrade!r}: not one of {UPGRADE_TYPES}")

    # ValidateRayClusterSpec
    head = spec.get("headGroupSpec", {})
    head_containers = head.get("template", {}).get("spec", {}).get("containers", [])
    if not head_containers:
        out.append("headGroupSpec: no container")
    autoscaling = bool(spec.get("enableInTreeAutoscaling"))
    for group_name, group in _groups(spec):
        params = group.get("rayStartParams", {}) or {}
        where = f"{group_name} group"
        if group_name != "Head":
            if not group.get("template", {}).get("spec", {}).get("containers"):
                out.append(f"{where}: no container")
            low, high = group.get("minReplicas"), group.get("maxReplicas")
            if not autoscaling and (low is None or high is None):
                out.append(f"{where}: minReplicas and maxReplicas are required "
                           "with autoscaling off")
            if low is not None and low < 0:
                out.append(f"{where}: negative minReplicas {low}")
            if high is not None and high < 0:
                out.append(f"{where}: negative maxReplicas {high}")
            if low is not None and high is not None and low > high:
                out.append(f"{where}: minReplicas {low} > maxReplicas {high}")
        if group.get("resources") and any(params.get(k) for k in RESOURCE_PARAMS):
            out.append(f"{where}: resources set both in rayStartParams and in resources")
        if "labels" in params:
            out.append(f"{where}: rayStartParams['labels'] is not supported (use labels)")
        for key, value in (group.get("labels") or {}).items():
            out += [f"{where}: label key {key!r}: {e}" for e in qualified_name_errors(key)]
            if not isinstance(value, str) or len(value) > 63 or not LABEL_VALUE.match(value):
                out.append(f"{where}: label {key!r} has an invalid value {value!r}")
        if ray_options is not None:
            unknown = sorted(set(params) - ray_options)
            if unknown:
                out.append(f"{where}: rayStartParams {unknown} are not `ray start` options")
        if params.get("block") not in (None, "true"):
            out.append(f"{where}: rayStartParams['block'] is always true under KubeRay")
        if group_name != "Head" and "address" in params:
            out.append(f"{where}: rayStartParams['address'] is KubeRay's (the head's address)")

    gcs = spec.get("gcsFaultToleranceOptions")
    if annotations.get(FT_ANNOTATION) and gcs is not None:
        out.append(f"{FT_ANNOTATION} annotation and gcsFaultToleranceOptions are both set")
    ft_enabled = gcs is not None or annotations.get(FT_ANNOTATION, "").lower() == "true"
    head_env = _env_names(head_containers[0]) if head_containers else set()
    head_params = head.get("rayStartParams", {}) or {}
    if not ft_enabled and "RAY_REDIS_ADDRESS" in head_env:
        out.append("head env RAY_REDIS_ADDRESS enables GCS FT without gcsFaultToleranceOptions")
    if gcs is not None:
        if head_params.get("redis-password"):
            out.append("head rayStartParams['redis-password'] with gcsFaultToleranceOptions")
        if "REDIS_PASSWORD" in head_env:
            out.append("head env REDIS_PASSWORD with gcsFaultToleranceOptions")
        if "RAY_REDIS_ADDRESS" in head_env:
            out.append("head env RAY_REDIS_ADDRESS with gcsFaultToleranceOptions")
        if annotations.get(STORAGE_NS_ANNOTATION):
            out.append(f"{STORAGE_NS_ANNOTATION} annotation with gcsFaultToleranceOptions")
        if not gcs.get("redisAddress"):
            out.append("gcsFaultToleranceOptions.redisAddress is empty")
    if head_params.get("redis-username") or "REDIS_USERNAME" in head_env:
        out.append("redis username in head rayStartParams or env "
                   "(use gcsFaultToleranceOptions.redisUsername)")
    if not autoscaling and head_containers:
        for env in head_containers[0].get("env", []):
            if env.get("name") == "RAY_enable_autoscaler_v2" and env.get("value") in ("1", "true"):
                out.append("RAY_enable_autoscaler_v2 set with enableInTreeAutoscaling false")

    auth = spec.get("authOptions") or {}
    if auth.get("mode") == "token":
        version = parse_version(str(spec.get("rayVersion", "")))
        if not spec.get("rayVersion"):
            out.append("authOptions.mode token without rayVersion")
        elif version is None:
            out.append(f"rayVersion {spec['rayVersion']!r} does not parse")
        elif version < MIN_TOKEN_AUTH_RAY:
            out.append(f"authOptions.mode token needs Ray >= 2.52.0, got {spec['rayVersion']}")
    return out
