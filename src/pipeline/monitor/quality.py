"""Quality findings of a window: which site's data broke which expectation, more than it usually does.

The expectations themselves run in Great Expectations (``pipeline.monitor.expectations``); this
module turns their per-site counts into metrics and findings. A site's share of rows breaking an
expectation is judged by the same rule as error rates (``RateRule``) against its own last 7 days,
so a tag that is always a little dirty at one hospital does not page anyone, and a sudden rise does.
An expectation GX could not evaluate, or one that holds for the whole window rather than per site
(duplicates, embedding size), is a finding for all sites.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import pandas as pd

from pipeline.alerts.model import GLOBAL, Finding, Kind, Severity
from pipeline.monitor.expectations import QualityRun
from pipeline.monitor.rules import RateRule, usual


@dataclass(frozen=True)
class QualityThresholds:
    """When a quality statistic becomes an alert.

    Args:
        min_rows: a site with fewer rows than this in a suite is "insufficient data" for rates.
        rows: when a site's share of rows breaking an expectation is an alert.
    """

    min_rows: int = 20
    rows: RateRule = field(default_factory=RateRule)


@dataclass(frozen=True)
class QualityBaseline:
    """The last days of a window: rows checked per (site, suite), rows that broke each (site, suite, key).

    ``rows_by_key`` holds the rows checked where they differ per expectation (periods of an open
    alert on it left out).
    """

    failed: Mapping[tuple[str, str, str], float] = field(default_factory=dict)
    rows: Mapping[tuple[str, str], float] = field(default_factory=dict)
    rows_by_key: Mapping[tuple[str, str, str], float] = field(default_factory=dict)

    def rate(self, site: str, suite: str, key: str, rule: RateRule) -> float | None:
        """Return the share of the site's rows that broke the expectation, or None with too little history."""
        rows = self.rows_by_key.get((site, suite, key), self.rows.get((site, suite), 0.0))
        return rule.baseline(self.failed.get((site, suite, key), 0.0), rows)


@dataclass(frozen=True)
class QualityResult:
    """The window's quality metrics per site, its findings, and the sites too thin to judge."""

    metrics: pd.DataFrame  # site, model_version, metric, value
    findings: tuple[Finding, ...]
    insufficient: tuple[str, ...] = ()


def metric_name(suite: str, key: str, what: str) -> str:
    """Return the ``monitor_metrics`` name of a suite's expectation statistic (``unexpected``, ``rate``)."""
    return f"quality.{suite}.{key}.{what}"


def rows_metric(suite: str) -> str:
    return f"quality.{suite}.rows"


def violation_statistic(rule: str) -> str:
    """Return the alert statistic of a site's share of rows breaking an expectation of ``rule``."""
    return f"{rule}_violation_rate"


def alert_key(site: str, key: str) -> tuple[str, str, str]:
    """Return the (site, feature, statistic) of the quality alert on expectation ``key`` (``column.rule``)."""
    column, _, rule = key.rpartition(".")
    return site, column, violation_statistic(rule)


def check_quality(
    run: QualityRun,
    *,
    baseline: QualityBaseline,
    sites: list[str],
    thresholds: QualityThresholds | None = None,
) -> QualityResult:
    """Return the window's quality metrics and findings.

    Args:
        run: what the suites found in the window.
        baseline: what the last days looked like per site.
        sites: every site expected in the window.
        thresholds: when a statistic becomes an alert.
    """
    t = thresholds or QualityThresholds()
    rows: list[dict[str, object]] = []
    findings: list[Finding] = []
    insufficient: set[str] = set()
    for suite, per_site in run.rows.items():
        rows.append({"site": GLOBAL, "metric": rows_metric(suite), "value": float(sum(per_site.values()))})
        rows.extend({"site": s, "metric": rows_metric(suite), "value": float(n)} for s, n in per_site.items())
    for outcome in run.outcomes:
        suite_rows = run.rows.get(outcome.suite, {})
        total = sum(suite_rows.values())
        if outcome.error is not None:
            findings.append(
                Finding(
                    Kind.QUALITY,
                    GLOBAL,
                    outcome.column,
                    f"{outcome.rule}_not_evaluated",
                    None,
                    None,
                    Severity.CRITICAL,
                    f"{outcome.suite}: could not check that {outcome.description}: {outcome.error}",
                )
            )
            continue
        rows.append(_metric(GLOBAL, outcome.suite, outcome.key, "unexpected", outcome.unexpected))
        if total:
            rows.append(_metric(GLOBAL, outcome.suite, outcome.key, "rate", outcome.unexpected / total))
        if outcome.unexpected and not outcome.by_site:
            findings.append(
                Finding(
                    Kind.QUALITY,
                    GLOBAL,
                    outcome.column,
                    f"{outcome.rule}_violations",
                    float(outcome.unexpected),
                    0.0,
                    Severity.CRITICAL,
                    f"{outcome.suite}: {outcome.description} fails on {outcome.unexpected} "
                    f"{'row' if outcome.unexpected == 1 else 'rows'}",
                )
            )
        for site in sites:
            n = suite_rows.get(site, 0)
            failed = outcome.by_site.get(site, 0)
            if n:
                rows.append(_metric(site, outcome.suite, outcome.key, "rate", failed / n))
            if failed:
                rows.append(_metric(site, outcome.suite, outcome.key, "unexpected", failed))
            if n < t.min_rows:
                if n:
                    insufficient.add(site)
                continue
            before = baseline.rate(site, outcome.suite, outcome.key, t.rows)
            verdict = t.rows.judge(failed, n, before)
            if verdict is not None:
                findings.append(
                    Finding(
                        Kind.QUALITY,
                        site,
                        outcome.column,
                        violation_statistic(outcome.rule),
                        verdict.rate,
                        verdict.limit,
                        verdict.severity,
                        f"{outcome.description} fails on {verdict.rate:.1%} of studies ({failed} of {n}; "
                        f"{usual(before)}){_example(outcome.examples, site)}",
                    )
                )
    metrics = pd.DataFrame(rows, columns=["site", "metric", "value"]).assign(model_version=GLOBAL)
    return QualityResult(
        metrics[["site", "model_version", "metric", "value"]], tuple(findings), tuple(sorted(insufficient))
    )


def _metric(site: str, suite: str, key: str, what: str, value: float) -> dict[str, object]:
    return {"site": site, "metric": metric_name(suite, key, what), "value": float(value)}


def _example(examples: tuple[dict[str, object], ...], site: str) -> str:
    for example in examples:
        if example.get("site") == site and "value" in example:
            return f", e.g. {example['value']!r} in study {example.get('study_id')}"
    return ""
