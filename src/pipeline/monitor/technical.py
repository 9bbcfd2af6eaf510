"""Technical health of a window per site and model version: volume, errors, latency, silence, the headline metric.

Each check is a plain function over frames returning metric values and findings; thresholds are
explicit keyword arguments. A site with too few studies gets "insufficient data", not an alert.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import pandas as pd
from scipy.stats import poisson

from pipeline.alerts.model import GLOBAL, Finding, Kind, Severity
from pipeline.monitor.rules import RateRule, usual
from pipeline.store.schema import ErrorType

ERROR_TYPES = tuple(str(e) for e in ErrorType)


@dataclass(frozen=True)
class TechnicalThresholds:
    """When a technical statistic becomes an alert.

    Args:
        min_studies: fewer studies than this in a window is "insufficient data" for rates.
        errors: when an error type's share of studies is an alert (against its 7-day rate).
        volume_drop_ratio: volume below this share of the usual for the weekday and hour is an alert...
        volume_max_p_value: ...when so few studies are this unlikely under the usual (Poisson test).
        min_expected_volume: the usual volume must be at least this for a volume or silence alert.
        latency_p95_s: p95 latency of successful studies above this is an alert.
    """

    min_studies: int = 20
    errors: RateRule = field(default_factory=RateRule)
    volume_drop_ratio: float = 0.5
    volume_max_p_value: float = 1e-5
    min_expected_volume: float = 20.0
    latency_p95_s: float = 5.0


@dataclass(frozen=True)
class TechnicalResult:
    """Metrics per (site, model version) of one window, the findings, and where data was too thin to judge."""

    metrics: pd.DataFrame  # columns: site, model_version, metric, value
    findings: tuple[Finding, ...]
    insufficient: tuple[str, ...] = field(default_factory=tuple)  # sites with too few studies to judge rates


def _rows(site: str, version: str, values: dict[str, float]) -> list[dict[str, object]]:
    return [{"site": site, "model_version": version, "metric": k, "value": float(v)} for k, v in values.items()]


def window_metrics(logs: pd.DataFrame) -> pd.DataFrame:
    """Return volume, error rates by type, latency percentiles and the share filtered as normal.

    Args:
        logs: the window's inference logs (columns site, model_version, status, error_type,
            latency_s, decision).

    Returns:
        One row per (site, model_version, metric) with ``value``; site and version ``"*"`` aggregate.
    """
    rows: list[dict[str, object]] = []
    groups: list[tuple[str, str, pd.DataFrame]] = [(GLOBAL, GLOBAL, logs)]
    for site, part in logs.groupby("site", sort=True):
        groups.append((str(site), GLOBAL, part))
        groups.extend((str(site), str(version), sub) for version, sub in part.groupby("model_version", sort=True))
    for site, version, part in groups:
        n = len(part)
        ok = part[part["status"] == "ok"]
        values: dict[str, float] = {"volume": n, "ok_studies": len(ok)}
        if n:
            counts = part["error_type"].value_counts()
            for error in ERROR_TYPES:
                values[f"error_rate.{error}"] = counts.get(error, 0) / n
            values["error_rate.any"] = 1 - len(ok) / n
        if len(ok):
            latency = ok["latency_s"].to_numpy(dtype=float)
            values.update(
                {
                    "latency_p50_s": float(np.percentile(latency, 50)),
                    "latency_p95_s": float(np.percentile(latency, 95)),
                    "latency_p99_s": float(np.percentile(latency, 99)),
                    "share_filtered_normal": float((ok["decision"] == "normal").mean()),
                }
            )
        rows.extend(_rows(site, version, values))
    return pd.DataFrame(rows, columns=["site", "model_version", "metric", "value"])


def check_technical(
    logs: pd.DataFrame,
    *,
    expected_volume: dict[str, float],
    baseline_error_rates: dict[tuple[str, str], float],
    last_seen: dict[str, datetime | None],
    window_end: datetime,
    sites: list[str],
    thresholds: TechnicalThresholds | None = None,
) -> TechnicalResult:
    """Return the window's technical metrics and findings, per site.

    Args:
        logs: the window's inference logs.
        expected_volume: per site, the usual number of studies in a window like this one
            (same weekday and hours over past weeks).
        baseline_error_rates: per (site, error type), the rate over the baseline period; a site
            without enough history has no entry (only gross error rates are alerts there).
        last_seen: per site, when its newest study arrived before ``window_end`` (None: never).
        window_end: end of the window.
        sites: every site expected to send studies (known sites, even if silent now).
        thresholds: when a statistic becomes an alert.
    """
    t = thresholds or TechnicalThresholds()
    metrics = window_metrics(logs)
    findings: list[Finding] = []
    insufficient: list[str] = []
    extra_rows: list[dict[str, object]] = []
    for site in sites:
        part = logs[logs["site"] == site]
        n = len(part)
        expected = expected_volume.get(site)
        seen = last_seen.get(site)
        silence_s = (window_end - seen).total_seconds() if seen is not None else None
        extra = {"expected_volume": expected, "seconds_since_last_study": silence_s}
        extra_rows.extend(_rows(site, GLOBAL, {k: v for k, v in extra.items() if v is not None}))
        if expected is not None and expected >= t.min_expected_volume:
            ratio = n / expected
            extra_rows.extend(_rows(site, GLOBAL, {"volume_ratio": ratio}))
            if n == 0:
                findings.append(
                    Finding(
                        Kind.TECHNICAL,
                        site,
                        "volume",
                        "volume_ratio",
                        0.0,
                        t.volume_drop_ratio,
                        Severity.CRITICAL,
                        f"silent site: no study in the window, {expected:.0f} usual; last study "
                        f"{'never' if silence_s is None else f'{silence_s / 3600:.1f} h ago'}",
                    )
                )
            elif ratio < t.volume_drop_ratio and poisson.cdf(n, expected) < t.volume_max_p_value:
                findings.append(
                    Finding(
                        Kind.TECHNICAL,
                        site,
                        "volume",
                        "volume_ratio",
                        ratio,
                        t.volume_drop_ratio,
                        Severity.WARNING,
                        f"volume dropped to {ratio:.0%} of the usual ({n} studies, {expected:.0f} usual)",
                    )
                )
        if n < t.min_studies:
            insufficient.append(site)
            continue
        counts = part["error_type"].value_counts()
        for error in ERROR_TYPES:
            failed = int(counts.get(error, 0))
            baseline = baseline_error_rates.get((site, error))
            verdict = t.errors.judge(failed, n, baseline)
            if verdict is not None:
                findings.append(
                    Finding(
                        Kind.TECHNICAL,
                        site,
                        error,
                        "error_rate",
                        verdict.rate,
                        verdict.limit,
                        verdict.severity,
                        f"{error} on {verdict.rate:.1%} of studies ({failed} of {n}; {usual(baseline)})",
                    )
                )
        ok = part[part["status"] == "ok"]
        if len(ok) >= t.min_studies:
            p95 = float(np.percentile(ok["latency_s"].to_numpy(dtype=float), 95))
            if p95 > t.latency_p95_s:
                findings.append(
                    Finding(
                        Kind.TECHNICAL,
                        site,
                        "latency",
                        "latency_p95_s",
                        p95,
                        t.latency_p95_s,
                        Severity.WARNING,
                        f"p95 latency {p95:.2f} s (limit {t.latency_p95_s:.1f} s)",
                    )
                )
    all_metrics = pd.concat([metrics, pd.DataFrame(extra_rows, columns=metrics.columns)], ignore_index=True)
    return TechnicalResult(all_metrics, tuple(findings), tuple(insufficient))
