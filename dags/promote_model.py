"""
### Promote a validated model, after a shadow period, on a release manager's approval

Runs when `validate_candidate` publishes `pipeline://models/validated`, or from the Airflow UI for a
version. Only a version whose validation passed gets this far: `check_validated` fails otherwise. When
several validations finish together they trigger one run, for the newest version (the others are superseded).

1. **Shadow** (`start_shadow`, `shadow_period`): the version takes the `shadow` alias and scores live
   traffic beside the champion for `shadow_days` (default `PIPELINE_SHADOW_DAYS`, 3; 0 skips it). The
   inference service logs its answers apart (`shadow_logs`); only the champion's answer is used.
   `review` then records the shadow report on the version: agreement, where the two differ, and the
   label-free performance estimate of both.
2. **Approval**: the `approve` task (Airflow's human-in-the-loop operator, Approve or Reject) waits for a
   human in the Airflow UI (Required actions) and shows the validation and shadow summaries. A release
   manager may instead decide in the MLflow UI before the shadow period ends, with the version's tags
   `approval` (approve or reject), `approval_by` (their name) and `approval_reason`: then nobody is asked
   in Airflow.
3. `decide` acts on the answer and ends the shadow. On **Approve**, the `champion` alias moves to the
   version and the replaced champion keeps the alias `previous`; the approver (the Airflow user who
   answered, or `approval_by`) and the time are recorded on the version and in the audit trail. On
   **Reject**, the rejection is recorded with who and why, and the aliases stay where they are.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from _assets import VALIDATED
from airflow.providers.standard.operators.hitl import HITLOperator
from airflow.providers.standard.sensors.date_time import DateTimeSensor
from airflow.sdk import Param, TriggerRule, dag, task

from pipeline.callbacks import default_args
from pipeline.entry.release import APPROVE, REJECT


@dag(
    schedule=[VALIDATED],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=4,
    tags=["validation", "release"],
    default_args=default_args(),
    doc_md=__doc__,
    params={
        "version": Param("", type="string", description="The validated version (an asset run takes the event's)."),
        "shadow_days": Param(
            None,
            type=["null", "number"],
            minimum=0,
            description="Days of shadow scoring before approval; empty: PIPELINE_SHADOW_DAYS; 0: no shadow.",
        ),
    },
)
def promote_model() -> None:
    @task
    def check_validated(params=None, triggering_asset_events=None) -> dict:  # type: ignore[no-untyped-def]
        from pipeline.entry import production, release

        # validations that finish together trigger one run: the newest version supersedes the others
        announced = [str(e.extra["version"]) for e in (triggering_asset_events or {}).get(VALIDATED, [])]
        return release.promotion_request(
            production(), release.newest_version(announced) if announced else params["version"]
        )

    @task
    def start_shadow(request: dict, params=None) -> dict:  # type: ignore[no-untyped-def,type-arg]
        from pipeline.entry import production, release

        return release.start_shadow(production(), request["version"], params.get("shadow_days"))

    @task
    def review(request: dict, shadow: dict) -> dict:  # type: ignore[type-arg]
        from pipeline.entry import production, release

        return release.review(production(), request, shadow)

    @task.branch
    def route(reviewed: dict) -> list[str]:  # type: ignore[type-arg]
        return ["decide"] if reviewed["mlflow_decision"] else ["approve", "decide"]

    request = check_validated()
    shadow = start_shadow(request)
    period = DateTimeSensor(
        task_id="shadow_period",
        target_time="{{ ti.xcom_pull(task_ids='start_shadow')['until'] }}",
        mode="reschedule",  # frees the worker between looks: once a minute at first, then every 30 minutes
        poke_interval=60,
        exponential_backoff=True,
        max_wait=timedelta(minutes=30),
        timeout=timedelta(days=60),
    )
    reviewed = review(request, shadow)
    # The human-in-the-loop operator with the two answers of an approval. (`ApprovalOperator` skips its
    # downstream on Reject before its answer reaches XCom, so a rejection's who and why would be lost.)
    approve = HITLOperator(
        task_id="approve",
        subject="Promote {{ ti.xcom_pull(task_ids='check_validated')['version'] }} to champion?",
        body="{{ ti.xcom_pull(task_ids='review')['summary'] }}",
        options=[APPROVE, REJECT],
        params={"reason": Param("", type="string", description="Why (required to reject; kept on the version).")},
        response_timeout=timedelta(days=7),
    )

    @task(trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS)
    def decide(reviewed: dict, approval: dict | None) -> dict:  # type: ignore[type-arg]
        from pipeline.entry import production, release

        version = reviewed["version"]
        answer = release.answer_of(version, approval, reviewed["mlflow_decision"])
        return release.decide(production(), version, answer)

    shadow >> period >> reviewed
    route(reviewed) >> [approve, decide(reviewed, approve.output)]


promote_model()
