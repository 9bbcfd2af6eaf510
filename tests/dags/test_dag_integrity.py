"""Every DAG in dags/ parses, stays thin, and sets the basics the house style asks for."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.dags

DAGS_DIR = Path(__file__).resolve().parents[2] / "dags"
DAG_FILES = sorted(p for p in DAGS_DIR.glob("*.py") if not p.name.startswith("_"))
HEAVY = ("torch", "monai", "mlflow", "great_expectations", "pandas", "label_studio_sdk", "sklearn", "pydicom")


@pytest.fixture(scope="module")
def dagbag(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS_DIR))


def test_there_are_dags():
    assert DAG_FILES, f"no DAG files in {DAGS_DIR}"


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}
    assert {Path(d.fileloc).name for d in dagbag.dags.values()} == {p.name for p in DAG_FILES}


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_dag_file_imports_no_heavy_library(path):
    """The DAG processor parses these files constantly: heavy imports belong inside tasks."""
    code = (
        "import json, runpy, sys; runpy.run_path(sys.argv[1]); "
        f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_every_dag_sets_the_basics(dagbag):
    for dag_id, dag in dagbag.dags.items():
        assert dag.tags, f"{dag_id}: no tags"
        assert dag.doc_md and len(dag.doc_md.strip()) > 40, f"{dag_id}: no Markdown doc"
        assert dag.schedule is not None or dag.timetable is not None, f"{dag_id}: no explicit schedule"
        assert dag.start_date is not None and dag.start_date.tzinfo is not None, f"{dag_id}: start_date without tz"
        for task in dag.tasks:
            assert task.owner and task.owner != "airflow", f"{dag_id}.{task.task_id}: no owner"
            assert task.retries >= 2, f"{dag_id}.{task.task_id}: retries {task.retries} < 2"


def test_no_variable_or_connection_read_while_parsing(dagbag, monkeypatch):
    """Reading a Variable or Connection at parse time hits the metadata DB on every parse."""
    from airflow.dag_processing.dagbag import DagBag
    from airflow.sdk import Connection, Variable

    calls: list[str] = []
    monkeypatch.setattr(Variable, "get", classmethod(lambda cls, *a, **k: calls.append(f"Variable {a}")))
    monkeypatch.setattr(Connection, "get", classmethod(lambda cls, *a, **k: calls.append(f"Connection {a}")))
    DagBag(dag_folder=str(DAGS_DIR))
    assert calls == []
