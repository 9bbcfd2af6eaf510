"""The deployment's defaults that DAG runs start from: the validation gate and label-driven retraining."""

from __future__ import annotations

import pydantic
import pytest

from pipeline.config import get_settings
from pipeline.tasks import gate_config, retrain_params


@pytest.fixture
def deployment(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    def configure(**env: str) -> None:
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        get_settings.cache_clear()

    yield configure
    get_settings.cache_clear()


def test_the_deployments_gate_is_the_base_and_a_runs_config_wins(deployment) -> None:  # type: ignore[no-untyped-def]
    deployment(PIPELINE_VALIDATION_CONFIG='{"sensitivity_target": 0.95, "auroc_margin": 0.03}')
    assert (gate_config(None).sensitivity_target, gate_config(None).auroc_margin) == (0.95, 0.03)
    run = gate_config({"sensitivity_target": 0.97})
    assert (run.sensitivity_target, run.auroc_margin) == (0.97, 0.03)
    assert gate_config({}).confidence == 0.95  # untouched fields keep the gate's own defaults


def test_a_bad_gate_is_refused_naming_the_field(deployment) -> None:  # type: ignore[no-untyped-def]
    deployment(PIPELINE_VALIDATION_CONFIG='{"sensitivity_targte": 0.95}')
    with pytest.raises(pydantic.ValidationError, match="sensitivity_targte"):
        gate_config(None)
    deployment(PIPELINE_VALIDATION_CONFIG="{}")
    with pytest.raises(pydantic.ValidationError, match="sensitivity_target"):
        gate_config({"sensitivity_target": 1.5})


def test_label_driven_retraining_takes_the_deployments_defaults_a_manual_one_its_form(deployment) -> None:  # type: ignore[no-untyped-def]
    deployment(PIPELINE_RETRAIN_DEFAULTS='{"epochs": 3, "min_new_labels": 700}')
    form = {"epochs": 10, "learning_rate": 1e-3, "min_new_labels": 50}
    by_labels = retrain_params(form, "asset")
    assert (by_labels.epochs, by_labels.min_new_labels, by_labels.learning_rate) == (3, 700, 1e-3)
    by_hand = retrain_params(form, "manual")
    assert (by_hand.epochs, by_hand.min_new_labels) == (10, 50)
    deployment(PIPELINE_RETRAIN_DEFAULTS='{"epochs": 0}')
    with pytest.raises(pydantic.ValidationError, match="epochs"):
        retrain_params(form, "asset")
