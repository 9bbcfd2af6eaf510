"""Monitoring day by day on shipped scenarios, on PostgreSQL: the right technical alert on the day a problem starts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
import torch

from pipeline.inference import InferenceService
from pipeline.model import NetConfig, NormalFilterNet
from pipeline.monitor import EmptyWindow, run_monitor
from pipeline.registry import LoadedModel
from pipeline.reports import write_run_report
from pipeline.simulate.run import simulate
from pipeline.simulate.scenario import load_scenario, with_volume
from pipeline.store import ingest, make_engine, upgrade

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ROOT / "scenarios"
GX_PROJECT = ROOT / "great_expectations"
METRICS = (
    "SELECT window_start, window_end, site, model_version, metric, value FROM monitor_metrics ORDER BY 1, 2, 3, 4, 5"
)


@pytest.fixture(scope="module")
def service() -> InferenceService:
    torch.manual_seed(0)
    model = NormalFilterNet(NetConfig(init_features=8, growth_rate=4, block_config=(2, 2)))
    return InferenceService(LoadedModel(model, "m", "1", threshold=0.5, image_size=32), key="k", mc_samples=0)


def simulated(name: str, days: range, pg_url: str, tmp_path: Path, service: InferenceService, volume: int = 60):
    scenario = with_volume(load_scenario(SCENARIOS / f"{name}.yaml"), per_site=volume)
    scenario = scenario.model_copy(update={"image_size": 32})
    engine = make_engine(pg_url)
    upgrade(engine)
    simulate(
        scenario,
        engine=engine,
        storage_root=tmp_path,
        key="k",
        days=days,
        service_for=lambda _: service,
        progress=False,
    )
    return scenario, engine


def day_window(scenario, day: int) -> tuple[datetime, datetime]:
    start = datetime.combine(scenario.start + timedelta(days=day), datetime.min.time(), tzinfo=UTC)
    return start, start + timedelta(days=1)


def checked(engine, scenario, day: int, tmp_path: Path, **kwargs):
    """Run the whole monitor (quality included) on one simulated day."""
    return run_monitor(
        engine, *day_window(scenario, day), gx_project_dir=GX_PROJECT, gx_data_dir=tmp_path / "gx", **kwargs
    )


def alert_keys(result) -> set[tuple[str, str, str]]:
    return {(str(f.kind), f.site, f.feature) for f in result.findings}


def test_silent_site_and_volume_drop(pg_url, tmp_path, service):
    scenario, engine = simulated("site_outage", range(13, 23), pg_url, tmp_path, service)
    by_day = {day: run_monitor(engine, *day_window(scenario, day)) for day in range(18, 23)}
    assert alert_keys(by_day[18]) == alert_keys(by_day[19]) == set()
    assert alert_keys(by_day[20]) == {("technical", "lakeside", "volume")}
    assert by_day[20].findings[0].severity == "critical"
    assert ("technical", "lakeside", "volume") in alert_keys(by_day[21])
    assert alert_keys(by_day[22]) == set()
    assert [c.event for c in by_day[22].changes] == ["closed"]

    # re-running a window leaves the same metrics and alerts
    with engine.connect() as conn:
        before = conn.execute(sa.text(METRICS)).all()
        alerts_before = conn.execute(sa.text("SELECT alert_id, status, first_seen, last_seen FROM alerts")).all()
    run_monitor(engine, *day_window(scenario, 21))
    with engine.connect() as conn:
        assert conn.execute(sa.text(METRICS)).all() == before
        assert (
            conn.execute(sa.text("SELECT alert_id, status, first_seen, last_seen FROM alerts")).all() == alerts_before
        )


def test_volume_drop_alerts_on_the_day_it_starts(pg_url, tmp_path, service):
    # 150 a day: at 60 a day, Poisson noise alone can hold a 40% site above the 50% line
    scenario, engine = simulated("site_outage", range(29, 37), pg_url, tmp_path, service, volume=150)
    by_day = {day: run_monitor(engine, *day_window(scenario, day)) for day in range(33, 37)}
    assert alert_keys(by_day[33]) == alert_keys(by_day[34]) == set()
    assert alert_keys(by_day[35]) == {("technical", "north-general", "volume")}
    [finding] = by_day[35].findings
    assert finding.severity == "warning" and finding.value == pytest.approx(0.4, abs=0.15)


def test_error_burst_alerts_on_the_day_it_starts(pg_url, tmp_path, service):
    scenario, engine = simulated("error_burst", range(18, 27), pg_url, tmp_path, service)
    report = tmp_path / "reports" / "day25.html"
    by_day = {
        day: run_monitor(engine, *day_window(scenario, day), report_path=report if day == 25 else None)
        for day in range(23, 27)
    }
    write_run_report(engine, by_day[25])
    assert alert_keys(by_day[23]) == alert_keys(by_day[24]) == set()
    assert alert_keys(by_day[25]) == {("technical", "st-anna", "cuda_oom")}
    assert ("technical", "st-anna", "cuda_oom") in alert_keys(by_day[26])  # day 2 of the burst: still open
    payload = by_day[25].as_json(engine)
    [alert] = payload["alerts"]
    assert {k: alert[k] for k in ("kind", "site", "feature")} == {
        "kind": "technical",
        "site": "st-anna",
        "feature": "cuda_oom",
    }
    assert alert["first_seen"].startswith("2026-01-30") and alert["severity"] in ("warning", "critical")
    assert payload["metrics"]["st-anna"]["error_rate.cuda_oom"] > 0.05
    assert alert["report_path"] == str(report)
    page = report.read_text()
    assert "Monitoring: 2026-01-30 00:00 to 2026-01-31 00:00 UTC" in page
    # headline metric, volume, failures, latency; the drift heatmap
    assert page.count("data:image/png;base64,") == 5 and "Drift and expected performance" in page
    assert "cuda_oom" in page and "st-anna" in page and "1 open alert(s)" in page


def test_tag_error_rise_alerts_on_the_day_it_starts(pg_url, tmp_path, service):
    scenario, engine = simulated("tag_errors", range(11, 20), pg_url, tmp_path, service)
    by_day = {day: checked(engine, scenario, day, tmp_path) for day in range(14, 20)}
    assert {day: alert_keys(by_day[day]) for day in range(14, 18)} == {day: set() for day in range(14, 18)}
    on_day = alert_keys(by_day[18])
    assert {("quality", "north-general", "patient_age_years"), ("quality", "north-general", "view_position")} <= on_day
    assert {site for _, site, _ in on_day} == {"north-general"}
    age = next(f for f in by_day[18].findings if f.feature == "patient_age_years")
    assert age.statistic == "not_null_violation_rate" and age.value == pytest.approx(0.3, abs=0.15)
    # the next day it is the same alert, still open
    assert {f.alert_id for f in by_day[19].findings} >= {age.alert_id}, [
        (f.feature, f.message) for f in by_day[19].findings
    ]
    assert "opened" not in {c.event for c in by_day[19].changes if c.alert_id == age.alert_id}


def test_stable_hospitals_raise_no_alert_in_60_days(pg_url, tmp_path, service):
    scenario, engine = simulated("stable", range(60), pg_url, tmp_path, service, volume=40)
    alerts = {day: alert_keys(checked(engine, scenario, day, tmp_path)) for day in range(60)}
    assert {day: keys for day, keys in alerts.items() if keys} == {}
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM alerts")).scalar() == 0
        windows = conn.execute(sa.text("SELECT count(DISTINCT window_start) FROM monitor_metrics")).scalar()
    assert windows == 60


def test_an_empty_window_is_a_clear_error(pg_url):
    engine = make_engine(pg_url)
    upgrade(engine)
    moment = datetime(2026, 1, 1, tzinfo=UTC)
    with pytest.raises(EmptyWindow, match="is not after its start"):
        run_monitor(engine, moment, moment)
    result = run_monitor(engine, moment, moment + timedelta(hours=1))  # no data at all: nothing to judge, no crash
    assert result.studies == 0 and result.findings == ()


def test_an_open_alert_period_is_left_out_of_the_error_rate_baseline(pg_url):
    from pipeline.alerts import Finding, Kind, Severity, sync_alerts
    from pipeline.monitor.rules import RateRule
    from pipeline.monitor.run import _baselines
    from tests.factories import inference_log_rows

    engine = make_engine(pg_url)
    upgrade(engine)
    day0 = datetime(2026, 3, 1, tzinfo=UTC)
    for day in range(7):
        rows = inference_log_rows(200, seed=day, start=day0 + timedelta(days=day))
        if day == 6:  # the incident: 40 timeouts at St. Anna
            failed = rows.index[rows["site"] == "st-anna"][:40]
            rows.loc[failed, ["status", "error_type"]] = ["error", "timeout"]
            rows.loc[failed, ["prob_abnormal", "decision", "entropy", "epistemic_var", "embedding"]] = None
        ingest(engine, "inference_logs", rows, source=f"day{day}")
    start = day0 + timedelta(days=7)
    before = _baselines(engine, start, start + timedelta(days=1), 4, RateRule())[1]
    assert before[("st-anna", "timeout")] > 0.01  # the incident's day counts
    finding = Finding(Kind.TECHNICAL, "st-anna", "timeout", "error_rate", 0.3, 0.02, Severity.CRITICAL, "timeouts")
    sync_alerts(engine, [finding], window_start=day0 + timedelta(days=6), window_end=start, checked=[])
    after = _baselines(engine, start, start + timedelta(days=1), 4, RateRule())[1]
    assert after[("st-anna", "timeout")] == 0.0  # six clean days: the incident is not the new normal
    assert after[("north-general", "timeout")] == before[("north-general", "timeout")] == 0.0
