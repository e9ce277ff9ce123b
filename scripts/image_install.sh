#!/bin/sh
# Install the memcluster wheel into a Python that already has Ray, then smoke-test it.
#
# The Dockerfile's final stage runs this inside the rayproject/ray image, and
# tests/helm/test_image.py runs it against a throwaway venv, so what the test checks is
# what the image does.
#
#   scripts/image_install.sh WHEEL_DIR [EXTRAS]     (EXTRAS: comma-separated, default postgres)
#
# Ray is pinned to the version already installed: the image's Ray is the cluster's Ray
# (KubeRay's rayVersion), and pip must never swap it while resolving memcluster's
# `ray[default]>=...` requirement. PYTHON picks the interpreter (default: python); pip's
# own environment variables (PIP_NO_INDEX, PIP_INDEX_URL, ...) apply as usual.
set -eu

if [ "$#" -lt 1 ] || [ "$#" -gt 2 ]; then
    echo "usage: $0 WHEEL_DIR [EXTRAS]" >&2
    exit 2
fi
wheels="$1"
extras="${2-postgres}"
python="${PYTHON:-python}"

set -- "$wheels"/memcluster-*.whl
if [ "$#" -ne 1 ] || [ ! -f "$1" ]; then
    echo "image_install.sh: expected exactly one memcluster wheel in $wheels" >&2
    exit 1
fi
# memcluster-<version>-py3-none-any.whl -> <version>
version="$(basename "$1" | cut -d- -f2)"
ray_version="$("$python" -c 'import ray; print(ray.__version__)')"
requirement="memcluster==$version"
if [ -n "$extras" ]; then
    requirement="memcluster[$extras]==$version"
fi

"$python" -m pip install --no-cache-dir --disable-pip-version-check --no-input \
    --find-links "$wheels" "$requirement" "ray[default]==$ray_version"

# Smoke test: the command runs, the package and its extras import, Ray is untouched.
scripts="$("$python" -c 'import sysconfig; print(sysconfig.get_path("scripts"))')"
"$scripts/memcluster" --help >/dev/null
"$python" - "$version" "$ray_version" "$extras" <<'PY'
import importlib
import importlib.metadata as metadata
import sys

version, ray_version, extras = sys.argv[1], sys.argv[2], sys.argv[3]
modules = ["memcluster", "memcluster.cli", "redis", "uhashring", "msgpack", "yaml",
           "prometheus_client"]
for extra in filter(None, extras.split(",")):
    modules += {"postgres": ["psycopg", "psycopg_pool"],
                "embeddings": ["sentence_transformers"]}.get(extra, [])
for name in dict.fromkeys(modules):
    importlib.import_module(name)
installed = metadata.version("memcluster")
if installed != version:
    sys.exit(f"memcluster {installed} is installed, expected {version}")
import ray  # noqa: E402

if ray.__version__ != ray_version:
    sys.exit(f"Ray changed from {ray_version} to {ray.__version__} while installing memcluster")
print(f"memcluster {installed} on Ray {ray.__version__}: ok")
PY
