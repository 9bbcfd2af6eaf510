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
        "import json, runpy, sys; sys.path.append(sys.argv[2]); runpy.run_path(sys.argv[1]); "
        f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(path), str(DAGS_DIR)], capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_every_dag_sets_the_basics(dagbag):
    for dag_id, dag in dagbag.dags.items():
        assert dag.tags, f"{dag_id}: no tags"
        assert dag.doc_md and len(dag.doc_md.strip()) > 40, f"{dag_id}: no Markdown doc"
        assert dag.start_date is not None and dag.start_date.tzinfo is not None, f"{dag_id}: start_date without tz"
        for task in dag.tasks:
            assert task.owner and task.owner != "airflow", f"{dag_id}.{task.task_id}: no owner"
            assert task.retries >= 2, f"{dag_id}.{task.task_id}: retries {task.retries} < 2"


# What starts each DAG: the timetable's kind, its cron expression (UTC) where it runs on a clock, and the assets it
# waits for. A DAG added without a row here fails, so every schedule is a decision someone wrote down.
SCHEDULES: dict[str, tuple[str, str | None, frozenset[str]]] = {
    "ingest_inference_logs": ("CronTriggerTimetable", "0 * * * *", frozenset()),
    "monitor_inference": ("CronDataIntervalTimetable", "0 * * * *", frozenset()),
    "select_for_relabeling": ("AssetOrTimeSchedule", "30 1 * * *", frozenset({"pipeline://monitoring/drift-alert"})),
    "sync_annotations": ("CronTriggerTimetable", "*/30 * * * *", frozenset()),
    "retrain_model": ("AssetTriggeredTimetable", None, frozenset({"pipeline://labels/new"})),
    "validate_candidate": ("AssetTriggeredTimetable", None, frozenset({"pipeline://models/candidate"})),
    "promote_model": ("AssetTriggeredTimetable", None, frozenset({"pipeline://models/validated"})),
    "rollback_model": ("NullTimetable", None, frozenset()),  # only an engineer's trigger
}


def _schedule(dag) -> tuple[str, str | None, frozenset[str]]:  # type: ignore[no-untyped-def]
    """(timetable kind, cron expression or None, asset URIs) of a parsed DAG; a cron must be in UTC."""
    timetable = dag.timetable
    clock = getattr(timetable, "timetable", timetable)  # an asset-or-time schedule wraps its clock
    # the Task SDK's trigger timetables name it ``expression``, the core's interval timetable ``_expression``
    cron = getattr(clock, "expression", None) or getattr(clock, "_expression", None)
    if cron is not None:
        zone = getattr(clock, "timezone", None) or getattr(clock, "_timezone", None)
        assert "UTC" in str(zone), f"{dag.dag_id}: cron {cron!r} in {zone}, not UTC"
    return type(timetable).__name__, cron, frozenset(_consumed(dag))


def test_every_dag_runs_on_the_schedule_it_should(dagbag):
    assert {dag_id: _schedule(dag) for dag_id, dag in dagbag.dags.items()} == SCHEDULES


def test_no_variable_or_connection_read_while_parsing(dagbag, monkeypatch):
    """Reading a Variable or Connection at parse time hits the metadata DB on every parse."""
    from airflow.dag_processing.dagbag import DagBag
    from airflow.sdk import Connection, Variable

    calls: list[str] = []
    monkeypatch.setattr(Variable, "get", classmethod(lambda cls, *a, **k: calls.append(f"Variable {a}")))
    monkeypatch.setattr(Connection, "get", classmethod(lambda cls, *a, **k: calls.append(f"Connection {a}")))
    DagBag(dag_folder=str(DAGS_DIR))
    assert calls == []


def test_every_param_of_a_form_says_what_it_is(dagbag):
    for dag_id, dag in dagbag.dags.items():
        for name in dag.params:
            param = dag.params.get_param(name)
            assert param.description and len(param.description) > 10, f"{dag_id}: param {name!r} has no description"


def _uris(condition) -> set[str]:  # type: ignore[no-untyped-def]
    """The URIs of the assets an asset condition (an asset, or any/all of several) names."""
    if hasattr(condition, "objects"):
        return set().union(*(_uris(o) for o in condition.objects))
    uri = getattr(condition, "uri", None)  # a time-only schedule has a null condition
    return {uri} if uri else set()


def _consumed(dag) -> set[str]:  # type: ignore[no-untyped-def]
    return _uris(getattr(dag.timetable, "asset_condition", None))


def test_the_assets_close_the_loop(dagbag):
    """Each asset a DAG waits for is one another DAG publishes, from monitoring round to promotion."""
    produced: dict[str, set[str]] = {}
    for dag_id, dag in dagbag.dags.items():
        for task in dag.tasks:
            for outlet in task.outlets:
                produced.setdefault(outlet.uri, set()).add(dag_id)
    consumers = {dag_id: _consumed(dag) for dag_id, dag in dagbag.dags.items()}
    for dag_id, uris in consumers.items():
        for uri in uris:
            assert produced.get(uri, set()) - {dag_id}, f"{dag_id} waits for {uri}, which no other DAG publishes"
    # a drift alert starts a selection; new labels a retraining; a candidate its validation; a pass its promotion
    edges = [
        ("monitor_inference", "select_for_relabeling"),
        ("sync_annotations", "retrain_model"),
        ("retrain_model", "validate_candidate"),
        ("validate_candidate", "promote_model"),
    ]
    for upstream, downstream in edges:
        assert any(upstream in produced.get(uri, set()) for uri in consumers[downstream]), (upstream, downstream)


def test_with_the_clocks_off_only_triggers_and_assets_start_runs(airflow_db, monkeypatch):
    """PIPELINE_TIME_SCHEDULES=false (a replay of past days, as in `make demo`): no DAG runs on a clock, and the
    asset-driven half of the loop (a drift alert starting a selection) still does."""
    from airflow.dag_processing.dagbag import DagBag

    from pipeline.config import get_settings

    monkeypatch.setenv("PIPELINE_TIME_SCHEDULES", "false")
    get_settings.cache_clear()
    try:
        bag = DagBag(dag_folder=str(DAGS_DIR))
    finally:
        get_settings.cache_clear()
    assert bag.import_errors == {}
    kinds = {dag_id: type(dag.timetable).__name__ for dag_id, dag in bag.dags.items()}
    assert set(kinds.values()) == {"NullTimetable", "AssetTriggeredTimetable"}, kinds
    assert kinds["monitor_inference"] == "NullTimetable"
    assert kinds["select_for_relabeling"] == "AssetTriggeredTimetable"
    assert _consumed(bag.dags["select_for_relabeling"]) == {"pipeline://monitoring/drift-alert"}
