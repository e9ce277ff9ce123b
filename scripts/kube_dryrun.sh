#!/usr/bin/env bash
# Outside CI: send every value set of the chart tests to a real kube-apiserver with
# `kubectl apply --dry-run=server`, after installing the upstream CRDs.
#
#   KUBERAY_CRD=.../ray.io_rayclusters.yaml \
#   SERVICEMONITOR_CRD=.../monitoring.coreos.com_servicemonitors.yaml \
#   PODMONITOR_CRD=.../monitoring.coreos.com_podmonitors.yaml  scripts/kube_dryrun.sh
#
# The CRDs come from the KubeRay and prometheus-operator repositories (the versions the
# fixtures in tests/helm/fixtures name); this script does not fetch them. Everything else
# comes from Debian (bookworm) packages, as root: kube-apiserver is built from Debian's
# `kubernetes` source package (1.20) with golang-1.19, etcd is `etcd-server`. The first
# run builds kube-apiserver (tens of minutes on 2 cores; kept in the work directory).
#
# Kubernetes 1.20 serves no policy/v1 (PodDisruptionBudget, GA in 1.21): objects of a
# kind the server does not serve are listed as skipped, not as failures. Everything stays
# on 127.0.0.1 and is stopped on exit.
#
# Environment: KUBE_DRYRUN_DIR (work directory, default .cache/kube-dryrun), HELM,
# PYTHON (default .venv/bin/python, else python3).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="${KUBE_DRYRUN_DIR:-$repo/.cache/kube-dryrun}"
python="${PYTHON:-$repo/.venv/bin/python}"
[ -x "$python" ] || python=python3
helm="${HELM:-$(bash "$repo/scripts/fetch_helm.sh")}"
: "${KUBERAY_CRD:?set KUBERAY_CRD to the KubeRay RayCluster CRD file}"
: "${SERVICEMONITOR_CRD:?set SERVICEMONITOR_CRD to the ServiceMonitor CRD file}"
: "${PODMONITOR_CRD:?set PODMONITOR_CRD to the PodMonitor CRD file}"
mkdir -p "$work/bin"
cd "$repo"
log() { echo "kube_dryrun: $*" >&2; }

# ---- packages and the kube-apiserver build --------------------------------------------
if [ ! -x "$work/bin/kube-apiserver" ]; then
    if ! grep -rqs "deb-src" /etc/apt/sources.list /etc/apt/sources.list.d/; then
        log "adding Debian bookworm source packages to apt"
        cat > /etc/apt/sources.list.d/debian-src.sources <<'EOF'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    fi
    apt-get update -qq
    apt-get install -y -qq dpkg-dev golang-1.19-go etcd-server \
        golang-github-modern-go-reflect2-dev >/dev/null
    if [ ! -d "$work/src" ]; then
        mkdir -p "$work/src"
        (cd "$work/src" && apt-get source -qq --download-only kubernetes >/dev/null \
            && dpkg-source -x --skip-patches ./kubernetes_*.dsc kubernetes >/dev/null)
        (cd "$work/src/kubernetes" && for p in $(cat debian/patches/series 2>/dev/null); do
            patch -s -p1 < "debian/patches/$p"; done)
    fi
    # The vendored reflect2 1.0.1 crashes under Go >= 1.18 (map iteration in json-iterator:
    # the API server dies on its first custom resource); Debian's 1.0.2 is the fix.
    reflect2="$work/src/kubernetes/vendor/github.com/modern-go/reflect2"
    rm -f "$reflect2"/*.go "$reflect2"/*.s
    cp /usr/share/gocode/src/github.com/modern-go/reflect2/*.go \
        /usr/share/gocode/src/github.com/modern-go/reflect2/*.s "$reflect2/"
    log "building kube-apiserver from Debian's kubernetes source (slow, once)"
    # As debian/rules does: the 1.20 build runs in GOPATH mode through `make WHAT=...`.
    (cd "$work/src/kubernetes" && mkdir -p .go/src/k8s.io \
        && { [ -L .go/src/k8s.io/kubernetes ] || ln -s ../../.. .go/src/k8s.io/kubernetes; } \
        && env GOPATH="$PWD/.go" PATH="/usr/lib/go-1.19/bin:$PATH" CGO_ENABLED=0 \
            HOME="$work" nice -n 19 make WHAT=cmd/kube-apiserver >"$work/build.log" 2>&1) \
        || { tail -30 "$work/build.log" >&2; exit 1; }
    cp "$work/src/kubernetes/_output/bin/kube-apiserver" "$work/bin/kube-apiserver"
fi
command -v etcd >/dev/null || apt-get install -y -qq etcd-server >/dev/null
command -v kubectl >/dev/null || apt-get install -y -qq kubernetes-client >/dev/null

# ---- etcd and kube-apiserver on loopback ----------------------------------------------
run="$(mktemp -d "$work/run.XXXXXX")"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    cp "$run"/*.log "$work/" 2>/dev/null || true  # the last run's etcd and apiserver logs
    rm -rf "$run"
}
trap cleanup EXIT
free_port() { "$python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
etcd_port="$(free_port)"; peer_port="$(free_port)"; api_port="$(free_port)"
etcd --data-dir "$run/etcd" --listen-client-urls "http://127.0.0.1:$etcd_port" \
    --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$peer_port" >"$run/etcd.log" 2>&1 &
pids+=("$!")
openssl genrsa -out "$run/sa.key" 2048 2>/dev/null
openssl rsa -in "$run/sa.key" -pubout -out "$run/sa.pub" 2>/dev/null
token="$("$python" -c 'import secrets; print(secrets.token_hex(16))')"
echo "$token,admin,admin,system:masters" > "$run/tokens.csv"
"$work/bin/kube-apiserver" --etcd-servers "http://127.0.0.1:$etcd_port" \
    --bind-address 127.0.0.1 --secure-port "$api_port" --cert-dir "$run/certs" \
    --token-auth-file "$run/tokens.csv" --authorization-mode AlwaysAllow \
    --service-account-issuer https://kubernetes.default.svc \
    --service-account-key-file "$run/sa.pub" --service-account-signing-key-file "$run/sa.key" \
    --service-cluster-ip-range 10.96.0.0/24 >"$run/apiserver.log" 2>&1 &
pids+=("$!")
k() { kubectl --server "https://127.0.0.1:$api_port" --token "$token" \
        --insecure-skip-tls-verify "$@"; }
for _ in $(seq 120); do
    k get --raw /readyz >/dev/null 2>&1 && break
    sleep 1
done
k get --raw /readyz >/dev/null || { tail -20 "$run/apiserver.log" >&2; exit 1; }
log "kube-apiserver $(k version -o json 2>/dev/null | "$python" -c \
    'import json,sys; print(json.load(sys.stdin)["serverVersion"]["gitVersion"])') is up"

# The RayCluster CRD is too large for client-side apply's annotation: create it. A newer
# kubectl would check the CRDs against this older server's CRD schema and refuse fields
# it does not know yet (x-kubernetes-validations); the server itself drops them. 1.20
# also refuses `default: ""` in a CRD schema (it reads it as null), so those defaults,
# which only fill in empty strings, are dropped first (a list-map key that loses its
# default is made required instead, as 1.20 demands; the chart always sets those keys).
for crd in "$KUBERAY_CRD" "$SERVICEMONITOR_CRD" "$PODMONITOR_CRD"; do
    "$python" - "$crd" > "$run/crd.yaml" <<'PY'
import sys, yaml

def drop_empty_defaults(node):
    """Drop `default: ""`; a list-map key left without a default becomes required
    (1.20 wants one or the other)."""
    if isinstance(node, dict):
        if node.get("default") == "":
            del node["default"]
        for value in node.values():
            drop_empty_defaults(value)
        items = node.get("items") or {}
        for key in node.get("x-kubernetes-list-map-keys", []):
            prop = items.get("properties", {}).get(key, {})
            if "default" not in prop and key not in items.get("required", []):
                items.setdefault("required", []).append(key)
    elif isinstance(node, list):
        for value in node:
            drop_empty_defaults(value)

docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
for doc in docs:
    drop_empty_defaults(doc)
yaml.safe_dump_all(docs, sys.stdout)
PY
    k create --validate=false -f "$run/crd.yaml" >/dev/null
done
k wait --for condition=established --timeout 60s crd --all >/dev/null
k create namespace memory >/dev/null
served="$(k api-versions | tr '\n' ' ')"

# ---- every value set -------------------------------------------------------------------
"$python" - "$run" <<'PY'
import json, sys
sys.path.insert(0, ".")
from tests.helm.chart_render import VALUE_SETS
for name, values in VALUE_SETS.items():
    with open(f"{sys.argv[1]}/values-{name}.json", "w") as f:
        json.dump(values, f)
PY
# The server may accept an object and silently drop fields it does not know (a custom
# resource's unknown fields are pruned; 1.20 has no strict field validation). So each
# dry run returns what the server would store, and every field sent must still be there.
dryrun() {  # dryrun FILE: apply --dry-run=server, then list what the server dropped
    k apply --dry-run=server -n memory -o json -f "$1" > "$1.returned.json" 2> "$1.err" \
        || { cat "$1.err"; return 1; }
    "$python" - "$1" "$1.returned.json" <<'PY'
import json, sys, yaml

def dropped(sent, kept, path):
    if isinstance(sent, dict):
        if not isinstance(kept, dict):
            return [path]
        return [p for k, v in sent.items()
                for p in (dropped(v, kept[k], f"{path}.{k}") if k in kept else [f"{path}.{k}"])]
    if isinstance(sent, list):
        if not isinstance(kept, list) or len(kept) != len(sent):
            return [path]
        return [p for i, v in enumerate(sent) for p in dropped(v, kept[i], f"{path}[{i}]")]
    return [] if str(sent) == str(kept) else [f"{path} ({sent!r} became {kept!r})"]

result = json.load(open(sys.argv[2]))
returned = {(o["kind"], o["metadata"]["name"]): o
            for o in (result["items"] if result.get("kind") == "List" else [result])}
problems = []
for doc in (d for d in yaml.safe_load_all(open(sys.argv[1])) if d):
    kept = returned.get((doc["kind"], doc["metadata"]["name"]))
    where = f"{doc['kind']}/{doc['metadata']['name']}"
    if kept is None:
        problems.append(f"{where}: not returned")
        continue
    problems += [f"{where}: dropped {p}" for p in dropped(doc, kept, "")
                 if not p.startswith((".metadata.annotations", ".metadata.labels"))]
print("\n".join(problems) if problems else f"{len(returned)} objects")
sys.exit(1 if problems else 0)
PY
}

# A check that cannot fail proves nothing: a RayCluster with an unknown field must fail it.
"$helm" template mc "$repo/helm/memcluster" -n memory --kube-version 1.33 \
    --show-only templates/raycluster.yaml | sed 's/^spec:$/spec:\n  notAField: 1/' > "$run/bad.yaml"
bad="$(dryrun "$run/bad.yaml" || true)"
if ! grep -q "dropped .spec.notAField" <<<"$bad"; then
    log "a RayCluster with an unknown field passed: this run cannot see dropped fields"
    echo "$bad" >&2
    exit 1
fi
log "self-check: an unknown field in a RayCluster is caught"
failed=0
printf '%-24s %s\n' "value set" "result"
for values in "$run"/values-*.json; do
    name="$(basename "$values" .json)"; name="${name#values-}"
    "$helm" template mc "$repo/helm/memcluster" -n memory --kube-version 1.33 -f "$values" \
        > "$run/$name.yaml"
    # Split off objects of an API version this server does not serve (policy/v1 on 1.20).
    "$python" - "$run/$name.yaml" "$served" > "$run/$name.served.yaml" <<'PY'
import sys, yaml
served = set(sys.argv[2].split())
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
skipped = [f"{d['kind']}/{d['metadata']['name']} ({d['apiVersion']})"
           for d in docs if d["apiVersion"] not in served]
yaml.safe_dump_all([d for d in docs if d["apiVersion"] in served], sys.stdout)
if skipped:
    print(f"  skipped, not served: {', '.join(skipped)}", file=sys.stderr)
PY
    if out="$(dryrun "$run/$name.served.yaml")"; then
        printf '%-24s ok (%s)\n' "$name" "$out"
    else
        failed=1
        printf '%-24s FAILED\n%s\n' "$name" "$out"
    fi
done
exit "$failed"
