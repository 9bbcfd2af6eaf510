"""Technical checks on windows with known problems, and quiet on noise."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from pipeline.monitor import check_technical, window_metrics
from tests.factories import inference_log_rows

END = datetime(2026, 2, 2, tzinfo=UTC)
SITES = ["st-anna", "north-general"]
USUAL = {site: 100.0 for site in SITES}
BASELINE = {(site, "timeout"): 0.002 for site in SITES} | {(site, "cuda_oom"): 0.0005 for site in SITES}


def window(
    counts: dict[str, int], *, seed: int = 0, errors: dict[str, tuple[str, float]] | None = None
) -> pd.DataFrame:
    """A day of logs: ``counts`` studies per site, a share of them failing as ``errors[site] = (type, rate)``."""
    rng = np.random.default_rng(seed)
    parts = []
    for i, (site, n) in enumerate(counts.items()):
        rows = inference_log_rows(n, seed=seed * 10 + i, start=END - timedelta(days=1)).assign(site=site)
        rows["error_type"] = rows["error_type"].astype(object)
        for error, rate in [(errors or {}).get(site, ("timeout", 0.002))]:
            failed = rng.random(n) < rate
            rows.loc[failed, ["status", "error_type", "prob_abnormal", "decision"]] = ["error", error, np.nan, None]
        parts.append(rows)
    return pd.concat(parts, ignore_index=True)


def check(logs: pd.DataFrame, **overrides):
    last = {site: END - timedelta(minutes=5) for site in SITES}
    kwargs = dict(expected_volume=USUAL, baseline_error_rates=BASELINE, last_seen=last, window_end=END, sites=SITES)
    return check_technical(logs, **(kwargs | overrides))


def keys(result) -> set[tuple[str, str, str]]:
    return {(f.site, f.feature, f.statistic) for f in result.findings}


def test_metrics_per_site_version_and_overall():
    logs = window({"st-anna": 100, "north-general": 50})
    metrics = window_metrics(logs).set_index(["site", "model_version", "metric"])["value"]
    assert metrics[("*", "*", "volume")] == 150
    assert metrics[("st-anna", "*", "volume")] == 100 and metrics[("st-anna", "1", "volume")] == 100
    assert 0 <= metrics[("north-general", "*", "share_filtered_normal")] <= 1
    assert (
        metrics[("*", "*", "latency_p50_s")]
        <= metrics[("*", "*", "latency_p95_s")]
        <= metrics[("*", "*", "latency_p99_s")]
    )


def test_error_burst_raises_an_error_rate_alert_for_that_site_and_type():
    result = check(window({"st-anna": 100, "north-general": 100}, errors={"st-anna": ("cuda_oom", 0.15)}))
    assert keys(result) == {("st-anna", "cuda_oom", "error_rate")}
    [finding] = result.findings
    assert finding.kind == "technical" and finding.severity == "critical" and finding.value > 0.1


def test_silent_site_is_critical():
    logs = window({"st-anna": 100})
    result = check(logs, last_seen={"st-anna": END - timedelta(minutes=5), "north-general": END - timedelta(hours=30)})
    assert keys(result) == {("north-general", "volume", "volume_ratio")}
    assert result.findings[0].severity == "critical" and "30.0 h ago" in result.findings[0].message


def test_volume_drop_is_a_warning():
    result = check(window({"st-anna": 100, "north-general": 35}))
    assert keys(result) == {("north-general", "volume", "volume_ratio")}
    assert result.findings[0].severity == "warning" and result.findings[0].value == pytest.approx(0.35)


def test_quiet_on_noise_over_many_stable_windows():
    false_alarms = 0
    for seed in range(60):
        rng = np.random.default_rng(seed)
        counts = {site: int(rng.poisson(100)) for site in SITES}
        false_alarms += len(check(window(counts, seed=seed)).findings)
    assert false_alarms == 0


def test_few_studies_are_insufficient_data_not_alerts():
    logs = window({"st-anna": 5, "north-general": 100}, errors={"st-anna": ("timeout", 1.0)})
    result = check(logs, expected_volume={"north-general": 100.0})
    assert result.insufficient == ("st-anna",)
    assert keys(result) == set()


def test_zero_rows_is_not_a_crash():
    empty = window({"st-anna": 1}).iloc[0:0]
    result = check(empty)
    assert keys(result) == {("st-anna", "volume", "volume_ratio"), ("north-general", "volume", "volume_ratio")}
    assert set(result.insufficient) == set(SITES)
