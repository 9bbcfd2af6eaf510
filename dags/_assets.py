"""The assets the DAGs hand each other, in one place: a producer's outlet and its consumer's schedule are one object.

monitor_inference ──MONITORING_WINDOW, DRIFT_ALERT──> select_for_relabeling
sync_annotations ──NEW_LABELS──> retrain_model ──CANDIDATE──> validate_candidate ──VALIDATED──> promote_model
"""

from __future__ import annotations

from airflow.sdk import Asset

#: A monitoring window was checked (``monitor_inference``).
MONITORING_WINDOW = Asset("pipeline://monitoring/window")
#: A drift alert opened at a site; its extra names the day and the sites (``select_for_relabeling`` runs on it).
DRIFT_ALERT = Asset("pipeline://monitoring/drift-alert")
#: Enough labels no snapshot holds yet (``sync_annotations``); retraining runs on it.
NEW_LABELS = Asset("pipeline://labels/new")
#: A candidate was registered; its extra names the version and the snapshot (``retrain_model``).
CANDIDATE = Asset("pipeline://models/candidate")
#: A candidate passed validation; its extra names the version and the champion it beat (``validate_candidate``).
VALIDATED = Asset("pipeline://models/validated")
