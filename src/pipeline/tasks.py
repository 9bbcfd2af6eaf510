"""Entry points of the DAG tasks: settings in, small JSON-able summaries out.

Each function is what one Airflow task calls; it reads configuration itself and returns only
references and counts (XCom carries references, not data), so DAG files stay declarations.
No Airflow import here: every entry point runs from plain Python and the CLI too.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.config import get_settings
from pipeline.logs import configure_logging

if TYPE_CHECKING:
    from pipeline.training.retrain import RetrainParams
    from pipeline.validation import ValidationConfig

log = logging.getLogger(__name__)


def migrate_store() -> str | None:
    """Migrate the store to the newest schema; return the revision it is at."""
    from pipeline.store import current_revision, make_engine, upgrade

    configure_logging()
    engine = make_engine(get_settings().db_url)
    upgrade(engine)
    return current_revision(engine)


def ingest_landed_batches(landing: str | None = None) -> dict[str, Any]:
    """Load the batch files waiting in the landing folder; return counts per table and the rejects."""
    from pipeline.store import make_engine
    from pipeline.store.files import ingest_landing

    configure_logging()
    settings = get_settings()
    folder = Path(landing) if landing else Path(settings.storage_root) / "landing"
    results = ingest_landing(make_engine(settings.db_url), folder)
    return {
        "files": [r.source for r in results],
        "written": sum(r.written for r in results),
        "unchanged": sum(r.unchanged for r in results),
        "rejected": sum(r.rejected for r in results),
        "rejects": [str(e) for r in results for e in r.errors][:100],
    }


def monitor_window(start: str, end: str) -> dict[str, Any]:
    """Run the monitoring checks on ``[start, end)`` (ISO timestamps); return the alert ids it touched."""
    from datetime import datetime

    from pipeline.alerts import init_sentry_from_settings
    from pipeline.monitor import run_monitor_from_settings

    configure_logging()
    init_sentry_from_settings()
    result, _ = run_monitor_from_settings(datetime.fromisoformat(start), datetime.fromisoformat(end))
    return {
        "window_start": start,
        "window_end": end,
        "report": str(result.report_path),
        "studies": result.studies,
        "findings": [f.alert_id for f in result.findings],
        "changes": {c.alert_id: c.event for c in result.changes},
        # Sites whose drift alert opened (or reopened) in this window: the selection runs on them.
        "drift_opened": sorted(
            {
                c.finding.site
                for c in result.changes
                if c.finding is not None and c.finding.kind == "drift" and c.event in ("opened", "reopened")
            }
        ),
        "insufficient_data": list(result.insufficient),
        "failed_expectations": [o.key for o in result.quality.failed()] if result.quality else [],
    }


def select_studies(day: str, budget: int | None = None) -> dict[str, Any]:
    """Pick the day's studies (ISO date) for labeling into ``relabel_queue``; return what was picked and why.

    Running it again for the same day tops the day up to its budget (nothing, when nothing changed).
    """
    from datetime import date

    from pipeline.selection import SelectionConfig, select_for_relabeling
    from pipeline.store import make_engine

    configure_logging()
    settings = get_settings()
    config = SelectionConfig(
        budget=settings.relabel_daily_budget if budget is None else budget, site_cap=settings.relabel_site_cap
    )
    selection = select_for_relabeling(make_engine(settings.db_url), date.fromisoformat(day), config)
    summary = selection.as_json()
    summary.pop("studies")
    return summary


def selection_day(param: str | None, event_days: list[str | None], run_at: Any) -> str:
    """Return the day a selection run picks for: the ``day`` param, else the newest drift alert's day,
    else the day before the run."""
    from datetime import timedelta

    if param:
        return str(param)
    days = [d for d in event_days if d]
    if days:
        return max(days)
    return (run_at - timedelta(days=1)).date().isoformat()


def push_to_label_studio() -> dict[str, Any]:
    """Turn every queued pick into a Label Studio task (rendered image, the model's answer pre-filled); return
    counts. Tasks a crashed run created are found again, not duplicated."""
    from pipeline.labeling import make_client, push_queued
    from pipeline.store import make_engine

    configure_logging()
    settings = get_settings()
    result = push_queued(make_engine(settings.db_url), make_client(settings), settings.label_studio_document_root)
    return {
        "created": result.created,
        "found": result.found,
        "pushed": result.pushed,
        "unrenderable": list(result.unrenderable),
        "per_project": dict(result.per_project),
    }


def sync_labels() -> dict[str, Any]:
    """Pull finished annotations into the label store; return counts, agreement and ``new_labels_ready``."""
    from datetime import UTC, datetime

    from pipeline.labeling import make_client, sync_annotations
    from pipeline.store import make_engine

    configure_logging()
    settings = get_settings()
    result = sync_annotations(make_engine(settings.db_url), make_client(settings), now=datetime.now(UTC))
    return result.as_dict()


def retrain_params(params: dict[str, Any], trigger: str) -> RetrainParams:
    """The parameters of a retraining: the form's, and where new labels started it (nobody filled the form), the
    deployment's ``PIPELINE_RETRAIN_DEFAULTS`` over them.

    Raises:
        pydantic.ValidationError: a bad value, named by its field (the settings' too).
    """
    from pipeline.training.retrain import RetrainParams

    return RetrainParams.model_validate(params | get_settings().retrain_defaults if trigger == "asset" else params)


def gate_config(config: dict[str, Any] | None) -> ValidationConfig:
    """The validation gate of a run: ``PIPELINE_VALIDATION_CONFIG`` with the run's own fields over it.

    Raises:
        pydantic.ValidationError: an unknown field or a bad value, named.
    """
    from pipeline.validation import ValidationConfig

    return ValidationConfig.model_validate(get_settings().validation_config | (config or {}))


def retrain_candidate(params: dict[str, Any], *, trigger: str, run_key: str | None = None) -> dict[str, Any]:
    """Train a candidate from ``params`` (``RetrainParams`` fields) on a fresh snapshot, replaying the base dataset
    under the storage root beside it; register it in MLflow.

    Returns the version (None when skipped for too few new labels), the snapshot hash and counts. The same
    ``run_key`` resumes the same MLflow run and checkpoints (an Airflow retry).
    """
    import mlflow

    from pipeline.store import make_engine
    from pipeline.training.bootstrap import base_manifest
    from pipeline.training.retrain import retrain

    configure_logging()
    settings = get_settings()
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    result = retrain(
        make_engine(settings.db_url),
        retrain_params(params, trigger),
        model_name=settings.model_name,
        work_dir=Path(settings.storage_root) / "training",
        trigger=trigger,
        run_key=run_key,
        progress=False,
        base_dataset=base_manifest(settings.storage_root),
        evidence_positives=gate_config(None).min_positives,
    )
    return result.as_json()


def _use_registry() -> None:
    import mlflow

    configure_logging()
    mlflow.set_tracking_uri(get_settings().mlflow_tracking_uri)


def _registry_engine() -> Any:
    from pipeline.store import make_engine

    _use_registry()
    return make_engine(get_settings().db_url)


def validate_version(version: str, champion: str = "champion", config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Validate ``version`` against ``champion`` and record the verdict on it; return the verdict's summary.

    Raises:
        pipeline.validation.ValidationError: no such version, no signature, no champion or no test data.
    """
    from pipeline.validation import record_verdict, validate

    engine = _registry_engine()
    verdict = validate(
        engine,
        get_settings().model_name,
        version,
        champion=champion,
        config=gate_config(config),
    )
    report = record_verdict(engine, verdict)
    return {
        "version": verdict.candidate,
        "champion": verdict.champion,
        "status": verdict.status,
        "failed": [c.name for c in verdict.failed_checks],
        "threshold": verdict.threshold,
        "report": report,
    }


def newest_version(versions: list[str]) -> str:
    """Return the newest of registry version numbers announced together; log the ones it supersedes."""
    newest = max(versions, key=int)
    if older := sorted(set(versions) - {newest}, key=int):
        log.warning("versions %s were validated with %s: only the newest goes on to approval", older, newest)
    return newest


def promotion_request(version: str) -> dict[str, Any]:
    """Return what the approver is shown about ``version``'s validation; refuse one whose validation did not pass.

    Raises:
        pipeline.validation.PromotionRefused: no such version, or its validation is not ``passed``.
    """
    from pipeline.validation import validated_version

    _use_registry()
    name = get_settings().model_name
    number, tags = validated_version(name, version)
    summary = (
        f"**{name} version {number}** passed validation against version {tags.get('validated_against')} "
        f"on {tags.get('validated_at')}.\n\n"
        f"- operating point: threshold {tags.get('validation_threshold')}\n"
        f"- parent version: {tags.get('parent_version', 'none')}; dataset snapshot {tags.get('dataset_snapshot', '?')}\n"
        f"- report: `{tags.get('validation_report')}` (MLflow, artifacts of the version's run)\n"
        f"- test sets cover: {tags.get('validation_sites', 'unknown')}; evidence per served site and scanner:\n"
        + "\n".join(f"  - {line}" for line in tags.get("validation_evidence", "not recorded").splitlines())
    )
    return {"version": number, "summary": summary, "against": tags.get("validated_against")}


def start_shadow_period(version: str, days: float | None = None) -> dict[str, Any]:
    """Put ``version`` in shadow for ``days`` (default ``PIPELINE_SHADOW_DAYS``); return when the period ends.

    With 0 days nothing goes into shadow and the period ends now. Calling again keeps the first start.
    """
    from datetime import UTC, datetime, timedelta

    from pipeline.validation.shadow import start_shadow

    days = get_settings().shadow_days if days is None else float(days)
    if days <= 0:
        return {"version": version, "days": 0.0, "started_at": None, "until": datetime.now(UTC).isoformat()}
    start = start_shadow(_registry_engine(), get_settings().model_name, version, actor="promote_model")
    until = datetime.fromisoformat(start.started_at) + timedelta(days=days)
    return {"version": start.version, "days": days, "started_at": start.started_at, "until": until.isoformat()}


def review_promotion(request: dict[str, Any], shadow: dict[str, Any]) -> dict[str, Any]:
    """Return the approval request (validation summary, the shadow report) and any decision tagged in MLflow.

    The shadow report is recorded on the version (``shadow/`` artifacts, ``shadow_*`` tags).
    """
    import dataclasses

    from pipeline.validation import PromotionRefused
    from pipeline.validation.promotion import APPROVAL_BY_TAG, APPROVAL_REASON_TAG, APPROVAL_TAG, mlflow_decision
    from pipeline.validation.shadow import record_shadow_report, shadow_report

    engine = _registry_engine()
    name, version = get_settings().model_name, request["version"]
    summary = request["summary"]
    if float(shadow.get("days") or 0) > 0:
        report = shadow_report(engine, name, version)
        uri = record_shadow_report(engine, report, actor="promote_model")
        summary += f"\n{report.summary()}\n- shadow report: `{uri}`"
    try:
        tagged = mlflow_decision(name, version)
    except PromotionRefused as exc:
        tagged = None
        summary += f"\n\n**The approval tags on the version in MLflow are ignored:** {exc}"
    summary += (
        "\n\nApprove to make it the champion (the current champion becomes `previous`); reject with a reason. "
        f"(In the MLflow UI, the tags `{APPROVAL_TAG}` = approve or reject, `{APPROVAL_BY_TAG}` and "
        f"`{APPROVAL_REASON_TAG}` on the version decide the same way, when set before the shadow period ends.)"
    )
    return {
        "version": version,
        "summary": summary,
        "mlflow_decision": None if tagged is None else dataclasses.asdict(tagged),
    }


def _who(approval: dict[str, Any]) -> str:
    user = approval.get("responded_by_user") or {}
    return str(user.get("name") or user.get("id") or "unknown approver")


def decide_promotion(
    version: str, approval: dict[str, Any] | None, tagged: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Act on the release manager's answer: promote ``version`` on approval, record the rejection otherwise.

    The answer comes from Airflow (``approval``: the user who answered is the approver, the form's
    ``reason`` goes on the record) or, when nobody was asked there, from the version's MLflow tags
    (``tagged``: ``approval_by`` is the approver). Either way the shadow period ends.

    Raises:
        pipeline.validation.PromotionRefused: no answer at all, or one the rules refuse.
    """
    import dataclasses

    from pipeline.validation import PromotionRefused, promote, reject
    from pipeline.validation.shadow import end_shadow

    engine = _registry_engine()
    name = get_settings().model_name
    if approval is not None:
        who, source = _who(approval), "the Airflow UI"
        reason = str((approval.get("params_input") or {}).get("reason") or "").strip()
        approve = (approval.get("chosen_options") or [""])[0] == "Approve"
    elif tagged is not None:
        who, source = str(tagged["by"]), "the MLflow UI"
        reason, approve = str(tagged.get("reason") or ""), bool(tagged["approve"])
    else:
        raise PromotionRefused(f"no answer for {name} version {version}: neither in Airflow nor tagged in MLflow")
    end_shadow(engine, name, version, actor=who)
    if approve:
        change = promote(engine, name, version, who, note=reason)
        return {"decision": "approved", "source": source, **dataclasses.asdict(change)}
    reason = reason or f"rejected in {source}"
    reject(engine, name, version, who, reason)
    return {"decision": "rejected", "source": source, "version": version, "rejected_by": who, "reason": reason}


def rollback_champion(to: str, actor: str, reason: str = "") -> dict[str, Any]:
    """Move the champion back to ``to`` (a version that served before, or ``previous``)."""
    import dataclasses

    from pipeline.validation import rollback

    change = rollback(_registry_engine(), get_settings().model_name, to, actor, reason=reason)
    return dataclasses.asdict(change)
