"""The release entries: the test sets, the validation gate, the shadow period, the release manager's decision and
rollback (``validate_candidate``, ``promote_model``, ``rollback_model``; ``pipeline testsets``, ``validate``,
``promote``, ``reject``, ``rollback``). The text the approver reads is written here."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.resources import Resources
    from pipeline.validation import ValidationConfig

log = logging.getLogger(__name__)

APPROVE, REJECT = "Approve", "Reject"


# --- test sets ----------------------------------------------------------------------------------------------------


def build_test_sets(res: Resources, *, prevalence: float = 0.05, regression_size: int = 2000) -> dict[str, Any]:
    """Build the validation test sets from the store's labeled studies (a new version only where they changed);
    return each set's hash, size, abnormal studies and description."""
    from pipeline.store import upgrade
    from pipeline.validation import TestSetConfig
    from pipeline.validation import build_test_sets as build

    upgrade(res.store)
    built = build(res.store, TestSetConfig(prevalence=prevalence, regression_size=regression_size))
    return {
        name: {"hash": s.hash, "studies": len(s.items), "abnormal": s.n_abnormal, "describe": s.describe()}
        for name, s in built.items()
    }


def test_set_versions(res: Resources) -> list[dict[str, Any]]:
    """Every stored version of every test set: size, abnormal studies, why it exists, who froze it, whether current."""
    import json

    from pipeline.store import upgrade
    from pipeline.validation import test_set_versions as versions

    upgrade(res.store)
    rows: list[dict[str, Any]] = json.loads(versions(res.store).to_json(orient="records", date_format="iso"))
    return rows


def follow_served_population(res: Resources) -> dict[str, list[str]]:
    """Add the evidence of every served site and scanner the sets lack (what each validation does first)."""
    from pipeline.store import upgrade
    from pipeline.validation import follow_served_population as follow

    upgrade(res.store)
    following = follow(res.store)
    return {"changes": list(following.changes), "blocked": list(following.blocked)}


def freeze_test_sets(res: Resources, by: str, versions: Mapping[str, str] | None = None) -> list[str]:
    """Freeze the test sets (``versions``: set name to hash prefix; default every current one); return what froze.

    Raises:
        pipeline.validation.TestSetNotFound, ValueError: no such version, or nobody named.
    """
    from pipeline.store import upgrade
    from pipeline.validation import freeze_test_sets as freeze

    upgrade(res.store)
    return [s.describe() for s in freeze(res.store, by, dict(versions) if versions else None).values()]


def unfreeze_test_sets(res: Resources) -> int:
    """Lift the freeze; return how many versions it held."""
    from pipeline.store import upgrade
    from pipeline.validation import unfreeze_test_sets as unfreeze

    upgrade(res.store)
    return unfreeze(res.store)


# --- validation ---------------------------------------------------------------------------------------------------


def gate_config(res: Resources, config: Mapping[str, Any] | None) -> ValidationConfig:
    """The validation gate of a run: ``PIPELINE_VALIDATION_CONFIG`` with the run's own fields over it.

    Raises:
        pydantic.ValidationError: an unknown field or a bad value, named.
    """
    from pipeline.validation import ValidationConfig

    return ValidationConfig.model_validate(res.settings.validation_config | dict(config or {}))


def validate(
    res: Resources,
    version: str,
    champion: str = "champion",
    config: Mapping[str, Any] | None = None,
    *,
    record: bool = True,
    html_path: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Validate ``version`` against ``champion`` on the test sets (brought up to the served population first) and,
    with ``record``, write the verdict and its report onto the version; return the verdict's summary.

    ``html_path`` gets a copy of the report too. The summary's ``verdict`` is the whole verdict as JSON.

    Raises:
        pydantic.ValidationError: a bad gate field, named.
        pipeline.validation.ValidationError: no such version, no signature, no champion or no test data.
    """
    import shutil
    import tempfile

    from pipeline.reports.validation import record_validation, write_validation_report
    from pipeline.validation import validate as run

    gate = gate_config(res, config)
    res.registry.use()
    verdict = run(res.store, res.registry.model_name, version, champion=champion, config=gate, progress=progress)
    report = None
    if record:
        folder = Path(tempfile.mkdtemp(prefix="validation-"))
        report = record_validation(res.store, verdict, report_dir=folder)
        if html_path is not None:
            html_path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(folder / "validation.html", html_path)
    elif html_path is not None:
        html_path.parent.mkdir(parents=True, exist_ok=True)
        write_validation_report(verdict, html_path)
    return {
        "version": verdict.candidate,
        "champion": verdict.champion,
        "status": verdict.status,
        "failed": [c.name for c in verdict.failed_checks],
        "threshold": verdict.threshold,
        "report": report,
        "verdict": verdict.to_json(),
    }


# --- promotion ----------------------------------------------------------------------------------------------------


def newest_version(versions: list[str]) -> str:
    """The newest of registry version numbers announced together; log the ones it supersedes."""
    newest = max(versions, key=int)
    if older := sorted(set(versions) - {newest}, key=int):
        log.warning("versions %s were validated with %s: only the newest goes on to approval", older, newest)
    return newest


def promotion_request(res: Resources, version: str) -> dict[str, Any]:
    """What the approver is shown about ``version``'s validation; refuse one whose validation did not pass.

    Raises:
        pipeline.validation.PromotionRefused: no such version, or its validation is not ``passed``.
    """
    from pipeline.registry import tags as tag
    from pipeline.validation import validated_version

    res.registry.use()
    name = res.registry.model_name
    number, tags = validated_version(name, version)
    summary = (
        f"**{name} version {number}** passed validation against version {tags.get(tag.VALIDATED_AGAINST)} "
        f"on {tags.get(tag.VALIDATED_AT)}.\n\n"
        f"- operating point: threshold {tags.get(tag.VALIDATION_THRESHOLD)}\n"
        f"- parent version: {tags.get(tag.PARENT_VERSION, 'none')}; "
        f"dataset snapshot {tags.get(tag.DATASET_SNAPSHOT, '?')}\n"
        f"- report: `{tags.get(tag.VALIDATION_REPORT)}` (MLflow, artifacts of the version's run)\n"
        f"- test sets cover: {tags.get(tag.VALIDATION_SITES, 'unknown')}; evidence per served site and scanner:\n"
        + "\n".join(f"  - {line}" for line in tags.get(tag.VALIDATION_EVIDENCE, "not recorded").splitlines())
    )
    return {"version": number, "summary": summary, "against": tags.get(tag.VALIDATED_AGAINST)}


def start_shadow(res: Resources, version: str, days: float | None = None) -> dict[str, Any]:
    """Put ``version`` in shadow for ``days`` (default ``PIPELINE_SHADOW_DAYS``); return when the period ends.

    With 0 days nothing goes into shadow and the period ends now. Calling again keeps the first start.
    """
    from pipeline.validation.shadow import start_shadow as start

    days = res.settings.shadow_days if days is None else float(days)
    if days <= 0:
        return {"version": version, "days": 0.0, "started_at": None, "until": datetime.now(UTC).isoformat()}
    res.registry.use()
    began = start(res.store, res.registry.model_name, version, actor="promote_model")
    until = datetime.fromisoformat(began.started_at) + timedelta(days=days)
    return {"version": began.version, "days": days, "started_at": began.started_at, "until": until.isoformat()}


def review(res: Resources, request: dict[str, Any], shadow: dict[str, Any]) -> dict[str, Any]:
    """The approval request (validation summary, the shadow report) and any decision tagged in MLflow.

    The shadow report is recorded on the version (``shadow/`` artifacts, ``shadow_*`` tags).
    """
    from pipeline.registry.tags import APPROVAL, APPROVAL_BY, APPROVAL_REASON
    from pipeline.reports.validation import record_shadow
    from pipeline.validation import PromotionRefused
    from pipeline.validation.promotion import mlflow_decision
    from pipeline.validation.shadow import shadow_report

    res.registry.use()
    name, version = res.registry.model_name, request["version"]
    summary = request["summary"]
    if float(shadow.get("days") or 0) > 0:
        report = shadow_report(res.store, name, version)
        uri = record_shadow(res.store, report, actor="promote_model")
        summary += f"\n{report.summary()}\n- shadow report: `{uri}`"
    try:
        tagged = mlflow_decision(name, version)
    except PromotionRefused as exc:
        tagged = None
        summary += f"\n\n**The approval tags on the version in MLflow are ignored:** {exc}"
    summary += (
        "\n\nApprove to make it the champion (the current champion becomes `previous`); reject with a reason. "
        f"(In the MLflow UI, the tags `{APPROVAL}` = approve or reject, `{APPROVAL_BY}` and "
        f"`{APPROVAL_REASON}` on the version decide the same way, when set before the shadow period ends.)"
    )
    return {
        "version": version,
        "summary": summary,
        "mlflow_decision": None if tagged is None else dataclasses.asdict(tagged),
    }


@dataclasses.dataclass(frozen=True)
class Answer:
    """A release manager's answer: approve or not, who, why, and where they gave it."""

    approve: bool
    by: str
    reason: str
    source: str


def answer_of(version: str, approval: dict[str, Any] | None, tagged: dict[str, Any] | None) -> Answer:
    """The answer to ``version``'s approval: from Airflow (``approval``, the human-in-the-loop task's output: the
    user who answered is the approver, the form's ``reason`` goes on the record) or, when nobody was asked there,
    from the version's MLflow tags (``tagged``: ``approval_by`` is the approver).

    Raises:
        pipeline.validation.PromotionRefused: no answer at all.
    """
    from pipeline.validation import PromotionRefused

    if approval is not None:
        user = approval.get("responded_by_user") or {}
        return Answer(
            approve=(approval.get("chosen_options") or [""])[0] == APPROVE,
            by=str(user.get("name") or user.get("id") or "unknown approver"),
            reason=str((approval.get("params_input") or {}).get("reason") or "").strip(),
            source="the Airflow UI",
        )
    if tagged is not None:
        return Answer(bool(tagged["approve"]), str(tagged["by"]), str(tagged.get("reason") or ""), "the MLflow UI")
    raise PromotionRefused(f"no answer for version {version}: neither in Airflow nor tagged in MLflow")


def decide(res: Resources, version: str, answer: Answer) -> dict[str, Any]:
    """Act on the release manager's answer: promote ``version`` on approval, record the rejection otherwise; any
    shadow period of the version ends.

    Raises:
        pipeline.validation.PromotionRefused: one the rules refuse (not validated against the champion serving
            now, no approver named, no reason to reject).
    """
    from pipeline.validation import promote, reject
    from pipeline.validation.shadow import end_shadow

    res.registry.use()
    name = res.registry.model_name
    end_shadow(res.store, name, version, actor=answer.by)
    if answer.approve:
        change = promote(res.store, name, version, answer.by, note=answer.reason)
        return {"decision": "approved", "source": answer.source, **dataclasses.asdict(change)}
    reason = answer.reason or f"rejected in {answer.source}"
    reject(res.store, name, version, answer.by, reason)
    return {
        "decision": "rejected",
        "source": answer.source,
        "version": version,
        "rejected_by": answer.by,
        "reason": reason,
    }


def rollback(res: Resources, to: str, actor: str, reason: str = "") -> dict[str, Any]:
    """Move the champion back to ``to`` (a version that served before, or ``previous``).

    Raises:
        pipeline.validation.PromotionRefused: ``to`` never served, or is the champion.
    """
    from pipeline.validation import rollback as run

    res.registry.use()
    return dataclasses.asdict(run(res.store, res.registry.model_name, to, actor, reason=reason))
