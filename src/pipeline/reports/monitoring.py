"""The monitoring report of a window: a summary, then plots over the recent past, then the tables.

Built from what the monitoring run stored (``monitor_metrics``, ``alerts``); it computes nothing
of its own. Plots are PNGs embedded in one self-contained HTML file, so the report opens from
an alert link, an e-mail or an artifact store alike.
"""

from __future__ import annotations

import base64
import html
import io
import os
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from pipeline.alerts import GLOBAL
from pipeline.store.schema import alerts, monitor_metrics

if TYPE_CHECKING:
    from pipeline.monitor.expectations import QualityRun


def _history(engine: Engine, start: datetime, end: datetime) -> pd.DataFrame:
    query = sa.select(
        monitor_metrics.c.window_start, monitor_metrics.c.site, monitor_metrics.c.metric, monitor_metrics.c.value
    ).where(
        monitor_metrics.c.window_start >= start,
        monitor_metrics.c.window_start < end,
        monitor_metrics.c.model_version == GLOBAL,
    )
    with engine.connect() as conn:
        frame = pd.DataFrame(conn.execute(query).all(), columns=["window_start", "site", "metric", "value"])
    frame["window_start"] = pd.to_datetime(frame["window_start"], utc=True)
    return frame


def _figure_png(frame: pd.DataFrame, metric: str, title: str, ylabel: str, window: str) -> str | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = frame[(frame["metric"] == metric) & (frame["site"] != GLOBAL)]
    if data.empty:
        return None
    fig, ax = plt.subplots(figsize=(9, 3.2), dpi=100)
    for site, part in data.sort_values("window_start").groupby("site"):
        ax.plot(part["window_start"], part["value"], marker=".", label=str(site))
    ax.set_title(f"{title} ({window})")
    ax.set_xlabel("window start (UTC)")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8, ncols=4)
    fig.autofmt_xdate()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


PLOTS = (
    ("share_filtered_normal", "Share of studies filtered as normal (headline metric)", "share of successful studies"),
    ("volume", "Studies per window", "studies"),
    ("error_rate.any", "Share of studies that failed", "share of studies"),
    ("latency_p95_s", "Latency p95 of successful studies", "seconds"),
)


def _quality_section(quality: QualityRun, report: Path) -> list[str]:
    """Return the HTML of the data-quality section: every failed expectation with examples."""
    failed = quality.failed()
    checked = len(quality.outcomes)
    parts = [f"<h2>Data quality</h2><p>{checked - len(failed)} of {checked} expectations met."]
    if quality.data_docs is not None:
        link = os.path.relpath(quality.data_docs, report.parent)
        parts.append(f" Full validation results: <a href='{html.escape(link)}'>Great Expectations Data Docs</a>.")
    parts.append("</p>")
    if failed:
        parts.append(
            "<table><tr><th>suite</th><th>expectation</th><th>rows breaking it</th><th>per site</th>"
            "<th>examples (study, site, value)</th></tr>"
        )
        for o in failed:
            per_site = ", ".join(f"{html.escape(s)}: {n}" for s, n in sorted(o.by_site.items()))
            examples = "<br>".join(
                html.escape(", ".join(f"{k}={v}" for k, v in example.items())) for example in o.examples
            )
            what = html.escape(o.description if o.error is None else f"{o.description} (not evaluated: {o.error})")
            parts.append(
                f"<tr><td>{html.escape(o.suite)}</td><td>{what}</td><td>{o.unexpected}</td>"
                f"<td>{per_site}</td><td>{examples}</td></tr>"
            )
        parts.append("</table>")
    return parts


def write_monitoring_report(
    engine: Engine,
    window_start: datetime,
    window_end: datetime,
    path: Path,
    *,
    history_days: int = 14,
    quality: QualityRun | None = None,
) -> Path:
    """Write the HTML report of ``[window_start, window_end)`` with ``history_days`` of context; return its path.

    The file is written to a temporary name and renamed, so a reader never sees half a report.
    """
    since = window_start - timedelta(days=history_days)
    history = _history(engine, since, window_end)
    period = f"{since:%Y-%m-%d} to {window_end:%Y-%m-%d %H:%M} UTC"
    with engine.connect() as conn:
        touched = pd.DataFrame(
            [dict(r._mapping) for r in conn.execute(sa.select(alerts).where(alerts.c.last_seen >= window_start))]
        )
    open_now = touched[touched["status"] == "open"] if not touched.empty else touched
    current = history[history["window_start"] == pd.Timestamp(window_start)]
    volume = current[(current["metric"] == "volume") & (current["site"] == GLOBAL)]["value"]

    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>Monitoring {window_start:%Y-%m-%d %H:%M}</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:70em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}.critical{color:#b00}.warning{color:#a60}</style>",
        "</head><body>",
        f"<h1>Monitoring: {window_start:%Y-%m-%d %H:%M} to {window_end:%Y-%m-%d %H:%M} UTC</h1>",
        "<h2>Summary</h2><ul>",
        f"<li>{int(volume.iloc[0]) if len(volume) else 0} studies in the window</li>",
        f"<li>{len(open_now)} open alert(s); {len(touched) - len(open_now)} closed in this window</li>",
        "</ul>",
    ]
    if not open_now.empty:
        parts.append(
            "<h2>Open alerts</h2><table><tr><th>severity</th><th>kind</th><th>site</th><th>feature</th>"
            "<th>value</th><th>threshold</th><th>since</th><th>what</th></tr>"
        )
        for a in open_now.sort_values(["severity", "first_seen"]).itertuples(index=False):
            parts.append(
                f"<tr class='{html.escape(str(a.severity))}'><td>{html.escape(str(a.severity))}</td><td>{html.escape(str(a.kind))}</td>"
                f"<td>{html.escape(str(a.site))}</td><td>{html.escape(str(a.feature))}</td>"
                f"<td>{'' if a.value is None else f'{a.value:.4g}'}</td><td>{'' if a.threshold is None else f'{a.threshold:.4g}'}</td>"
                f"<td>{pd.Timestamp(a.first_seen):%Y-%m-%d %H:%M}</td><td>{html.escape(str(a.message))}</td></tr>"
            )
        parts.append("</table>")
    if quality is not None:
        parts.extend(_quality_section(quality, path))
    parts.append("<h2>Over time</h2>")
    for metric, title, ylabel in PLOTS:
        png = _figure_png(history, metric, title, ylabel, period)
        if png is not None:
            parts.append(f"<figure><img alt='{html.escape(title)}' src='data:image/png;base64,{png}'></figure>")
    if not current.empty:
        per_site = current[(current["site"] != GLOBAL) & ~current["metric"].str.startswith("quality.")]
        table = per_site.pivot_table(index="metric", columns="site", values="value")
        parts.append("<h2>This window, per site</h2>")
        parts.append(table.to_html(float_format=lambda v: f"{v:.4g}", border=0))
    parts.append("</body></html>")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("\n".join(parts))
    tmp.replace(path)
    return path
