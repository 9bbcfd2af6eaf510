"""Promotion, rejection and rollback: the only code that moves the ``champion`` alias after the first one.

:func:`promote` refuses a version whose validation did not pass, or passed against another champion
than the one serving now, and needs the approver's name; it moves ``champion`` to the version and
``previous`` to the champion it replaces. :func:`reject` records who turned a candidate down and why.
:func:`rollback` moves ``champion`` back to a version that served before (the short-term answer to an
incident). Each writes tags on the versions (the latest state, visible in the MLflow UI) and an
event in the audit trail (the history). The bootstrap's first champion of an empty registry is the
one alias move outside this module: there is nothing to validate it against.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from sqlalchemy.engine import Engine

from pipeline.registry import (
    APPROVAL,
    APPROVAL_BY,
    APPROVAL_NOTE,
    APPROVAL_REASON,
    APPROVED_AT,
    APPROVED_BY,
    CANDIDATE,
    CHAMPION,
    PREVIOUS,
    PROMOTED_AT,
    REJECTED_AT,
    REJECTED_BY,
    REJECTION_REASON,
    ROLE,
    ROLLED_BACK_AT,
    ROLLED_BACK_BY,
    THRESHOLD,
    TRAINING_THRESHOLD,
    VALIDATED_AGAINST,
    VALIDATION_STATUS,
    VALIDATION_THRESHOLD,
    version_for,
)
from pipeline.validation.audit import record_event
from pipeline.validation.suite import PASSED

log = logging.getLogger(__name__)


#: The values of the ``approval`` tag a release manager sets in the MLflow UI to decide instead of answering in Airflow.
_APPROVE, _REJECT = frozenset({"approve", "approved"}), frozenset({"reject", "rejected"})


class PromotionRefused(RuntimeError):
    """A promotion, rejection or rollback that the rules forbid; the message says which rule."""


@dataclass(frozen=True)
class RoleChange:
    """What moved: the version now champion, the one it replaced (None: none or unchanged) and who acted."""

    model_name: str
    champion: str
    previous: str | None
    actor: str
    at: str
    changed: bool


def _version(client: MlflowClient, model_name: str, version: str) -> dict[str, str]:
    number = version_for(model_name, version)
    if number is None:
        raise PromotionRefused(f"model {model_name!r} has no version {version!r}")
    return dict(client.get_model_version(model_name, number).tags) | {"_version": number}


def _require_passed(model_name: str, number: str, tags: dict[str, str]) -> None:
    status = tags.get(VALIDATION_STATUS, "none")
    if status != PASSED:
        raise PromotionRefused(
            f"{model_name} version {number} cannot be promoted: its validation status is {status!r} "
            "(only a version whose validation passed; run `pipeline validate` first)"
        )


def validated_version(model_name: str, version: str) -> tuple[str, dict[str, str]]:
    """Return the number and tags of ``version`` (a number or alias), refusing one whose validation did not pass.

    Raises:
        PromotionRefused: no such version, or its ``validation_status`` is not ``passed``.
    """
    tags = _version(MlflowClient(), model_name, version)
    number = tags.pop("_version")
    _require_passed(model_name, number, tags)
    return number, tags


@dataclass(frozen=True)
class TagDecision:
    """A release manager's decision written as tags on the version in the MLflow UI."""

    approve: bool
    by: str
    reason: str


def mlflow_decision(model_name: str, version: str) -> TagDecision | None:
    """Return the decision tagged on ``version`` (``approval`` = approve/reject, ``approval_by``, ``approval_reason``).

    None while the version carries no ``approval`` tag.

    Raises:
        PromotionRefused: an ``approval`` tag that is neither approve nor reject, one without ``approval_by``
            (MLflow does not record who set a tag), or a rejection without a reason.
    """
    tags = _version(MlflowClient(), model_name, version)
    value = tags.get(APPROVAL, "").strip().lower()
    if not value:
        return None
    if value not in _APPROVE | _REJECT:
        raise PromotionRefused(
            f"the tag {APPROVAL!r} of {model_name} version {tags['_version']} is {value!r}: set 'approve' or 'reject'"
        )
    by = tags.get(APPROVAL_BY, "").strip()
    if not by:
        raise PromotionRefused(
            f"{model_name} version {tags['_version']} has {APPROVAL}={value} but no {APPROVAL_BY!r} tag naming "
            "the release manager"
        )
    reason = tags.get(APPROVAL_REASON, "").strip()
    if value in _REJECT and not reason:
        raise PromotionRefused(f"a rejection in MLflow needs the tag {APPROVAL_REASON!r} (why)")
    return TagDecision(approve=value in _APPROVE, by=by, reason=reason)


def _actor(name: str, what: str) -> str:
    if not name or not name.strip():
        raise PromotionRefused(f"a {what} needs the name of the person who decides (--approver)")
    return name.strip()


def _drop_candidate_alias(client: MlflowClient, model_name: str, version: str) -> None:
    if version_for(model_name, CANDIDATE) == version:
        try:
            client.delete_registered_model_alias(model_name, CANDIDATE)
        except MlflowException:
            log.warning("could not remove the candidate alias of %s", model_name)


def promote(engine: Engine, model_name: str, version: str, approver: str, *, note: str = "") -> RoleChange:
    """Move ``champion`` to ``version`` on ``approver``'s approval; the replaced champion becomes ``previous``.

    The version's deployed ``threshold`` tag becomes the operating point its validation chose (the
    training-time one is kept as ``training_threshold``). Promoting the serving champion again changes
    nothing.

    Raises:
        PromotionRefused: no such version, no approver, a validation that did not pass, or one run
            against a champion that no longer serves.
    """
    approver = _actor(approver, "promotion")
    client = MlflowClient()
    tags = _version(client, model_name, version)
    number = tags["_version"]
    current = version_for(model_name, CHAMPION)
    at = datetime.now(UTC).isoformat(timespec="seconds")
    if current == number:
        log.info("%s version %s is already the champion", model_name, number)
        return RoleChange(model_name, number, None, approver, at, changed=False)
    _require_passed(model_name, number, tags)
    against = tags.get(VALIDATED_AGAINST)
    if current is not None and against != current:
        raise PromotionRefused(
            f"{model_name} version {number} was validated against version {against}, but the champion is now "
            f"version {current}: validate it again against the champion that serves"
        )
    threshold = tags.get(VALIDATION_THRESHOLD)
    if threshold is not None:
        if TRAINING_THRESHOLD not in tags and THRESHOLD in tags:
            client.set_model_version_tag(model_name, number, TRAINING_THRESHOLD, tags[THRESHOLD])
        client.set_model_version_tag(model_name, number, THRESHOLD, threshold)
    facts = {APPROVED_BY: approver, APPROVED_AT: at, PROMOTED_AT: at, ROLE: CHAMPION}
    if note:
        facts[APPROVAL_NOTE] = note
    for key, value in facts.items():
        client.set_model_version_tag(model_name, number, key, value)
    if current is not None:
        client.set_registered_model_alias(model_name, PREVIOUS, current)
        client.set_model_version_tag(model_name, current, ROLE, PREVIOUS)
    client.set_registered_model_alias(model_name, CHAMPION, number)
    _drop_candidate_alias(client, model_name, number)
    detail = {"replaced": current, "threshold": threshold, "note": note}
    record_event(engine, model_name, number, "approved", approver, detail)
    record_event(engine, model_name, number, "promoted", approver, detail)
    log.info("%s version %s is the champion (approved by %s; previous %s)", model_name, number, approver, current)
    return RoleChange(model_name, number, current, approver, at, changed=True)


def reject(engine: Engine, model_name: str, version: str, approver: str, reason: str) -> None:
    """Record that ``approver`` turned ``version`` down for ``reason``; the aliases of the champion stay put.

    Raises:
        PromotionRefused: no such version, no approver, no reason, or the version is the serving champion.
    """
    approver = _actor(approver, "rejection")
    if not reason or not reason.strip():
        raise PromotionRefused("a rejection needs a reason (what the release manager saw)")
    client = MlflowClient()
    number = _version(client, model_name, version)["_version"]
    if version_for(model_name, CHAMPION) == number:
        raise PromotionRefused(f"{model_name} version {number} is the serving champion: roll back instead")
    at = datetime.now(UTC).isoformat(timespec="seconds")
    for key, value in {REJECTED_BY: approver, REJECTED_AT: at, REJECTION_REASON: reason.strip()}.items():
        client.set_model_version_tag(model_name, number, key, value)
    _drop_candidate_alias(client, model_name, number)
    record_event(engine, model_name, number, "rejected", approver, {"reason": reason.strip()})
    log.info("%s version %s rejected by %s: %s", model_name, number, approver, reason.strip())


def rollback(engine: Engine, model_name: str, to: str, actor: str, *, reason: str = "") -> RoleChange:
    """Move ``champion`` back to ``to`` (a version that served before, or the ``previous`` alias).

    Raises:
        PromotionRefused: no such version, no actor, or a version that never served as champion.
    """
    actor = _actor(actor, "rollback")
    client = MlflowClient()
    tags = _version(client, model_name, to)
    number = tags["_version"]
    current = version_for(model_name, CHAMPION)
    at = datetime.now(UTC).isoformat(timespec="seconds")
    if current == number:
        return RoleChange(model_name, number, None, actor, at, changed=False)
    if PROMOTED_AT not in tags and tags.get(ROLE) not in (CHAMPION, PREVIOUS):
        raise PromotionRefused(
            f"{model_name} version {number} never served as champion: a rollback only returns to a version that "
            "did (promote a new one through validation and approval instead)"
        )
    if current is not None:
        client.set_registered_model_alias(model_name, PREVIOUS, current)
        client.set_model_version_tag(model_name, current, ROLE, PREVIOUS)
    client.set_registered_model_alias(model_name, CHAMPION, number)
    for key, value in {ROLE: CHAMPION, ROLLED_BACK_AT: at, ROLLED_BACK_BY: actor}.items():
        client.set_model_version_tag(model_name, number, key, value)
    record_event(engine, model_name, number, "rolled_back", actor, {"replaced": current, "reason": reason})
    log.info("%s rolled back to version %s by %s (was %s)", model_name, number, actor, current)
    return RoleChange(model_name, number, current, actor, at, changed=True)
