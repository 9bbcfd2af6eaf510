"""Drift statistics: distances between reference and current windows, their thresholds, and label shift.

Plain functions over arrays (see ``pipeline.drift.stats``); monitoring builds findings from their results.
"""

from pipeline.drift.stats import (
    PCA,
    CusumResult,
    ExpectedPerformance,
    Platt,
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

__all__ = [
    "PCA",
    "CusumResult",
    "ExpectedPerformance",
    "Platt",
    "aligned_counts",
    "calibrated_threshold",
    "cusum",
    "em_prevalence",
    "expected_auroc",
    "expected_performance",
    "hellinger",
    "holm",
    "jackknife_distance",
    "jensen_shannon",
    "mmd_permutation_test",
    "pca_fit",
    "platt_scaling",
    "reweight_to_prevalence",
    "robust_scale",
    "wasserstein",
]
