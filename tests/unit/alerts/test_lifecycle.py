"""Alert lifecycle on a real store, and the events Sentry receives (captured by a test transport)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sentry_sdk
from sentry_sdk.transport import Transport

from pipeline.alerts import Finding, Kind, Severity, init_sentry, open_alerts, send_alert, sync_alerts
from pipeline.store import make_engine, upgrade

T0 = datetime(2026, 2, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)


class CapturingTransport(Transport):
    """Keeps every event sentry-sdk would send, so tests can assert on them (no Sentry server runs here)."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[dict] = []

    def capture_envelope(self, envelope) -> None:
        for item in envelope.items:
            if item.type == "event":
                self.events.append(item.payload.json)


@pytest.fixture
def sentry_events():
    transport = CapturingTransport()
    assert init_sentry("https://public@sentry.invalid/1", environment="test", transport=transport)
    yield transport.events
    sentry_sdk.get_client().close()
    sentry_sdk.get_global_scope().set_client(None)  # back to the non-recording client


@pytest.fixture
def engine(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'store.db'}")
    upgrade(engine)
    return engine


def oom(rate: float, severity: Severity = Severity.WARNING) -> Finding:
    return Finding(Kind.TECHNICAL, "st-anna", "cuda_oom", "error_rate", rate, 0.02, severity, f"CUDA OOM on {rate:.0%}")


def sync(engine, findings, hour: int, checked=(("technical", "st-anna"),)):
    start = T0 + hour * HOUR
    return sync_alerts(
        engine, findings, window_start=start, window_end=start + HOUR, checked=checked, report_path=f"r{hour}.html"
    )


def test_an_ongoing_problem_is_one_alert_that_updates_then_closes(engine, sentry_events):
    assert [c.event for c in sync(engine, [oom(0.1)], 0)] == ["opened"]
    assert [c.event for c in sync(engine, [oom(0.2)], 1)] == ["updated"]
    [alert] = open_alerts(engine)
    assert (alert["value"], alert["report_path"]) == (0.2, "r1.html")
    assert alert["first_seen"].replace(tzinfo=UTC) == T0 and alert["last_seen"].replace(tzinfo=UTC) == T0 + 2 * HOUR
    assert [c.event for c in sync(engine, [], 2)] == ["closed"]
    assert open_alerts(engine) == []
    assert len(sentry_events) == 1  # opened only; updates do not page again


def test_rerunning_a_window_changes_nothing_and_sends_nothing(engine, sentry_events):
    sync(engine, [oom(0.1)], 0)
    sync(engine, [], 1)
    before = open_alerts(engine)
    assert [c.event for c in sync(engine, [oom(0.1)], 0)] == ["unchanged"]  # backfill of the first window
    assert open_alerts(engine) == before == []
    assert len(sentry_events) == 1


def test_escalation_and_reopening_page_again(engine, sentry_events):
    sync(engine, [oom(0.05)], 0)
    assert [c.event for c in sync(engine, [oom(0.3, Severity.CRITICAL)], 1)] == ["escalated"]
    sync(engine, [], 2)
    assert [c.event for c in sync(engine, [oom(0.1)], 5)] == ["reopened"]
    assert [e["tags"]["alert_event"] for e in sentry_events] == ["opened", "escalated", "reopened"]


def test_alerts_of_unchecked_sites_stay_open(engine, sentry_events):
    sync(engine, [oom(0.1)], 0)
    sync(engine, [], 1, checked=[("technical", "lakeside")])
    assert len(open_alerts(engine)) == 1


def test_sentry_event_has_tags_fingerprint_and_report(engine, sentry_events):
    sync(engine, [oom(0.25, Severity.CRITICAL)], 3)
    [event] = sentry_events
    assert event["tags"]["kind"] == "technical" and event["tags"]["site"] == "st-anna"
    assert event["tags"]["feature"] == "cuda_oom" and event["level"] == "error"
    assert event["fingerprint"] == ["pipeline-alert", "technical", "st-anna", "cuda_oom"]
    assert event["contexts"]["alert"]["report"] == "r3.html"
    assert "CUDA OOM on 25%" in event["message"]


def test_without_a_dsn_nothing_is_sent(engine):
    assert not init_sentry(None)
    assert not sentry_sdk.get_client().is_active()
    assert send_alert(oom(0.1), event="opened") is None
    assert [c.event for c in sync(engine, [oom(0.1)], 0)] == ["opened"]


def test_task_failure_callback_reports_the_exception_with_dag_and_task(sentry_events, monkeypatch):
    from types import SimpleNamespace

    from pipeline.callbacks import on_task_failure
    from pipeline.config import get_settings

    monkeypatch.setenv("PIPELINE_SENTRY_DSN", "https://public@sentry.invalid/1")
    get_settings.cache_clear()
    try:
        ti = SimpleNamespace(dag_id="monitor_inference", task_id="run_checks", try_number=3)
        on_task_failure({"task_instance": ti, "exception": ValueError("window has no rows")})
    finally:
        get_settings.cache_clear()
    [event] = sentry_events
    assert event["tags"]["dag_id"] == "monitor_inference" and event["tags"]["task_id"] == "run_checks"
    assert event["exception"]["values"][0]["type"] == "ValueError"
    assert event["fingerprint"] == ["airflow-task-failure", "monitor_inference", "run_checks"]
