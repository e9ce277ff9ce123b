#!/usr/bin/env bash
# Build the memcluster image (the root Dockerfile) that the Helm chart runs by default.
#
#   scripts/build_image.sh               build memcluster:<version>-ray<ray>-<python>
#   scripts/build_image.sh --push        build, then push (set IMAGE to your registry's path)
#   scripts/build_image.sh --print       print the image reference and the build command only
#
# Environment:
#   IMAGE     repository (default: memcluster), e.g. registry.example.com/team/memcluster
#   TAG       tag (default: <memcluster version>-ray<RAY_VERSION>-<PYTHON_TAG>, which is the
#             chart's default image.tag)
#   RAY_VERSION, PYTHON_TAG, EXTRAS   build arguments (defaults: the Dockerfile's ARGs)
#   DOCKER    the build tool (default: docker; podman works the same)
# Extra arguments after `--` go to `docker build` (e.g. -- --platform linux/amd64).
set -euo pipefail
cd "$(dirname "$0")/.."

mode=build
while [ "$#" -gt 0 ]; do
    case "$1" in
        --push) mode=push ;;
        --print) mode=print ;;
        --) shift; break ;;
        -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
        *) echo "build_image.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

dockerfile_arg() {  # the default of `ARG NAME=value` in the Dockerfile
    sed -n "s/^ARG $1=\(.*\)$/\1/p" Dockerfile | head -n 1
}
version="$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml | head -n 1)"
ray_version="${RAY_VERSION:-$(dockerfile_arg RAY_VERSION)}"
python_tag="${PYTHON_TAG:-$(dockerfile_arg PYTHON_TAG)}"
extras="${EXTRAS:-$(dockerfile_arg EXTRAS)}"
image="${IMAGE:-memcluster}:${TAG:-$version-ray$ray_version-$python_tag}"
docker="${DOCKER:-docker}"

cmd=("$docker" build --file Dockerfile --tag "$image"
     --build-arg "RAY_VERSION=$ray_version" --build-arg "PYTHON_TAG=$python_tag"
     --build-arg "EXTRAS=$extras" "$@" .)

if [ "$mode" = print ]; then
    echo "$image"
    printf '%q ' "${cmd[@]}"
    echo
    exit 0
fi
# The RUN --mount steps need BuildKit (docker's default builder since 23.0).
DOCKER_BUILDKIT=1 "${cmd[@]}"
if [ "$mode" = push ]; then
    "$docker" push "$image"
fi
echo "$image"
