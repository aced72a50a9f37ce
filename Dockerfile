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
ARG TORCH_VARIANT=cu124
ARG TORCH_VERSION=2.5.1
RUN python3.11 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# torch first, from the index of the chosen variant, so the project's own `torch` requirement
# is already satisfied and never pulls another build.
RUN pip install --no-cache-dir \
        --index-url "https://download.pytorch.org/whl/${TORCH_VARIANT}" "torch==${TORCH_VERSION}"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY models ./models
COPY certify ./certify
COPY workers ./workers
COPY service ./service
RUN pip install --no-cache-dir .

FROM python AS runtime
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin hycas
COPY --from=build /opt/venv /opt/venv
# The shipped demo model only; other models are mounted at HYCAS_MODEL_REPOSITORY.
COPY --chown=hycas:hycas model_repository /srv/hycas/model_repository
ENV PATH=/opt/venv/bin:$PATH \
    HYCAS_MODEL_REPOSITORY=/srv/hycas/model_repository
USER 10001
WORKDIR /srv/hycas
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python3.11", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status != 200)"]
CMD ["hycas", "serve", "--host", "0.0.0.0", "--port", "8000"]
