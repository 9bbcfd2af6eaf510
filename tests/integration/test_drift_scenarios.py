"""Every shipped scenario at 200 studies per site per day, monitored day by day on PostgreSQL.

The model is the tests' small normal filter (``tests.worlds.trained_model``, trained once per run); the stable
world is simulated once per run, by the first worker to ask, into a template database that every test copies
(``tests.harness.shared``), and each scenario is a copy of it with its changed site-days replaced
(``tests/worlds.py``). Each test of this file is a unit of its own for ``make test``'s workers
(``SPREAD`` in ``tests/conftest.py``). Each injected event must raise an alert of the right kind at the right
site, naming a feature that explains it, within a day of its onset (a gradual drift: before it reaches its full
size), and nothing else may alarm meanwhile; the stable world must raise no alert on any day up to the last
incident's. The test watches each scenario's days around its incidents (``watched_days``: the days before them
are simulated, as the monitor's reference needs them); ``make bench-drift`` plays every scenario's 60 days and
counts false alarms over all of them.

Why 200 studies per site per day, and not fewer: the weakest things asked for are counts that halving would put
within reach of noise. Riverside's label-free AUROC estimate must come within 0.05 of the truth over its first
three weeks: at 5% prevalence that is about 200 abnormal studies among 4,000, a standard error of about 0.02 at
its AUROC near 0.5, so 0.05 is 2.4 standard errors; at 100 a day it would be 1.7 (a failure in about one run in
eleven from chance alone). A gradual drift must be caught on its first days, at 1/14 of its full size, and the
tag errors that mark North General's drift include a wrong body part in 5% of studies: 10 studies a day at 200,
5 at 100, against reference windows that hold none. Fewer studies would also widen the thresholds the monitor
calibrates on the stable days, so the stable world's silence would then prove less.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from pipeline.store import make_engine
from tests.harness.postgres import drop_database
from tests.harness.shared import copy_database, shared_database
from tests.worlds import (
    INCIDENTS,
    build_world,
    judge,
    monitor_days,
    scenario,
    trained_service,
    watched_days,
)

pytestmark = pytest.mark.integration

FIRST_DAY = 5  # before it no site has the reference days it needs; the monitor says so rather than guess
WATCHED = {name: watched_days(name, FIRST_DAY) for name in INCIDENTS}
# the new site's label-free estimate is checked against the truth over its first three weeks of outcomes
WATCHED["new_hospital"] = range(WATCHED["new_hospital"].start, 31)


@pytest.fixture(scope="module")
def stable_world(pg_admin_url: str, shared: Path, normal_filter_cache: Path) -> tuple[str, object]:
    """The stable world's template database, simulated once per run by the first worker to ask; the service."""
    service = trained_service(normal_filter_cache)

    def build(url: str) -> None:
        build_world(scenario("stable"), url, shared / "stable-world", service, until=WATCHED["stable"].stop)

    return shared_database(pg_admin_url, "stable_world", build, shared), service


@pytest.fixture
def world_url(stable_world, pg_admin_url: str) -> Iterator[str]:
    url, _ = stable_world
    copy = copy_database(pg_admin_url, url, f"pipeline_test_world_{uuid.uuid4().hex[:10]}")
    try:
        yield copy
    finally:
        drop_database(pg_admin_url, copy)


@pytest.mark.parametrize("name", list(INCIDENTS))
def test_each_incident_is_caught_within_a_day_and_nothing_else_alarms(name, stable_world, world_url, tmp_path: Path):
    _, service = stable_world
    world, days = scenario(name), WATCHED[name]
    if name != "stable":
        build_world(world, world_url, tmp_path, service, base=scenario("stable"), until=days.stop)  # type: ignore[arg-type]
    raised = monitor_days(world_url, world, days)
    verdict = judge(name, raised, days.stop - 1)

    missed = [i for i, day in verdict.detected.items() if day is None]
    assert not missed, (missed, [(r.day, r.kind, r.site, r.message) for r in raised])
    for incident, day in verdict.detected.items():
        assert day is not None and incident.onset <= day <= incident.deadline
    drift_or_performance = [r for r in verdict.false_alarms if r.kind in ("drift", "performance")]
    assert drift_or_performance == [], [(r.day, r.kind, r.site, r.message) for r in drift_or_performance]
    if name == "prevalence_drop":
        first = next(r for r in raised if r.kind == "drift" and r.site == "st-anna")
        assert first.statistic == "prevalence_shift"
    if name == "stable":
        assert raised == []
        # the label-free estimate sits beside the AUROC from radiologists' outcomes, every day
        engine = make_engine(world_url)
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT f.value, e.value FROM monitor_metrics f JOIN monitor_metrics e USING (window_start, site) "
                    "WHERE f.metric = 'performance.feedback_auroc' AND e.metric = 'performance.expected_auroc' "
                    "AND f.site = '*'"
                )
            ).all()
        engine.dispose()
        assert len(rows) >= len(days) - 3
        assert all(abs(feedback - expected) < 0.1 for feedback, expected in rows)
    if name == "new_hospital":
        # The unseen scanner: the model is confidently wrong there. The label-free estimate cannot see it;
        # no estimate is given until outcomes come back, then the recalibrated one follows the truth.
        engine = make_engine(world_url)
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT x.window_start, e.value, x.value FROM monitor_metrics x LEFT JOIN monitor_metrics e "
                    "ON e.window_start = x.window_start AND e.site = x.site AND e.metric = 'performance.estimated_auroc' "
                    "WHERE x.site = 'riverside' AND x.metric = 'performance.expected_auroc' ORDER BY 1"
                )
            ).all()
            truth = conn.execute(
                sa.text(
                    "SELECT l.prob_abnormal, g.abnormal FROM inference_logs l JOIN ground_truth g USING (study_id) "
                    "WHERE l.site = 'riverside' AND l.status = 'ok'"
                )
            ).all()
        engine.dispose()
        from sklearn.metrics import roc_auc_score

        true_auroc = roc_auc_score([bool(a) for _, a in truth], [float(p) for p, _ in truth])
        estimated = [e for _, e, _ in rows if e is not None]
        expected = [x for _, _, x in rows]
        assert rows[0][1] is None  # day 10: no outcome yet, no estimate
        assert len(estimated) >= len(rows) - 2
        assert abs(sum(expected) / len(expected) - true_auroc) > 0.2  # what the raw estimate would have said
        assert abs(sum(estimated) / len(estimated) - true_auroc) < 0.05
