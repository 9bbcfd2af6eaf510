# syntax=docker/dockerfile:1.7
#
# MLflow tracking server and model registry: PostgreSQL backend store (psycopg2), artifacts proxied to
# S3-compatible object storage (boto3; MinIO in docker-compose.yml). It needs no file of the repository,
# so docker-compose.yml builds it with docker/ as the context.
#
# MLflow and psycopg2 match requirements/constraints.txt (the client the pipeline uses). The server is not
# installed with those constraints: they pin python-dateutil 4, which botocore (boto3) does not accept yet.
# The three pins below were resolved together for Python 3.11 (mlflow 3.17.2 + boto3 1.44.5 + dateutil 2.9).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
FROM ${PYTHON_IMAGE}

ARG MLFLOW_VERSION=3.17.2
ARG PSYCOPG2_VERSION=2.9.13
ARG BOTO3_VERSION=1.44.5
ARG MLFLOW_UID=10001

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MLFLOW_DISABLE_TELEMETRY=true

RUN pip install --upgrade pip \
    && pip install "mlflow==${MLFLOW_VERSION}" "psycopg2-binary==${PSYCOPG2_VERSION}" "boto3==${BOTO3_VERSION}" \
    && useradd --uid "${MLFLOW_UID}" --create-home --home-dir /home/mlflow --shell /usr/sbin/nologin mlflow \
    && mlflow --version

USER mlflow
WORKDIR /home/mlflow
EXPOSE 5000
# docker-compose.yml passes the real arguments (backend store via MLFLOW_BACKEND_STORE_URI,
# --artifacts-destination s3://..., --allowed-hosts with the compose service names).
CMD ["mlflow", "server", "--host", "0.0.0.0", "--port", "5000"]
