"""The monitoring report of a window: a summary, then plots over the recent past, then the tables.

Built from what the monitoring run stored (``monitor_metrics``, ``alerts``); it computes nothing
of its own. Plots are PNGs embedded in one self-contained HTML file, so the report opens from
an alert link, an e-mail or an artifact store alike.
"""

from __future__ import annotations

import html
import os
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from pipeline.alerts import GLOBAL
from pipeline.reports.figures import png_base64, pyplot
from pipeline.store.schema import alerts, monitor_metrics

if TYPE_CHECKING:
    from pipeline.monitor.drift import DriftRun, SiteDrift
    from pipeline.monitor.expectations import QualityRun
    from pipeline.monitor.run import MonitorResult


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


def _img(png: str, alt: str) -> str:
    return f"<figure><img alt='{html.escape(alt)}' src='data:image/png;base64,{png}'></figure>"


def _figure_png(frame: pd.DataFrame, metric: str, title: str, ylabel: str, window: str) -> str | None:
    plt = pyplot()
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
    return png_base64(fig)


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


_WHAT_TO_DO = {
    "covariate": "Relabel studies from this site: its inputs moved in a way the prevalence does not explain.",
    "prevalence": "Review the threshold: the case mix changed, so PPV and NPV at the deployed threshold moved.",
}


def _site_name(site: str) -> str:
    return "all sites (*)" if site == GLOBAL else site


def _num(value: float | None, spec: str = ".3f") -> str:
    return "" if value is None or not np.isfinite(value) else format(value, spec)


def _drift_heatmap(drift: DriftRun, window: str) -> str:
    """Return a PNG of each feature's score (distance / threshold, clipped to [0, 3]) by site; ``*`` marks drift."""
    plt = pyplot()
    sites = list(drift.sites)
    features = list(dict.fromkeys(f.feature for d in drift.sites.values() for f in d.features))
    row = {f: i for i, f in enumerate(features)}
    score = np.full((len(features), len(sites)), np.nan)
    fig, ax = plt.subplots(figsize=(2.5 + 0.9 * len(sites), 1.2 + 0.3 * len(features)), dpi=100)
    for j, site in enumerate(sites):
        for f in drift.sites[site].features:
            score[row[f.feature], j] = np.clip(f.score, 0.0, 3.0)
            if f.drifted:
                color = "white" if score[row[f.feature], j] > 1.5 else "black"
                ax.text(j, row[f.feature], "*", ha="center", va="center", fontsize=12, color=color)
    image = ax.imshow(np.ma.masked_invalid(score), aspect="auto", cmap="Reds", vmin=0.0, vmax=3.0)
    ax.set_xticks(range(len(sites)), [_site_name(s) for s in sites], rotation=30, ha="right")
    ax.set_yticks(range(len(features)), features, fontsize=8)
    ax.set_xlabel("site")
    ax.set_ylabel("feature")
    ax.set_title("Drift score by site and feature (* drifted)" + (f"\n{window}" if window else ""), fontsize=10)
    fig.colorbar(image, ax=ax, label="distance / threshold, clipped at 3")
    return png_base64(fig)


def _distribution_png(feature: str, site: str, reference: np.ndarray, current: np.ndarray, window: str) -> str:
    """Return a PNG comparing reference and window: overlaid densities for numbers, shares of the top 10 categories else."""
    plt = pyplot()
    ref, cur = np.asarray(reference), np.asarray(current)
    fig, ax = plt.subplots(figsize=(6.5, 3), dpi=100)
    if ref.dtype.kind in "biuf" and cur.dtype.kind in "biuf":
        ref, cur = ref[np.isfinite(ref)], cur[np.isfinite(cur)]
        bins = np.histogram_bin_edges(np.concatenate([ref, cur]), bins=40)
        for values, label in ((ref, "reference"), (cur, "window")):
            ax.hist(values, bins=bins, density=True, alpha=0.5, label=label)
        ax.set_ylabel("density (per unit of the feature)")
    else:
        shares = pd.DataFrame(
            {
                "reference": pd.Series(ref, dtype=object).astype(str).value_counts(normalize=True),
                "window": pd.Series(cur, dtype=object).astype(str).value_counts(normalize=True),
            }
        ).fillna(0.0)
        top = shares.sum(axis=1).sort_values(ascending=False).index[:10]
        x = np.arange(len(top))
        for offset, label in ((-0.2, "reference"), (0.2, "window")):
            ax.bar(x + offset, shares.loc[top, label], width=0.4, label=label)
        ax.set_xticks(x, [str(c) for c in top], rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("share of studies")
    ax.set_xlabel(feature)
    ax.set_title(f"{feature} at {_site_name(site)}: reference vs window" + (f" ({window})" if window else ""))
    ax.legend(fontsize=8)
    return png_base64(fig)


def _site_details(d: SiteDrift, window: str) -> list[str]:
    """Return the HTML of one shifted site: what to do, its drifted features, their distributions, samples."""
    name = html.escape(_site_name(d.site))
    what = _WHAT_TO_DO[d.shift or "covariate"]
    if d.shift == "prevalence":
        what += (
            f" At the estimated prevalence {_num(d.prevalence_window, '.1%')}: "
            f"PPV {_num(d.ppv, '.2f')}, NPV {_num(d.npv, '.4f')}."
        )
    parts = [
        f"<h3>{name}: {html.escape(str(d.shift))} shift</h3><p>{html.escape(what)}</p>",
        "<table><tr><th>feature</th><th>group</th><th>distance</th><th>threshold</th><th>p-value</th>"
        "<th>CUSUM (sd)</th><th>explained by prevalence</th></tr>",
    ]
    explained = {True: "yes", False: "no", None: "not tested"}
    for f in d.drifted():
        parts.append(
            f"<tr><td>{html.escape(f.feature)}</td><td>{html.escape(f.group)}</td><td>{_num(f.distance, '.4g')}</td>"
            f"<td>{_num(f.threshold, '.4g')}</td><td>{_num(f.p_value, '.2g')}</td><td>{_num(f.cusum, '.1f')}</td>"
            f"<td>{explained[f.explained_by_prevalence]}</td></tr>"
        )
    parts.append("</table>")
    for feature, (reference, current) in d.values.items():
        png = _distribution_png(feature, d.site, reference, current, window)
        parts.append(_img(png, f"{feature} at {_site_name(d.site)}: reference vs window"))
    if d.samples:
        parts.append("<p>Studies from the shifted region, for review (pseudonymous ids):</p><ul>")
        parts.extend(f"<li>{html.escape(s)}</li>" for s in d.samples)
        parts.append("</ul>")
    return parts


def _drift_section(drift: DriftRun, window: str = "") -> list[str]:
    """Return the HTML of the drift section: per-site summary, score heatmap, then each shifted site in detail.

    Args:
        drift: the drift check of the window (``pipeline.monitor.drift.check_drift``).
        window: the period the figures describe, for their titles.
    """
    shifted = [d for d in drift.sites.values() if d.shift is not None]
    parts = [
        "<h2>Drift and expected performance</h2>",
        f"<p>{len(drift.sites)} site(s) judged, {len(shifted)} with a shift.",
    ]
    if drift.insufficient:
        parts.append(f" Too few studies to judge: {html.escape(', '.join(drift.insufficient))}.")
    parts.append("</p>")
    if not drift.sites:
        return parts
    parts.append(
        "<table><tr><th>site</th><th>reference</th><th>window studies</th><th>shift</th><th>features drifted</th>"
        "<th>estimated prevalence (reference → window)</th><th>expected AUROC (reference → window)</th>"
        "<th>AUROC from radiologists' feedback (reference period, studies)</th>"
        "<th>expected AUROC recalibrated on recent feedback (outcomes, calibration p)</th>"
        "<th>expected sensitivity</th><th>expected specificity</th><th>PPV / NPV at the new prevalence</th></tr>"
    )
    for d in drift.sites.values():
        reference = f"{d.reference}, {d.reference_days} days, {d.reference_studies} studies"
        ppv_npv = f"{_num(d.ppv, '.2f')} / {_num(d.npv, '.4f')}" if d.shift == "prevalence" else ""
        parts.append(
            f"<tr><td>{html.escape(_site_name(d.site))}</td><td>{html.escape(reference)}</td><td>{d.window_studies}</td>"
            f"<td>{html.escape(d.shift or 'none')}</td><td>{len(d.drifted())}</td>"
            f"<td>{_num(d.prevalence_reference, '.1%')} → {_num(d.prevalence_window, '.1%')}</td>"
            f"<td>{_num(d.expected_auroc_reference)} → {_num(d.expected_auroc_window)}</td>"
            f"<td>{_num(d.feedback_auroc)} ({d.feedback_studies})</td>"
            f"<td>{_num(d.recalibrated_auroc)} ({d.recalibration_outcomes}, p {_num(d.calibration_p, '.2g')})</td>"
            f"<td>{_num(d.expected_sensitivity_window)}</td><td>{_num(d.expected_specificity_window)}</td>"
            f"<td>{ppv_npv}</td></tr>"
        )
    parts.append("</table>")
    if any(d.features for d in drift.sites.values()):
        parts.append(_img(_drift_heatmap(drift, window), "Drift score by site and feature"))
    for d in shifted:
        parts.extend(_site_details(d, window))
    return parts


def write_monitoring_report(
    engine: Engine,
    window_start: datetime,
    window_end: datetime,
    path: Path,
    *,
    history_days: int = 14,
    quality: QualityRun | None = None,
    drift: DriftRun | None = None,
) -> Path:
    """Write the HTML report of ``[window_start, window_end)`` with ``history_days`` of context; return its path.

    The file is written to a temporary name and renamed, so a reader never sees half a report.
    With ``drift`` (``pipeline.monitor.drift.run_drift`` of the window), a section on drift and
    the performance expected without labels follows the data-quality one.
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
    if drift is not None:
        parts.extend(_drift_section(drift, f"{window_start:%Y-%m-%d %H:%M} to {window_end:%Y-%m-%d %H:%M} UTC"))
    parts.append("<h2>Over time</h2>")
    for metric, title, ylabel in PLOTS:
        png = _figure_png(history, metric, title, ylabel, period)
        if png is not None:
            parts.append(_img(png, title))
    if not current.empty:
        per_site = current[(current["site"] != GLOBAL) & ~current["metric"].str.startswith(("quality.", "drift."))]
        table = per_site.pivot_table(index="metric", columns="site", values="value")
        parts.append("<h2>This window, per site</h2>")
        parts.append(table.to_html(float_format=lambda v: f"{v:.4g}", border=0))
    parts.append("</body></html>")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("\n".join(parts))
    tmp.replace(path)
    return path


def write_run_report(engine: Engine, result: MonitorResult) -> Path | None:
    """Write the report of one monitoring run where its alerts link (``result.report_path``); None without one."""
    if result.report_path is None:
        return None
    return write_monitoring_report(
        engine, result.window_start, result.window_end, result.report_path, quality=result.quality, drift=result.drift
    )
