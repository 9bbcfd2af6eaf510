"""Candidate, validation, approval through the Airflow REST API, alias moved; a rejection leaves it where it was.

A real Airflow deployment (PostgreSQL metadata DB, Redis, api-server, scheduler, one Celery worker) runs the real
`validate_candidate` and `promote_model` DAGs against a real store and MLflow server. The champion is an untrained
network; the two candidates are the tests' trained normal filter, registered twice. Both are validated by
`validate_candidate` (triggered through the REST API), and each passed validation makes the scheduler start a
`promote_model` run from the `pipeline://models/validated` asset. Its `approve` task waits for a human: one
request is answered Reject (with a reason) and the champion stays; the other Approve, and the champion alias
moves, with the answering user recorded as the approver.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import mlflow
import pytest
import torch
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from pipeline.registry import CANDIDATE, CHAMPION, PREVIOUS, log_and_register, register_candidate, set_alias
from pipeline.store import make_engine
from pipeline.training import NormalFilterNet
from pipeline.validation import events
from tests.harness.airflow_env import dags_folder
from tests.harness.airflow_services import CeleryDeployment, celery_deployment
from tests.worlds import IMAGE_SIZE, NET, small_world, trained_model

pytestmark = [pytest.mark.dags, pytest.mark.integration, pytest.mark.timeout(900)]

GATE = {"sensitivity_target": 0.9, "subgroup_min_studies": 40}


def _register(tracking_uri: str, name: str, cache: Path) -> list[str]:
    """Register an untrained champion (version 1) and the tests' trained normal filter twice, as two candidates."""
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment(name)
    torch.manual_seed(0)
    with mlflow.start_run(run_name="champion"):
        untrained = NormalFilterNet(NET)
        set_alias(name, CHAMPION, log_and_register(untrained, model_name=name, image_size=IMAGE_SIZE, threshold=0.5))
    trained = trained_model(cache)
    versions = []
    for run in ("candidate-a", "candidate-b"):
        with mlflow.start_run(run_name=run):
            versions.append(
                register_candidate(
                    trained.model,
                    model_name=name,
                    image_size=IMAGE_SIZE,
                    threshold=trained.threshold,
                    snapshot_hash="the-tests-normal-filter",
                    parent_version="1",
                    params={"run": run},
                )
            )
    return versions


def _answer(airflow: CeleryDeployment, version: str, option: str, reason: str, timeout: float = 240) -> str:
    """Wait for the approval request of ``version`` and answer it through the REST API; return its DAG run id."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        pending = airflow.api.request("GET", "/dags/promote_model/dagRuns/~/hitlDetails?response_received=false")
        for detail in pending.get("hitl_details", []):
            if f"Promote {version} " in detail["subject"]:
                ti = detail["task_instance"]
                assert "passed validation" in detail["body"]
                answer = airflow.api.request(
                    "PATCH",
                    f"/dags/promote_model/dagRuns/{ti['dag_run_id']}/taskInstances/approve/-1/hitlDetails",
                    {"chosen_options": [option], "params_input": {"reason": reason}},
                )
                assert answer["chosen_options"] == [option]
                return str(ti["dag_run_id"])
        time.sleep(2.0)
    raise AssertionError(f"no approval request for version {version} within {timeout:.0f}s\n{airflow.diagnostics()}")


def test_validation_then_approval_through_the_rest_api_moves_the_champion_and_a_rejection_does_not(
    pg_database_factory, pg_url, mlflow_server, normal_filter_cache: Path, tmp_path: Path
) -> None:
    name = f"promote-{uuid.uuid4().hex[:6]}"
    env = {
        "PIPELINE_DB_URL": pg_url,
        "PIPELINE_STORAGE_ROOT": str(tmp_path / "storage"),
        "PIPELINE_MLFLOW_TRACKING_URI": mlflow_server,
        "PIPELINE_MODEL_NAME": name,
    }
    client = MlflowClient(mlflow_server)
    with celery_deployment(
        tmp_path / "airflow", pg_database_factory(), dags_folder=dags_folder(), extra_env=env
    ) as airflow:
        airflow.prepare_database()
        airflow.start_api_server()
        airflow.start_scheduler()
        airflow.start_worker("worker", ["default"])
        # the store and the models are made while Airflow starts
        small_world(pg_url, tmp_path / "storage", per_site=60, image_px=IMAGE_SIZE, days=(0, 1, 2, 3))
        rejected, approved = _register(mlflow_server, name, normal_filter_cache)
        airflow.wait_for_api_server()
        airflow.wait_for_scheduler()
        airflow.wait_for_worker("worker")
        for dag_id in ("validate_candidate", "promote_model"):
            airflow.api.unpause(dag_id)

        for version in (rejected, approved):
            run_id = airflow.api.trigger("validate_candidate", {"version": version, "config": GATE})
            airflow.wait_for_tasks(
                "validate_candidate",
                run_id,
                lambda s: s.get("announce_validated") in ("success", "skipped"),
                timeout=300,
                what=f"validation of version {version}",
            )
            tags = client.get_model_version(name, version).tags
            assert tags["validation_status"] == "passed", tags.get("validation_failed_checks")

        # 1. Reject one: recorded with who and why; the champion stays.
        run_id = _answer(airflow, rejected, "Reject", "the report shows too few studies from Lakeside")
        airflow.wait_for_tasks(
            "promote_model", run_id, lambda s: s.get("decide") == "success", timeout=180, what="rejection recorded"
        )
        assert client.get_model_version_by_alias(name, CHAMPION).version == "1"
        tags = client.get_model_version(name, rejected).tags
        assert tags["rejection_reason"] == "the report shows too few studies from Lakeside"
        assert tags["rejected_by"]

        # 2. Approve the other: the champion moves, the old one is kept as `previous`, the approver recorded.
        run_id = _answer(airflow, approved, "Approve", "")
        airflow.wait_for_tasks(
            "promote_model", run_id, lambda s: s.get("decide") == "success", timeout=180, what="promotion"
        )
        approval = airflow.api.request(
            "GET", f"/dags/promote_model/dagRuns/{run_id}/taskInstances/approve/-1/hitlDetails"
        )

    assert client.get_model_version_by_alias(name, CHAMPION).version == approved
    assert client.get_model_version_by_alias(name, PREVIOUS).version == "1"
    with pytest.raises(MlflowException):  # the candidate alias named the promoted version: it left with it
        client.get_model_version_by_alias(name, CANDIDATE)
    tags = client.get_model_version(name, approved).tags
    assert tags["approved_by"] == approval["responded_by_user"]["name"]
    assert tags["approved_at"]
    engine = make_engine(pg_url)
    assert [e.action for e in events(engine, name, approved)] == ["validated", "approved", "promoted"]
    assert [e.action for e in events(engine, name, rejected)] == ["validated", "rejected"]
    engine.dispose()


def test_the_approval_waits_for_a_passed_validation_and_the_decision_for_the_answer(airflow_db) -> None:
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=str(dags_folder())).get_dag("promote_model")
    approve = dag.get_task("approve")
    assert approve.upstream_task_ids == {"check_validated"}
    assert approve.options == ["Approve", "Reject"] and "reason" in approve.params
    assert dag.get_task("decide").upstream_task_ids == {"approve", "check_validated"}
