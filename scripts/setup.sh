#!/usr/bin/env bash
# Set up memcluster on a fresh machine: a virtualenv in .venv with the package and its extras.
#   ./scripts/setup.sh          everything `memcluster demo` and normal use need
#   ./scripts/setup.sh --test   plus the test tools, the MiniLM embedder (CPU torch) and helm
# Idempotent: re-running only installs what changed.
set -euo pipefail
cd "$(dirname "$0")/.."

mode="${1:-}"
python="${PYTHON:-python3}"
venv="${MEMCLUSTER_VENV:-.venv}"

if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip install -q --disable-pip-version-check)
"${pip[@]}" --upgrade pip setuptools wheel

extras="embedded,postgres,mysql,qdrant,langgraph,mcp,rest"
if [ "$mode" = "--test" ]; then
    # torch first, pinned to the CPU build: sentence-transformers would otherwise pull CUDA.
    "${pip[@]}" "torch==2.13.0"
    extras="$extras,embeddings,langmem,test"
fi
"${pip[@]}" -e ".[$extras]"

if [ "$mode" = "--test" ]; then
    bash scripts/fetch_helm.sh >/dev/null
fi
echo "memcluster is set up in $venv"
