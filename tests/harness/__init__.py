"""Helpers that start real services (PostgreSQL, MLflow, Label Studio, Airflow) for the test suite."""

from __future__ import annotations

from pathlib import Path

#: Repository root (``tests/harness/../..``).
REPO_ROOT: Path = Path(__file__).resolve().parents[2]
