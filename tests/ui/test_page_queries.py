"""The monitoring page's query layer and rendering on a small SQLite store (no browser, no service)."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from pipeline.store import make_engine, upgrade
from pipeline.web import (
    PageConfig,
    create_app,
    drift_scores,
    gather,
    headline_series,
    open_alerts,
    period_of,
    read_registry,
    relabel_queue_counts,
    render_page,
    site_summaries,
)
from tests.ui.page_store import DAY0, fill_store

UNREACHABLE_MLFLOW = "http://127.0.0.1:9"  # the discard port: nothing answers there


@pytest.fixture
def engine(tmp_path: Path) -> sa.Engine:
    """A SQLite store with 3 daily windows at two sites, one drifting feature, two open alerts, picks and events."""
    engine = make_engine(f"sqlite:///{tmp_path / 'store.db'}")
    upgrade(engine)
    fill_store(engine)
    return engine


def test_the_period_ends_with_the_newest_window_and_starts_no_earlier_than_the_first(engine) -> None:
    period = period_of(engine, days=2)
    assert period is not None
    assert (period.start, period.end) == (DAY0 + timedelta(days=1), DAY0 + timedelta(days=3))
    longer = period_of(engine, days=14)
    assert longer is not None and longer.start == DAY0


def test_an_empty_store_has_no_period_and_renders_a_page(tmp_path: Path) -> None:
    empty = make_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    upgrade(empty)
    assert period_of(empty) is None
    registry = read_registry(UNREACHABLE_MLFLOW, "cxr", timeout_s=0.5)
    page = render_page(gather(empty, store="sqlite://", registry=registry, model_name="cxr"))
    assert "No monitoring run has written metrics yet" in page and "No open alert." in page


def test_headline_series_reads_the_all_versions_rows_per_site_and_window(engine) -> None:
    period = period_of(engine, days=14)
    assert period is not None
    points = headline_series(engine, period, site="riverside")
    assert [round(p.share_filtered_normal or 0, 2) for p in points] == [0.7, 0.5, 0.3]
    assert [p.volume for p in points] == [100.0, 101.0, 102.0]
    assert all(p.window_start.tzinfo is not None for p in points)
    assert {p.site for p in headline_series(engine, period)} == {"st-anna", "riverside", "*"}


def test_drift_scores_are_distance_over_threshold_with_the_days_largest(engine) -> None:
    period = period_of(engine, days=14)
    assert period is not None
    cells = {(c.site, c.day, c.feature): c for c in drift_scores(engine, period)}
    assert len(cells) == 2 * 3 * 2  # sites x days x features; features_drifted is no feature
    moved = cells[("riverside", date(2026, 3, 3), "img_mean")]
    assert moved.score == pytest.approx(2.5) and moved.distance == pytest.approx(0.5)
    assert cells[("st-anna", date(2026, 3, 3), "img_mean")].score == pytest.approx(0.5)


def test_open_alerts_come_critical_first_and_filter_by_site(engine) -> None:
    assert [(a.site, a.feature) for a in open_alerts(engine)] == [("st-anna", "cuda_oom"), ("riverside", "img_mean")]
    assert [a.feature for a in open_alerts(engine, "riverside")] == ["img_mean"]


def test_relabel_queue_and_site_summaries(engine) -> None:
    counts = {(c.site, c.status, c.strategy): c.studies for c in relabel_queue_counts(engine)}
    assert counts == {
        ("riverside", "labeled", "uncertain"): 1,
        ("riverside", "pushed", "drift"): 1,
        ("riverside", "queued", "drift"): 1,
        ("st-anna", "queued", "error"): 1,
    }
    summaries = {s.site: s for s in site_summaries(engine, period_of(engine))}
    assert set(summaries) == {"riverside", "st-anna"}
    assert summaries["riverside"].waiting_for_label == 2 and summaries["riverside"].open_alerts == 1
    assert summaries["st-anna"].critical_alerts == 1
    assert summaries["riverside"].share_filtered_normal == pytest.approx(0.3)
    [one] = site_summaries(engine, period_of(engine), site="riverside")
    assert one == summaries["riverside"]
    assert site_summaries(engine, period_of(engine), site="nowhere") == []


# Starlette deprecates httpx in its TestClient; the warning is raised on import, hence the import in the test.
@pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient` is deprecated")
def test_the_page_and_the_json_render_with_mlflow_unreachable(engine) -> None:
    from fastapi.testclient import TestClient

    url = str(engine.url)
    config = PageConfig(
        db_url=url, mlflow_tracking_uri=UNREACHABLE_MLFLOW, model_name="cxr", registry_timeout_s=0.5, anonymous=True
    )
    app = create_app(config)
    with TestClient(app) as client:
        page = client.get("/")
        assert page.status_code == 200
        html = page.text
        assert 'rel="icon" href="data:,"' in html
        assert "The model registry is unreachable" in html
        assert html.count("data:image/png;base64,") == 1 + 2 * 2  # all sites' headline; per site headline + heatmap
        for text in ("img_mean", "cuda_oom", "riverside", "st-anna", "validation-suite", "Relabel queue"):
            assert text in html
        assert "http://" not in html  # nothing fetched from elsewhere, and MLflow's address is not shown
        assert "store SQLite" in html and url not in html
        one = client.get("/", params={"site": "riverside"}).text
        assert "cuda_oom" not in one and "img_mean" in one
        assert [a["feature"] for a in client.get("/api/alerts").json()] == ["cuda_oom", "img_mean"]
        assert [s["site"] for s in client.get("/api/sites").json()] == ["riverside", "st-anna"]
        assert [s["site"] for s in client.get("/api/sites", params={"site": "st-anna"}).json()] == ["st-anna"]
        assert len(client.get("/api/drift", params={"site": "riverside", "days": 1}).json()) == 2
        assert len(client.get("/api/headline", params={"site": "st-anna"}).json()) == 3
        assert sum(c["studies"] for c in client.get("/api/relabel-queue").json()) == 4
        models = client.get("/api/models").json()
        assert models["available"] is False and "the model registry is unavailable" in models["notice"]
        assert [e["action"] for e in models["events"]] == ["validated"]
        assert client.get("/api/drift", params={"days": 0}).status_code == 422
