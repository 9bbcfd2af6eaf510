"""Validation statistics: exact against brute force and scipy/sklearn, calibrated under the null, loud on real gaps."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from pipeline.validation.checks import ValidationConfig
from pipeline.validation.stats import (
    below_target,
    clopper_pearson_interval,
    clopper_pearson_lower,
    delong,
    detection_power,
    metrics_at,
    min_trials,
    sensitivity_threshold,
)


def scored(
    rng: np.random.Generator, n_pos: int, n_neg: int, shift_a: float, shift_b: float, shared: float = 0.7
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return labels and two correlated scorers: a shared latent plus each scorer's own noise and class shift."""
    labels = np.r_[np.ones(n_pos, int), np.zeros(n_neg, int)]
    latent = rng.normal(size=labels.size)
    own_a, own_b = rng.normal(size=(2, labels.size))
    a = shift_a * labels + shared * latent + np.sqrt(1 - shared**2) * own_a
    b = shift_b * labels + shared * latent + np.sqrt(1 - shared**2) * own_b
    return labels, a, b


def brute_force_delong(labels: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """Return (auroc_a, auroc_b, se of a - b) from DeLong's 1988 definition, by all positive-negative pairs."""
    pos, neg = labels == 1, labels == 0
    v10, v01 = [], []
    for s in (a, b):
        psi = (s[pos][:, None] > s[neg][None, :]) + 0.5 * (s[pos][:, None] == s[neg][None, :])
        v10.append(psi.mean(axis=1))
        v01.append(psi.mean(axis=0))
    s10, s01 = np.cov(np.array(v10)), np.cov(np.array(v01))
    cov = s10 / pos.sum() + s01 / neg.sum()
    return float(v10[0].mean()), float(v10[1].mean()), float(np.sqrt(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]))


def bootstrap_aurocs(labels: np.ndarray, scores: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Return the AUROC of each row of ``index`` (stratified: positives first), by ranks."""
    m = int(labels.sum())
    n = labels.size - m
    ranks = stats.rankdata(scores[index], axis=1)
    return (ranks[:, :m].sum(axis=1) - m * (m + 1) / 2) / (m * n)


# --- DeLong -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("decimals", [None, 1, 0])
def test_delong_aurocs_match_sklearn_with_and_without_ties(decimals: int | None) -> None:
    labels, a, b = scored(np.random.default_rng(1), 60, 90, 1.0, 0.4)
    if decimals is not None:  # rounding makes many ties, within and across classes
        a, b = np.round(a, decimals), np.round(b, decimals)
    result = delong(labels, a, b)
    assert result.auroc_a == pytest.approx(roc_auc_score(labels, a), abs=1e-12)
    assert result.auroc_b == pytest.approx(roc_auc_score(labels, b), abs=1e-12)
    assert result.difference == pytest.approx(result.auroc_a - result.auroc_b)
    assert (result.n, result.n_positive) == (150, 60)


@pytest.mark.parametrize("decimals", [None, 0])
def test_delong_se_matches_the_pairwise_definition(decimals: int | None) -> None:
    labels, a, b = scored(np.random.default_rng(2), 40, 70, 0.8, 0.5)
    if decimals is not None:
        a, b = np.round(a, decimals), np.round(b, decimals)
    auroc_a, auroc_b, se = brute_force_delong(labels, a, b)
    result = delong(labels, a, b)
    assert (result.auroc_a, result.auroc_b) == pytest.approx((auroc_a, auroc_b), abs=1e-12)
    assert result.se == pytest.approx(se, rel=1e-9)
    assert result.z == pytest.approx(result.difference / se, rel=1e-9)
    assert result.p_value == pytest.approx(2 * stats.norm.sf(abs(result.difference / se)), rel=1e-9)


def test_delong_se_agrees_with_a_large_stratified_bootstrap() -> None:
    rng = np.random.default_rng(3)
    labels, a, b = scored(rng, 200, 300, 1.0, 0.7)
    result = delong(labels, a, b)
    pos, neg = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    index = np.concatenate(
        [pos[rng.integers(0, pos.size, (2000, pos.size))], neg[rng.integers(0, neg.size, (2000, neg.size))]], axis=1
    )
    boot_a = bootstrap_aurocs(labels, a, index)
    boot_b = bootstrap_aurocs(labels, b, index)
    assert result.se_a == pytest.approx(boot_a.std(ddof=1), rel=0.10)
    assert result.se_b == pytest.approx(boot_b.std(ddof=1), rel=0.10)
    assert result.se == pytest.approx((boot_a - boot_b).std(ddof=1), rel=0.10)


def test_delong_p_values_are_uniform_under_the_null() -> None:
    rng = np.random.default_rng(4)
    p_values = np.array([delong(*scored(rng, 60, 90, 0.8, 0.8)).p_value for _ in range(400)])
    assert 0.02 <= np.mean(p_values < 0.05) <= 0.09
    assert stats.kstest(p_values, "uniform").pvalue > 0.01


def test_delong_finds_a_clearly_better_scorer() -> None:
    labels, a, b = scored(np.random.default_rng(5), 150, 250, 1.5, 0.5)
    result = delong(labels, a, b)
    assert result.difference > 0.1
    assert result.z > 3 and result.p_value < 0.001
    low, high = result.ci()
    assert 0 < low < result.difference < high
    assert low < result.lower() < result.difference  # one-sided 95% bound is tighter than the two-sided one
    assert delong(labels, b, a).difference == pytest.approx(-result.difference)


def test_delong_identical_scores_have_zero_se_and_p_one() -> None:
    labels, a, _ = scored(np.random.default_rng(6), 50, 50, 1.0, 1.0)
    result = delong(labels, a, a.copy())
    assert result.difference == 0.0
    assert result.se == 0.0 and result.z == 0.0 and result.p_value == 1.0
    assert result.ci() == (0.0, 0.0)
    assert result.se_a > 0.0


def test_delong_rejects_bad_inputs() -> None:
    labels, a, b = scored(np.random.default_rng(7), 10, 10, 1.0, 1.0)
    with pytest.raises(ValueError, match="same length"):
        delong(labels, a, b[:-1])
    with pytest.raises(ValueError, match="labels and scores_a"):
        delong(labels[:-1], a, b)
    with pytest.raises(ValueError, match="all 20 labels are normal"):
        delong(np.zeros(20), a, b)
    with pytest.raises(ValueError, match="at least 2 studies of each class"):
        delong(np.r_[1, np.zeros(19)], a, b)
    with pytest.raises(ValueError, match="scores_b has 1 NaN"):
        delong(labels, a, np.r_[b[:-1], np.nan])


# --- Clopper-Pearson ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("k", "n"), [(1, 1), (3, 10), (97, 100), (299, 299), (1000, 1003)])
def test_clopper_pearson_lower_matches_scipy_exact_interval(k: int, n: int) -> None:
    expected = stats.binomtest(k, n).proportion_ci(confidence_level=0.90, method="exact").low
    assert clopper_pearson_lower(k, n, 0.95) == pytest.approx(expected, rel=1e-10)


def test_clopper_pearson_lower_edges_and_errors() -> None:
    assert clopper_pearson_lower(0, 10) == 0.0
    assert clopper_pearson_lower(10, 10) == pytest.approx(0.05 ** (1 / 10))
    for args, message in [((11, 10), "successes"), ((0, 0), "trials"), ((1.5, 10), "integers")]:
        with pytest.raises(ValueError, match=message):
            clopper_pearson_lower(*args)
    with pytest.raises(ValueError, match="confidence"):
        clopper_pearson_lower(5, 10, confidence=1.0)


def test_min_trials_is_299_for_99_percent_at_95_percent() -> None:
    assert min_trials(0.99, 0.95) == 299
    assert clopper_pearson_lower(299, 299) >= 0.99 > clopper_pearson_lower(298, 298)


# --- Operating point ----------------------------------------------------------------------------------------------


def screening_set(rng: np.random.Generator, n_pos: int, n_neg: int) -> tuple[np.ndarray, np.ndarray]:
    probs = np.r_[rng.uniform(0.3, 1.0, n_pos), rng.uniform(0.0, 0.5, n_neg)]
    return probs, np.r_[np.ones(n_pos, int), np.zeros(n_neg, int)]


def brute_force_threshold(probs: np.ndarray, labels: np.ndarray, target: float) -> float:
    """Return the highest candidate threshold (a positive's probability) whose lower bound reaches ``target``."""
    positives = probs[labels == 1]
    feasible = [
        t for t in np.unique(positives) if clopper_pearson_lower(int((positives >= t).sum()), positives.size) >= target
    ]
    return float(max(feasible))


@pytest.mark.parametrize("target", [0.99, 0.95, 0.9])
def test_sensitivity_threshold_is_the_highest_that_keeps_the_lower_bound(target: float) -> None:
    probs, labels = screening_set(np.random.default_rng(9), 400, 600)
    point = sensitivity_threshold(probs, labels, target=target)
    assert point.attainable
    assert point.threshold == brute_force_threshold(probs, labels, target)
    assert point.sensitivity_lower >= target
    # the next positive up is lost at any higher threshold, and the bound falls below the target
    above = np.sort(probs[labels == 1])
    above = above[above > point.threshold]
    if above.size:
        caught = int((probs[labels == 1] >= above[0]).sum())
        assert clopper_pearson_lower(caught, 400) < target
    assert (point.sensitivity, point.specificity, point.filtered_share) == metrics_at(probs, labels, point.threshold)
    assert point.filtered_share == np.mean(probs < point.threshold)
    assert (point.n_positive, point.n_negative, point.min_positives) == (400, 600, min_trials(target))


def test_sensitivity_threshold_99_with_400_positives_catches_all_and_filters_normals() -> None:
    probs, labels = screening_set(np.random.default_rng(10), 400, 600)
    point = sensitivity_threshold(probs, labels)
    # 399/400 has a lower bound below 0.99, so every positive must be caught
    assert clopper_pearson_lower(399, 400) < 0.99
    assert point.threshold == probs[labels == 1].min() >= 0.3
    assert point.sensitivity == 1.0
    assert point.specificity == pytest.approx(np.mean(probs[labels == 0] < point.threshold))
    assert point.filtered_share > 0.3


def test_sensitivity_threshold_not_attainable_with_50_positives() -> None:
    probs, labels = screening_set(np.random.default_rng(11), 50, 500)
    point = sensitivity_threshold(probs, labels, target=0.99)
    assert not point.attainable
    assert point.min_positives == 299
    assert point.threshold == probs[labels == 1].min()
    assert point.sensitivity == 1.0
    assert point.sensitivity_lower == pytest.approx(0.05 ** (1 / 50)) and point.sensitivity_lower < 0.99


def test_sensitivity_threshold_flags_ties_at_the_threshold() -> None:
    probs = np.r_[np.full(300, 0.6), np.full(10, 0.6), np.full(90, 0.1)]
    labels = np.r_[np.ones(300, int), np.zeros(100, int)]
    point = sensitivity_threshold(probs, labels)
    assert point.threshold == 0.6 and point.sensitivity == 1.0
    assert point.specificity == pytest.approx(0.9)
    assert point.filtered_share == pytest.approx(90 / 400)


_probs, _labels = screening_set(np.random.default_rng(12), 20, 20)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"probs": _probs.reshape(4, 10)}, "probs must be 1-D"),
        ({"labels": _labels[:-1]}, "same length"),
        ({"labels": np.ones(40)}, "all 40 labels are abnormal"),
        ({"labels": np.r_[_labels[:-1], 2]}, "labels must be 0"),
        ({"probs": np.r_[_probs[:-1], np.nan]}, "probs has 1 NaN"),
        ({"probs": np.r_[_probs[:-1], 1.2]}, r"probs must lie in \[0, 1\]"),
        ({"target": 1.0}, "target must lie strictly between 0 and 1"),
        ({"confidence": 0.0}, "confidence must lie strictly between 0 and 1"),
    ],
)
def test_sensitivity_threshold_rejects_bad_inputs(kwargs: dict[str, Any], message: str) -> None:
    arguments: dict[str, Any] = {"probs": _probs, "labels": _labels, **kwargs}
    with pytest.raises(ValueError, match=message):
        sensitivity_threshold(**arguments)


def test_metrics_at_counts_ties_as_flagged() -> None:
    probs = np.array([0.9, 0.5, 0.2, 0.5, 0.1, 0.05])
    labels = np.array([1, 1, 1, 0, 0, 0])
    assert metrics_at(probs, labels, 0.5) == pytest.approx((2 / 3, 2 / 3, 3 / 6))
    with pytest.raises(ValueError, match="threshold"):
        metrics_at(probs, labels, 1.5)


def test_below_target_is_the_exact_one_sided_test_and_its_interval_agrees() -> None:
    for k, n in ((28, 30), (37, 40), (39, 40), (0, 5)):
        low, high = clopper_pearson_interval(k, n, 0.9)
        flagged, p = below_target(k, n, 0.99, 0.95)
        assert p == pytest.approx(stats.binom.cdf(k, n, 0.99))
        assert flagged == (high < 0.99)  # the two-sided 90% interval's upper end is the one-sided 95% bound
        assert low == pytest.approx(clopper_pearson_lower(k, n, 0.95))
    with pytest.raises(ValueError, match="successes must lie"):
        below_target(5, 4, 0.99)


def test_the_gates_minimum_of_evidence_catches_a_fall_in_sensitivity_with_high_probability() -> None:
    default = ValidationConfig().min_positives
    for units in (1, 6):  # a site judged alone, or Holm-corrected among six served sites and scanners
        level = 1 - 0.05 / units
        assert detection_power(default, 0.99, 0.85, level) >= 0.95
        assert detection_power(default, 0.99, 0.99, level) <= 0.01  # a candidate at its target is not failed
    assert detection_power(30, 0.99, 0.85, 1 - 0.05 / 6) < 0.9  # why not fewer
    assert detection_power(default, 0.99, 0.85) > detection_power(default, 0.99, 0.95)  # the bigger the fall
