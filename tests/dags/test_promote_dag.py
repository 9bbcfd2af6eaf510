"""Candidate, validation, approval through the Airflow REST API, alias moved; a rejection leaves it where it was.

A real Airflow deployment (PostgreSQL metadata DB, Redis, api-server, scheduler, one Celery worker) runs the real
`validate_candidate` and `promote_model` DAGs against a real store and MLflow server. The champion is an untrained
network; the two candidates are the tests' trained normal filter, registered twice. Both are validated by
`validate_candidate` (triggered through the REST API), and each passed validation makes the scheduler start a
`promote_model` run from the `pipeline://models/validated` asset. Each puts its version in shadow for a short
period (`PIPELINE_SHADOW_DAYS`, half a minute here), waits it out and records the shadow report. Its `approve`
task then waits for a human: one request is answered Reject (with a reason) and the champion stays; the other
Approve, and the champion alias moves, with the answering user recorded as the approver. A third candidate,
validated with them, carries a release manager's rejection as tags set in the MLflow UI: nobody is asked in
Airflow, and the rejection is on record with the tagged name and reason (the integration tests promote on tags).
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

from pipeline.model import NormalFilterNet
from pipeline.registry import (
    CANDIDATE,
    CHAMPION,
    PREVIOUS,
    log_and_register,
    register_candidate,
    set_alias,
    version_for,
)
from pipeline.store import make_engine
from pipeline.validation import events
from tests.harness.airflow_env import dags_folder
from tests.harness.airflow_services import CeleryDeployment, celery_deployment
from tests.worlds import IMAGE_SIZE, NET, small_world, trained_model

pytestmark = [pytest.mark.dags, pytest.mark.integration, pytest.mark.timeout(1200)]

# Four small days give a site 15-23 labeled abnormal studies and St. Anna's second scanner 7: the gate's minimum
# of evidence (40 by default) is lowered so that this test is about the approval, not the evidence.
GATE = {"sensitivity_target": 0.9, "subgroup_min_studies": 40, "min_positives": 5}
SHADOW_SECONDS = 30


def _register(tracking_uri: str, name: str, cache: Path) -> list[str]:
    """Register an untrained champion (version 1) and the tests' trained normal filter three times, as candidates."""
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment(name)
    torch.manual_seed(0)
    with mlflow.start_run(run_name="champion"):
        untrained = NormalFilterNet(NET)
        set_alias(name, CHAMPION, log_and_register(untrained, model_name=name, image_size=IMAGE_SIZE, threshold=0.5))
    trained = trained_model(cache)
    versions = []
    for run in ("candidate-a", "candidate-b", "candidate-c"):
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


def _run_without_a_human(airflow: CeleryDeployment, timeout: float = 240) -> str:
    """Return the id of the `promote_model` run that decided without asking anyone (its `approve` skipped)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        for run in airflow.api.request("GET", "/dags/promote_model/dagRuns?limit=20")["dag_runs"]:
            states = airflow.api.task_states("promote_model", run["dag_run_id"])
            if states.get("approve") == "skipped" and states.get("decide") == "success":
                return str(run["dag_run_id"])
        time.sleep(2.0)
    raise AssertionError(f"no promote_model run decided without a human within {timeout:.0f}s\n{airflow.diagnostics()}")


def _answer(airflow: CeleryDeployment, version: str, option: str, reason: str, timeout: float = 240) -> str:
    """Wait for the approval request of ``version`` and answer it through the REST API; return its DAG run id."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        for detail in airflow.api.waiting_requests("promote_model"):
            if f"Promote {version} " in detail["subject"]:
                assert "passed validation" in detail["body"] and "- shadow:" in detail["body"]
                answer = airflow.api.answer(detail, option, reason=reason)
                assert answer["chosen_options"] == [option]
                return str(detail["task_instance"]["dag_run_id"])
        time.sleep(2.0)
    raise AssertionError(f"no approval request for version {version} within {timeout:.0f}s\n{airflow.diagnostics()}")


def _validate(airflow: CeleryDeployment, client: MlflowClient, name: str, version: str) -> None:
    """Validate ``version`` through `validate_candidate`, triggered through the REST API; it must pass."""
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


def test_validation_then_approval_through_the_rest_api_moves_the_champion_and_a_rejection_does_not(
    pg_database_factory, pg_url, mlflow_server, normal_filter_cache: Path, tmp_path: Path
) -> None:
    name = f"promote-{uuid.uuid4().hex[:6]}"
    env = {
        "PIPELINE_DB_URL": pg_url,
        "PIPELINE_STORAGE_ROOT": str(tmp_path / "storage"),
        "PIPELINE_MLFLOW_TRACKING_URI": mlflow_server,
        "PIPELINE_MODEL_NAME": name,
        "PIPELINE_SHADOW_DAYS": str(SHADOW_SECONDS / 86400),
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
        rejected, approved, tagged = _register(mlflow_server, name, normal_filter_cache)
        airflow.wait_for_api_server()
        airflow.wait_for_scheduler()
        airflow.wait_for_worker("worker")
        for dag_id in ("validate_candidate", "promote_model"):
            airflow.api.unpause(dag_id)

        for key, value in {
            "approval": "reject",
            "approval_by": "Dr. MLflow",
            "approval_reason": "prefers to wait for Riverside",
        }.items():
            client.set_model_version_tag(name, tagged, key, value)
        for version in (rejected, approved, tagged):
            _validate(airflow, client, name, version)

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
        assert version_for(name, CANDIDATE) != approved  # the candidate alias never names the champion
        tags = client.get_model_version(name, approved).tags
        assert tags["approved_by"] == approval["responded_by_user"]["name"]
        assert tags["approved_at"] and tags["shadow_studies"] == "0" and tags["shadow_report"]

        # 3. Rejected in the MLflow UI (validated with the others): the tags decide, nobody is asked in Airflow.
        run_id = _run_without_a_human(airflow)
        review = airflow.api.task_states("promote_model", run_id)
        assert review["route"] == "success" and review["shadow_period"] == "success"

    tags = client.get_model_version(name, tagged).tags
    assert tags["rejected_by"] == "Dr. MLflow" and tags["rejection_reason"] == "prefers to wait for Riverside"
    assert client.get_model_version_by_alias(name, CHAMPION).version == approved
    with pytest.raises(MlflowException):  # the candidate alias named the promoted version: it left with it
        client.get_model_version_by_alias(name, CANDIDATE)
    engine = make_engine(pg_url)
    for version, decided in (
        (approved, ["approved", "promoted"]),
        (rejected, ["rejected"]),
        (tagged, ["rejected"]),
    ):
        actions = [e.action for e in events(engine, name, version)]
        # in shadow, then out of it: ended by the decision, or earlier when the next validated version displaced it
        assert actions[:2] == ["validated", "shadow_started"] and actions[-len(decided) :] == decided
        assert sorted(actions[2 : -len(decided)]) == ["shadow_ended", "shadow_report"]
    assert events(engine, name, tagged)[-1].actor == "Dr. MLflow"
    engine.dispose()


def test_the_approval_waits_for_a_passed_validation_and_the_decision_for_the_answer(airflow_db) -> None:
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=str(dags_folder())).get_dag("promote_model")
    approve = dag.get_task("approve")
    assert approve.upstream_task_ids == {"route"}
    assert approve.options == ["Approve", "Reject"] and "reason" in approve.params
    assert dag.get_task("review").upstream_task_ids == {"check_validated", "start_shadow", "shadow_period"}
    assert dag.get_task("shadow_period").upstream_task_ids == {"start_shadow"}
    assert dag.get_task("decide").upstream_task_ids == {"approve", "review", "route"}
