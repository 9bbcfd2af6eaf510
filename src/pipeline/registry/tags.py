"""The names of the MLflow tags the pipeline writes and reads on registered versions and on training runs.

Tags carry facts (the dataset snapshot, the verdict, the approver); aliases name roles. Every module that writes
or reads a tag names it from here, so a writer and its readers cannot drift apart. The values are what the MLflow
UI shows and what versions registered earlier carry: never change one.
"""

from __future__ import annotations

# --- lineage: on a version (register_candidate, log_and_register) and on its training run (training_run) -----------

#: The content hash of the frozen training dataset snapshot (register_candidate, training_run; read by validate).
DATASET_SNAPSHOT = "dataset_snapshot"
#: The commit of the code that trained it (register_candidate, log_and_register, training_run).
GIT_COMMIT = "git_commit"
#: The version it was fine-tuned from, ``"none"`` from scratch (register_candidate, training_run; "" at bootstrap).
PARENT_VERSION = "parent_version"
#: A short digest of the training parameters (register_candidate, training_run, bootstrap).
PARAMS_DIGEST = "params_digest"
#: What started a training run, one of ``TRIGGERS`` (training_run).
TRIGGER = "trigger"
#: The caller's idempotency key of a training run, found again by find_run (training_run).
RUN_KEY = "run_key"
#: The content hash of the base dataset's manifest, on the first champion (bootstrap).
DATASET_HASH = "dataset_hash"
#: Where a version came from, ``"bootstrap"`` for the first champion (bootstrap).
ORIGIN = "origin"

# --- serving facts (register_candidate, log_and_register; read by load_model) ---------------------------------------

#: The deployed threshold on P(abnormal), ``%.6f``; the validation's operating point from promotion on (promote).
THRESHOLD = "threshold"
#: The input side in pixels the model was trained at.
IMAGE_SIZE = "image_size"
#: The training-time threshold, kept when promotion overwrites ``threshold`` (promote).
TRAINING_THRESHOLD = "training_threshold"
#: The role it holds or held: candidate, champion, previous (register_candidate, promote, rollback; read by the page).
ROLE = "role"

# --- the verdict (record_verdict; read by promotion, shadow serving, the approval request and the page) -------------

#: ``pending`` until the validation suite writes ``passed`` or ``failed`` (register_candidate, record_verdict).
VALIDATION_STATUS = "validation_status"
#: The operating point the validation chose, ``%.6f`` (record_verdict; served from promotion, and in shadow).
VALIDATION_THRESHOLD = "validation_threshold"
#: The URI of the validation report among the version's run artifacts (record_verdict).
VALIDATION_REPORT = "validation_report"
#: The champion version it was validated against; promotion refuses another (record_verdict).
VALIDATED_AGAINST = "validated_against"
#: When it was validated, ISO 8601 UTC (record_verdict).
VALIDATED_AT = "validated_at"
#: The failed checks, comma-separated, ``"none"`` when none (record_verdict).
VALIDATION_FAILED_CHECKS = "validation_failed_checks"
#: The sites the test sets cover, comma-separated, ``"none"`` when none (record_verdict).
VALIDATION_SITES = "validation_sites"
#: The evidence per served site and scanner, one line each (record_verdict).
VALIDATION_EVIDENCE = "validation_evidence"

# --- the shadow period (start_shadow, end_shadow, record_shadow_report) ----------------------------------------------

#: When it started scoring live traffic in shadow, ISO 8601 UTC (start_shadow).
SHADOW_STARTED_AT = "shadow_started_at"
#: When its shadow period ended or was displaced, ISO 8601 UTC (start_shadow, end_shadow).
SHADOW_ENDED_AT = "shadow_ended_at"
#: How many live studies both models scored (record_shadow_report).
SHADOW_STUDIES = "shadow_studies"
#: The share of those studies the two decided alike, ``%.4f`` or ``"none"`` (record_shadow_report).
SHADOW_AGREEMENT = "shadow_agreement"
#: The URI of the shadow report among the version's run artifacts (record_shadow_report).
SHADOW_REPORT = "shadow_report"

# --- a release manager's decision set in the MLflow UI (read by mlflow_decision) -------------------------------------

#: ``approve`` or ``reject``, set by hand on the version.
APPROVAL = "approval"
#: Who decided (MLflow does not record who set a tag).
APPROVAL_BY = "approval_by"
#: Why; a rejection needs one.
APPROVAL_REASON = "approval_reason"

# --- promotion, rejection, rollback (pipeline.validation.promotion) --------------------------------------------------

#: Who approved the promotion (promote; read by the page).
APPROVED_BY = "approved_by"
#: When it was approved, ISO 8601 UTC (promote).
APPROVED_AT = "approved_at"
#: The approver's note, when one was given (promote).
APPROVAL_NOTE = "approval_note"
#: When it became champion, ISO 8601 UTC; a rollback returns only to a version that has it or a champion's role (promote).
PROMOTED_AT = "promoted_at"
#: Who turned it down (reject).
REJECTED_BY = "rejected_by"
#: When it was turned down, ISO 8601 UTC (reject).
REJECTED_AT = "rejected_at"
#: Why it was turned down (reject).
REJECTION_REASON = "rejection_reason"
#: When champion was moved back to it, ISO 8601 UTC (rollback).
ROLLED_BACK_AT = "rolled_back_at"
#: Who moved champion back to it (rollback).
ROLLED_BACK_BY = "rolled_back_by"
