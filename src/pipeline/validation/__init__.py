"""The validation gate: fixed test sets, the checks a candidate must pass against the champion, the verdict.

Then the human steps: :func:`promote` (only a passed validation, only with an approver), :func:`reject`
and :func:`rollback`, each recorded on the versions in MLflow and in the audit trail (``model_events``)::

    build_test_sets(engine)                      # once; each validation then follows the served population
    verdict = validate(engine, "normal-filter", "candidate")
    record_verdict(engine, verdict)              # tags, JSON and HTML report on the version
    promote(engine, "normal-filter", verdict.candidate, approver="release-manager")
"""

from pipeline.validation.audit import ACTIONS, Event, events, record_event
from pipeline.validation.checks import Check, ValidationConfig
from pipeline.validation.promotion import PromotionRefused, RoleChange, promote, reject, rollback, validated_version
from pipeline.validation.suite import FAILED, PASSED, ValidationError, Verdict, record_verdict, validate
from pipeline.validation.testsets import (
    REAL_BALANCE,
    REGRESSION,
    TYPICAL_ERRORS,
    UNUSUAL,
    ServedUnit,
    TestSet,
    TestSetConfig,
    TestSetNotFound,
    build_test_sets,
    current_test_sets,
    follow_served_population,
    freeze_test_sets,
    latest_test_sets,
    load_test_set,
    served_population,
    test_set_versions,
    unfreeze_test_sets,
)

__all__ = [
    "ACTIONS",
    "FAILED",
    "PASSED",
    "REAL_BALANCE",
    "REGRESSION",
    "TYPICAL_ERRORS",
    "UNUSUAL",
    "Check",
    "Event",
    "PromotionRefused",
    "RoleChange",
    "ServedUnit",
    "TestSet",
    "TestSetConfig",
    "TestSetNotFound",
    "ValidationConfig",
    "ValidationError",
    "Verdict",
    "build_test_sets",
    "current_test_sets",
    "events",
    "follow_served_population",
    "freeze_test_sets",
    "latest_test_sets",
    "load_test_set",
    "promote",
    "record_event",
    "record_verdict",
    "reject",
    "rollback",
    "served_population",
    "test_set_versions",
    "unfreeze_test_sets",
    "validate",
    "validated_version",
]
