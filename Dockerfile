# syntax=docker/dockerfile:1
# One image for the gateway (`hycas serve`, the default command) and the workers
# (`hycas worker`). GPU by default; a CPU-only image:
#   docker build --build-arg BASE_IMAGE=ubuntu:22.04 --build-arg TORCH_VARIANT=cpu -t hycas-certify:cpu .
ARG BASE_IMAGE=nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04

FROM ${BASE_IMAGE} AS python
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# The base image pins the distribution; Python comes from its security-updated packages.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/*

FROM python AS build
# The torch every test runs on (README Quickstart, .ci/run): the image runs what was tested.
# TORCH_VARIANT=default: the Linux wheel of the default package index, which bundles its own
# CUDA libraries; cpu (or a CUDA tag such as cu128): that variant's PyTorch wheel index.
ARG TORCH_VARIANT=default
ARG TORCH_VERSION=2.13.0
RUN python3.11 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# torch first, so the project's own `torch` requirement is already satisfied and never pulls
# another build.
RUN if [ "${TORCH_VARIANT}" = default ]; then \
        pip install --no-cache-dir "torch==${TORCH_VERSION}"; \
    else \
        pip install --no-cache-dir --index-url "https://download.pytorch.org/whl/${TORCH_VARIANT}" \
            "torch==${TORCH_VERSION}"; \
    fi
WORKDIR /src
COPY pyproject.toml README.md ./
COPY models ./models
COPY certify ./certify
COPY workers ./workers
COPY service ./service
# The s3 extra reads a repository in a bucket; the onnx extra runs imported ONNX classifiers.
RUN pip install --no-cache-dir "./[s3,onnx]"

FROM python AS runtime
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin hycas
COPY --from=build /opt/venv /opt/venv
# The shipped demo model only (models trained locally into model_repository/ stay out);
# every other model is read from the repository HYCAS_MODEL_REPOSITORY names (a volume or a
# bucket; deploy/ shows both), where `hycas models push` and POST /v1/models register them.
COPY --chown=hycas:hycas model_repository/digits-hycas /srv/hycas/model_repository/digits-hycas
COPY deploy/docker/healthcheck.py /usr/local/lib/hycas/healthcheck.py
# A worker serves its metrics on 9808 unless told otherwise: the healthcheck probes it there.
ENV PATH=/opt/venv/bin:$PATH \
    HYCAS_MODEL_REPOSITORY=/srv/hycas/model_repository \
    HYCAS_WORKER_METRICS_PORT=9808
USER 10001
WORKDIR /srv/hycas
EXPOSE 8000 9808
# Both roles: `hycas serve` answers /healthz on its --port, `hycas worker` /metrics on 9808.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python3.11", "/usr/local/lib/hycas/healthcheck.py"]
CMD ["hycas", "serve", "--host", "0.0.0.0", "--port", "8000"]
