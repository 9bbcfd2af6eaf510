"""Parsing annotation results into label rows, and the labeling config being valid XML with every control."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime

import pytest

from pipeline.labeling import LABEL_CONFIG, PROJECTS, IncompleteAnnotation, ProjectKind, label_row, parse_result
from pipeline.labeling.interface import FINDING_VALUES, UNUSABLE_REASON_VALUES, project_title


def choices(name: str, *values: str) -> dict[str, object]:
    return {"from_name": name, "to_name": "image", "type": "choices", "value": {"choices": list(values)}}


def box(label: str) -> dict[str, object]:
    value = {"x": 10, "y": 10, "width": 5, "height": 5, "rectanglelabels": [label]}
    return {"from_name": "boxes", "to_name": "image", "type": "rectanglelabels", "value": value}


def test_normal() -> None:
    parsed = parse_result([choices("verdict", "normal")])
    assert (parsed.abnormal, parsed.findings, parsed.unusable, parsed.unusable_reasons) == (False, (), False, ())


def test_abnormal_findings_from_choices_and_boxes_sorted_and_unique() -> None:
    parsed = parse_result(
        [choices("verdict", "abnormal"), choices("findings", "effusion", "nodule"), box("pneumothorax"), box("nodule")]
    )
    assert parsed.abnormal is True
    assert parsed.findings == ("nodule", "pneumothorax", "effusion")


def test_unusable_wins_and_reasons_are_slugs() -> None:
    parsed = parse_result(
        [
            choices("verdict", "abnormal"),
            choices("unusable", "image unusable"),
            choices("unusable_reasons", "wrong body part", "exposure"),
        ]
    )
    assert (parsed.abnormal, parsed.unusable, parsed.unusable_reasons) == (None, True, ("exposure", "wrong_body_part"))


def test_findings_of_a_normal_study_are_dropped() -> None:
    assert parse_result([choices("verdict", "normal"), choices("findings", "nodule")]).findings == ()


def test_no_verdict_is_incomplete() -> None:
    with pytest.raises(IncompleteAnnotation):
        parse_result([choices("findings", "nodule")])


def test_label_row_from_api_annotation() -> None:
    annotation = {
        "id": 17,
        "result": [choices("verdict", "abnormal"), choices("findings", "nodule")],
        "completed_by": {"id": 3, "email": "rad@hospital.test"},
        "created_at": "2026-03-01T10:00:00.123456Z",
        "updated_at": "2026-03-01T10:05:00Z",
    }
    synced = datetime(2026, 3, 1, 11, tzinfo=UTC)
    row = label_row(annotation, task_id=5, project="relabeling", study_id="ab" * 16, synced_at=synced)
    assert row.as_dict() == {
        "annotation_id": 17,
        "task_id": 5,
        "project": "relabeling",
        "study_id": "ab" * 16,
        "annotator": "rad@hospital.test",
        "abnormal": True,
        "findings": "nodule",
        "unusable": False,
        "unusable_reasons": "",
        "created_at": datetime(2026, 3, 1, 10, 0, 0, 123456, tzinfo=UTC),
        "updated_at": datetime(2026, 3, 1, 10, 5, tzinfo=UTC),
        "synced_at": synced,
    }


def test_annotator_falls_back_to_user_id() -> None:
    annotation = {"id": 1, "result": [choices("verdict", "normal")], "completed_by": 9}
    annotation |= {"created_at": "2026-03-01T10:00:00Z", "updated_at": "2026-03-01T10:00:00Z"}
    row = label_row(annotation, task_id=1, project="p", study_id="s", synced_at=datetime(2026, 3, 1, tzinfo=UTC))
    assert row.annotator == "user-9"


def test_label_config_is_valid_xml_with_every_control() -> None:
    root = ET.fromstring(LABEL_CONFIG)
    assert root.tag == "View"
    controls = {e.get("name"): e for e in root.iter() if e.get("name")}
    assert controls["image"].tag == "Image" and controls["image"].get("value") == "$image"
    for name in ("verdict", "findings", "unusable", "unusable_reasons"):
        assert controls[name].tag == "Choices" and controls[name].get("toName") == "image"
    assert [c.get("value") for c in controls["verdict"]] == ["normal", "abnormal"]
    assert tuple(c.get("value") for c in controls["findings"]) == FINDING_VALUES
    assert tuple(c.get("value") for c in controls["unusable_reasons"]) == UNUSABLE_REASON_VALUES
    assert controls["boxes"].tag == "RectangleLabels"
    assert tuple(label.get("value") for label in controls["boxes"]) == FINDING_VALUES


def test_every_project_kind_has_a_spec_and_a_distinct_title() -> None:
    assert set(PROJECTS) == set(ProjectKind)
    assert all(spec.instruction and spec.description for spec in PROJECTS.values())
    assert len({project_title(k, "p/") for k in ProjectKind}) == len(ProjectKind)
