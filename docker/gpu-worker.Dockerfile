# syntax=docker/dockerfile:1.7
#
# The GPU Celery worker: same package and constraints as docker/airflow.Dockerfile, but the CUDA build
# of torch, on an NVIDIA CUDA base. It serves only the `gpu` queue (MONAI fine-tuning, embeddings);
# every other task runs on the CPU workers.
#
#   docker build -f docker/gpu-worker.Dockerfile -t medimg-mlops/airflow-gpu .     (context: the repo root)
#
# CUDA: torch comes from PyTorch's CUDA 13.0 index (torch==2.13.0+cu130; PyPI's plain 2.13.0 is the same build,
# the index makes the choice explicit). Its CUDA libraries come as pip wheels (nvidia-*-cu13, pinned in
# requirements/constraints.txt), so the base image has to match only in major version, and the host needs an
# NVIDIA driver that supports CUDA 13 (>= 580) plus the NVIDIA Container Toolkit. For an older driver, build with
# a CUDA 12 base and the matching index (its nvidia-*-cu12 wheels are then outside the constraints), e.g.
#   --build-arg CUDA_IMAGE=nvidia/cuda:12.8.1-runtime-ubuntu24.04 \
#   --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
#
# Ubuntu 24.04 ships Python 3.12, so Python 3.11 comes from uv (a relocatable python-build-standalone build).

ARG CUDA_IMAGE=nvidia/cuda:13.0.1-runtime-ubuntu24.04
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13.9

FROM ${UV_IMAGE} AS uv

FROM ${CUDA_IMAGE}

ARG PYTHON_VERSION=3.11
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu130
ARG AIRFLOW_UID=50000

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    UV_PYTHON_INSTALL_DIR=/opt/python \
    UV_NO_CACHE=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    AIRFLOW_HOME=/opt/airflow \
    PIPELINE_STORAGE_ROOT=/opt/pipeline/storage \
    PIPELINE_GX_PROJECT_DIR=/opt/pipeline/great_expectations \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

COPY --from=uv /uv /usr/local/bin/uv

# The CUDA images carry a user `ubuntu` with uid 1000; ours is airflow, uid 50000, group 0, like the CPU image,
# so both kinds of worker can write the shared logs and storage volumes.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl tini \
    && rm -rf /var/lib/apt/lists/* \
    && uv python install "${PYTHON_VERSION}" \
    && uv venv --seed --python "${PYTHON_VERSION}" "${VIRTUAL_ENV}" \
    && pip install --upgrade pip \
    && useradd --uid "${AIRFLOW_UID}" --gid 0 --create-home --home-dir /home/airflow --shell /bin/bash airflow \
    && mkdir -p "${AIRFLOW_HOME}/dags" "${AIRFLOW_HOME}/logs" "${AIRFLOW_HOME}/plugins" "${AIRFLOW_HOME}/auth" \
        "${PIPELINE_STORAGE_ROOT}" /opt/pipeline/label-studio-files \
    && chown -R airflow:0 "${AIRFLOW_HOME}" /opt/pipeline \
    && chmod -R g+rwX "${AIRFLOW_HOME}" /opt/pipeline

# 1. torch first: the CUDA build, with its nvidia-* wheels held to the versions in the constraints. PyPI stays an
#    extra index for torch's pure-Python dependencies at the constrained versions; pip prefers 2.13.0+cu130 there.
COPY requirements/constraints.txt /tmp/build/requirements/constraints.txt
RUN pip install --index-url "${TORCH_INDEX_URL}" --extra-index-url https://pypi.org/simple \
        -c /tmp/build/requirements/constraints.txt "torch==${TORCH_VERSION}" \
    && python -c "import torch, sys; sys.exit(0 if torch.version.cuda else 'torch without CUDA')"

# 2. The project's dependencies (stub package, as in airflow.Dockerfile), then 3. the package itself.
WORKDIR /tmp/build
COPY pyproject.toml README.md ./
RUN mkdir -p src/pipeline \
    && touch src/pipeline/__init__.py \
    && pip install -c requirements/constraints.txt . \
    && pip uninstall -y medimg-mlops
COPY src/ src/
RUN pip install --no-deps . \
    && cd / && rm -rf /tmp/build \
    && pipeline --help >/dev/null

# The committed Great Expectations suites, the DAGs and the plugins, as in airflow.Dockerfile.
COPY --chown=airflow:0 great_expectations/ /opt/pipeline/great_expectations/
COPY --chown=airflow:0 dags/ /opt/airflow/dags/
COPY --chown=airflow:0 plugins/ /opt/airflow/plugins/

USER airflow
WORKDIR /opt/airflow
EXPOSE 8793
ENTRYPOINT ["/usr/bin/tini", "--"]
# One task at a time per GPU: a second fine-tuning run would only fight the first for memory (CUDA OOM).
CMD ["airflow", "celery", "worker", "--queues", "gpu", "--concurrency", "1"]
