# syntax=docker/dockerfile:1.7
#
# Airflow 3 with the `pipeline` package: the image of the api-server (which also serves the monitoring page,
# plugins/), scheduler, dag-processor, triggerer, the default-queue Celery worker and the one-shot airflow-init.
#
# Built on python:3.11-slim rather than apache/airflow so that the whole environment is exactly
# requirements/constraints.txt (the file CI tests against), with no second set of pins baked in.
# torch is the CPU wheel, installed first so the project's range never pulls a multi-GB CUDA build;
# docker/gpu-worker.Dockerfile installs the CUDA build for the `gpu` queue.
#
#   docker build -f docker/airflow.Dockerfile -t medimg-mlops/airflow .     (context: the repo root)

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
FROM ${PYTHON_IMAGE}

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG AIRFLOW_UID=50000

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    AIRFLOW_HOME=/opt/airflow \
    PIPELINE_STORAGE_ROOT=/opt/pipeline/storage \
    PIPELINE_GX_PROJECT_DIR=/opt/pipeline/great_expectations

# curl for the compose healthchecks, tini as PID 1 (forwards SIGTERM so Celery shuts down warm).
# Same uid/gid convention as the official image: user airflow, uid 50000, group 0.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl tini \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --uid "${AIRFLOW_UID}" --gid 0 --create-home --home-dir /home/airflow --shell /bin/bash airflow \
    && python -m venv "${VIRTUAL_ENV}" \
    && pip install --upgrade pip \
    && mkdir -p "${AIRFLOW_HOME}/dags" "${AIRFLOW_HOME}/logs" "${AIRFLOW_HOME}/plugins" "${AIRFLOW_HOME}/auth" \
        "${PIPELINE_STORAGE_ROOT}" /opt/pipeline/label-studio-files \
    && chown -R airflow:0 "${AIRFLOW_HOME}" /opt/pipeline \
    && chmod -R g+rwX "${AIRFLOW_HOME}" /opt/pipeline

# 1. torch first: the CPU wheel (2.13.0+cpu satisfies the constraint torch==2.13.0; pip prefers it to PyPI's
#    CUDA build of 2.13.0), its pure-Python dependencies at the constrained versions from PyPI.
COPY requirements/constraints.txt /tmp/build/requirements/constraints.txt
RUN pip install --index-url "${TORCH_INDEX_URL}" --extra-index-url https://pypi.org/simple \
        -c /tmp/build/requirements/constraints.txt "torch==${TORCH_VERSION}" \
    && python -c "import torch, sys; sys.exit('torch with CUDA' if torch.version.cuda else 0)"

# 2. The project's dependencies, pinned by the constraints. A stub package stands in for src/ so this
#    heavy layer is rebuilt only when pyproject.toml or the constraints change, not on every code edit.
WORKDIR /tmp/build
COPY pyproject.toml README.md ./
RUN mkdir -p src/pipeline \
    && touch src/pipeline/__init__.py \
    && pip install -c requirements/constraints.txt . \
    && pip uninstall -y medimg-mlops

# 3. The package itself (non-editable; migrations ship as package data).
COPY src/ src/
RUN pip install --no-deps . \
    && cd / && rm -rf /tmp/build \
    && pipeline --help >/dev/null

# The committed Great Expectations suites (validation results and Data Docs go to the storage root).
COPY --chown=airflow:0 great_expectations/ /opt/pipeline/great_expectations/

# DAGs and plugins (the monitoring page) are baked in so the image runs anywhere (Kubernetes included); compose
# also bind-mounts dags/ and plugins/ read-only over these folders for a quick edit loop.
COPY --chown=airflow:0 dags/ /opt/airflow/dags/
COPY --chown=airflow:0 plugins/ /opt/airflow/plugins/

USER airflow
WORKDIR /opt/airflow
EXPOSE 8080 8793 8974
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["airflow", "api-server"]
