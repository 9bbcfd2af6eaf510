"""The monitoring page: gather what the store and the registry hold, then render one self-contained HTML page.

:func:`gather` reads (store, then MLflow, which may be down); :func:`render_page` only arranges what
it was given. The page has no script and loads nothing from elsewhere: plots are inline PNGs, the
favicon is an empty data URI, and every link is relative, so it works inside Airflow's iframe,
behind a proxy, and without internet.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.engine import Engine

from pipeline.alerts import GLOBAL
from pipeline.web.queries import (
    WAITING,
    Alert,
    DriftCell,
    HeadlinePoint,
    ModelEvent,
    Period,
    QueueCount,
    SiteSummary,
    drift_scores,
    headline_series,
    open_alerts,
    period_of,
    recent_model_events,
    relabel_queue_counts,
    site_summaries,
)
from pipeline.web.registry import ModelVersionView, RegistryUnavailable, model_versions
from pipeline.web.template import PAGE

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Registry:
    """The model's registered versions, or why they could not be read (``notice``, shown to the page's readers)."""

    model_name: str
    tracking_uri: str
    versions: tuple[ModelVersionView, ...] = ()
    notice: str | None = None

    @property
    def available(self) -> bool:
        return self.notice is None


@dataclass(frozen=True)
class SiteView:
    """Everything the page shows for one site."""

    summary: SiteSummary
    alerts: tuple[Alert, ...]
    headline: tuple[HeadlinePoint, ...]
    drift: tuple[DriftCell, ...]
    queue: tuple[QueueCount, ...]


@dataclass(frozen=True)
class Overview:
    """The whole page's content: the period, every site (or the one asked for), the queue and the registry.

    ``store`` names the store to the page's readers (its backend, such as ``PostgreSQL``): never its URL.
    """

    store: str
    period: Period | None
    sites: tuple[SiteSummary, ...]
    selected: str | None
    alerts: tuple[Alert, ...]
    headline: tuple[HeadlinePoint, ...]
    site_views: tuple[SiteView, ...]
    queue: tuple[QueueCount, ...]
    registry: Registry
    events: tuple[ModelEvent, ...]
    generated_at: datetime = field(default_factory=lambda: datetime.now(UTC))


def read_registry(tracking_uri: str, model_name: str, *, timeout_s: float = 3.0) -> Registry:
    """Return the model's versions from MLflow, or a Registry whose ``notice`` says why there are none.

    When MLflow fails, the notice is one generic line with a reference; what failed goes to the server's log
    (the tracking URI without credentials), as the page's readers need not learn where MLflow runs.
    """
    try:
        versions = model_versions(tracking_uri, model_name, timeout_s=timeout_s)
    except RegistryUnavailable as exc:
        reference = uuid.uuid4().hex[:12]
        log.warning("monitoring page: reference %s: %s", reference, exc)
        notice = f"The model registry is unreachable (reference {reference}: the server's log has the details)."
        return Registry(model_name, tracking_uri, notice=notice)
    if not versions:
        return Registry(model_name, tracking_uri, notice=f"No version of {model_name!r} is registered in MLflow yet.")
    return Registry(model_name, tracking_uri, versions=tuple(versions))


def gather(
    engine: Engine,
    *,
    store: str,
    registry: Registry,
    model_name: str,
    days: int = 14,
    site: str | None = None,
) -> Overview:
    """Read what the page shows from the store; ``registry`` comes from :func:`read_registry`.

    Args:
        engine: the store.
        store: how the store is named on the page: its backend (``PostgreSQL``), never its URL.
        registry: the model's versions, or the notice that replaces them.
        model_name: the registered model whose audit trail is shown.
        days: the period, in days up to the newest monitored window.
        site: show only this site (and alerts about all sites); None shows every site.
    """
    period = period_of(engine, days)
    summaries = site_summaries(engine, period)
    names = [s.site for s in summaries]
    shown = [site] if site is not None else names
    headline = headline_series(engine, period) if period is not None else []
    drift = drift_scores(engine, period) if period is not None else []
    queue = relabel_queue_counts(engine)
    alerts = open_alerts(engine, site)
    by_site = {s.site: s for s in summaries}
    views = []
    for name in shown:
        summary = by_site.get(name) or SiteSummary(name, 0, 0, None, None, None, 0)
        views.append(
            SiteView(
                summary=summary,
                alerts=tuple(a for a in alerts if a.site == name),
                headline=tuple(p for p in headline if p.site == name),
                drift=tuple(c for c in drift if c.site == name),
                queue=tuple(c for c in queue if c.site == name),
            )
        )
    return Overview(
        store=store,
        period=period,
        sites=tuple(summaries),
        selected=site,
        alerts=tuple(alerts),
        headline=tuple(p for p in headline if site is None or p.site in (site, GLOBAL)),
        site_views=tuple(views),
        queue=tuple(c for c in queue if site is None or c.site == site),
        registry=registry,
        events=tuple(recent_model_events(engine, model_name)),
    )


def _queue_table(queue: tuple[QueueCount, ...]) -> dict[str, Any]:
    """Return the relabel queue as rows per site with a column per status, and the strategies' totals."""
    statuses = [s for s in (*WAITING, "labeled") if any(c.status == s for c in queue)]
    statuses += sorted({c.status for c in queue} - set(statuses))
    rows = []
    for site in sorted({c.site for c in queue}):
        mine = [c for c in queue if c.site == site]
        waiting = [c for c in mine if c.status in WAITING]
        oldest = min((c.oldest_pick for c in waiting if c.oldest_pick is not None), default=None)
        strategies: dict[str, int] = {}
        for c in waiting:
            strategies[c.strategy] = strategies.get(c.strategy, 0) + c.studies
        rows.append(
            {
                "site": site,
                "by_status": {s: sum(c.studies for c in mine if c.status == s) for s in statuses},
                "waiting": sum(c.studies for c in waiting),
                "oldest": oldest,
                "strategies": ", ".join(f"{k} {v}" for k, v in sorted(strategies.items(), key=lambda kv: -kv[1])),
            }
        )
    return {"statuses": statuses, "rows": rows}


def render_page(overview: Overview) -> str:
    """Return the monitoring page's HTML for ``overview`` (plots drawn here, as inline PNGs)."""
    from pipeline.web.figures import drift_heatmap_png, headline_png

    period = overview.period
    headline = headline_png(overview.headline, period) if period is not None else None
    drift_days = sorted({c.day for v in overview.site_views for c in v.drift})
    sites = [
        {
            "view": v,
            "headline": headline_png(v.headline, period, title_site=v.summary.site) if period is not None else None,
            "heatmap": drift_heatmap_png(v.drift, v.summary.site, period, days=drift_days)
            if period is not None
            else None,
            "queue": _queue_table(v.queue),
        }
        for v in overview.site_views
    ]
    champion = next((m for m in overview.registry.versions if "champion" in m.aliases), None)
    return PAGE.render(
        o=overview,
        period=period,
        headline=headline,
        sites=sites,
        queue=_queue_table(overview.queue),
        champion=champion,
        critical=sum(a.severity == "critical" for a in overview.alerts),
        waiting=sum(c.studies for c in overview.queue if c.status in WAITING),
        GLOBAL=GLOBAL,
    )
