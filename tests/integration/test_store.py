"""The store on real PostgreSQL and on SQLite: migrations, round trips, idempotence, bad input."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

import pipeline.store.write as store_write
from pipeline.store import (
    current_revision,
    decode_embeddings,
    downgrade,
    ingest,
    make_engine,
    metadata,
    read_window,
    upgrade,
)
from pipeline.store.migrate import VERSION_TABLE
from tests.factories import inference_log_rows

pytestmark = pytest.mark.integration


@pytest.fixture(params=["postgresql", "sqlite"])
def engine(request, tmp_path):
    url = request.getfixturevalue("pg_url") if request.param == "postgresql" else f"sqlite:///{tmp_path / 'store.db'}"
    engine = make_engine(url)
    upgrade(engine)
    yield engine
    engine.dispose()


def count(engine, table: str) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one()


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_migrations_go_up_from_empty_and_match_the_schema(backend, request, tmp_path):
    url = request.getfixturevalue("pg_url") if backend == "postgresql" else f"sqlite:///{tmp_path / 'm.db'}"
    engine = make_engine(url)
    assert current_revision(engine) is None
    upgrade(engine)
    upgrade(engine)  # a second run is a no-op
    assert current_revision(engine) == "0009"
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        diff = compare_metadata(context, metadata)
    assert diff == [], f"schema.py and the migrations disagree: {diff}"
    downgrade(engine, "base")
    assert not {"studies", "inference_logs", "feedback", "ground_truth"} & set(sa.inspect(engine).get_table_names())


def test_round_trip_keeps_every_value(engine):
    frame = inference_log_rows(200, seed=3)
    frame.loc[7, ["status", "error_type", "prob_abnormal", "decision", "entropy", "epistemic_var", "embedding"]] = [
        "error",
        "cuda_oom",
        np.nan,
        None,
        np.nan,
        np.nan,
        None,
    ]
    frame.loc[7, "error_detail"] = 'out of memory, "tried" 2 GiB'
    result = ingest(engine, "inference_logs", frame, source="t")
    assert (result.written, result.rejected) == (200, 0)

    back = read_window(engine, "inference_logs").set_index("study_id").loc[frame["study_id"]]
    np.testing.assert_allclose(back["prob_abnormal"].to_numpy(), frame["prob_abnormal"].to_numpy(), rtol=1e-12)
    assert (back["received_at"].to_numpy() == pd.to_datetime(frame["received_at"], utc=True).to_numpy()).all()
    assert back["received_at"].dt.tz is not None
    assert back.loc[frame.loc[7, "study_id"], "error_detail"] == 'out of memory, "tried" 2 GiB'
    assert back["embedding"].isna().sum() == 1
    ok = frame.drop(index=7)
    np.testing.assert_array_equal(
        decode_embeddings(back.loc[ok["study_id"], "embedding"]), decode_embeddings(ok["embedding"])
    )


def test_window_and_site_filters(engine):
    start = datetime(2026, 2, 1, tzinfo=UTC)
    ingest(engine, "inference_logs", inference_log_rows(100, seed=1, start=start), source="a")
    ingest(engine, "inference_logs", inference_log_rows(100, seed=2, start=start + timedelta(hours=1)), source="b")
    first_hour = read_window(engine, "inference_logs", start, start + timedelta(hours=1))
    assert len(first_hour) == 100
    one_site = read_window(engine, "inference_logs", sites=["st-anna"], columns=["study_id", "site"])
    assert list(one_site.columns) == ["study_id", "site"]
    assert set(one_site["site"]) == {"st-anna"}


def test_ingesting_the_same_10000_rows_twice_leaves_10000(engine):
    frame = inference_log_rows(10_000, seed=5)
    first = ingest(engine, "inference_logs", frame, source="batch-1")
    second = ingest(engine, "inference_logs", frame, source="batch-1")
    assert (first.written, first.unchanged) == (10_000, 0)
    assert (second.written, second.unchanged) == (0, 10_000)
    assert count(engine, "inference_logs") == 10_000


def test_overlapping_batch_adds_only_the_new_rows(engine):
    frame = inference_log_rows(300, seed=6)
    ingest(engine, "inference_logs", frame.iloc[:200], source="a")
    result = ingest(engine, "inference_logs", frame.iloc[100:], source="b")
    assert (result.written, result.unchanged) == (100, 100)
    assert count(engine, "inference_logs") == 300


def test_malformed_rows_are_rejected_named_and_recorded_the_rest_loads(engine):
    frame = inference_log_rows(20, seed=7).astype({"study_id": object, "status": object})
    frame.loc[2, "study_id"] = None
    frame.loc[5, "prob_abnormal"] = 1.25
    frame.loc[9, "status"] = "melted"
    result = ingest(engine, "inference_logs", frame, source="bad-batch.csv")
    assert (result.written, result.rejected) == (17, 3)
    messages = [str(e) for e in result.errors]
    assert "row 2: field 'study_id': is required but missing" in messages
    assert any(
        m.startswith("row 5 (study_id=") and "'prob_abnormal': 1.25 is outside [0.0, 1.0]" in m for m in messages
    )
    assert any(m.startswith("row 9 (study_id=") and "'status': unknown value 'melted'" in m for m in messages)
    assert count(engine, "inference_logs") == 17
    rejects = pd.read_sql("SELECT source, row_number, field FROM ingest_rejects ORDER BY row_number", engine)
    assert rejects.to_dict("records") == [
        {"source": "bad-batch.csv", "row_number": 2, "field": "study_id"},
        {"source": "bad-batch.csv", "row_number": 5, "field": "prob_abnormal"},
        {"source": "bad-batch.csv", "row_number": 9, "field": "status"},
    ]
    ingest(engine, "inference_logs", frame, source="bad-batch.csv")
    assert count(engine, "ingest_rejects") == 3  # re-delivery records nothing twice


def test_a_failure_mid_batch_writes_nothing(engine, monkeypatch):
    frame = inference_log_rows(500, seed=8)
    frame.loc[3, "prob_abnormal"] = 2.0  # so the rejects are written after the rows

    def fail(*_args, **_kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(store_write, "_record_rejects", fail)
    with pytest.raises(RuntimeError, match="disk full"):
        ingest(engine, "inference_logs", frame, source="x")
    assert count(engine, "inference_logs") == 0
    assert count(engine, "ingest_rejects") == 0


def test_feedback_amendment_replaces_the_earlier_outcome(engine):
    reported = datetime(2026, 1, 9, tzinfo=UTC)
    first = pd.DataFrame(
        [
            {
                "study_id": "ab" * 16,
                "site": "a",
                "reported_at": reported,
                "final_abnormal": False,
                "final_finding": "normal",
            }
        ]
    )
    amended = first.assign(final_abnormal=True, final_finding="nodule", agrees_with_model=False)
    ingest(engine, "feedback", first, source="f1")
    result = ingest(engine, "feedback", amended, source="f2")
    assert result.written == 1
    back = read_window(engine, "feedback")
    assert back.loc[0, ["final_abnormal", "final_finding"]].tolist() == [True, "nodule"]
    assert bool(back.loc[0, "agrees_with_model"]) is False
