"""SQLAlchemy Core tables of the inference-log store.

The tables here are the contract every stage reads. Alembic migrations in
``pipeline/store/migrations`` create them; a change here needs a new migration.
Timestamps are timezone-aware UTC. Study ids are pseudonymous (a keyed hash of the
StudyInstanceUID): no patient identifier is stored here or anywhere downstream.
"""

from __future__ import annotations

import enum

import sqlalchemy as sa

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class Status(enum.StrEnum):
    """Outcome of one inference request."""

    OK = "ok"
    ERROR = "error"  # the service failed on this study (see ErrorType)
    REJECTED = "rejected"  # the input is not something the model may judge


class ErrorType(enum.StrEnum):
    """Why a study did not get a prediction."""

    TIMEOUT = "timeout"
    DICOM_READ_ERROR = "dicom_read_error"
    PREPROCESSING_FAILED = "preprocessing_failed"
    ORGAN_NOT_FULLY_CAPTURED = "organ_not_fully_captured"
    CUDA_OOM = "cuda_oom"
    NOT_CHEST_RADIOGRAPH = "not_chest_radiograph"
    UNSUPPORTED_PIXEL_DATA = "unsupported_pixel_data"
    INTERNAL_ERROR = "internal_error"


class Decision(enum.StrEnum):
    """What the normal filter did with the study."""

    NORMAL = "normal"  # closed autonomously as normal
    ABNORMAL = "abnormal"  # sent to a radiologist


STUDY_ID_LENGTH = 32  # hex characters of the keyed hash

studies = sa.Table(
    "studies",
    metadata,
    sa.Column("study_id", sa.String(STUDY_ID_LENGTH), primary_key=True),
    sa.Column("site", sa.String(64), nullable=False, index=True),
    sa.Column("acquired_at", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("dicom_uri", sa.Text, nullable=False),
    # DICOM tags
    sa.Column("modality", sa.String(16)),
    sa.Column("manufacturer", sa.String(128)),
    sa.Column("model_name", sa.String(128)),
    sa.Column("view_position", sa.String(16)),
    sa.Column("body_part", sa.String(64)),
    sa.Column("kvp", sa.Float),
    sa.Column("exposure_mas", sa.Float),
    sa.Column("pixel_spacing_mm", sa.Float),
    sa.Column("rows", sa.Integer),
    sa.Column("columns", sa.Integer),
    sa.Column("bits_stored", sa.Integer),
    sa.Column("photometric", sa.String(16)),
    sa.Column("patient_age_years", sa.Float),
    sa.Column("patient_sex", sa.String(1)),
    # image statistics on the raw stored values scaled to [0, 1]
    sa.Column("img_mean", sa.Float),
    sa.Column("img_std", sa.Float),
    sa.Column("img_p01", sa.Float),
    sa.Column("img_p50", sa.Float),
    sa.Column("img_p99", sa.Float),
    sa.Column("img_clipped_frac", sa.Float),
    # keyed hash of the PatientID (same key as study ids): groups a patient's studies, identifies nobody
    sa.Column("patient_key", sa.String(STUDY_ID_LENGTH), index=True),
)

inference_logs = sa.Table(
    "inference_logs",
    metadata,
    sa.Column("study_id", sa.String(STUDY_ID_LENGTH), primary_key=True),
    sa.Column("model_version", sa.String(64), primary_key=True),
    sa.Column("site", sa.String(64), nullable=False),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("error_type", sa.String(32)),
    sa.Column("error_detail", sa.Text),
    sa.Column("latency_s", sa.Float, nullable=False),
    sa.Column("prob_abnormal", sa.Float),
    sa.Column("threshold", sa.Float),
    sa.Column("decision", sa.String(16)),
    sa.Column("entropy", sa.Float),
    sa.Column("epistemic_var", sa.Float),
    sa.Column("embedding", sa.LargeBinary),  # float16, little-endian, embedding_dim values
    sa.CheckConstraint("prob_abnormal IS NULL OR (prob_abnormal >= 0 AND prob_abnormal <= 1)", name="prob_range"),
    sa.CheckConstraint("latency_s >= 0", name="latency_nonneg"),
    sa.Index("ix_inference_logs_received_at_site", "received_at", "site"),
)

shadow_logs = sa.Table(
    # a candidate in shadow scores the champion's successfully scored studies; only the champion's answer is
    # used, and these rows stay out of inference_logs so that no monitoring query counts a study twice
    "shadow_logs",
    metadata,
    sa.Column("study_id", sa.String(STUDY_ID_LENGTH), primary_key=True),
    sa.Column("model_version", sa.String(64), primary_key=True),
    sa.Column("champion_version", sa.String(64), nullable=False),
    sa.Column("site", sa.String(64), nullable=False),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("latency_s", sa.Float, nullable=False),
    sa.Column("prob_abnormal", sa.Float, nullable=False),
    sa.Column("threshold", sa.Float, nullable=False),
    sa.Column("decision", sa.String(16), nullable=False),
    sa.Column("entropy", sa.Float, nullable=False),
    sa.CheckConstraint("prob_abnormal >= 0 AND prob_abnormal <= 1", name="prob_range"),
    sa.CheckConstraint("latency_s >= 0", name="latency_nonneg"),
    sa.Index("ix_shadow_logs_model_version_received_at", "model_version", "received_at"),
)

feedback = sa.Table(
    "feedback",
    metadata,
    sa.Column("study_id", sa.String(STUDY_ID_LENGTH), primary_key=True),
    sa.Column("site", sa.String(64), nullable=False),
    sa.Column("reported_at", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("model_version", sa.String(64)),
    sa.Column("final_abnormal", sa.Boolean, nullable=False),
    sa.Column("final_finding", sa.String(64), nullable=False),
    sa.Column("agrees_with_model", sa.Boolean),
)

ingest_rejects = sa.Table(
    "ingest_rejects",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("source", sa.String(256), nullable=False),
    sa.Column("table_name", sa.String(64), nullable=False),
    sa.Column("row_number", sa.Integer, nullable=False),
    sa.Column("field", sa.String(64), nullable=False),
    sa.Column("study_id", sa.String(64)),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("rejected_at", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.UniqueConstraint("source", "table_name", "row_number", "field", name="uq_ingest_rejects_row_field"),
)

amendments = sa.Table(
    "amendments",
    metadata,
    # The audit trail of rows a newer report replaced (feedback): what the row held before, and which delivery
    # replaced it. Delivering the same amendment again records nothing (the digest of the replaced row).
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("table_name", sa.String(64), nullable=False),
    sa.Column("study_id", sa.String(STUDY_ID_LENGTH), nullable=False, index=True),
    sa.Column("source", sa.String(256), nullable=False),  # the delivery that replaced it
    sa.Column("replaced", sa.Text, nullable=False),  # JSON of the replaced row
    sa.Column("replaced_digest", sa.String(64), nullable=False),  # SHA-256 of ``replaced``
    sa.Column("amended_at", sa.DateTime(timezone=True), nullable=False),
    sa.UniqueConstraint("table_name", "study_id", "source", "replaced_digest", name="uq_amendments_row"),
)

ground_truth = sa.Table(
    "ground_truth",
    metadata,
    # What the simulator knows and radiologists would say later. Monitoring never reads it:
    # it exists to measure how fast and how precisely the pipeline reacts.
    sa.Column("study_id", sa.String(STUDY_ID_LENGTH), primary_key=True),
    sa.Column("scenario", sa.String(128), nullable=False),
    sa.Column("day", sa.Integer, nullable=False),
    sa.Column("site", sa.String(64), nullable=False),
    sa.Column("device_id", sa.String(64), nullable=False),
    sa.Column("acquired_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("abnormal", sa.Boolean, nullable=False),
    sa.Column("findings", sa.String(128), nullable=False),  # comma-separated, "" for normal
    sa.Column("organ_fully_captured", sa.Boolean, nullable=False),
    sa.Column("patient_age_years", sa.Float, nullable=False),
    sa.Column("patient_sex", sa.String(1), nullable=False),
    sa.Column("view", sa.String(4), nullable=False),
    sa.Column("foreign_objects", sa.String(128), nullable=False),
    sa.Column("tag_error", sa.Boolean, nullable=False),
    sa.Column("injected_failure", sa.String(32)),
    sa.Index("ix_ground_truth_scenario_day", "scenario", "day"),
)

monitor_metrics = sa.Table(
    "monitor_metrics",
    metadata,
    # Long format, one row per (window, site, model version, metric): what a Grafana panel queries.
    sa.Column("window_start", sa.DateTime(timezone=True), primary_key=True),
    sa.Column("window_end", sa.DateTime(timezone=True), primary_key=True),
    sa.Column("site", sa.String(64), primary_key=True),  # "*" for all sites
    sa.Column("model_version", sa.String(64), primary_key=True),  # "*" for all versions
    sa.Column("metric", sa.String(96), primary_key=True),
    sa.Column("value", sa.Float),
    sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_monitor_metrics_metric_window", "metric", "window_start"),
)

alerts = sa.Table(
    "alerts",
    metadata,
    sa.Column("alert_id", sa.String(40), primary_key=True),  # hash of (kind, site, feature, statistic)
    sa.Column("kind", sa.String(16), nullable=False),  # quality, technical, drift, performance
    sa.Column("site", sa.String(64), nullable=False),  # "*" for global
    sa.Column("feature", sa.String(96), nullable=False),
    sa.Column("statistic", sa.String(64), nullable=False),
    sa.Column("value", sa.Float),
    sa.Column("threshold", sa.Float),
    sa.Column("severity", sa.String(16), nullable=False),
    sa.Column("status", sa.String(8), nullable=False),  # open, closed
    sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
    sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
    sa.Column("closed_at", sa.DateTime(timezone=True)),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("report_path", sa.Text),
    sa.Index("ix_alerts_status_kind", "status", "kind"),
)


class Pick(enum.StrEnum):
    """Why a study was picked for labeling (a study may have several reasons; the first is its strategy)."""

    ERROR = "error"  # the radiologist overturned the model's decision
    UNCERTAIN = "uncertain"  # high entropy or epistemic variance, or a score near the threshold
    DRIFT = "drift"  # from a site (and region) with an open drift alert
    RANDOM = "random"  # the control sample: unbiased estimates of the model's errors
    EVIDENCE = "evidence"  # a reserved patient at a drifting site short of test-set evidence


class QueueStatus(enum.StrEnum):
    """Where a picked study is on its way to a label."""

    QUEUED = "queued"  # picked, not yet in Label Studio
    PUSHED = "pushed"  # a task exists in Label Studio
    LABELED = "labeled"  # at least one finished annotation is in ``labels``
    ADJUDICATION = "adjudication"  # annotators disagree: sent to the adjudication view


relabel_queue = sa.Table(
    "relabel_queue",
    metadata,
    # One row per study ever picked: a study is never picked twice.
    sa.Column("study_id", sa.String(STUDY_ID_LENGTH), primary_key=True),
    sa.Column("site", sa.String(64), nullable=False),
    sa.Column("model_version", sa.String(64), nullable=False),
    sa.Column("project", sa.String(32), nullable=False),  # relabeling, error_review, clinical_qa
    sa.Column("strategy", sa.String(16), nullable=False),  # the first reason (Pick)
    sa.Column("reasons", sa.Text, nullable=False),  # every reason, as a JSON object {pick: detail}
    sa.Column("priority", sa.Float, nullable=False),  # higher first; Label Studio sorts by the prediction score
    sa.Column("prob_abnormal", sa.Float),
    sa.Column("picked_for", sa.Date, nullable=False, index=True),  # the selection's logical date
    sa.Column("picked_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("task_id", sa.Integer),
    sa.Column("pushed_at", sa.DateTime(timezone=True)),
    sa.Column("labeled_at", sa.DateTime(timezone=True)),
    sa.Index("ix_relabel_queue_status_project", "status", "project"),
)

labels = sa.Table(
    "labels",
    metadata,
    # One row per Label Studio annotation (its id is unique on the server): syncing again upserts.
    sa.Column("annotation_id", sa.Integer, primary_key=True),
    sa.Column("task_id", sa.Integer, nullable=False, index=True),
    sa.Column("project", sa.String(32), nullable=False),
    sa.Column("study_id", sa.String(STUDY_ID_LENGTH), nullable=False, index=True),
    sa.Column("annotator", sa.String(256), nullable=False),
    sa.Column("abnormal", sa.Boolean),  # None when the image was marked unusable
    sa.Column("findings", sa.String(256), nullable=False),  # comma-separated, "" for normal
    sa.Column("unusable", sa.Boolean, nullable=False),
    sa.Column("unusable_reasons", sa.String(256), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("synced_at", sa.DateTime(timezone=True), nullable=False),
)

SNAPSHOT_HASH_LENGTH = 32  # hex characters; MLflow keeps a dataset digest in 36 characters

dataset_snapshots = sa.Table(
    "dataset_snapshots",
    metadata,
    # A frozen training set, keyed by the hash of its content: building the same set again stores nothing.
    sa.Column("snapshot_hash", sa.String(SNAPSHOT_HASH_LENGTH), primary_key=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("params", sa.Text, nullable=False),  # JSON: how the first build that produced it was configured
    sa.Column("counts", sa.Text, nullable=False),  # JSON: studies per split and label, and what was left out
    sa.Column("n_items", sa.Integer, nullable=False),
)

snapshot_items = sa.Table(
    "snapshot_items",
    metadata,
    sa.Column(
        "snapshot_hash",
        sa.String(SNAPSHOT_HASH_LENGTH),
        sa.ForeignKey("dataset_snapshots.snapshot_hash", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("study_id", sa.String(STUDY_ID_LENGTH), primary_key=True),
    sa.Column("dicom_uri", sa.Text, nullable=False),
    sa.Column("label", sa.SmallInteger, nullable=False),  # 1 abnormal, 0 normal
    sa.Column("split", sa.String(8), nullable=False),  # train, val, test
    sa.Column("site", sa.String(64), nullable=False),
    sa.Column("source", sa.String(16), nullable=False),  # adjudication, consensus, feedback, single
    sa.Column("weight", sa.Float, nullable=False),  # loss weight; below 1 for a single annotator's label
    sa.Column("patient_key", sa.String(STUDY_ID_LENGTH), nullable=False),  # the split unit
    sa.CheckConstraint("label IN (0, 1)", name="label_binary"),
    sa.CheckConstraint("weight > 0", name="weight_positive"),
)


TEST_SET_HASH_LENGTH = 32

test_sets = sa.Table(
    "test_sets",
    metadata,
    # A fixed validation set, keyed by the hash of its content; ``name`` says which set it is a version of
    # (``regression``, ``real_balance:<site>``, ``typical_errors``, ``unusual``).
    sa.Column("test_set_hash", sa.String(TEST_SET_HASH_LENGTH), primary_key=True),
    sa.Column("name", sa.String(96), nullable=False, index=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("params", sa.Text, nullable=False),  # JSON: the build's configuration
    sa.Column("n_items", sa.Integer, nullable=False),
    sa.Column("n_abnormal", sa.Integer, nullable=False),
    # why this version exists: the first build, a site that joined, a scanner that appeared
    sa.Column("reason", sa.Text, nullable=False, server_default=""),
    # a release manager's freeze: validation uses this version of the set until it is unfrozen
    sa.Column("frozen_by", sa.String(128)),
    sa.Column("frozen_at", sa.DateTime(timezone=True)),
)

test_set_items = sa.Table(
    "test_set_items",
    metadata,
    sa.Column(
        "test_set_hash",
        sa.String(TEST_SET_HASH_LENGTH),
        sa.ForeignKey("test_sets.test_set_hash", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("study_id", sa.String(STUDY_ID_LENGTH), primary_key=True),
    sa.Column("dicom_uri", sa.Text, nullable=False),
    sa.Column("label", sa.SmallInteger, nullable=False),  # 1 abnormal, 0 normal
    sa.Column("site", sa.String(64), nullable=False),
    sa.Column("patient_key", sa.String(STUDY_ID_LENGTH), nullable=False),
    sa.Column("reason", sa.String(64), nullable=False),  # why it is in the set (e.g. child, missed, sample)
    sa.CheckConstraint("label IN (0, 1)", name="label_binary"),
)

model_events = sa.Table(
    "model_events",
    metadata,
    # The audit trail of the registry's roles: every validation verdict, approval, rejection, promotion
    # and rollback, with who and why. MLflow tags carry the latest state; this keeps the history.
    sa.Column("event_id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("model_name", sa.String(128), nullable=False),
    sa.Column("version", sa.String(32), nullable=False),
    sa.Column("action", sa.String(16), nullable=False),  # validated, approved, rejected, promoted, rolled_back
    sa.Column("actor", sa.String(256), nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("detail", sa.Text, nullable=False),  # JSON
)

TABLES = {t.name: t for t in (studies, inference_logs, shadow_logs, feedback, ground_truth)}
"""The tables that ``pipeline.store.write`` loads."""
