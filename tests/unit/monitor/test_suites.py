"""The committed Great Expectations suites say what the store and the model promise."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.store.schema import Decision, ErrorType, Status

SUITES = Path(__file__).resolve().parents[3] / "great_expectations" / "gx" / "expectations"


def expectations(suite: str) -> list[dict]:
    return json.loads((SUITES / f"{suite}.json").read_text())["expectations"]


def rules(suite: str) -> dict[tuple[str, str], dict]:
    return {(e["kwargs"].get("column") or e["meta"]["column"], e["meta"]["rule"]): e for e in expectations(suite)}


def test_every_expectation_has_a_rule_and_a_column_for_its_findings():
    for suite in ("inference_logs", "dicom_tags"):
        keys = [
            (e["kwargs"].get("column") or e["meta"].get("column"), e["meta"].get("rule")) for e in expectations(suite)
        ]
        assert all(column and rule for column, rule in keys), suite
        assert len(set(keys)) == len(keys), f"{suite}: two expectations share a column and rule"


@pytest.mark.parametrize(("column", "values"), [("status", Status), ("error_type", ErrorType), ("decision", Decision)])
def test_allowed_values_of_the_logs_are_the_store_enums(column, values):
    assert set(rules("inference_logs")[(column, "in_set")]["kwargs"]["value_set"]) == {str(v) for v in values}


def test_the_logs_suite_covers_keys_uniqueness_probability_and_embedding_size():
    found = set(rules("inference_logs"))
    assert {("study_id", "not_null"), ("model_version", "not_null"), ("site", "not_null")} <= found
    assert {("study_id", "unique"), ("prob_abnormal", "range"), ("embedding", "fixed_size")} <= found
    prob = rules("inference_logs")[("prob_abnormal", "range")]["kwargs"]
    assert (prob["min_value"], prob["max_value"]) == (0, 1)


def test_the_tags_suite_covers_the_chest_radiograph_contract():
    tags = rules("dicom_tags")
    for column in ("modality", "body_part", "view_position"):
        assert (column, "in_set") in tags
    assert set(tags[("view_position", "in_set")]["kwargs"]["value_set"]) == {"PA", "AP"}
    for column in ("pixel_spacing_mm", "kvp", "patient_age_years", "rows", "columns"):
        assert (column, "range") in tags
    age = tags[("patient_age_years", "range")]["kwargs"]
    assert (age["min_value"], age["max_value"]) == (0, 120)
    assert ("patient_age_years", "not_null") in tags
