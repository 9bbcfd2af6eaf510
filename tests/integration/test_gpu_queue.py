"""The training task goes to the `gpu` Celery queue: only a worker listening on `gpu` runs it.

A real Airflow deployment (PostgreSQL metadata DB, Redis broker, api-server, scheduler with the CeleryExecutor)
runs the real `retrain_model` DAG with a tiny network against a real store and MLflow server. First only a worker
on the default queue exists: it runs `migrate_store`, while `train_candidate` stays queued and no model version
appears. Then a worker on `gpu` starts: it runs `train_candidate`, a candidate version appears in MLflow, and the
rest of the DAG runs on the default worker again.
"""

from __future__ import annotations

import time

import pytest
from mlflow import MlflowClient

from tests.harness.airflow_env import dags_folder
from tests.harness.airflow_services import celery_deployment
from tests.worlds import small_world

pytestmark = [pytest.mark.dags, pytest.mark.integration, pytest.mark.timeout(600)]

DAG_ID = "retrain_model"
TRAIN = "train_candidate"
TINY = {
    "base_version": "scratch",
    "epochs": 1,
    "batch_size": 16,
    "image_size": 32,
    "net": {"name": "densenet_small", "init_features": 8, "growth_rate": 4, "block_config": [2, 2]},
    "min_new_labels": 0,
    "wait_for_evidence": False,  # three small days hold too little evidence to judge it: this test is the queue
}
#: How long the training task must stay queued while no `gpu` worker exists (the default worker is idle by then).
HELD_S = 20.0


def model_versions(tracking_uri: str, model_name: str) -> list[str]:
    """Return the registered versions of ``model_name`` (empty while the model does not exist)."""
    return [v.version for v in MlflowClient(tracking_uri).search_model_versions(f"name = '{model_name}'")]


def test_only_a_gpu_worker_runs_the_training_task(pg_database_factory, pg_url, mlflow_server, tmp_path):
    model_name = f"gpu-queue-{tmp_path.name[-8:]}"
    pipeline_env = {
        "PIPELINE_DB_URL": pg_url,
        "PIPELINE_STORAGE_ROOT": str(tmp_path / "storage"),
        "PIPELINE_MLFLOW_TRACKING_URI": mlflow_server,
        "PIPELINE_MODEL_NAME": model_name,
    }
    with celery_deployment(
        tmp_path / "airflow", pg_database_factory(), dags_folder=dags_folder(), extra_env=pipeline_env
    ) as airflow:
        airflow.prepare_database()
        airflow.start_api_server()
        airflow.start_scheduler()
        airflow.start_worker("default-worker", ["default"])
        # The store is simulated while the Airflow processes start.
        small_world(pg_url, tmp_path / "storage", per_site=40, days=(0, 1, 2))
        airflow.wait_for_api_server()
        airflow.wait_for_scheduler()
        airflow.wait_for_worker("default-worker")

        airflow.api.unpause(DAG_ID)
        run_id = airflow.api.trigger(DAG_ID, TINY)

        # 1. Only the default queue is served: the store is migrated, the training task is queued and stays so.
        states = airflow.wait_for_tasks(
            DAG_ID,
            run_id,
            lambda s: s.get("migrate_store") == "success" and s.get(TRAIN) == "queued",
            timeout=180,
            what="migrate_store done and train_candidate queued",
        )
        held_until = time.monotonic() + HELD_S
        while time.monotonic() < held_until:
            states = airflow.api.task_states(DAG_ID, run_id)
            assert states[TRAIN] == "queued", f"{TRAIN} left the queue without a gpu worker: {states}"
            time.sleep(2.0)
        assert airflow.api.task_instances(DAG_ID, run_id)[TRAIN]["queue"] == "gpu"
        assert airflow.broker.queue_length("gpu") == 1, "the training workload is not waiting in the gpu queue"
        assert model_versions(mlflow_server, model_name) == []
        assert TRAIN not in airflow.worker_log("default-worker")

        # 2. A worker on `gpu` picks it up; what follows it runs on the default queue again.
        airflow.start_worker("gpu-worker", ["gpu"])
        airflow.wait_for_worker("gpu-worker")
        states = airflow.wait_for_tasks(
            DAG_ID,
            run_id,
            lambda s: bool(s) and all(state == "success" for state in s.values()),
            timeout=300,
            what="every task succeeded",
        )
        gpu_log = airflow.worker_log("gpu-worker")
        default_log = airflow.worker_log("default-worker")
        print(f"Airflow start-up and waits (s): {airflow.timings_s}")

    assert model_versions(mlflow_server, model_name) == ["1"]
    assert f"task_id='{TRAIN}'" in gpu_log
    for task_id in ("migrate_store", "registered", "announce_candidate"):
        assert f"task_id='{task_id}'" in default_log, task_id
        assert f"task_id='{task_id}'" not in gpu_log, task_id
    assert f"task_id='{TRAIN}'" not in default_log
