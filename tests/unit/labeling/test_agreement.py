"""Kappa statistics against published values and scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score

from pipeline.labeling import agreement, cohen_kappa, fleiss_kappa

# Fleiss (1971) as worked on Wikipedia ("Fleiss' kappa"): 10 subjects, 14 raters, 5 categories; kappa = 0.210.
FLEISS_EXAMPLE = np.array(
    [
        [0, 0, 0, 0, 14],
        [0, 2, 6, 4, 2],
        [0, 0, 3, 5, 6],
        [0, 3, 9, 2, 0],
        [2, 2, 8, 1, 1],
        [7, 7, 0, 0, 0],
        [3, 2, 6, 3, 0],
        [2, 5, 3, 2, 2],
        [6, 5, 2, 1, 0],
        [0, 2, 2, 3, 7],
    ]
)


def test_fleiss_kappa_published_example() -> None:
    assert fleiss_kappa(FLEISS_EXAMPLE) == pytest.approx(0.20993, abs=1e-4)


def test_cohen_kappa_published_example() -> None:
    # Wikipedia ("Cohen's kappa"): 20 yes/yes, 5 yes/no, 10 no/yes, 15 no/no -> kappa = 0.4.
    a = ["yes"] * 25 + ["no"] * 25
    b = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    assert cohen_kappa(a, b) == pytest.approx(0.4)


def test_cohen_kappa_matches_scikit_learn() -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 2, 200).astype(bool)
    b = np.where(rng.random(200) < 0.2, ~a, a)
    assert cohen_kappa(list(a), list(b)) == pytest.approx(cohen_kappa_score(a, b))


def test_perfect_and_degenerate_agreement() -> None:
    assert cohen_kappa([True, False, True], [True, False, True]) == pytest.approx(1.0)
    assert cohen_kappa([True, True], [True, True]) == 1.0
    assert fleiss_kappa(np.array([[3, 0], [3, 0]])) == 1.0


def test_fleiss_with_two_raters_per_item_is_scotts_pi() -> None:
    # Two raters: Fleiss' kappa equals Scott's pi (pooled marginals), not Cohen's kappa.
    a = [True, True, False, False, True]
    b = [True, False, False, False, True]
    counts = np.array([[int(not x) + int(not y), int(x) + int(y)] for x, y in zip(a, b, strict=True)])
    p_yes = (sum(a) + sum(b)) / 10
    expected = p_yes**2 + (1 - p_yes) ** 2
    observed = 4 / 5
    assert fleiss_kappa(counts) == pytest.approx((observed - expected) / (1 - expected))


def test_agreement_picks_the_statistic() -> None:
    two = agreement("p", {"s1": [True, True], "s2": [False, True], "s3": [False, False], "lone": [True]})
    assert (two.statistic, two.studies, two.disagreements) == ("cohen_kappa", 3, 1)
    three = agreement("p", {"s1": [True, True, True], "s2": [False, True], "s3": [False, False, False]})
    assert (three.statistic, three.studies, three.disagreements) == ("fleiss_kappa", 3, 1)
    assert agreement("p", {"s1": [True]}).value is None


def test_invalid_input() -> None:
    with pytest.raises(ValueError):
        cohen_kappa([True], [True, False])
    with pytest.raises(ValueError):
        fleiss_kappa(np.array([[1, 0]]))
