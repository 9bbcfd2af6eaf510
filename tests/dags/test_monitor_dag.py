"""`monitor_inference` run for real by Airflow on PostgreSQL: it checks its own data interval."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pendulum
import pytest
import sqlalchemy as sa

from pipeline.config import get_settings
from pipeline.store import ingest, make_engine, upgrade
from tests.factories import inference_log_rows

pytestmark = [pytest.mark.dags, pytest.mark.integration]

HOUR = datetime(2026, 3, 2, 10, tzinfo=UTC)


def test_monitor_dag_writes_the_metrics_of_its_interval(airflow_db, pg_url, monkeypatch, tmp_path):
    from airflow.dag_processing.dagbag import DagBag

    from tests.harness.airflow_env import dags_folder

    monkeypatch.setenv("PIPELINE_DB_URL", pg_url)
    monkeypatch.setenv("PIPELINE_STORAGE_ROOT", str(tmp_path))
    get_settings.cache_clear()
    engine = make_engine(pg_url)
    upgrade(engine)
    ingest(engine, "inference_logs", inference_log_rows(120, seed=3, start=HOUR - timedelta(hours=1)), source="t")
    ingest(engine, "inference_logs", inference_log_rows(50, seed=4, start=HOUR), source="t")
    dag = DagBag(dag_folder=str(dags_folder())).get_dag("monitor_inference")
    for task in dag.tasks:
        task.retries = 0
    try:
        for _ in range(2):  # a re-run of the same interval leaves the same rows
            run = dag.test(logical_date=pendulum.instance(HOUR))
            assert run.state == "success"
            assert run.data_interval_end - run.data_interval_start == timedelta(hours=1)
    finally:
        get_settings.cache_clear()
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT window_start, window_end, value FROM monitor_metrics WHERE site = '*' AND metric = 'volume'"
            )
        ).all()
    assert len(rows) == 1
    start, end, volume = rows[0]
    assert (start, end) == (run.data_interval_start, run.data_interval_end)
    assert volume == {HOUR - timedelta(hours=1): 120, HOUR: 50}[start]
    # the expectations ran on the same rows, in the database; results, Data Docs and the report are kept
    with engine.connect() as conn:
        checked = conn.execute(
            sa.text("SELECT value FROM monitor_metrics WHERE site = '*' AND metric = 'quality.inference_logs.rows'")
        ).scalar()
    assert checked == volume
    window = f"{start:%Y%m%dT%H%M}_{end:%Y%m%dT%H%M}"
    assert [p.parent.parent.name for p in (tmp_path / "gx" / "validations" / "inference_logs").rglob("*.json")] == [
        window
    ]
    assert (tmp_path / "gx" / "data_docs" / "index.html").is_file()
    assert (tmp_path / "reports" / "monitoring" / f"{window}.html").is_file()


def test_a_drift_alert_publishes_the_drift_asset_with_its_site(airflow_db, pg_url, monkeypatch, tmp_path):
    """Ten ordinary hours at two sites, then an hour where one site's scanner changes: the run opens a drift
    alert there and publishes `pipeline://monitoring/drift-alert` naming the site."""
    from airflow.dag_processing.dagbag import DagBag
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    from tests.factories import study_rows
    from tests.harness.airflow_env import dags_folder

    monkeypatch.setenv("PIPELINE_DB_URL", pg_url)
    monkeypatch.setenv("PIPELINE_STORAGE_ROOT", str(tmp_path))
    get_settings.cache_clear()
    engine = make_engine(pg_url)
    upgrade(engine)
    for hour in range(-11, 0):  # the run's interval is the hour before its logical date
        logs = inference_log_rows(240, seed=20 + hour, start=HOUR + timedelta(hours=hour))
        logs["study_id"] = [f"{hour + 50:04x}{i:028x}" for i in range(len(logs))]
        tags = study_rows(logs, seed=40 + hour)
        if hour == -1:  # a new scanner at north-general: other maker, harder beam, brighter images
            moved = (tags["site"] == "north-general").to_numpy()
            tags.loc[moved, "manufacturer"] = "Fujifilm"
            tags.loc[moved, "kvp"] += 25.0
            tags.loc[moved, "img_mean"] += 0.2
        ingest(engine, "studies", tags, source="t")
        ingest(engine, "inference_logs", logs, source="t")
    dag = DagBag(dag_folder=str(dags_folder())).get_dag("monitor_inference")
    for task in dag.tasks:
        task.retries = 0
    try:
        run = dag.test(logical_date=pendulum.instance(HOUR))
        assert run.state == "success"
    finally:
        get_settings.cache_clear()
    with engine.connect() as conn:
        opened = conn.execute(sa.text("SELECT site FROM alerts WHERE kind = 'drift' AND status = 'open'")).scalars()
        assert set(opened) == {"north-general"}
    with create_session() as session:
        events = (
            session.query(AssetEvent)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .filter(AssetModel.uri == "pipeline://monitoring/drift-alert")
            .all()
        )
        assert [e.extra for e in events][-1:] == [
            {"day": run.data_interval_start.date().isoformat(), "sites": ["north-general"]}
        ]
