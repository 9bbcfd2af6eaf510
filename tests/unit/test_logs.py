"""The project's logging setup keeps Great Expectations quiet next to Airflow's structlog."""

from __future__ import annotations

import subprocess
import sys

NOISE = "Skipping registering"


def run(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=180)
    return out.stdout + out.stderr


def test_great_expectations_import_is_quiet_after_configure_logging():
    loud = run("import airflow, great_expectations")
    quiet = run("from pipeline.logs import configure_logging; configure_logging(); import airflow, great_expectations")
    assert loud.count(NOISE) > 50  # what the setup is for
    assert NOISE not in quiet


def test_secrets_are_masked_in_settings():
    quiet = run(
        "import os; os.environ['PIPELINE_SENTRY_DSN']='https://abc123secret@o1.ingest.sentry.io/1';"
        "os.environ['PIPELINE_PSEUDONYM_KEY']='hush-hush';"
        "from pipeline.config import Settings; s=Settings(); print(repr(s)); print(s.model_dump())"
    )
    assert "abc123secret" not in quiet and "hush-hush" not in quiet
    assert "**********" in quiet
