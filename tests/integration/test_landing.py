"""The landing folder against real PostgreSQL: every file and every row on its own, nothing good lost, runs repeatable.

The files here are written by hand the way other programs write them (pandas, the csv module, a shipper
that dies mid-upload), plus property-based ones (Hypothesis) whose rows are good or damaged at random.
"""

from __future__ import annotations

import base64
import json
import string
from datetime import UTC, datetime

import pandas as pd
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pipeline.store.files as landing_files
from pipeline.store import ingest_batch, make_engine, upgrade
from pipeline.store.files import StoreUnavailable, ingest_landing
from tests.factories import inference_log_rows, study_rows

pytestmark = pytest.mark.integration


@pytest.fixture
def engine(pg_url):
    engine = make_engine(pg_url)
    upgrade(engine)
    yield engine
    engine.dispose()


def rows_of(engine, sql: str) -> list[tuple]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(sql))]


def count(engine, table: str) -> int:
    return rows_of(engine, f"SELECT count(*) FROM {table}")[0][0]


def text_logs(n: int, seed: int) -> pd.DataFrame:
    frame = inference_log_rows(n, seed=seed)
    frame["embedding"] = frame["embedding"].map(lambda b: base64.b64encode(b).decode())
    return frame


def jsonl_lines(frame: pd.DataFrame) -> list[str]:
    return frame.to_json(orient="records", lines=True, date_format="iso").splitlines()


def test_one_bad_file_or_line_never_stops_the_stream(engine, tmp_path):
    landing = tmp_path / "landing"
    logs, studies = landing / "inference_logs", landing / "studies"
    logs.mkdir(parents=True)
    studies.mkdir()
    # 1. JSON lines with a broken line and a line that is no object among good rows
    lines = jsonl_lines(text_logs(6, seed=1))
    lines[2] = lines[2][:40]  # cut mid-record
    lines.insert(4, "[1, 2, 3]")
    (logs / "a-edge.jsonl").write_text("\n".join(lines) + "\n")
    # 2. CSV (upper-case suffix) whose integer is too large for its column, a NUL byte, and a short line
    tags = study_rows(inference_log_rows(5, seed=2), seed=2).astype({"rows": object, "manufacturer": object})
    tags.loc[1, "rows"] = 10**12
    tags.loc[2, "manufacturer"] = "Agfa\x00"
    tags.to_csv(studies / "b-tags.CSV", index=False)
    with (studies / "b-tags.CSV").open("a") as handle:
        handle.write("only,three,fields\n")
    # 3. a JSON array with an int32 overflow, a Parquet file cut by a dying upload, a file a shipper is still
    #    writing, a note in a table folder and a folder that names no table
    array = study_rows(inference_log_rows(2, seed=3), seed=3)
    array.loc[1, "columns"] = 2**31
    (studies / "c-array.json").write_text(array.to_json(orient="records", date_format="iso"))
    inference_log_rows(3, seed=3).to_parquet(logs / "d-upload.parquet")
    (logs / "d-upload.parquet").write_bytes((logs / "d-upload.parquet").read_bytes()[:200])
    (logs / "e-inflight.jsonl.part").write_text("{")
    (logs / "README.txt").write_text("batches go here")
    (landing / "inference_log").mkdir()

    report = ingest_landing(engine, landing)

    by_source = {r.source: r for r in report.results}
    a = by_source["a-edge.jsonl"]
    assert (a.received, a.written, a.rejected) == (7, 5, 2)
    reasons = {(e.row_number, e.field): e.reason for e in a.errors}
    assert sorted(reasons) == [(2, "<record>"), (4, "<record>")]
    assert reasons[(2, "<record>")].startswith("line 3 is not valid JSON (")
    assert reasons[(4, "<record>")] == "line 5 is a JSON list, not an object"
    b = by_source["b-tags.CSV"]
    assert (b.received, b.written, b.rejected) == (6, 3, 3)
    reasons = {(e.row_number, e.field): e.reason for e in b.errors}
    assert reasons[(1, "rows")] == "'1000000000000' is not an integer in [-2147483648, 2147483647]"
    assert reasons[(2, "manufacturer")] == "contains a NUL character, which the store cannot hold"
    assert reasons[(5, "<record>")] == f"line 7 has 3 fields, the header {len(tags.columns)}"
    c = by_source["c-array.json"]
    assert (c.written, [(e.row_number, e.field) for e in c.errors]) == (1, [(1, "columns")])
    assert [(q.table, q.name) for q in report.quarantined] == [("inference_logs", "d-upload.parquet")]
    assert "cannot parse as parquet" in report.quarantined[0].reason
    assert (landing / "quarantine" / "inference_logs" / "d-upload.parquet.reason").read_text().count("\n") == 1
    assert sorted(report.ignored) == [
        "inference_log: a folder that names no table (tables: studies, inference_logs, shadow_logs, feedback, "
        "ground_truth)",
        "inference_logs/README.txt: not a batch file: '.txt' is none of .csv, .jsonl, .json, .parquet",
    ]
    assert (logs / "e-inflight.jsonl.part").exists()  # left for the shipper to finish
    assert count(engine, "inference_logs") == 5
    assert count(engine, "studies") == 4
    recorded = rows_of(engine, "SELECT source, row_number, field FROM ingest_rejects ORDER BY source, row_number")
    assert recorded == [
        ("a-edge.jsonl", 2, "<record>"),
        ("a-edge.jsonl", 4, "<record>"),
        ("b-tags.CSV", 1, "rows"),
        ("b-tags.CSV", 2, "manufacturer"),
        ("b-tags.CSV", 5, "<record>"),
        ("c-array.json", 1, "columns"),
    ]

    # the same files delivered again, and a second pass: nothing changes, and the quarantine is still reported
    (landing / "processed" / "inference_logs" / "a-edge.jsonl").rename(logs / "a-edge.jsonl")
    (landing / "processed" / "studies" / "c-array.json").rename(studies / "c-array.json")
    again = ingest_landing(engine, landing)
    assert sum(r.written for r in again.results) == 0
    assert [str(q) for q in again.quarantined] == [
        f"quarantined inference_logs/d-upload.parquet (earlier run): {report.quarantined[0].reason}"
    ]
    assert again.quarantined_now == []
    assert (count(engine, "inference_logs"), count(engine, "ingest_rejects")) == (5, 6)
    assert [p.name for p in (landing / "processed" / "inference_logs").iterdir()] == ["a-edge.jsonl"]


def test_an_unexpected_failure_quarantines_that_file_with_its_traceback_and_the_rest_loads(
    engine, tmp_path, monkeypatch
):
    landing = tmp_path / "landing"
    (landing / "inference_logs").mkdir(parents=True)
    for i in range(3):
        text_logs(4, seed=10 + i).to_json(
            landing / "inference_logs" / f"batch-{i}.jsonl", orient="records", lines=True, date_format="iso"
        )
    real = landing_files.ingest

    def fails_on_the_second(engine, table, frame, source, **kwargs):
        if source == "batch-1.jsonl":
            raise RuntimeError("disk controller reset")
        return real(engine, table, frame, source, **kwargs)

    monkeypatch.setattr(landing_files, "ingest", fails_on_the_second)
    report = ingest_landing(engine, landing)
    assert sorted(r.source for r in report.results) == ["batch-0.jsonl", "batch-2.jsonl"]
    assert [q.reason for q in report.quarantined] == [
        "batch-1.jsonl: loading failed: RuntimeError: disk controller reset"
    ]
    trace = (landing / "quarantine" / "inference_logs" / "batch-1.jsonl.traceback").read_text()
    assert "Traceback" in trace and "disk controller reset" in trace
    assert count(engine, "inference_logs") == 8


def test_an_unreachable_store_stops_the_run_and_leaves_every_file(tmp_path):
    landing = tmp_path / "landing"
    (landing / "inference_logs").mkdir(parents=True)
    text_logs(2, seed=4).to_json(
        landing / "inference_logs" / "x.jsonl", orient="records", lines=True, date_format="iso"
    )
    engine = make_engine("postgresql+psycopg2://postgres:secret-pw@127.0.0.1:1/nowhere")
    with pytest.raises(StoreUnavailable) as raised:
        ingest_landing(engine, landing)
    assert "inference_logs/x.jsonl" in str(raised.value)
    assert "secret-pw" not in str(raised.value)
    assert (landing / "inference_logs" / "x.jsonl").exists()
    assert not (landing / "quarantine").exists()


def test_a_study_is_written_with_all_its_rows_or_none(engine):
    logs = inference_log_rows(4, seed=5)
    tags = study_rows(logs, seed=5).astype({"manufacturer": object})
    tags.loc[1, "manufacturer"] = "Agfa\x00"  # what a raw DICOM tag can carry
    logs.loc[2, "prob_abnormal"] = 7.0
    results = ingest_batch(engine, {"studies": tags, "inference_logs": logs}, source="day-1")
    written = {s for (s,) in rows_of(engine, "SELECT study_id FROM studies")}
    logged = {s for (s,) in rows_of(engine, "SELECT study_id FROM inference_logs")}
    assert written == logged == {logs.loc[0, "study_id"], logs.loc[3, "study_id"]}
    cascade = {(e.row_number, e.reason) for e in results["inference_logs"].errors if e.field == "study_id"}
    assert cascade == {(1, "not written: another row of this study was rejected (studies row 1, field 'manufacturer')")}
    assert results["studies"].rejected == 2 and results["inference_logs"].rejected == 2


def test_feedback_keeps_the_newest_report_and_audits_what_it_replaced(engine):
    sid = "ab" * 16
    base = {"study_id": sid, "site": "a", "final_abnormal": False, "final_finding": "normal"}
    first = pd.DataFrame([{**base, "reported_at": datetime(2026, 1, 9, 10, tzinfo=UTC)}])
    newer = first.assign(reported_at=datetime(2026, 1, 9, 12, tzinfo=UTC), final_abnormal=True, final_finding="nodule")
    older = first.assign(reported_at=datetime(2026, 1, 8, tzinfo=UTC), final_finding="effusion")
    ingest_batch(engine, {"feedback": first}, source="f1")
    amended = ingest_batch(engine, {"feedback": newer}, source="f2")["feedback"]
    assert (amended.written, amended.amended) == (1, 1)
    late = ingest_batch(engine, {"feedback": older}, source="f3")["feedback"]
    assert late.written == 0 and late.rejected == 1
    assert late.errors[0].reason.startswith("older than the report already stored (reported_at 2026-01-09T12:00:00")
    assert rows_of(engine, "SELECT final_finding FROM feedback") == [("nodule",)]
    (replaced,) = rows_of(engine, "SELECT source, replaced FROM amendments")
    assert replaced[0] == "f2" and json.loads(replaced[1])["final_finding"] == "normal"
    ingest_batch(engine, {"feedback": newer}, source="f2")  # delivered again: nothing new in the audit
    assert count(engine, "amendments") == 1


# --- property-based: landing files of every format, good and damaged rows at random ----------------------------
_GOOD = text_logs(40, seed=77)
_DAMAGES = st.sampled_from(
    [
        ("prob_abnormal", 9.5),
        ("status", "melted"),
        ("latency_s", "fast"),
        ("study_id", "IM0001.dcm"),
        ("site", "x" * 80),
        ("model_version", "v\x00"),
        ("site", "caf\udce9"),  # what bytes that were not UTF-8 decode to
        ("received_at", "2026-13-45"),
        ("received_at", 1767225600),
        ("threshold", 10**40),
        ("entropy", float("inf")),
        ("embedding", "not base64!"),
    ]
)


@st.composite
def batches(draw):
    n = draw(st.integers(1, 12))
    picks = draw(st.lists(st.integers(0, len(_GOOD) - 1), min_size=n, max_size=n, unique=True))
    frame = _GOOD.iloc[picks].reset_index(drop=True).astype(object)
    damaged = draw(st.sets(st.integers(0, n - 1), max_size=n))
    for i in damaged:
        column, value = draw(_DAMAGES)
        frame.at[i, column] = value
    garbage = draw(st.lists(st.integers(0, n), max_size=3))  # positions of lines of noise among the rows
    noise = draw(
        st.lists(
            st.text(string.ascii_letters + string.digits + string.punctuation, min_size=1, max_size=30),
            min_size=len(garbage),
            max_size=len(garbage),
        )
    )
    fmt = draw(st.sampled_from(["jsonl", "csv", "json"]))
    return frame, sorted(damaged), list(zip(garbage, noise, strict=True)), fmt


@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=batches())
def test_property_no_good_row_is_lost_and_nothing_raises(engine, tmp_path_factory, batch):
    frame, damaged, noise, fmt = batch
    landing = tmp_path_factory.mktemp("landing")
    inbox = landing / "inference_logs"
    inbox.mkdir()
    path = inbox / f"batch.{fmt}"
    if fmt == "csv":
        frame.to_csv(path, index=False)
    elif fmt == "json":
        path.write_text(json.dumps(frame.to_dict("records"), default=str))
    else:
        lines = [json.dumps(r, default=str) for r in frame.to_dict("records")]
        for at, text in sorted(noise, reverse=True):
            lines.insert(at, text)
        path.write_text("\n".join(lines) + "\n")
    report = ingest_landing(engine, landing)
    good = frame.drop(index=damaged)
    (result,) = report.results
    assert result.written + result.unchanged == len(good)
    assert result.rejected == len(damaged) + (len(noise) if fmt == "jsonl" else 0)
    assert report.quarantined_now == []
    with engine.connect() as conn:
        stored = {s for (s,) in conn.execute(sa.text("SELECT study_id FROM inference_logs"))}
    assert set(good["study_id"]) <= stored
