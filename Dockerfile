# The cascade-extproc image: the ext_proc gRPC server and its admin port, nothing else. Envoy
# is not in it: the pod runs the official envoyproxy/envoy:v1.40.0 image beside it
# (k8s/base/deployment.yaml, docs/kubernetes.md).
#
#   docker build -t cascade-extproc:0.1.0 .
#
# The base is pinned to an exact version. Production builds should pin its digest too, so the
# same tag can never bring different bytes:
#   docker buildx imagetools inspect python:3.11.17-slim-bookworm   # prints "Digest: sha256:..."
# then build with --build-arg PYTHON_IMAGE=python:3.11.17-slim-bookworm@sha256:<digest>
# (or write it here). Renovate and Dependabot can keep both up to date.
ARG PYTHON_IMAGE=python:3.11.17-slim-bookworm

# ---- builder: the wheel, installed into a venv that is copied whole into the final stage
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY cascade_extproc ./cascade_extproc
# The wheel of this source tree, then the venv with it and its dependencies, all as binary
# wheels (no compiler in either stage); pip compiles the .pyc files here, since the final
# image runs with a read-only root filesystem. pip and setuptools are not needed at run time.
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip wheel --no-cache-dir --no-deps --wheel-dir /dist . \
    && /opt/venv/bin/pip install --no-cache-dir --only-binary=:all: /dist/cascade_extproc-*.whl \
    && /opt/venv/bin/pip uninstall --yes pip setuptools

# ---- final: the slim base and the venv; no build tools, no source tree
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="cascade-extproc" \
      org.opencontainers.image.description="Envoy ext_proc sidecar that cuts LLM API cost with response-level speculative decoding" \
      org.opencontainers.image.licenses="MIT"
COPY --from=builder /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# Numeric, so the kubelet can check runAsNonRoot without a passwd entry.
USER 10001:10001
# 9464: /metrics, /healthz, /readyz, /dashboard. The ext_proc server listens on a Unix socket in a
# volume shared with Envoy only (k8s/base/config.yaml), never on a port the app could reach.
EXPOSE 9464
ENTRYPOINT ["cascade-extproc"]
CMD ["serve", "--config", "/etc/cascade/config.yaml"]
