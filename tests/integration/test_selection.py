"""Selection on a real PostgreSQL store: reasons recorded, idempotent per day, never the same study twice."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from pipeline.alerts import Finding, Kind, Severity, sync_alerts
from pipeline.cli import main
from pipeline.config import get_settings
from pipeline.selection import SelectionConfig, select_for_relabeling
from pipeline.store import ingest, make_engine, upgrade
from pipeline.store.schema import labels, relabel_queue, test_set_items, test_sets
from tests.factories import inference_log_rows

pytestmark = pytest.mark.integration

DAY = date(2026, 3, 10)


@pytest.fixture
def store(pg_url: str) -> sa.Engine:
    engine = make_engine(pg_url)
    upgrade(engine)
    logs = pd.concat(
        [inference_log_rows(150, seed=s, start=datetime(2026, 3, 4 + s, 9, tzinfo=UTC)) for s in range(1, 7)],
        ignore_index=True,
    )
    logs.loc[logs.index % 3 == 0, "site"] = "riverside"
    ingest(engine, "inference_logs", logs, source="test")
    overturned = logs.iloc[::25]
    ingest(
        engine,
        "feedback",
        pd.DataFrame(
            {
                "study_id": overturned["study_id"],
                "site": overturned["site"],
                "reported_at": overturned["received_at"] + timedelta(days=1),
                "model_version": "1",
                "final_abnormal": overturned["decision"] == "normal",
                "final_finding": "effusion",
                "agrees_with_model": False,
            }
        ),
        source="test",
    )
    return engine


def queue(engine: sa.Engine) -> pd.DataFrame:
    with engine.connect() as conn:
        return pd.DataFrame(conn.execute(sa.select(relabel_queue)).mappings().all())


def test_a_day_is_picked_once_within_budget_and_caps_with_its_reasons(store):
    config = SelectionConfig(budget=60, site_cap=0.5)
    first = select_for_relabeling(store, DAY, config)
    assert len(first.picks) == 60 and first.already_picked == 0
    again = select_for_relabeling(store, DAY, config)
    assert len(again.picks) == 0 and again.already_picked == 60
    rows = queue(store)
    assert len(rows) == 60 and rows["study_id"].is_unique
    assert rows["site"].value_counts().max() <= 30
    assert set(rows["status"]) == {"queued"}
    assert set(rows["project"]) <= {"error_review", "relabeling", "clinical_qa"}
    errors = rows[rows["strategy"] == "error"]
    assert len(errors) == first.candidates["error"] > 0  # every overturned decision in the lookback
    assert (errors["project"] == "error_review").all()
    for r in rows.itertuples():
        assert r.strategy in json.loads(r.reasons)
    # the next day: nothing picked before is picked again
    nxt = select_for_relabeling(store, DAY + timedelta(days=1), config)
    assert set(nxt.picks["study_id"]).isdisjoint(rows["study_id"])


def test_a_drifting_site_and_labeled_or_held_out_studies(store):
    sync_alerts(
        store,
        [Finding(Kind.DRIFT, "riverside", "distribution", "covariate_shift", 3.0, 1.0, Severity.WARNING, "moved")],
        window_start=datetime(2026, 3, 10, tzinfo=UTC),
        window_end=datetime(2026, 3, 11, tzinfo=UTC),
        checked=[(str(Kind.DRIFT), "riverside")],
    )
    with store.connect() as conn:
        ids = [r[0] for r in conn.execute(sa.text("SELECT study_id FROM inference_logs ORDER BY study_id")).all()]
    some, held = ids[:40], ids[40::3]  # labeled already; held out of training by a frozen test set
    with store.begin() as conn:
        conn.execute(
            labels.insert(),
            [
                {
                    "annotation_id": i,
                    "task_id": i,
                    "project": "relabeling",
                    "study_id": s,
                    "annotator": "bot@pipeline.test",
                    "abnormal": False,
                    "findings": "",
                    "unusable": False,
                    "unusable_reasons": "",
                    "created_at": datetime(2026, 3, 9, tzinfo=UTC),
                    "updated_at": datetime(2026, 3, 9, tzinfo=UTC),
                    "synced_at": datetime(2026, 3, 9, tzinfo=UTC),
                }
                for i, s in enumerate(some)
            ],
        )
        conn.execute(
            test_sets.insert(),
            {
                "test_set_hash": "a" * 32,
                "name": "regression",
                "created_at": datetime(2026, 3, 9, tzinfo=UTC),
                "params": "{}",
                "n_items": len(held),
                "n_abnormal": 0,
            },
        )
        conn.execute(
            test_set_items.insert(),
            [
                {
                    "test_set_hash": "a" * 32,
                    "study_id": s,
                    "dicom_uri": f"file:///{s}.dcm",
                    "label": 0,
                    "site": "st-anna",
                    "patient_key": s,
                    "reason": "sample",
                }
                for s in held
            ],
        )
    picks = select_for_relabeling(store, DAY, SelectionConfig(budget=80, site_cap=0.5)).picks
    assert len(picks) == 80
    assert set(picks["study_id"]).isdisjoint(some) and set(picks["study_id"]).isdisjoint(held)
    drift = picks[picks["strategy"] == "drift"]
    assert len(drift) > 0 and set(drift["site"]) == {"riverside"}


def test_cli_select_writes_json(store, pg_url, monkeypatch, tmp_path):
    monkeypatch.setenv("PIPELINE_DB_URL", pg_url)
    get_settings.cache_clear()
    try:
        out = tmp_path / "picks.json"
        result = CliRunner().invoke(main, ["select", "--date", DAY.isoformat(), "--budget", "25", "--json", str(out)])
        assert result.exit_code == 0, result.output
        assert "picked 25" in result.output
        payload = json.loads(out.read_text())
        assert payload["picked"] == 25 and len(payload["studies"]) == 25
        bad = CliRunner().invoke(main, ["select", "--date", "2026-13-01"])
        assert bad.exit_code != 0 and "2026-13-01" in bad.output
    finally:
        get_settings.cache_clear()
    assert np.isclose(len(queue(store)), 25)
