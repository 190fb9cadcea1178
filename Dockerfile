# syntax=docker/dockerfile:1.7
# The lrfr service image. CPU by default; the CUDA variant swaps in onnxruntime-gpu on a
# CUDA/cuDNN runtime base:
#   docker build -t lrfr-service .                          # CPU
#   docker build -t lrfr-service:cuda --build-arg VARIANT=cuda .
# The model is not baked in: mount it read-only and point LRFR_MODEL_PATH at it (see
# docker-compose.yml and docs/service.md). The image runs exactly `lrfr serve`;
# LRFR_WORKERS=N runs N worker processes (`lrfr serve --workers`).

ARG VARIANT=cpu
ARG CPU_BASE=python:3.11-slim-bookworm
ARG CUDA_BASE=nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04

# -- bases: the same interpreter for building and running ---------------------------------
FROM ${CPU_BASE} AS base-cpu
ENV ORT_PACKAGE=onnxruntime

FROM ${CUDA_BASE} AS base-cuda
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/*
ENV ORT_PACKAGE=onnxruntime-gpu

# -- build: a virtual environment with the package and its service extra ------------------
FROM base-${VARIANT} AS build
# the package's extras: "service,milvus" for LRFR_VECTOR_BACKEND=milvus (docker-compose.yml)
ARG EXTRAS=service
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
COPY lrfr ./lrfr
COPY models ./models
COPY training ./training
COPY service ./service
RUN pip install ".[${EXTRAS}]" \
    && if [ "$ORT_PACKAGE" != "onnxruntime" ]; then \
         pip uninstall -y onnxruntime && pip install "$ORT_PACKAGE>=1.18"; \
       fi \
    && python -c "import service.app, onnxruntime; print(onnxruntime.get_available_providers())"

# -- runtime: the virtual environment only, as an unprivileged user ----------------------
FROM base-${VARIANT} AS runtime
COPY --from=build /opt/venv /opt/venv
RUN useradd --system --uid 10001 --home-dir /var/lib/lrfr --create-home lrfr
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    LRFR_DATA_DIR=/var/lib/lrfr \
    LRFR_MODEL_PATH=/models/lrfr.onnx \
    LRFR_WORKERS=1
USER lrfr
WORKDIR /var/lib/lrfr
VOLUME ["/var/lib/lrfr"]
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
CMD ["lrfr", "serve", "--host", "0.0.0.0", "--port", "8000"]
