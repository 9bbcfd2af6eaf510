"""`ingest_inference_logs` run for real by Airflow against PostgreSQL and a landing folder."""

from __future__ import annotations

import base64

import pytest
import sqlalchemy as sa

from pipeline.config import get_settings
from tests.factories import inference_log_rows

pytestmark = [pytest.mark.dags, pytest.mark.integration]


@pytest.fixture
def pipeline_env(pg_url, tmp_path, monkeypatch):
    monkeypatch.setenv("PIPELINE_DB_URL", pg_url)
    monkeypatch.setenv("PIPELINE_STORAGE_ROOT", str(tmp_path / "storage"))
    get_settings.cache_clear()
    yield tmp_path / "storage"
    get_settings.cache_clear()


def run_dag(dag_id: str):
    from airflow.dag_processing.dagbag import DagBag

    from tests.harness.airflow_env import dags_folder

    dag = DagBag(dag_folder=str(dags_folder())).get_dag(dag_id)
    for task in dag.tasks:
        task.retries = 0  # a failure should fail the test now, not after the production retry delays
    return dag.test()


def test_ingest_dag_loads_landed_files_once(airflow_db, pipeline_env):
    landing = pipeline_env / "landing" / "inference_logs"
    landing.mkdir(parents=True)
    good = inference_log_rows(300, seed=21)
    good["embedding"] = good["embedding"].map(lambda b: base64.b64encode(b).decode())
    good.loc[7, "prob_abnormal"] = 3.0
    good.to_json(landing / "edge-box-1.jsonl", orient="records", lines=True, date_format="iso")
    (landing / "edge-box-2.parquet").write_bytes(b"truncated upload")

    run = run_dag("ingest_inference_logs")
    assert run.state == "success"
    engine = sa.create_engine(get_settings().db_url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM inference_logs")).scalar_one() == 299
        rejects = conn.execute(sa.text("SELECT source, row_number, field FROM ingest_rejects")).all()
    assert [tuple(r) for r in rejects] == [("edge-box-1.jsonl", 7, "prob_abnormal")]
    assert (pipeline_env / "landing" / "processed" / "inference_logs" / "edge-box-1.jsonl").exists()
    assert not (landing / "edge-box-1.jsonl").exists()
    reason = pipeline_env / "landing" / "quarantine" / "inference_logs" / "edge-box-2.parquet.reason"
    assert "edge-box-2.parquet: cannot parse as parquet" in reason.read_text()

    # a second run, with the same file delivered again, changes nothing
    good.to_json(landing / "edge-box-1.jsonl", orient="records", lines=True, date_format="iso")
    assert run_dag("ingest_inference_logs").state == "success"
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM inference_logs")).scalar_one() == 299
        assert conn.execute(sa.text("SELECT count(*) FROM ingest_rejects")).scalar_one() == 1
