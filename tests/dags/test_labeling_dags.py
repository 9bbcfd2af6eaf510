"""`select_for_relabeling` and `sync_annotations` run for real by Airflow against PostgreSQL and Label Studio."""

from __future__ import annotations

from datetime import date

import pendulum
import pytest
import sqlalchemy as sa

from pipeline.config import get_settings
from pipeline.demo import annotator as bot
from pipeline.labeling import ProjectKind, find_project
from pipeline.labeling.tasks import task_page
from pipeline.resources import production
from pipeline.store import make_engine
from pipeline.store.schema import labels, relabel_queue
from tests.worlds import small_world

pytestmark = [pytest.mark.dags, pytest.mark.integration]

DAY = date(2026, 1, 5)  # the stable scenario's first day


def run(dag_id: str, **params: object) -> None:
    from airflow.dag_processing.dagbag import DagBag

    from tests.harness.airflow_env import dags_folder

    dag = DagBag(dag_folder=str(dags_folder())).get_dag(dag_id)
    for task in dag.tasks:
        task.retries = 0
    result = dag.test(logical_date=pendulum.datetime(2026, 1, 6, 1, 30, tz="UTC"), run_conf=params or None)
    assert result.state == "success", f"{dag_id} ended {result.state}"


def test_select_push_annotate_sync_through_airflow(airflow_db, pg_url, label_studio, monkeypatch, tmp_path):
    storage = tmp_path / "storage"
    small_world(pg_url, storage, per_site=15)
    prefix = f"dag-{tmp_path.name[-8:]}/"
    for key, value in {
        "PIPELINE_DB_URL": pg_url,
        "PIPELINE_STORAGE_ROOT": str(storage),
        "PIPELINE_LABEL_STUDIO_URL": label_studio.url,
        "PIPELINE_LABEL_STUDIO_TOKEN": label_studio.token,
        "PIPELINE_LABEL_STUDIO_DOCUMENT_ROOT": str(label_studio.document_root),
        "PIPELINE_LABEL_STUDIO_PROJECT_PREFIX": prefix,
        "PIPELINE_LABEL_STUDIO_IMAGE_SIZE_PX": "64",
        "PIPELINE_RELABEL_DAILY_BUDGET": "20",
        "PIPELINE_RELABEL_SITE_CAP": "0.5",
        "PIPELINE_NEW_LABELS_THRESHOLD": "15",
    }.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    engine = make_engine(pg_url)
    try:
        for _ in range(2):  # the second run finds the day's budget spent and every task already there
            run("select_for_relabeling")
        with engine.connect() as conn:
            queued = conn.execute(sa.select(relabel_queue)).mappings().all()
        assert len(queued) == 20
        assert {r["picked_for"] for r in queued} == {DAY}
        assert {r["status"] for r in queued} == {"pushed"} and all(r["task_id"] for r in queued)
        client = production().label_studio.client()
        tasks = {}
        for kind in {ProjectKind(r["project"]) for r in queued}:
            project = find_project(client, kind, prefix=prefix)
            assert project is not None
            tasks.update({t.data["study_id"]: t for t in task_page(client, project, page=1, page_size=100)[0]})
            bot.annotate(engine, client, project, error_rate=0.0, seed=1)
        assert set(tasks) == {r["study_id"] for r in queued}

        for _ in range(2):
            run("sync_annotations")
        with engine.connect() as conn:
            stored = conn.execute(sa.select(labels.c.study_id)).scalars().all()
            statuses = set(conn.execute(sa.select(relabel_queue.c.status)).scalars())
        assert sorted(stored) == sorted(tasks)
        assert statuses == {"labeled"}
        # the first sync brought 20 >= 15 new labels: the "new labels" asset has one event, the second none
        from airflow.models.asset import AssetEvent, AssetModel
        from airflow.utils.session import create_session

        with create_session() as session:
            events = (
                session.query(AssetEvent)
                .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
                .filter(AssetModel.uri == "pipeline://labels/new")
                .all()
            )
            assert [e.extra.get("new") for e in events][-1:] == [20]
    finally:
        get_settings.cache_clear()
        engine.dispose()
