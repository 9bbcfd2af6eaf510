"""`retrain_model` run for real by Airflow on CPU with a tiny network: a candidate appears in a real MLflow server."""

from __future__ import annotations

import pendulum
import pytest
from mlflow import MlflowClient

from pipeline.config import get_settings
from pipeline.store import make_engine
from pipeline.training import SnapshotConfig, build_snapshot
from pipeline.training.bootstrap import base_dataset_hash, read_base_manifest
from tests.worlds import small_base_dataset, small_world

pytestmark = [pytest.mark.dags, pytest.mark.integration]

TINY = {
    "base_version": "scratch",
    "epochs": 2,
    "batch_size": 16,
    "image_size": 32,
    "net": {"name": "densenet_small", "init_features": 8, "growth_rate": 4, "block_config": [2, 2]},
    "min_new_labels": 0,
}


def run(**conf: object) -> object:
    from airflow.dag_processing.dagbag import DagBag

    from tests.harness.airflow_env import dags_folder

    dag = DagBag(dag_folder=str(dags_folder())).get_dag("retrain_model")
    for task in dag.tasks:
        task.retries = 0
    return dag.test(logical_date=pendulum.now("UTC"), run_conf=conf)


def test_a_manual_retrain_registers_a_candidate_with_its_lineage(
    airflow_db, pg_url, mlflow_server, monkeypatch, tmp_path
):
    small_world(pg_url, tmp_path / "storage", per_site=40, days=(0, 1, 2))
    manifest = read_base_manifest(small_base_dataset(tmp_path / "storage"))
    model_name = f"retrain-{tmp_path.name[-8:]}"
    for key, value in {
        "PIPELINE_DB_URL": pg_url,
        "PIPELINE_STORAGE_ROOT": str(tmp_path / "storage"),
        "PIPELINE_MLFLOW_TRACKING_URI": mlflow_server,
        "PIPELINE_MODEL_NAME": model_name,
    }.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    client = MlflowClient(mlflow_server)
    try:
        waiting = run(**TINY)  # three small days: no site has the 40 abnormal studies the gate needs to judge it
        assert waiting.state == "success" and client.search_model_versions(f"name = '{model_name}'") == []
        result = run(**(TINY | {"replay_base": 20, "wait_for_evidence": False}))  # the engineer trains anyway
        assert result.state == "success"
        skipped = run(**(TINY | {"min_new_labels": 5}))  # no label waits for a snapshot: nothing to train
        assert skipped.state == "success"
    finally:
        get_settings.cache_clear()

    versions = client.search_model_versions(f"name = '{model_name}'")
    assert [v.version for v in versions] == ["1"]
    version = versions[0]
    for tag in ("dataset_snapshot", "git_commit", "parent_version", "params_digest", "threshold", "image_size"):
        assert version.tags.get(tag), tag
    assert version.tags["parent_version"] == "none" and version.tags["validation_status"] == "pending"
    assert client.get_model_version_by_alias(model_name, "candidate").version == "1"
    run_data = client.get_run(version.run_id)
    assert run_data.data.tags["trigger"] == "manual"
    evidence = run_data.data.params["evidence"]
    assert evidence.startswith("went ahead without enough evidence: ") and "st-anna has " in evidence
    # the base dataset under the storage root was replayed: 20 of its training studies and all its validation
    replayed = {k.removeprefix("base_replay."): v for k, v in run_data.data.params.items() if "base_replay." in k}
    assert replayed.pop("why").startswith(f"20 of {(manifest['split'] == 'train').sum()} base training studies")
    assert replayed == {
        "used": "True",
        "dataset_hash": base_dataset_hash(manifest),
        "train": "20",
        "val": str((manifest["split"] == "val").sum()),
    }
    assert len(client.get_metric_history(version.run_id, "val_auroc")) == 2
    artifacts = {a.path for a in client.list_artifacts(version.run_id, "evaluation")}
    assert {"evaluation/roc.png", "evaluation/calibration.png", "evaluation/confusion_matrix.png"} <= artifacts
    # the snapshot rebuilt from the store is the same one
    assert build_snapshot(make_engine(pg_url), SnapshotConfig()).hash == version.tags["dataset_snapshot"]


def test_the_training_task_asks_the_kubernetes_executor_for_a_gpu_and_the_rest_do_not(airflow_db):
    from airflow.dag_processing.dagbag import DagBag
    from airflow.serialization.serialized_objects import DagSerialization

    from tests.harness.airflow_env import dags_folder

    dag = DagBag(dag_folder=str(dags_folder())).get_dag("retrain_model")
    # what the scheduler and workers see: the DAG after a round trip through its serialized form
    task = DagSerialization.from_dict(DagSerialization.to_dict(dag)).get_task("train_candidate")
    pod = task.executor_config["pod_override"]
    (container,) = pod.spec.containers
    assert container.name == "base"
    assert container.resources.limits == {"nvidia.com/gpu": "1"} == container.resources.requests
    assert task.queue == "gpu"
    others = [t for t in dag.tasks if t.task_id != "train_candidate"]
    assert others and all(not t.executor_config and t.queue != "gpu" for t in others)
