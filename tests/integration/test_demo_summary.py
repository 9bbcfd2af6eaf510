"""What `make demo` reports, computed from a real store: the figures equal the same figures taken directly."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import mlflow
import pytest
import sqlalchemy as sa
from sklearn.metrics import roc_auc_score

from pipeline.config import get_settings
from pipeline.demo.loop import DayRecord, DemoResult, done_when, served, summarise, write_report
from pipeline.simulate.scenario import load_scenario
from pipeline.store import make_engine
from tests.harness import REPO_ROOT
from tests.worlds import small_world

pytestmark = pytest.mark.integration

NEW = "lakeside"  # stands in for the hospital that joins on day 1


def test_the_summary_and_report_match_the_store(pg_url: str, mlflow_server: str, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    small_world(pg_url, tmp_path / "storage", per_site=30, days=(0, 1, 2))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    monkeypatch.setenv("PIPELINE_MODEL_NAME", "demo-summary-test")
    get_settings.cache_clear()
    mlflow.set_tracking_uri(mlflow_server)
    engine = make_engine(pg_url)
    scenario = load_scenario(REPO_ROOT / "scenarios" / "stable.yaml")
    start = datetime.combine(scenario.start, datetime.min.time(), tzinfo=UTC)
    with engine.begin() as conn:  # the drift alert the monitor would have opened in day 1's window
        conn.execute(
            sa.text(
                "INSERT INTO alerts (alert_id, kind, site, feature, statistic, severity, status, first_seen, last_seen,"
                " message) VALUES ('a1', 'drift', :site, 'img_mean', 'wasserstein', 'warning', 'open', :t, :t, 'm')"
            ),
            {"site": NEW, "t": start + timedelta(days=1)},
        )
    days = [
        DayRecord(day=d, date=(scenario.start + timedelta(days=d)).isoformat(), studies=0, champion="1", seconds=1.0)
        for d in range(3)
    ]
    days[1].alerts_opened = [NEW]
    try:
        summary, per_day = summarise(engine, scenario, NEW, 1, days, "1", [])
    finally:
        get_settings.cache_clear()

    frame = served(engine)
    assert len(frame) == summary["studies"] > 0
    stable = frame[frame["site"] != NEW]
    assert summary["auroc"]["stable_before"] == pytest.approx(
        roc_auc_score(stable["abnormal"], stable["prob_abnormal"])
    )
    new_site = frame[(frame["site"] == NEW) & (frame["day"] >= 1)]
    assert summary["auroc"]["new_before"] == pytest.approx(
        roc_auc_score(new_site["abnormal"], new_site["prob_abnormal"])
    )
    positives = stable[stable["abnormal"]]
    assert summary["sensitivity"]["stable_by_week"][0] == pytest.approx(positives["referred"].mean())
    assert summary["detection_delay_days"] == 0
    assert summary["models"] == summary["models"] | {
        "promoted": 0,
        "trained": 0,
        "promoted_on_day": None,
        "champion": "1",
        "served_by": ["1"],
    }
    assert set(per_day["group"]) == {"stable", "new"} and len(per_day) == 6

    summary["seconds"] = 600.0
    checks = summary["done_when"] = done_when(summary)
    assert checks["drift alert for the new site within 1 simulated day"] and checks["within 20 minutes"]
    assert not checks["a promoted new champion"]
    report = write_report(tmp_path / "report.html", summary, per_day, days, {"Airflow": "http://127.0.0.1:1"})
    html = report.read_text()
    assert html.count("data:image/png;base64,") == 3 and "&#9744; a promoted new champion" in html
    table = DemoResult(summary, days, per_day, report, {}).table()
    assert (
        "version 1 (1)" in table and re.search(r"served from\s+never", table) and "[ ] a promoted new champion" in table
    )
