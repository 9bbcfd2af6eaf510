"""Data quality of a window with Great Expectations on PostgreSQL: bad input gives findings, never a crash."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from pipeline.monitor import run_expectations, run_monitor
from pipeline.reports import write_run_report
from pipeline.store import ingest, make_engine, upgrade
from tests.factories import inference_log_rows, study_rows

pytestmark = pytest.mark.integration

GX_PROJECT = Path(__file__).resolve().parents[2] / "great_expectations"
HOUR = datetime(2026, 3, 2, 10, tzinfo=UTC)


def load(pg_url: str, logs: pd.DataFrame, tags: pd.DataFrame):
    engine = make_engine(pg_url)
    upgrade(engine)
    assert ingest(engine, "inference_logs", logs, source="t").rejected == 0
    assert ingest(engine, "studies", tags, source="t").rejected == 0
    return engine


def window(pg_url: str, tmp_path: Path, break_tags=None, thin_site: bool = False):
    logs = inference_log_rows(300, seed=5, start=HOUR, embedding_dim=64)
    if thin_site:
        logs.loc[logs.index[:3], "site"] = "tiny-clinic"
    tags = study_rows(logs, seed=5)
    if break_tags is not None:
        break_tags(tags)
    engine = load(pg_url, logs, tags)
    result = run_monitor(
        engine,
        HOUR,
        HOUR + timedelta(hours=1),
        gx_project_dir=GX_PROJECT,
        gx_data_dir=tmp_path / "gx",
        report_path=tmp_path / "report.html",
    )
    write_run_report(engine, result)
    return engine, result


def quality_keys(result) -> set[tuple[str, str, str]]:
    return {(f.site, f.feature, f.statistic) for f in result.findings if f.kind == "quality"}


def test_clean_window_meets_every_expectation_and_keeps_results_and_data_docs(pg_url, tmp_path):
    engine, result = window(pg_url, tmp_path)
    assert result.quality is not None
    assert result.quality.failed() == []
    assert quality_keys(result) == set()
    assert {o.suite for o in result.quality.outcomes} == {"inference_logs", "dicom_tags"}
    assert result.quality.rows["dicom_tags"] == result.quality.rows["inference_logs"]
    assert sum(result.quality.rows["inference_logs"].values()) == 300
    # stored validation results and the Data Docs pages of this window
    stored = sorted((tmp_path / "gx" / "validations").rglob("*.json"))
    assert [p.name for p in stored] == ["dicom_tags.json", "inference_logs.json"]
    assert json.loads(stored[0].read_text())["success"] is True
    assert result.quality.data_docs == tmp_path / "gx" / "data_docs" / "index.html"
    assert result.quality.data_docs.is_file()
    # the window's views are gone again
    with engine.connect() as conn:
        views = conn.execute(sa.text("SELECT count(*) FROM pg_views WHERE viewname LIKE 'gx_window_%'")).scalar()
    assert views == 0


def _micrometres(tags: pd.DataFrame) -> None:
    tags.loc[tags["site"] == "north-general", "pixel_spacing_mm"] = 150.0  # written in µm: a broken column


def _no_view_position(tags: pd.DataFrame) -> None:
    tags.loc[tags["site"] == "st-anna", "view_position"] = None  # an all-null tag


def _mr_modality(tags: pd.DataFrame) -> None:
    tags.loc[tags["site"] == "st-anna", "modality"] = "MR"  # an unseen category


@pytest.mark.parametrize(
    ("breakage", "expected"),
    [
        (
            _micrometres,
            {
                ("north-general", "pixel_spacing_mm", "range_violation_rate"),
                ("north-general", "field_of_view_mm", "range_violation_rate"),
            },
        ),
        (_no_view_position, {("st-anna", "view_position", "not_null_violation_rate")}),
        (_mr_modality, {("st-anna", "modality", "in_set_violation_rate")}),
    ],
    ids=["broken-column", "all-null-tag", "unseen-category"],
)
def test_bad_input_gives_a_quality_finding_for_its_site(pg_url, tmp_path, breakage, expected):
    _, result = window(pg_url, tmp_path, breakage)
    assert quality_keys(result) == expected
    finding = next(f for f in result.findings if f.kind == "quality")
    assert finding.severity == "critical"  # every study of the site breaks it
    assert finding.value == pytest.approx(1.0)
    failed = {o.key: o for o in result.quality.failed()}
    assert all(o.by_site == {finding.site: o.unexpected} for o in failed.values())
    assert all(o.examples and o.examples[0]["site"] == finding.site for o in failed.values())
    report = (tmp_path / "report.html").read_text()
    assert "Data quality" in report
    assert next(iter(failed.values())).description in report


def test_a_site_with_three_studies_is_insufficient_data_not_an_alert(pg_url, tmp_path):
    def break_tiny(tags: pd.DataFrame) -> None:
        tags.loc[tags["site"] == "tiny-clinic", "modality"] = "MR"

    _, result = window(pg_url, tmp_path, break_tiny, thin_site=True)
    assert "tiny-clinic" in result.insufficient
    assert quality_keys(result) == set()
    assert {o.key: o.by_site for o in result.quality.failed()} == {"modality.in_set": {"tiny-clinic": 3}}


def test_an_empty_window_is_checked_without_findings(pg_url, tmp_path):
    engine = make_engine(pg_url)
    upgrade(engine)
    run = run_expectations(engine, HOUR, HOUR + timedelta(hours=1), project_dir=GX_PROJECT, data_dir=tmp_path)
    assert run.rows == {"inference_logs": {}, "dicom_tags": {}}
    assert run.failed() == []


def test_rerunning_a_window_with_quality_findings_leaves_the_same_state(pg_url, tmp_path):
    engine, _ = window(pg_url, tmp_path, _no_view_position)
    state = (
        "SELECT site, metric, value FROM monitor_metrics ORDER BY 1, 2",
        "SELECT alert_id, kind, site, feature, statistic, value, status, first_seen, last_seen FROM alerts ORDER BY 1",
    )
    with engine.connect() as conn:
        before = [conn.execute(sa.text(q)).all() for q in state]
    run_monitor(engine, HOUR, HOUR + timedelta(hours=1), gx_project_dir=GX_PROJECT, gx_data_dir=tmp_path / "gx")
    with engine.connect() as conn:
        assert [conn.execute(sa.text(q)).all() for q in state] == before
    assert any(metric == "quality.dicom_tags.view_position.not_null.rate" for _, metric, _ in before[0])


def test_cli_monitor_writes_alerts_metrics_and_failed_expectations_as_json(pg_url, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from pipeline.cli import main
    from pipeline.config import get_settings

    logs = inference_log_rows(300, seed=6, start=HOUR, embedding_dim=64)
    tags = study_rows(logs, seed=6)
    _mr_modality(tags)
    load(pg_url, logs, tags)
    monkeypatch.setenv("PIPELINE_DB_URL", pg_url)
    monkeypatch.setenv("PIPELINE_STORAGE_ROOT", str(tmp_path))
    monkeypatch.setenv("PIPELINE_GX_PROJECT_DIR", str(GX_PROJECT))
    get_settings.cache_clear()
    try:
        out = tmp_path / "monitor.json"
        result = CliRunner().invoke(
            main,
            ["monitor", "--start", "2026-03-02T10:00:00", "--end", "2026-03-02T11:00:00", "--json", str(out)],
        )
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert "expectation failed [dicom_tags] modality is one of DX, CR" in result.output
    payload = json.loads(out.read_text())
    [alert] = payload["alerts"]
    assert {k: alert[k] for k in ("kind", "site", "feature", "severity")} == {
        "kind": "quality",
        "site": "st-anna",
        "feature": "modality",
        "severity": "critical",
    }
    assert alert["first_seen"] == "2026-03-02T10:00:00+00:00"
    [failed] = payload["failed_expectations"]
    assert failed["expectation"] == "modality.in_set" and failed["by_site"] == {"st-anna": failed["unexpected"]}
    assert failed["examples"][0]["value"] == "MR"
    assert Path(payload["data_docs"]).is_file() and Path(payload["report"]).is_file()
    assert payload["metrics"]["st-anna"]["quality.dicom_tags.modality.in_set.rate"] == 1.0
