# syntax=docker/dockerfile:1.7
# AnyFace API image: FastAPI + ONNX Runtime + FAISS (CPU), the pinned models baked in at build time.
# No torch here: the `train` extra never enters this image (checked at build time below).
#
#   docker build -f deploy/api.Dockerfile -t anyface/api:0.1.0 .
#   docker build -f deploy/api.Dockerfile --build-context model-mirror=/srv/anyface-mirror -t anyface/api:0.1.0 .
#
# Build context: the repository root (see .dockerignore).

ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

# Local model mirror, empty by default (every file then comes from its pinned upstream URL).
# Override it with a named build context: `--build-context model-mirror=DIR`
# (compose: ANYFACE_MODEL_MIRROR_DIR). Files are checked against their pinned sha256 either way.
FROM scratch AS model-mirror
# (not left empty: some BuildKit setups refuse to bind-mount an empty stage)
COPY deploy/model-mirror/README.md /README.md

# ---------------------------------------------------------------------------------------------------------
# deps: a virtualenv with the locked `serve` dependencies (deploy/requirements-serve.txt, hash-checked;
# cached until the lock changes)
FROM ${PYTHON_IMAGE} AS deps
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY deploy/requirements-serve.txt ./
RUN pip install --no-cache-dir --require-hashes -r requirements-serve.txt \
    && if pip show torch >/dev/null 2>&1; then echo "torch must not be in the API image" >&2; exit 1; fi

# ---------------------------------------------------------------------------------------------------------
# models: `python -m service.models fetch` into /models (only the fetch code is copied, so editing the
# API does not re-download the models)
FROM deps AS models
COPY service/__init__.py service/settings.py ./service/
COPY service/models ./service/models
RUN --mount=type=bind,from=model-mirror,target=/mirror \
    PYTHONPATH=/src python -m service.models fetch --model-dir /models --mirror /mirror \
    && PYTHONPATH=/src python -m service.models verify --model-dir /models

# ---------------------------------------------------------------------------------------------------------
# builder: install the anyface package itself (no dependencies: they are already in the venv)
FROM deps AS builder
COPY pyproject.toml README.m[d] ./
COPY service ./service
# --no-deps: everything comes from the lock; `pip check` fails the build if pyproject.toml and the lock disagree
RUN pip install --no-cache-dir --no-deps . \
    && pip check \
    && python -c "import service, service.settings"

# ---------------------------------------------------------------------------------------------------------
# runtime: the venv + the models, nothing else (no compiler, no pip cache, no sources, no tests)
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="anyface-api" \
      org.opencontainers.image.description="AnyFace face verification and identification REST API" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 anyface \
    && useradd --system --uid 10001 --gid anyface --home-dir /app --no-create-home --shell /usr/sbin/nologin anyface \
    && mkdir -p /app /var/anyface/jobs \
    && chown -R anyface:anyface /var/anyface
COPY --from=builder /opt/venv /opt/venv
COPY --from=models /models /app/models
WORKDIR /app
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    ANYFACE_MODEL_DIR=/app/models \
    ANYFACE_HOST=0.0.0.0 \
    ANYFACE_PORT=8000
# Fail the build, not the first request, when a native library is missing from the slim base.
RUN python -c "import cv2, faiss, onnxruntime, service.settings" \
    && python -m service.models verify --model-dir /app/models
USER 10001:10001
EXPOSE 8000
# Liveness only (the process answers); readiness is /readyz, used by compose and the load balancer.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('ANYFACE_PORT', '8000'), timeout=4)"]
CMD ["python", "-m", "service"]
