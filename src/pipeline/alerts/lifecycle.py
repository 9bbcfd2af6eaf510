"""The life of an alert: opened when a check first fails, updated while it keeps failing, closed when it passes.

One alert per (kind, site, feature, statistic): an ongoing problem is one open alert whose
``last_seen`` and value move, not a new alert each window. Re-running a window gives the same
state, and sends nothing twice (Sentry is told on open, reopen and escalation only).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from pipeline.alerts.model import Finding, Severity
from pipeline.alerts.sentry import send_alert
from pipeline.store.schema import alerts

log = logging.getLogger(__name__)

OPEN, CLOSED = "open", "closed"


@dataclass(frozen=True)
class AlertChange:
    """What one synchronisation did to one alert."""

    alert_id: str
    event: str  # opened, reopened, escalated, updated, closed
    finding: Finding | None


def sync_alerts(
    engine: Engine,
    findings: Sequence[Finding],
    *,
    window_start: datetime,
    window_end: datetime,
    checked: Iterable[tuple[str, str]],
    report_path: str | None = None,
) -> list[AlertChange]:
    """Bring the alerts table in line with a window's findings; return what changed.

    Args:
        engine: the store.
        findings: what the window's checks found wrong.
        window_start: start of the window; an alert opened now has it as ``first_seen``.
        window_end: end of the window; ``last_seen`` of every alert still failing.
        checked: the (kind, site) pairs whose checks ran in this window: an open alert of such a
            pair with no finding now is closed. Alerts of pairs not checked stay as they are.
        report_path: the window's report, linked from every alert it touches.
    """
    scopes = set(checked)
    changes: list[AlertChange] = []
    with engine.begin() as conn:
        existing = {row.alert_id: row for row in conn.execute(sa.select(alerts))}
        seen: set[str] = set()
        for finding in findings:
            seen.add(finding.alert_id)
            row = existing.get(finding.alert_id)
            changes.append(_apply(conn, finding, row, window_start, window_end, report_path))
        for alert_id_, row in existing.items():
            if row.status != OPEN or alert_id_ in seen or (row.kind, row.site) not in scopes:
                continue
            if _as_utc(row.last_seen) > window_end:  # a backfill of an older window does not close a newer alert
                continue
            conn.execute(
                alerts.update().where(alerts.c.alert_id == alert_id_).values(status=CLOSED, closed_at=window_end)
            )
            changes.append(AlertChange(alert_id_, "closed", None))
    for change in changes:
        if change.finding is not None and change.event in ("opened", "reopened", "escalated"):
            send_alert(change.finding, event=change.event, report_path=report_path)
        log.info("alert %s %s", change.alert_id[:10], change.event)
    return changes


def _as_utc(moment: datetime) -> datetime:
    """SQLite returns naive timestamps; they are UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _apply(
    conn: Connection,
    finding: Finding,
    row: sa.Row | None,
    window_start: datetime,
    window_end: datetime,
    report_path: str | None,
) -> AlertChange:
    values = {
        "kind": str(finding.kind),
        "site": finding.site,
        "feature": finding.feature,
        "statistic": finding.statistic,
        "value": finding.value,
        "threshold": finding.threshold,
        "severity": str(finding.severity),
        "message": finding.message,
    }
    if report_path is not None:  # a run without a report keeps the last report's link
        values["report_path"] = report_path
    if row is None:
        conn.execute(
            alerts.insert().values(
                alert_id=finding.alert_id, status=OPEN, first_seen=window_start, last_seen=window_end, **values
            )
        )
        return AlertChange(finding.alert_id, "opened", finding)
    where = alerts.c.alert_id == finding.alert_id
    if row.status == CLOSED:
        if _as_utc(row.closed_at) >= window_end:  # re-run of a window before it closed: history stays
            return AlertChange(finding.alert_id, "unchanged", finding)
        conn.execute(
            alerts.update()
            .where(where)
            .values(status=OPEN, first_seen=window_start, last_seen=window_end, closed_at=None, **values)
        )
        return AlertChange(finding.alert_id, "reopened", finding)
    last_seen = max(_as_utc(row.last_seen), window_end)
    first_seen = min(_as_utc(row.first_seen), window_start)
    conn.execute(alerts.update().where(where).values(last_seen=last_seen, first_seen=first_seen, **values))
    escalated = row.severity == Severity.WARNING and finding.severity == Severity.CRITICAL
    return AlertChange(finding.alert_id, "escalated" if escalated else "updated", finding)


def open_alerts(engine: Engine) -> list[dict[str, object]]:
    """Return the open alerts, newest first, as plain dicts (for reports and ``--json``)."""
    with engine.connect() as conn:
        rows = conn.execute(sa.select(alerts).where(alerts.c.status == OPEN).order_by(alerts.c.first_seen.desc()))
        return [dict(r._mapping) for r in rows]


def alert_periods(
    engine: Engine, kind: str, since: datetime, until: datetime
) -> dict[tuple[str, str, str], tuple[datetime, datetime]]:
    """Return, per (site, feature, statistic), when an alert of ``kind`` was open between ``since`` and ``until``.

    Baselines leave these periods out: an ongoing incident must not become the new normal.
    """
    query = sa.select(alerts).where(
        alerts.c.kind == kind,
        alerts.c.first_seen < until,
        sa.or_(alerts.c.closed_at.is_(None), alerts.c.closed_at > since),
    )
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    return {
        (r.site, r.feature, r.statistic): (
            _as_utc(r.first_seen),
            until if r.closed_at is None else _as_utc(r.closed_at),
        )
        for r in rows
    }
