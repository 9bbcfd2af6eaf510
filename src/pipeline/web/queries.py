"""What the monitoring page shows, read from the store: typed records, no computation of our own.

Every number here was written by a monitoring, selection or validation run (``monitor_metrics``,
``alerts``, ``relabel_queue``, ``model_events``); the page only reads and arranges it. Timestamps
come back timezone-aware in UTC whatever the backend (SQLite gives naive ones).
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from pipeline.alerts import GLOBAL
from pipeline.store.schema import alerts, model_events, monitor_metrics, relabel_queue

#: The headline metric: the share of successful studies the normal filter closed as normal.
HEADLINE_METRIC = "share_filtered_normal"
VOLUME_METRIC = "volume"
_DRIFT_PREFIX = "drift."
_DISTANCE, _THRESHOLD = ".distance", ".threshold"
_SEVERITY_ORDER = {"critical": 0, "warning": 1}
#: Statuses of a pick that has no label yet (``pipeline.store.schema.QueueStatus`` less ``labeled``).
WAITING = ("queued", "pushed", "adjudication")


def _utc(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


@dataclass(frozen=True)
class Period:
    """The days the page describes: ``[start, end)`` in UTC, ending with the newest monitored window."""

    start: datetime
    end: datetime

    @property
    def label(self) -> str:
        return f"{self.start:%Y-%m-%d %H:%M} to {self.end:%Y-%m-%d %H:%M} UTC"


@dataclass(frozen=True)
class Alert:
    """One open alert, as the monitoring run keeps it (``alerts``)."""

    alert_id: str
    kind: str
    site: str
    feature: str
    statistic: str
    value: float | None
    threshold: float | None
    severity: str
    first_seen: datetime
    last_seen: datetime
    message: str
    report_path: str | None


@dataclass(frozen=True)
class HeadlinePoint:
    """The headline metric of one site (``*``: all sites) in one monitoring window, with the window's volume."""

    site: str
    window_start: datetime
    window_end: datetime
    share_filtered_normal: float | None
    volume: float | None


@dataclass(frozen=True)
class DriftCell:
    """A feature's largest drift score at a site on one day: distance over its calibrated threshold.

    ``score`` above 1 means the distance crossed the threshold in at least one window of that day
    (an alert also needs a test to agree, so not every such cell is an alert).
    """

    site: str
    day: date
    feature: str
    score: float
    distance: float
    threshold: float


@dataclass(frozen=True)
class QueueCount:
    """Studies picked for labeling at a site, by where they are (``status``) and why they were picked."""

    site: str
    status: str
    strategy: str
    studies: int
    oldest_pick: date | None


@dataclass(frozen=True)
class ModelEvent:
    """One step of the model registry's audit trail (``model_events``)."""

    version: str
    action: str
    actor: str
    at: datetime
    detail: dict[str, Any]


@dataclass(frozen=True)
class SiteSummary:
    """One site at a glance: its open alerts and its newest window's headline metric and volume."""

    site: str
    open_alerts: int
    critical_alerts: int
    latest_window_end: datetime | None
    share_filtered_normal: float | None
    volume: float | None
    waiting_for_label: int


def newest_window_end(engine: Engine) -> datetime | None:
    """Return the end of the newest window any monitoring run wrote metrics for, or None before the first run."""
    with engine.connect() as conn:
        return _utc(conn.execute(sa.select(sa.func.max(monitor_metrics.c.window_end))).scalar())


def period_of(engine: Engine, days: int = 14, *, end: datetime | None = None) -> Period | None:
    """Return the ``days`` days ending with the newest monitored window (or ``end``); None when nothing is monitored.

    A store monitored for fewer days gets a period that starts with its first window instead.

    Args:
        engine: the store.
        days: length of the period at most, in days (at least 1).
        end: the period's end instead of the newest window's (UTC).
    """
    newest = _utc(end) if end is not None else newest_window_end(engine)
    if newest is None:
        return None
    with engine.connect() as conn:
        first = _utc(conn.execute(sa.select(sa.func.min(monitor_metrics.c.window_start))).scalar())
    start = newest - timedelta(days=max(1, days))
    if first is not None and start < first < newest:
        start = first
    return Period(start=start, end=newest)


def list_sites(engine: Engine) -> list[str]:
    """Return every site the store knows from monitoring, alerts or the relabel queue, sorted (``*`` left out)."""
    query = sa.union(
        sa.select(monitor_metrics.c.site).distinct(),
        sa.select(alerts.c.site).distinct(),
        sa.select(relabel_queue.c.site).distinct(),
    )
    with engine.connect() as conn:
        return sorted({str(s) for s in conn.execute(query).scalars()} - {GLOBAL})


def open_alerts(engine: Engine, site: str | None = None) -> list[Alert]:
    """Return the open alerts (of ``site`` and of all sites together, when given), critical first, then newest."""
    query = sa.select(alerts).where(alerts.c.status == "open")
    if site is not None:
        query = query.where(alerts.c.site.in_((site, GLOBAL)))
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    found = [
        Alert(
            alert_id=r.alert_id,
            kind=r.kind,
            site=r.site,
            feature=r.feature,
            statistic=r.statistic,
            value=r.value,
            threshold=r.threshold,
            severity=r.severity,
            first_seen=_utc(r.first_seen) or r.first_seen,
            last_seen=_utc(r.last_seen) or r.last_seen,
            message=r.message,
            report_path=r.report_path,
        )
        for r in rows
    ]
    found.sort(key=lambda a: (_SEVERITY_ORDER.get(a.severity, 9), -a.first_seen.timestamp(), a.site, a.feature))
    return found


def headline_series(engine: Engine, period: Period, site: str | None = None) -> list[HeadlinePoint]:
    """Return the headline metric and volume of every window in ``period``, per site and for all sites (``*``).

    Args:
        engine: the store.
        period: the windows whose start lies in it.
        site: only this site's points (and none for ``*``).
    """
    query = sa.select(
        monitor_metrics.c.site,
        monitor_metrics.c.window_start,
        monitor_metrics.c.window_end,
        monitor_metrics.c.metric,
        monitor_metrics.c.value,
    ).where(
        monitor_metrics.c.metric.in_((HEADLINE_METRIC, VOLUME_METRIC)),
        monitor_metrics.c.model_version == GLOBAL,
        monitor_metrics.c.window_start >= period.start,
        monitor_metrics.c.window_start < period.end,
    )
    if site is not None:
        query = query.where(monitor_metrics.c.site == site)
    values: dict[tuple[str, datetime, datetime], dict[str, float | None]] = defaultdict(dict)
    with engine.connect() as conn:
        for r in conn.execute(query):
            key = (str(r.site), _utc(r.window_start) or r.window_start, _utc(r.window_end) or r.window_end)
            values[key][str(r.metric)] = r.value
    return [
        HeadlinePoint(
            site=s,
            window_start=start,
            window_end=end,
            share_filtered_normal=v.get(HEADLINE_METRIC),
            volume=v.get(VOLUME_METRIC),
        )
        for (s, start, end), v in sorted(values.items())
    ]


def drift_scores(engine: Engine, period: Period, site: str | None = None) -> list[DriftCell]:
    """Return each feature's largest drift score per site and day of ``period`` (the windows' start day, UTC).

    Read from the ``drift.<feature>.distance`` and ``drift.<feature>.threshold`` metrics the drift check
    stores for every judged site and window (``pipeline.monitor.drift``).
    """
    metric = monitor_metrics.c.metric
    query = sa.select(monitor_metrics.c.site, monitor_metrics.c.window_start, metric, monitor_metrics.c.value).where(
        metric.like(f"{_DRIFT_PREFIX}%"),
        sa.or_(metric.like(f"%{_DISTANCE}"), metric.like(f"%{_THRESHOLD}")),
        monitor_metrics.c.model_version == GLOBAL,
        monitor_metrics.c.window_start >= period.start,
        monitor_metrics.c.window_start < period.end,
    )
    if site is not None:
        query = query.where(monitor_metrics.c.site == site)
    pairs: dict[tuple[str, datetime, str], dict[str, float]] = defaultdict(dict)
    with engine.connect() as conn:
        for r in conn.execute(query):
            name = str(r.metric)[len(_DRIFT_PREFIX) :]
            part = _DISTANCE if name.endswith(_DISTANCE) else _THRESHOLD
            feature = name[: -len(part)]
            if r.value is not None:
                pairs[(str(r.site), _utc(r.window_start) or r.window_start, feature)][part] = float(r.value)
    best: dict[tuple[str, date, str], DriftCell] = {}
    for (s, start, feature), v in pairs.items():
        distance, threshold = v.get(_DISTANCE), v.get(_THRESHOLD)
        if distance is None or threshold is None or threshold <= 0:
            continue
        cell = DriftCell(s, start.date(), feature, distance / threshold, distance, threshold)
        key = (s, cell.day, feature)
        if key not in best or cell.score > best[key].score:
            best[key] = cell
    return sorted(best.values(), key=lambda c: (c.site, c.day, c.feature))


def relabel_queue_counts(engine: Engine, site: str | None = None) -> list[QueueCount]:
    """Return how many picked studies sit in each status, per site and strategy, with the oldest pick's day."""
    q = relabel_queue.c
    query = sa.select(
        q.site, q.status, q.strategy, sa.func.count().label("studies"), sa.func.min(q.picked_for).label("oldest")
    ).group_by(q.site, q.status, q.strategy)
    if site is not None:
        query = query.where(q.site == site)
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    counts = [QueueCount(str(r.site), str(r.status), str(r.strategy), int(r.studies), r.oldest) for r in rows]
    return sorted(counts, key=lambda c: (c.site, c.status, c.strategy))


def recent_model_events(engine: Engine, model_name: str, limit: int = 20) -> list[ModelEvent]:
    """Return the newest ``limit`` audit-trail events of ``model_name`` (validations, approvals, promotions...)."""
    query = (
        sa.select(model_events)
        .where(model_events.c.model_name == model_name)
        .order_by(model_events.c.at.desc(), model_events.c.event_id.desc())
        .limit(limit)
    )
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    events = []
    for r in rows:
        try:
            detail = json.loads(r.detail)
        except ValueError:
            detail = {"text": r.detail}
        events.append(ModelEvent(str(r.version), str(r.action), str(r.actor), _utc(r.at) or r.at, detail))
    return events


def site_summaries(engine: Engine, period: Period | None, site: str | None = None) -> list[SiteSummary]:
    """Return every site at a glance (see :class:`SiteSummary`), sorted by site.

    Args:
        engine: the store.
        period: where the newest window is looked for; None: no window (nothing monitored yet).
        site: only this site's summary (none when the store does not know it).
    """
    sites = [s for s in list_sites(engine) if site is None or s == site]
    alerts_now = open_alerts(engine, site)
    queue = relabel_queue_counts(engine, site)
    newest: dict[str, HeadlinePoint] = {}
    if period is not None:
        for p in headline_series(engine, period, site):
            newest[p.site] = p  # sorted by window: the last one wins
    summaries = []
    for s in sites:
        mine = [a for a in alerts_now if a.site == s]
        point = newest.get(s)
        summaries.append(
            SiteSummary(
                site=s,
                open_alerts=len(mine),
                critical_alerts=sum(a.severity == "critical" for a in mine),
                latest_window_end=point.window_end if point else None,
                share_filtered_normal=point.share_filtered_normal if point else None,
                volume=point.volume if point else None,
                waiting_for_label=sum(c.studies for c in queue if c.site == s and c.status in WAITING),
            )
        )
    return summaries
