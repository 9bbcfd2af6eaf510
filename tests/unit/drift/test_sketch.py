"""Histogram sketches agree with the exact statistics and keep their nominal false-alarm rate."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from pipeline.drift import wasserstein
from pipeline.drift.sketch import binned_ks, binned_wasserstein, chi_square_p, fit_bins, hellinger_rows


def counts(bins, values):
    return np.bincount(bins.index(values)[~np.isnan(values)], minlength=bins.size).astype(float)


@pytest.mark.parametrize("shift", [0.0, 0.2, 1.0])
def test_binned_wasserstein_matches_the_exact_distance(shift):
    rng = np.random.default_rng(1)
    ref, cur = rng.normal(0, 1, 200_000), rng.normal(shift, 1.3, 100_000)
    bins = fit_bins(ref, cur, bins=256)
    binned = float(binned_wasserstein(counts(bins, ref), counts(bins, cur), bins))
    assert binned == pytest.approx(wasserstein(ref, cur, scale=bins.scale), abs=0.02)


def test_binned_ks_matches_scipy_and_its_p_values_are_uniform_without_drift():
    rng = np.random.default_rng(2)
    ref, cur = rng.gamma(2.0, 1.0, 5_000), rng.gamma(2.0, 1.0, 500)
    bins = fit_bins(ref, cur)
    d, _ = binned_ks(counts(bins, ref), counts(bins, cur))
    assert d == pytest.approx(sps.ks_2samp(ref, cur).statistic, abs=0.01)
    p_values = []
    for _ in range(400):
        ref, cur = rng.normal(0, 1, 2_000), rng.normal(0, 1, 200)
        bins = fit_bins(ref, cur, bins=64)
        p_values.append(binned_ks(counts(bins, ref), counts(bins, cur))[1])
    assert np.mean(np.array(p_values) < 0.05) == pytest.approx(0.05, abs=0.035)


def test_a_half_sd_shift_is_detected_at_200_studies():
    rng = np.random.default_rng(3)
    found = 0
    for _ in range(50):
        ref, cur = rng.normal(0, 1, 2_800), rng.normal(0.5, 1, 200)
        bins = fit_bins(ref, cur)
        found += binned_ks(counts(bins, ref), counts(bins, cur))[1] < 1e-3
    assert found >= 45


def test_discrete_values_get_a_bin_each_and_missing_values_none():
    bins = fit_bins(np.array([8, 12, 12, 16, np.nan]), np.array([12, 14]))
    assert list(bins.centres) == [8, 12, 14, 16]
    assert list(bins.index(np.array([8.0, 12.0, 14.0, 16.0, np.nan]))) == [0, 1, 2, 3, -1]
    assert fit_bins(np.array([np.nan]), np.array([np.nan])) is None
    with pytest.raises(ValueError, match="bins"):
        fit_bins(np.ones(3), np.ones(3), bins=1)


def test_categorical_distances_and_tests():
    same = hellinger_rows([50, 50], [[25, 25], [10, 90]])
    assert same[0] == pytest.approx(0.0, abs=1e-12) and same[1] > 0.2
    assert hellinger_rows([10, 0], [0, 10]) == pytest.approx(1.0)
    assert chi_square_p([500, 500, 0], [50, 50, 0]) > 0.5
    assert chi_square_p([500, 500], [20, 80]) < 1e-6
    assert chi_square_p([5], [7]) == 1.0  # one category: nothing to compare


def test_holm_holds_the_family_wise_error_and_ignores_other_discoveries():
    from pipeline.drift import holm

    rng = np.random.default_rng(7)
    any_rejected = [holm(rng.uniform(size=100), alpha=0.05).any() for _ in range(2000)]
    assert np.mean(any_rejected) == pytest.approx(0.05, abs=0.015)
    # twenty real shifts barely move the bar for the nulls beside them
    nulls = rng.uniform(size=80)
    nulls[0] = 0.01 / 75  # rejected only if the bar were lowered BH-style
    p = np.concatenate([np.full(20, 1e-12), nulls])
    assert holm(p, alpha=0.01)[:20].all() and not holm(p, alpha=0.01)[20:].any()
