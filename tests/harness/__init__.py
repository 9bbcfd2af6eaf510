"""Helpers that start real services (PostgreSQL, Airflow with Celery) for the test suite; the services the demo
runs too (MLflow, Label Studio, Airflow standalone) are started by :mod:`pipeline.demo.stack`."""

from __future__ import annotations

from pathlib import Path

from pipeline.demo.stack.label_studio import LabelStudioAdmin

#: Repository root (``tests/harness/../..``).
REPO_ROOT: Path = Path(__file__).resolve().parents[2]

#: The suite's Label Studio admin: fixed, so the migrated database cached across sessions matches (test-only values).
TEST_LABEL_STUDIO_ADMIN = LabelStudioAdmin(
    username="admin@pipeline.test", password="pipeline-test-password", token="pipelinetest0123456789abcdef0123456789ab"
)
