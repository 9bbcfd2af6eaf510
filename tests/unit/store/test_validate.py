from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.store import UnknownTable, validate_frame
from tests.factories import inference_log_rows


def test_valid_rows_pass_typed():
    frame = inference_log_rows(50)
    checked = validate_frame("inference_logs", frame)
    assert checked.errors == ()
    assert len(checked.valid) == 50
    assert str(checked.valid["received_at"].dt.tz) == "UTC"
    assert checked.valid["prob_abnormal"].between(0, 1).all()


@pytest.mark.parametrize(
    ("column", "value", "needle"),
    [
        ("study_id", None, "'study_id': is required but missing"),
        ("prob_abnormal", 1.5, "'prob_abnormal': 1.5 is outside [0.0, 1.0]"),
        ("prob_abnormal", -0.1, "'prob_abnormal': -0.1 is outside [0.0, 1.0]"),
        ("status", "exploded", "'status': unknown value 'exploded'"),
        ("error_type", "gremlins", "'error_type': unknown value 'gremlins'"),
        ("latency_s", "fast", "'latency_s': 'fast' is not a finite number"),
        ("received_at", "yesterday-ish", "'received_at': 'yesterday-ish' is not a timestamp"),
        ("site", "x" * 65, "'site': longer than 64 characters"),
    ],
)
def test_bad_field_rejects_only_its_row_and_names_it(column, value, needle):
    frame = inference_log_rows(10)
    frame[column] = frame[column].astype(object)
    frame.loc[4, column] = value
    checked = validate_frame("inference_logs", frame)
    assert len(checked.valid) == 9
    assert 4 not in checked.valid.index
    assert checked.rejected_rows == 1
    messages = [str(e) for e in checked.errors]
    assert any(m.startswith("row 4") and needle in m for m in messages), messages


def test_rules_across_fields():
    frame = inference_log_rows(4)
    frame.loc[0, "prob_abnormal"] = np.nan  # ok without a probability
    frame.loc[1, "status"] = "error"  # failure without an error type
    frame.loc[2, "finished_at"] = frame.loc[2, "received_at"] - pd.Timedelta(seconds=5)
    checked = validate_frame("inference_logs", frame)
    fields = {(e.row_number, e.field) for e in checked.errors}
    assert fields == {(0, "prob_abnormal"), (1, "error_type"), (2, "finished_at")}
    assert list(checked.valid.index) == [3]


def test_missing_required_column_rejects_every_row():
    frame = inference_log_rows(3).drop(columns=["site"])
    checked = validate_frame("inference_logs", frame)
    assert checked.valid.empty
    assert {e.field for e in checked.errors} == {"site"}
    assert "required column is missing" in str(checked.errors[0])


def test_identical_repeat_is_a_redelivery_and_a_conflicting_one_is_rejected_naming_the_first():
    frame = inference_log_rows(3)
    frame = pd.concat([frame, frame.iloc[[0]], frame.iloc[[1]].assign(latency_s=9.0)], ignore_index=True)
    checked = validate_frame("inference_logs", frame)
    assert [(e.row_number, e.field) for e in checked.errors] == [(4, "study_id")]
    assert "repeats the key of row 1 with other values" in checked.errors[0].reason
    assert list(checked.valid.index) == [0, 1, 2]
    assert checked.valid.loc[1, "latency_s"] != 9.0


def test_feedback_repeats_keep_the_newest_report_and_return_the_rest_as_superseded():
    reported = pd.Timestamp("2026-01-09T10:00Z")
    row = {"study_id": "ab" * 16, "site": "a", "final_abnormal": False, "final_finding": "normal"}
    frame = pd.DataFrame(
        [
            {**row, "reported_at": reported + pd.Timedelta(hours=2), "final_abnormal": True, "final_finding": "nodule"},
            {**row, "reported_at": reported},  # older, delivered later: superseded
            {**row, "study_id": "cd" * 16, "reported_at": reported},
        ]
    )
    checked = validate_frame("feedback", frame)
    assert checked.errors == ()
    assert list(checked.valid.index) == [0, 2]
    assert bool(checked.valid.loc[0, "final_abnormal"]) is True
    assert checked.superseded is not None and list(checked.superseded.index) == [1]


@pytest.mark.parametrize(
    ("column", "value", "needle"),
    [
        ("model_version", "v\x00", "'model_version': contains a NUL character"),
        ("site", "caf\udce9", "'site': is not valid UTF-8 text"),
        ("study_id", "IM0001.dcm", "'study_id': is not a pseudonymous id"),
        ("model_version", ["a", "list"], "'model_version': ['a', 'list'] is not text"),
    ],
)
def test_text_the_store_cannot_hold_or_that_is_no_pseudonym_is_rejected(column, value, needle):
    frame = inference_log_rows(3).astype({column: object})
    frame.at[1, column] = value
    checked = validate_frame("inference_logs", frame)
    assert list(checked.valid.index) == [0, 2]
    assert any(needle in str(e) for e in checked.errors), checked.errors


@pytest.mark.parametrize("value", [2**31, -(2**31) - 1, 10**30, "99999999999999999999999", 1.5])
def test_integers_outside_the_columns_range_are_rejected_not_raised(value):
    frame = pd.DataFrame(
        {
            "study_id": ["ab" * 16, "cd" * 16],
            "site": "a",
            "acquired_at": "2026-01-01T00:00:00Z",
            "dicom_uri": "x.dcm",
            "rows": pd.Series([512, value], dtype=object),
        }
    )
    checked = validate_frame("studies", frame)
    assert list(checked.valid.index) == [0]
    assert [(e.row_number, e.field) for e in checked.errors] == [(1, "rows")]
    assert "is not an integer in [-2147483648, 2147483647]" in checked.errors[0].reason


def test_rows_are_named_by_the_frames_own_row_numbers():
    frame = inference_log_rows(3)
    frame.index = pd.Index([4, 7, 9])
    frame.loc[7, "prob_abnormal"] = 3.0
    checked = validate_frame("inference_logs", frame, numbered=True)
    assert [e.row_number for e in checked.errors] == [7]
    assert list(checked.valid.index) == [4, 9]
    assert [e.row_number for e in validate_frame("inference_logs", frame).errors] == [1]  # by position


def test_a_bare_number_is_no_timestamp():
    frame = inference_log_rows(2).astype({"received_at": object})
    frame.at[1, "received_at"] = 1767225600
    checked = validate_frame("inference_logs", frame)
    assert [(e.row_number, e.field) for e in checked.errors] == [(1, "received_at")]


def test_timestamps_with_offsets_become_utc():
    frame = inference_log_rows(1)
    frame["received_at"] = ["2026-03-01T12:00:00+02:00"]
    frame["finished_at"] = ["2026-03-01T10:00:01Z"]
    checked = validate_frame("inference_logs", frame)
    assert checked.errors == ()
    assert checked.valid["received_at"].iat[0] == pd.Timestamp("2026-03-01T10:00:00Z")


def test_unknown_table():
    with pytest.raises(UnknownTable, match="no ingestible table 'patients'"):
        validate_frame("patients", inference_log_rows(1))
