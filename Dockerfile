# syntax=docker/dockerfile:1
# The image the Helm chart runs (helm/memcluster): the Ray image memcluster is pinned to, with
# the memcluster wheel installed at build time. Nothing is installed when a pod starts.
#
#   scripts/build_image.sh            builds it as memcluster:<version>-ray<ray>-<python>
#
# Stage 1 builds the wheel from the source; the final stage installs it (and its extras)
# with scripts/image_install.sh, the same script tests/helm/test_image.py runs in a venv.
# RAY_VERSION must match the chart's ray.version (the KubeRay spec.rayVersion) and every
# Ray client that connects (Ray client and cluster need the same Ray and Python versions).
ARG RAY_IMAGE=rayproject/ray
ARG RAY_VERSION=2.60.0
ARG PYTHON_TAG=py311

FROM ${RAY_IMAGE}:${RAY_VERSION}-${PYTHON_TAG} AS wheel
WORKDIR /tmp/src
COPY --chown=1000:100 pyproject.toml README.md ./
COPY --chown=1000:100 memcluster ./memcluster
RUN python -m pip wheel --no-cache-dir --no-deps --disable-pip-version-check \
        --wheel-dir /tmp/wheels .

FROM ${RAY_IMAGE}:${RAY_VERSION}-${PYTHON_TAG}
# Extras installed next to the core: postgres (psycopg) for the postgres backend. Add
# embeddings for the MiniLM embedder (large: it brings torch).
ARG EXTRAS=postgres
LABEL org.opencontainers.image.title="memcluster" \
      org.opencontainers.image.description="memcluster on Ray: the image of the memcluster Helm chart" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN --mount=type=bind,from=wheel,source=/tmp/wheels,target=/tmp/wheels \
    --mount=type=bind,source=scripts/image_install.sh,target=/tmp/image_install.sh \
    sh /tmp/image_install.sh /tmp/wheels "${EXTRAS}"
USER 1000:100
