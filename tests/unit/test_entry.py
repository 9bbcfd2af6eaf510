"""The entry layer: the defaults of a deployment that runs start from, and the approver's answer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pydantic
import pytest

from pipeline.config import Settings
from pipeline.entry import release, training
from pipeline.resources import Resources


def deployment(tmp_path: Path, **fields: Any) -> Resources:
    """The resources of a deployment configured with ``fields`` (the tests build their own)."""
    return Resources.from_settings(Settings(db_url=f"sqlite:///{tmp_path / 'store.sqlite'}", **fields))


def test_the_deployments_gate_is_the_base_and_a_runs_config_wins(tmp_path: Path) -> None:
    res = deployment(tmp_path, validation_config={"sensitivity_target": 0.95, "auroc_margin": 0.03})
    gate = release.gate_config(res, None)
    assert (gate.sensitivity_target, gate.auroc_margin) == (0.95, 0.03)
    run = release.gate_config(res, {"sensitivity_target": 0.97})
    assert (run.sensitivity_target, run.auroc_margin) == (0.97, 0.03)
    assert release.gate_config(res, {}).confidence == 0.95  # untouched fields keep the gate's own defaults


def test_a_bad_gate_is_refused_naming_the_field(tmp_path: Path) -> None:
    with pytest.raises(pydantic.ValidationError, match="sensitivity_targte"):
        release.gate_config(deployment(tmp_path, validation_config={"sensitivity_targte": 0.95}), None)
    with pytest.raises(pydantic.ValidationError, match="sensitivity_target"):
        release.gate_config(deployment(tmp_path), {"sensitivity_target": 1.5})


def test_label_driven_retraining_takes_the_deployments_defaults_a_manual_one_its_form(tmp_path: Path) -> None:
    res = deployment(tmp_path, retrain_defaults={"epochs": 3, "min_new_labels": 700})
    form = {"epochs": 10, "learning_rate": 1e-3, "min_new_labels": 50}
    by_labels = training.retrain_params(res, form, "asset")
    assert (by_labels.epochs, by_labels.min_new_labels, by_labels.learning_rate) == (3, 700, 1e-3)
    by_hand = training.retrain_params(res, form, "manual")
    assert (by_hand.epochs, by_hand.min_new_labels) == (10, 50)
    with pytest.raises(pydantic.ValidationError, match="epochs"):
        training.retrain_params(deployment(tmp_path, retrain_defaults={"epochs": 0}), form, "asset")


def test_the_approvers_answer_comes_from_airflow_first_then_from_the_mlflow_tags() -> None:
    from pipeline.validation import PromotionRefused

    airflow = {"chosen_options": ["Reject"], "responded_by_user": {"name": "Dr. Rm"}, "params_input": {"reason": " x "}}
    assert release.answer_of("3", airflow, {"approve": True, "by": "other"}) == release.Answer(
        approve=False, by="Dr. Rm", reason="x", source="the Airflow UI"
    )
    assert release.answer_of("3", None, {"approve": True, "by": "Dr. Tag"}).source == "the MLflow UI"
    with pytest.raises(PromotionRefused, match="no answer for version 3"):
        release.answer_of("3", None, None)
