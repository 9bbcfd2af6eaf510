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


def test_repeated_key_in_batch_keeps_first():
    frame = inference_log_rows(3)
    frame = pd.concat([frame, frame.iloc[[1]].assign(latency_s=9.0)], ignore_index=True)
    checked = validate_frame("inference_logs", frame)
    assert checked.errors == ()
    assert len(checked.valid) == 3
    assert checked.valid.loc[1, "latency_s"] != 9.0


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
