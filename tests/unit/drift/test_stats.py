"""Drift statistics: quiet with no drift, loud on known shifts, exact against brute force on tiny inputs."""

from __future__ import annotations

from collections.abc import Callable
from itertools import product
from typing import Any

import numpy as np
import pytest
from scipy import stats
from scipy.spatial.distance import jensenshannon
from scipy.special import expit, logit

from pipeline.drift import (
    aligned_counts,
    calibrated_threshold,
    cusum,
    em_prevalence,
    expected_auroc,
    expected_performance,
    hellinger,
    holm,
    jackknife_distance,
    jensen_shannon,
    mmd_permutation_test,
    pca_fit,
    platt_scaling,
    reweight_to_prevalence,
    robust_scale,
    wasserstein,
)

ALPHA = 0.05
VIEWS = np.array(["PA", "AP", "LAT"])
VIEW_SHARES = [0.6, 0.3, 0.1]


def label_hellinger(a: np.ndarray, b: np.ndarray) -> float:
    """Hellinger distance between two samples of labels, as a jackknife needs it."""
    return hellinger(*aligned_counts(a, b))


# --- Wasserstein ---------------------------------------------------------------------------------------------------


def test_wasserstein_of_a_half_sd_mean_shift_is_about_half():
    rng = np.random.default_rng(0)
    assert wasserstein(rng.normal(0, 1, 20_000), rng.normal(0.5, 1, 20_000)) == pytest.approx(0.5, abs=0.05)


def test_wasserstein_is_unit_free():
    rng = np.random.default_rng(1)
    ref, cur = rng.normal(0, 1, 1000), rng.normal(0.3, 1.2, 700)
    assert wasserstein(100 * ref + 7, 100 * cur + 7) == pytest.approx(wasserstein(ref, cur))


@pytest.mark.parametrize(("n", "m"), [(1, 1), (5, 3), (7, 7), (100, 37)])
def test_wasserstein_matches_scipy_exactly(n: int, m: int):
    rng = np.random.default_rng(n * 100 + m)
    ref, cur = rng.normal(size=n), rng.exponential(size=m)
    assert wasserstein(ref, cur, scale=1.0) == pytest.approx(stats.wasserstein_distance(ref, cur), rel=1e-12)


def test_wasserstein_drops_nans_and_is_zero_on_the_same_sample():
    ref = np.array([0.0, 1.0, 2.0, 3.0])
    assert wasserstein(ref, ref) == 0.0
    assert wasserstein([0.0, np.nan, 1.0, 2.0, 3.0], [np.nan, 3.0, 2.0, 1.0, 0.0]) == 0.0


def test_robust_scale_falls_back_to_std_then_one():
    rng = np.random.default_rng(2)
    assert robust_scale(rng.normal(0, 2, 50_000)) == pytest.approx(2.0, rel=0.03)
    mostly_zero = np.r_[np.zeros(98), 10.0, -10.0]
    assert robust_scale(mostly_zero) == pytest.approx(np.std(mostly_zero))
    assert robust_scale(np.full(10, 3.0)) == 1.0


# --- Categorical distances -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("distance", [hellinger, jensen_shannon])
def test_categorical_distance_is_zero_on_the_same_shares_and_one_on_disjoint(distance: Callable[..., float]):
    assert distance({"PA": 60, "AP": 30}, {"PA": 60, "AP": 30}) == pytest.approx(0.0, abs=1e-12)
    assert distance([60, 30, 10], [6, 3, 1]) == pytest.approx(0.0, abs=1e-12)
    assert distance({"PA": 60, "AP": 30}, {"LAT": 5}) == pytest.approx(1.0)
    assert distance([1, 0], [0, 1]) == pytest.approx(1.0)


@pytest.mark.parametrize("distance", [hellinger, jensen_shannon])
def test_a_category_unseen_in_the_reference_adds_to_the_distance(distance: Callable[..., float]):
    ref = {"PA": 600, "AP": 300, "LAT": 100}
    before = distance(ref, {"PA": 60, "AP": 30, "LAT": 10})
    after = distance(ref, {"PA": 60, "AP": 30, "LAT": 10, "unknown-view": 20})
    assert before == pytest.approx(0.0, abs=1e-12)
    assert 0.0 < after < 1.0


def test_categorical_distances_match_their_definitions():
    ref, cur = np.array([50.0, 30.0, 20.0, 0.0]), np.array([20.0, 30.0, 40.0, 10.0])
    p, q = ref / ref.sum(), cur / cur.sum()
    assert hellinger(ref, cur) == pytest.approx(np.sqrt(0.5 * np.sum((np.sqrt(p) - np.sqrt(q)) ** 2)))
    assert jensen_shannon(ref, cur) == pytest.approx(jensenshannon(p, q, base=2))
    assert hellinger({"a": 50, "b": 30, "c": 20}, {"b": 30, "c": 40, "d": 10, "a": 20}) == pytest.approx(
        hellinger(ref, cur)
    )


def test_aligned_counts_cover_the_union_of_categories():
    ref_counts, cur_counts = aligned_counts(["PA", "AP", "PA"], ["LAT", "PA"])  # sorted: AP, LAT, PA
    np.testing.assert_array_equal(ref_counts, [1, 0, 2])
    np.testing.assert_array_equal(cur_counts, [0, 1, 1])
    ref_counts, cur_counts = aligned_counts(np.array(["PA", None], dtype=object), np.array([None, None], dtype=object))
    np.testing.assert_array_equal(ref_counts, [1, 1])  # None is a category of its own
    np.testing.assert_array_equal(cur_counts, [2, 0])


# --- Jackknife correction and thresholds ---------------------------------------------------------------------------


def test_jackknife_distance_is_centred_near_zero_without_shift():
    rng = np.random.default_rng(3)
    corrected, raw = [], []
    for _ in range(100):
        ref, cur = rng.normal(size=1000), rng.normal(size=500)
        corrected.append(jackknife_distance(wasserstein, ref, cur, rng=rng))
        raw.append(wasserstein(ref, cur))
    assert np.mean(raw) > 0.05  # the bias the correction removes
    assert abs(np.mean(corrected)) < 0.01


def test_jackknife_distance_keeps_a_real_shift():
    rng = np.random.default_rng(4)
    ref, cur = rng.normal(size=4000), rng.normal(0.5, 1, 2000)
    assert jackknife_distance(wasserstein, ref, cur, rng=rng) == pytest.approx(0.5, abs=0.1)


def test_jackknife_distance_works_on_labels():
    rng = np.random.default_rng(5)
    same = [
        jackknife_distance(
            label_hellinger, rng.choice(VIEWS, 1000, p=VIEW_SHARES), rng.choice(VIEWS, 500, p=VIEW_SHARES), rng=rng
        )
        for _ in range(100)
    ]
    assert abs(np.mean(same)) < 0.005
    shifted = rng.choice(VIEWS, 500, p=[0.3, 0.6, 0.1])  # PA and AP swapped
    assert jackknife_distance(label_hellinger, rng.choice(VIEWS, 1000, p=VIEW_SHARES), shifted, rng=rng) > 0.1


def test_calibrated_threshold_is_a_quantile_plus_half_an_sd_above_a_floor():
    values = np.arange(101, dtype=float)  # quantile 0.99 = 99
    assert calibrated_threshold(values) == pytest.approx(99 + 0.5 * np.std(values, ddof=1))
    assert calibrated_threshold(values, margin_sd=0.0, quantile=0.5) == pytest.approx(50.0)
    assert calibrated_threshold(values / 1000, floor=1.0) == 1.0


def test_calibrated_threshold_keeps_fresh_null_windows_quiet_and_flags_a_shift():
    rng = np.random.default_rng(6)

    def corrected(shift: float) -> float:
        return jackknife_distance(wasserstein, rng.normal(size=400), rng.normal(shift, 1, 200), rng=rng)

    threshold = calibrated_threshold([corrected(0.0) for _ in range(60)])
    false_alarms = np.mean([corrected(0.0) > threshold for _ in range(200)])
    assert false_alarms < 0.08  # about 1% on average; 60 calibration windows make it vary from seed to seed
    assert np.mean([corrected(0.5) > threshold for _ in range(50)]) > 0.9


# --- MMD and PCA ---------------------------------------------------------------------------------------------------


def brute_force_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased squared MMD with the median-heuristic RBF kernel, by explicit loops."""
    pooled = np.concatenate([x, y])
    dist2 = [[float(np.sum((a - b) ** 2)) for b in pooled] for a in pooled]
    bandwidth2 = np.median([dist2[i][j] for i in range(len(pooled)) for j in range(i + 1, len(pooled))])
    k = np.exp(-np.array(dist2) / (2 * bandwidth2))
    m, n = len(x), len(y)
    xx = sum(k[i, j] for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k[m + i, m + j] for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k[i, m + j] for i in range(m) for j in range(n)) / (m * n)
    return float(xx + yy - 2 * xy)


def test_mmd_matches_brute_force_on_a_tiny_multivariate_sample():
    rng = np.random.default_rng(7)
    x, y = rng.normal(size=(5, 3)), rng.normal(0.5, 1, size=(6, 3))
    mmd2, p_value = mmd_permutation_test(x, y, n_permutations=50, rng=rng)
    assert mmd2 == pytest.approx(brute_force_mmd2(x, y), rel=1e-10)
    assert p_value in {(k + 1) / 51 for k in range(51)}


def test_mmd_false_alarm_rate_is_near_nominal_without_drift():
    rng = np.random.default_rng(8)
    p_values = [
        mmd_permutation_test(rng.normal(size=100), rng.normal(size=100), n_permutations=100, rng=rng)[1]
        for _ in range(200)
    ]
    assert np.mean(np.array(p_values) <= ALPHA) < 0.1


def test_mmd_detects_a_half_sd_mean_shift_at_200_per_side():
    rng = np.random.default_rng(9)
    p_values = [
        mmd_permutation_test(rng.normal(size=200), rng.normal(0.5, 1, 200), n_permutations=100, rng=rng)[1]
        for _ in range(50)
    ]
    assert np.mean(np.array(p_values) <= ALPHA) >= 0.85


def test_mmd_subsamples_large_inputs_and_floors_the_p_value():
    rng = np.random.default_rng(10)
    x, y = rng.normal(size=(50_000, 4)), rng.normal(3, 1, size=(50_000, 4)).astype(np.float32)
    mmd2, p_value = mmd_permutation_test(x, y, n_permutations=99, max_samples=300, rng=rng)
    assert mmd2 > 0.5
    assert p_value == pytest.approx(1 / 100)


def test_mmd_of_constant_samples_is_zero():
    mmd2, p_value = mmd_permutation_test(np.ones(10), np.ones(12), rng=np.random.default_rng(11))
    assert mmd2 == pytest.approx(0.0, abs=1e-12)
    assert p_value == 1.0


def test_pca_recovers_a_dominant_direction_and_matches_numpy_svd():
    rng = np.random.default_rng(12)
    direction = np.array([3.0, -4.0, 0.0, 0.0, 0.0]) / 5
    x = rng.normal(size=(2000, 5)) * 0.1 + rng.normal(0, 3, size=(2000, 1)) * direction + 10
    pca = pca_fit(x, n_components=3)
    np.testing.assert_allclose(pca.components[0], -direction, atol=0.01)  # largest loading made positive
    np.testing.assert_allclose(pca.components @ pca.components.T, np.eye(3), atol=1e-10)
    assert pca.explained_variance_ratio[0] > 0.99
    _, singular, vt = np.linalg.svd(x - x.mean(axis=0), full_matrices=False)
    np.testing.assert_allclose(np.abs(pca.components), np.abs(vt[:3]), atol=1e-8)
    np.testing.assert_allclose(pca.explained_variance_ratio, singular[:3] ** 2 / np.sum(singular**2))
    scores = pca.transform(x)
    assert scores.shape == (2000, 3)
    np.testing.assert_allclose(pca.transform(pca.mean[None, :]), 0.0, atol=1e-12)


def test_pca_with_fewer_rows_than_features_and_a_subsample():
    rng = np.random.default_rng(13)
    wide = rng.normal(size=(4, 10))
    pca = pca_fit(wide, n_components=3)
    _, _, vt = np.linalg.svd(wide - wide.mean(axis=0), full_matrices=False)
    np.testing.assert_allclose(np.abs(pca.components), np.abs(vt[:3]), atol=1e-10)
    tall = rng.normal(size=(5000, 3)) * [5.0, 1.0, 0.2]
    pca = pca_fit(tall, n_components=2, max_samples=500, rng=rng)
    np.testing.assert_allclose(np.abs(pca.components), [[1, 0, 0], [0, 1, 0]], atol=0.05)


# --- CUSUM ---------------------------------------------------------------------------------------------------------


def test_cusum_sums_follow_the_tabular_recursion():
    rng = np.random.default_rng(14)
    values = rng.normal(10, 2, 200)
    result = cusum(values, target=10, sd=2, k=0.5, h=1e9)
    upper = lower = 0.0
    for day, value in enumerate(values):
        z = (value - 10) / 2
        upper, lower = max(0.0, upper + z - 0.5), max(0.0, lower - z - 0.5)
        assert result.upper[day] == pytest.approx(upper, abs=1e-9)
        assert result.lower[day] == pytest.approx(lower, abs=1e-9)
    assert result.alarm_index is None and not result.alarmed


def test_cusum_stays_quiet_on_in_control_noise():
    rng = np.random.default_rng(15)
    assert not cusum(rng.normal(0.2, 0.05, 60), target=0.2, sd=0.05).alarmed
    # Defaults give about 465 in-control days between false alarms: ~12% of 60-day runs alarm once.
    alarms = np.mean([cusum(rng.normal(size=60), target=0, sd=1).alarmed for _ in range(500)])
    assert alarms < 0.2


def first_beyond_3_sd(z: np.ndarray) -> int:
    beyond = np.abs(z) > 3
    return int(np.argmax(beyond)) if beyond.any() else len(z)


def test_cusum_catches_a_gradual_drift_before_day_30_and_before_a_3_sd_rule():
    rng = np.random.default_rng(16)
    days = np.arange(60)
    cusum_days, rule_days = [], []
    for _ in range(200):
        z = 0.1 * days + rng.normal(size=60)
        result = cusum(z, target=0, sd=1)
        assert result.alarm_index is not None and result.alarm_index < 30
        assert result.alarm_direction == "up"
        cusum_days.append(result.alarm_index)
        rule_days.append(first_beyond_3_sd(z))
    assert np.median(cusum_days) + 3 <= np.median(rule_days)


def test_cusum_reports_a_downward_shift():
    values = np.r_[np.zeros(10), np.full(10, -2.0)]
    result = cusum(values, target=0, sd=1)
    assert result.alarm_direction == "down"
    assert result.alarm_index == 13  # lower sum 1.5 per day from day 10: 1.5, 3, 4.5, 6 > 5


# --- Label shift ---------------------------------------------------------------------------------------------------

SEPARATION = 2.0  # scores N(0, 1) for negatives and N(2, 1) for positives


def calibrated_window(
    n: int, prevalence: float, *, train_prevalence: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn at ``prevalence`` and the exact posteriors of a model calibrated at ``train_prevalence``."""
    rng = np.random.default_rng(seed)
    labels = rng.random(n) < prevalence
    scores = rng.normal(SEPARATION * labels, 1.0)
    log_likelihood_ratio = SEPARATION * scores - SEPARATION**2 / 2
    return expit(log_likelihood_ratio + logit(train_prevalence)), labels


def test_em_recovers_a_lower_prevalence_in_the_window():
    probs, labels = calibrated_window(20_000, 0.10, train_prevalence=0.25, seed=17)
    assert probs.mean() > 0.14  # the raw mean is biased towards the training prevalence
    estimate = em_prevalence(probs, train_prevalence=0.25)
    assert estimate == pytest.approx(0.10, abs=0.02)
    assert estimate == pytest.approx(labels.mean(), abs=0.02)


def test_em_keeps_the_training_prevalence_without_shift():
    probs, _ = calibrated_window(20_000, 0.25, train_prevalence=0.25, seed=18)
    assert em_prevalence(probs, train_prevalence=0.25) == pytest.approx(0.25, abs=0.02)


def test_reweighting_gives_the_posteriors_at_the_new_prevalence():
    probs, _ = calibrated_window(1000, 0.10, train_prevalence=0.25, seed=19)
    reweighted = reweight_to_prevalence(probs, train_prevalence=0.25, new_prevalence=0.10)
    log_likelihood_ratio = logit(probs) - logit(0.25)
    np.testing.assert_allclose(reweighted, expit(log_likelihood_ratio + logit(0.10)), rtol=1e-9)
    same = reweight_to_prevalence(probs, train_prevalence=0.25, new_prevalence=0.25)
    np.testing.assert_allclose(same, probs)
    np.testing.assert_array_equal(reweight_to_prevalence([0.0, 1.0], train_prevalence=0.3, new_prevalence=0.6), [0, 1])


# --- Performance without labels ------------------------------------------------------------------------------------


def realised_auroc(probs: np.ndarray, labels: np.ndarray) -> float:
    ranks = stats.rankdata(probs)
    n_pos, n_neg = labels.sum(), (~labels).sum()
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def test_expected_performance_matches_the_realised_on_calibrated_data():
    rng = np.random.default_rng(20)
    probs = np.round(expit(rng.normal(-1.0, 1.5, 50_000)), 3)  # rounded: many ties, as real outputs have
    labels = rng.random(probs.size) < probs
    estimate = expected_performance(probs, threshold=0.3)
    called = probs >= 0.3
    assert estimate.sensitivity == pytest.approx(np.mean(called[labels]), abs=0.02)
    assert estimate.specificity == pytest.approx(np.mean(~called[~labels]), abs=0.02)
    assert estimate.auroc == pytest.approx(realised_auroc(probs, labels), abs=0.02)
    assert estimate.prevalence == pytest.approx(labels.mean(), abs=0.01)
    assert estimate.tp + estimate.fp + estimate.tn + estimate.fn == pytest.approx(50_000)


def test_platt_scaling_undoes_a_known_distortion_and_restores_the_label_free_auroc():
    rng = np.random.default_rng(21)
    truth = expit(rng.normal(-1.0, 1.5, 40_000))
    labels = rng.random(truth.size) < truth
    overconfident = expit(2.0 * logit(truth) + 1.0)  # a new scanner: surer and shifted
    fitted = platt_scaling(overconfident, labels)
    assert fitted.slope == pytest.approx(0.5, abs=0.03)
    assert fitted.intercept == pytest.approx(-0.5, abs=0.05)
    assert fitted.p_value < 1e-6
    realised = realised_auroc(overconfident, labels)
    assert abs(expected_auroc(overconfident) - realised) > 0.03
    assert expected_auroc(fitted(overconfident)) == pytest.approx(realised, abs=0.01)


def test_platt_scaling_leaves_calibrated_probabilities_alone_even_when_outcomes_follow_the_score():
    rng = np.random.default_rng(22)
    probs = expit(rng.normal(-1.0, 1.5, 40_000))
    labels = rng.random(probs.size) < probs
    # Flagged studies come back three times as often: picked on p, which the fit conditions on.
    back = rng.random(probs.size) < np.where(probs >= 0.3, 0.9, 0.3)
    fitted = platt_scaling(probs[back], labels[back])
    assert fitted.slope == pytest.approx(1.0, abs=0.05)
    assert fitted.intercept == pytest.approx(0.0, abs=0.05)
    assert fitted.n_outcomes == int(back.sum())


def test_platt_calibration_test_holds_its_level_on_calibrated_probabilities():
    rng = np.random.default_rng(24)
    rejected = 0
    for _ in range(200):
        probs = expit(rng.normal(-1.0, 1.5, 500))
        rejected += platt_scaling(probs, rng.random(probs.size) < probs).p_value < ALPHA
    assert rejected / 200 == pytest.approx(ALPHA, abs=0.035)


def test_platt_scaling_of_an_uninformative_score_brings_the_estimate_to_a_half():
    rng = np.random.default_rng(23)
    probs = expit(rng.normal(2.0, 1.0, 20_000))  # confident, and wrong: labels ignore it
    labels = rng.random(probs.size) < 0.3
    fitted = platt_scaling(probs, labels)
    assert expected_auroc(probs) > 0.6
    assert expected_auroc(fitted(probs)) == pytest.approx(0.5, abs=0.01)


def brute_force_expected_auroc(p: list[float]) -> float:
    wins = pairs = 0.0
    for (i, pi), (j, pj) in product(enumerate(p), repeat=2):
        if i != j:
            weight = pi * (1 - pj)
            wins += weight * (1.0 if pi > pj else 0.5 if pi == pj else 0.0)
            pairs += weight
    return wins / pairs


@pytest.mark.parametrize("probs", [[0.9, 0.2, 0.2, 0.6, 0.0, 1.0, 0.6, 0.35], [0.5, 0.5], [0.1, 0.7, 0.3]])
def test_expected_auroc_matches_brute_force(probs: list[float]):
    assert expected_auroc(probs) == pytest.approx(brute_force_expected_auroc(probs), rel=1e-12)


def test_expected_performance_counts_on_a_tiny_example():
    estimate = expected_performance([0.9, 0.6, 0.4, 0.1], threshold=0.5)
    assert (estimate.tp, estimate.fp, estimate.fn, estimate.tn) == pytest.approx((1.5, 0.5, 0.5, 1.5))
    assert estimate.sensitivity == pytest.approx(0.75) and estimate.specificity == pytest.approx(0.75)


def test_expected_rates_without_positives_are_nan():
    estimate = expected_performance(np.zeros(5), threshold=0.5)
    assert np.isnan(estimate.sensitivity) and np.isnan(estimate.auroc)
    assert estimate.specificity == 1.0


# --- Bad input -----------------------------------------------------------------------------------------------------

RNG = np.random.default_rng(0)

BAD_INPUTS: list[tuple[Callable[[], Any], str]] = [
    (lambda: wasserstein([], [1.0]), "ref is empty"),
    (lambda: wasserstein([np.nan], [1.0]), "ref is empty once NaNs are dropped"),
    (lambda: wasserstein([[1.0, 2.0]], [1.0]), "ref must be 1-D"),
    (lambda: wasserstein([1.0], ["a"]), "cur must be numeric"),
    (lambda: wasserstein([1.0], [np.inf]), "cur has infinite"),
    (lambda: wasserstein([1.0], [2.0], scale=0.0), "scale must be positive"),
    (lambda: hellinger([1, 2], [1, 2, 3]), "must be aligned"),
    (lambda: hellinger({"a": 1}, [1]), "both be mappings or both be arrays"),
    (lambda: hellinger([0, 0], [1, 2]), "ref_counts sums to zero"),
    (lambda: jensen_shannon([1, -1], [1, 2]), "ref_counts has a negative count"),
    (lambda: jensen_shannon({}, {}), "no categories"),
    (lambda: hellinger([1, np.nan], [1, 2]), "ref_counts has 1 NaN"),
    (lambda: aligned_counts([], ["PA"]), "ref is empty"),
    (lambda: jackknife_distance(wasserstein, [1.0], [1.0], rng=RNG), "ref needs at least 2 values"),
    (lambda: calibrated_threshold([0.1]), "at least 2 no-drift values"),
    (lambda: calibrated_threshold([0.1, 0.2], quantile=1.5), "quantile must lie in"),
    (lambda: calibrated_threshold([0.1, np.nan]), "values has 1 NaN value"),
    (lambda: mmd_permutation_test(np.ones((5, 2)), np.ones((5, 3)), rng=RNG), "same number of features"),
    (
        lambda: mmd_permutation_test([1.0, np.nan, 2.0], [1.0, 2.0], rng=RNG),
        "x has NaN or infinite values, first in row 1",
    ),
    (lambda: mmd_permutation_test([1.0], [1.0, 2.0], rng=RNG), "at least 2 rows each"),
    (lambda: mmd_permutation_test(np.ones((0, 2)), np.ones((5, 2)), rng=RNG), "x is empty"),
    (lambda: mmd_permutation_test([1.0, 2.0], [1.0, 2.0], n_permutations=0, rng=RNG), "n_permutations must be"),
    (lambda: pca_fit(np.ones(10)), "x must be 2-D"),
    (lambda: pca_fit(np.ones((10, 3))), r"n_components must lie in \[1, min\(n_rows, n_features\)\] = \[1, 3\]"),
    (lambda: pca_fit(np.ones((10, 3)), 2).transform(np.ones((2, 4))), "x must have 3 features"),
    (lambda: cusum([1.0, np.nan], target=0, sd=1), "values has 1 NaN value.*index 1"),
    (lambda: cusum([1.0], target=0, sd=0), "sd must be positive"),
    (lambda: cusum([1.0], target=0, sd=1, h=0), "h must be positive"),
    (lambda: em_prevalence([0.2, 1.2], train_prevalence=0.3), r"probs must lie in \[0, 1\]"),
    (lambda: em_prevalence([0.2], train_prevalence=1.0), "train_prevalence must lie strictly between 0 and 1"),
    (lambda: reweight_to_prevalence([0.2], train_prevalence=0.3, new_prevalence=0.0), "new_prevalence must lie"),
    (lambda: expected_performance([0.2], threshold=2.0), "threshold must lie in"),
    (lambda: expected_performance([], threshold=0.5), "probs is empty"),
    (lambda: wasserstein([1.0], []), "cur is empty"),
    (lambda: holm([0.01, np.nan]), "p_values has 1 NaN"),
    (lambda: holm([0.01], alpha=0.0), "alpha must lie strictly between"),
    (lambda: platt_scaling([0.2, 0.3], [1]), "same length, got 2 and 1"),
    (lambda: platt_scaling([0.2, 0.3], [1, 2]), "outcomes must be 0 or 1"),
    (lambda: platt_scaling([0.2] * 8, [1, 1, 0, 0, 0, 0, 0, 0]), "at least 5 outcomes of each class, got 2 positive"),
]


@pytest.mark.parametrize(("call", "message"), BAD_INPUTS, ids=[message for _, message in BAD_INPUTS])
def test_bad_input_raises_a_value_error_naming_the_problem(call: Callable[[], Any], message: str):
    with pytest.raises(ValueError, match=message):
        call()
