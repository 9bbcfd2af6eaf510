"""Evaluation statistics and their plots on tiny synthetic sets (no MLflow)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.registry import EvaluationError, evaluate_probs
from pipeline.reports.training import write_evaluation_report


def _set(n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Calibrated probabilities by construction: labels drawn as Bernoulli(prob)."""
    rng = np.random.default_rng(seed)
    probs = rng.uniform(0, 1, n)
    return probs, (rng.uniform(0, 1, n) < probs).astype(int)


def test_confusion_counts_follow_the_service_rule_prob_at_or_above_threshold_is_abnormal() -> None:
    probs = np.array([0.1, 0.4, 0.5, 0.9, 0.2, 0.6])
    labels = np.array([0, 0, 1, 1, 1, 0])
    ev = evaluate_probs(probs, labels, 0.5)
    assert (ev.tp, ev.fn, ev.fp, ev.tn) == (2, 1, 1, 2)
    assert ev.sensitivity == pytest.approx(2 / 3) and ev.specificity == pytest.approx(2 / 3)
    assert ev.n == 6 and ev.prevalence == pytest.approx(0.5)


def test_perfect_ranking_and_calibrated_probabilities() -> None:
    ev = evaluate_probs(np.array([0.0, 0.0, 1.0, 1.0]), np.array([0, 0, 1, 1]), 0.5)
    assert ev.auroc == 1.0 and ev.average_precision == 1.0 and ev.ece == 0.0
    probs, labels = _set(4000)
    calibrated = evaluate_probs(probs, labels, 0.5)
    assert calibrated.ece < 0.05
    overconfident = evaluate_probs(np.where(probs > 0.5, 1.0, 0.0), labels, 0.5)
    assert overconfident.ece > 0.2
    assert calibrated.bin_count.sum() == 4000 and len(calibrated.bin_edges) == 11


def test_metrics_carry_the_prefix() -> None:
    probs, labels = _set()
    metrics = evaluate_probs(probs, labels, 0.3).metrics("val")
    assert "validation_auroc" in evaluate_probs(probs, labels, 0.3).metrics()
    assert set(metrics) == {
        "val_auroc",
        "val_average_precision",
        "val_ece",
        "val_sensitivity",
        "val_specificity",
        "val_prevalence",
        "val_threshold",
    }


@pytest.mark.parametrize(
    ("probs", "labels", "threshold", "message"),
    [
        ([0.2, 0.7, 0.9], [1, 1, 1], 0.5, "all 3 studies are abnormal"),
        ([0.2, 0.7], [0, 0], 0.5, "all 2 studies are normal"),
        ([], [], 0.5, "empty"),
        ([0.2, 0.7], [0, 1, 1], 0.5, "same length"),
        ([0.2, 1.7], [0, 1], 0.5, r"in \[0, 1\]"),
        ([0.2, 0.7], [0, 2], 0.5, "labels must be 0"),
        ([0.2, 0.7], [0, 1], 1.5, "threshold"),
    ],
)
def test_bad_input_fails_with_a_clear_message(probs, labels, threshold, message) -> None:
    with pytest.raises(EvaluationError, match=message):
        evaluate_probs(np.array(probs, dtype=float), np.array(labels), threshold)


def test_report_writes_four_plots_and_one_page_bundling_them(tmp_path) -> None:
    probs, labels = _set(200)
    report = write_evaluation_report(evaluate_probs(probs, labels, 0.4), tmp_path, title="validation set")
    pngs = [report.roc, report.precision_recall, report.calibration, report.confusion_matrix]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*(p.name for p in pngs), "evaluation.html"])
    for png in pngs:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = report.html.read_text()
    assert page.count("<img") == 4 and "AUROC" in page and "sensitivity" in page
