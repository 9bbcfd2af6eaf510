"""Statistics of the validation gate: pure functions over labels and scores, each returning a small result.

DeLong's paired test of two correlated AUROCs on the same studies (candidate ``a`` against champion
``b``), whose lower bound the gate's non-inferiority check compares with its margin; an exact
(Clopper-Pearson) lower bound of a proportion; the operating point that keeps sensitivity's lower bound
above a target while filtering as many normals as it can.

Label 1 is abnormal (positive), 0 normal. A study is flagged abnormal when its probability is
>= the threshold; one below it is filtered as normal. Inputs are checked at the door (``pipeline.drift.checks``):
mismatched shapes, one class only, NaNs or probabilities outside [0, 1] raise ``ValueError`` naming the argument.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
from scipy import stats as sps

from pipeline.drift.checks import (
    binary,
    both_classes,
    finite_1d,
    open_unit,
    probabilities,
    same_length,
    unit_interval,
)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

#: A standard error below this is taken as exactly zero (the two scorers rank every pair alike).
_ZERO_SE = 1e-12


# --- Input checks -------------------------------------------------------------------------------------------------


def _labels(labels: npt.ArrayLike, size: int, other: str) -> npt.NDArray[np.bool_]:
    """Return ``labels`` as a boolean mask of positives, checked to be 0/1, as long as ``other``, with both classes."""
    y = finite_1d(labels, "labels")
    same_length("labels", y.size, other, size)
    positive = binary(y, "labels")
    both_classes(positive, "labels")
    return positive


# --- DeLong's paired AUROC test -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PairedAuroc:
    """Two AUROCs on the same studies and DeLong's test of their difference ``auroc_a - auroc_b``.

    ``se`` is the standard error of the difference; ``se_a`` and ``se_b`` those of each AUROC. With
    ``se`` zero (the two scorers order every positive-negative pair alike, e.g. identical scores)
    ``z`` is 0 and ``p_value`` 1 when the difference is 0, else ``z`` is infinite and ``p_value`` 0.
    """

    auroc_a: float
    auroc_b: float
    difference: float
    se: float
    z: float
    p_value: float  # two-sided, H0: auroc_a == auroc_b
    n: int
    n_positive: int
    se_a: float
    se_b: float

    def ci(self, confidence: float = 0.95) -> tuple[float, float]:
        """Return the two-sided ``confidence`` interval of the difference (normal approximation).

        Args:
            confidence: coverage, in (0, 1).

        Returns:
            ``(lower, upper)``; ``(difference, difference)`` when ``se`` is 0.
        """
        level = open_unit(confidence, "confidence")
        half = float(sps.norm.ppf(0.5 + level / 2.0)) * self.se
        return self.difference - half, self.difference + half

    def lower(self, confidence: float = 0.95) -> float:
        """Return the one-sided ``confidence`` lower bound of the difference (normal approximation).

        Args:
            confidence: coverage, in (0, 1).
        """
        level = open_unit(confidence, "confidence")
        return self.difference - float(sps.norm.ppf(level)) * self.se


def _placements(positives: FloatArray, negatives: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Return the DeLong placement values of each positive and each negative, by midranks (Sun & Xu 2014).

    For a positive, the share of negatives scored below it (ties counting half); for a negative,
    the share of positives scored above it. Their means are both the AUROC.
    """
    m, n = positives.size, negatives.size
    rank_all = sps.rankdata(np.concatenate([positives, negatives]), method="average")
    rank_pos = sps.rankdata(positives, method="average")
    rank_neg = sps.rankdata(negatives, method="average")
    v10 = (rank_all[:m] - rank_pos) / n
    v01 = 1.0 - (rank_all[m:] - rank_neg) / m
    return np.asarray(v10, dtype=np.float64), np.asarray(v01, dtype=np.float64)


def _se(v10: FloatArray, v01: FloatArray) -> float:
    """Return DeLong's standard error from placement values (or their differences between two scorers)."""
    variance = float(np.var(v10, ddof=1)) / v10.size + float(np.var(v01, ddof=1)) / v01.size
    se = math.sqrt(max(variance, 0.0))
    return 0.0 if se < _ZERO_SE else se


def delong(labels: npt.ArrayLike, scores_a: npt.ArrayLike, scores_b: npt.ArrayLike) -> PairedAuroc:
    """Return both AUROCs and DeLong's paired test of their difference on the same studies.

    DeLong, DeLong and Clarke-Pearson (1988) with the O(N log N) midrank algorithm of Sun and Xu
    (2014): each AUROC is the mean of its placement values, and the variance of the difference is
    var(V10_a - V10_b) / m + var(V01_a - V01_b) / n over the m positives and n negatives. Ties
    count half. Written on the differences of placements, identical scorers give a standard error
    of exactly 0.

    Args:
        labels: 1 abnormal, 0 normal, shape (N,); both classes present, at least 2 of each.
        scores_a: the first scorer's scores (e.g. the candidate's P(abnormal)), shape (N,); any finite values.
        scores_b: the second scorer's scores (e.g. the champion's), shape (N,).

    Returns:
        The AUROCs, their difference ``a - b``, its standard error, z statistic and two-sided p-value.

    Raises:
        ValueError: inputs not 1-D, of different lengths, with NaN or infinite scores, labels other than
            0/1, or fewer than 2 studies of a class (no variance to estimate).
    """
    a = finite_1d(scores_a, "scores_a")
    b = finite_1d(scores_b, "scores_b")
    same_length("scores_a", a.size, "scores_b", b.size)
    positive = _labels(labels, a.size, "scores_a")
    m = int(positive.sum())
    n = a.size - m
    if min(m, n) < 2:
        raise ValueError(f"DeLong's variance needs at least 2 studies of each class, got {m} positive and {n} negative")
    v10_a, v01_a = _placements(a[positive], a[~positive])
    v10_b, v01_b = _placements(b[positive], b[~positive])
    auroc_a, auroc_b = float(v01_a.mean()), float(v01_b.mean())
    difference = auroc_a - auroc_b
    se = _se(v10_a - v10_b, v01_a - v01_b)
    if se > 0.0:
        z = difference / se
        p_value = float(2.0 * sps.norm.sf(abs(z)))
    elif difference == 0.0:
        z, p_value = 0.0, 1.0
    else:
        z, p_value = math.copysign(math.inf, difference), 0.0
    return PairedAuroc(
        auroc_a=auroc_a,
        auroc_b=auroc_b,
        difference=difference,
        se=se,
        z=z,
        p_value=p_value,
        n=int(a.size),
        n_positive=m,
        se_a=_se(v10_a, v01_a),
        se_b=_se(v10_b, v01_b),
    )


# --- Exact binomial bound -----------------------------------------------------------------------------------------


def clopper_pearson_lower(successes: int, trials: int, confidence: float = 0.95) -> float:
    """Return the one-sided exact (Clopper-Pearson) lower confidence bound of a proportion.

    The ``1 - confidence`` quantile of Beta(k, n - k + 1); 0 when k is 0. The one-sided 95% bound
    equals the lower end of the two-sided 90% interval.

    Args:
        successes: k, an integer in [0, trials].
        trials: n, an integer >= 1.
        confidence: coverage, in (0, 1).

    Returns:
        The lower bound, in [0, 1).

    Raises:
        ValueError: counts that are not integers, ``trials`` < 1, ``successes`` outside [0, trials],
            or a confidence outside (0, 1).
    """
    if int(trials) != trials or int(successes) != successes:
        raise ValueError(f"successes and trials must be integers, got {successes} and {trials}")
    k, n = int(successes), int(trials)
    if n < 1:
        raise ValueError(f"trials must be >= 1, got {n}")
    if not 0 <= k <= n:
        raise ValueError(f"successes must lie in [0, trials={n}], got {k}")
    level = open_unit(confidence, "confidence")
    if k == 0:
        return 0.0
    return float(sps.beta.ppf(1.0 - level, k, n - k + 1))


def min_trials(target: float, confidence: float = 0.95) -> int:
    """Return the fewest trials n for which n successes out of n give a lower bound >= ``target``.

    The bound of n/n is (1 - confidence) ** (1 / n), so n = ceil(log(1 - confidence) / log(target)),
    checked against :func:`clopper_pearson_lower` to stay exact at the boundary.
    (299 for a target of 0.99 at 95% confidence.)

    Args:
        target: the proportion the lower bound must reach, in (0, 1).
        confidence: coverage, in (0, 1).

    Returns:
        The smallest such n, >= 1.

    Raises:
        ValueError: ``target`` or ``confidence`` outside (0, 1).
    """
    goal = open_unit(target, "target")
    level = open_unit(confidence, "confidence")
    n = max(1, math.ceil(math.log(1.0 - level) / math.log(goal)))
    while n > 1 and clopper_pearson_lower(n - 1, n - 1, level) >= goal:
        n -= 1
    while clopper_pearson_lower(n, n, level) < goal:
        n += 1
    return n


def clopper_pearson_interval(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """Return the two-sided exact (Clopper-Pearson) interval of a proportion at ``confidence``.

    Raises:
        ValueError: as :func:`clopper_pearson_lower`.
    """
    clopper_pearson_lower(successes, trials, confidence)  # the checks
    ci = sps.binomtest(int(successes), int(trials)).proportion_ci(confidence_level=confidence, method="exact")
    return float(ci.low), float(ci.high)


def below_target(successes: int, trials: int, target: float, confidence: float = 0.95) -> tuple[bool, float]:
    """Whether a proportion is significantly below ``target`` (exact one-sided binomial test), and its p-value.

    The same as the one-sided upper Clopper-Pearson bound at ``confidence`` lying below the target.
    """
    clopper_pearson_lower(successes, trials, confidence)  # the checks
    p = float(sps.binomtest(int(successes), int(trials), open_unit(target, "target"), alternative="less").pvalue)
    return p < 1.0 - confidence, p


def detection_power(trials: int, target: float, sensitivity: float, confidence: float = 0.95) -> float:
    """Return the chance that :func:`below_target` flags a proportion whose true value is ``sensitivity``.

    With ``trials`` labeled abnormal studies at a site, the probability that a model catching each with
    probability ``sensitivity`` shows significantly fewer than ``target`` caught (what the gate's minimum of
    evidence is chosen by; at ``sensitivity == target`` it is the chance of a false alarm, at most
    ``1 - confidence``).
    """
    n = int(trials)
    flagged = [k for k in range(n + 1) if below_target(k, n, target, confidence)[0]]
    return float(sps.binom.cdf(max(flagged), n, sensitivity)) if flagged else 0.0


# --- Operating point ----------------------------------------------------------------------------------------------


class Rates(NamedTuple):
    """Sensitivity, specificity and the share filtered as normal at one threshold."""

    sensitivity: float  # flagged positives / positives
    specificity: float  # filtered negatives / negatives
    filtered_share: float  # studies below the threshold (closed as normal) / all studies


def _rates(p: FloatArray, positive: npt.NDArray[np.bool_], threshold: float) -> Rates:
    flagged = p >= threshold
    return Rates(
        sensitivity=float(flagged[positive].mean()),
        specificity=float((~flagged[~positive]).mean()),
        filtered_share=float((~flagged).mean()),
    )


def metrics_at(probs: npt.ArrayLike, labels: npt.ArrayLike, threshold: float) -> Rates:
    """Return sensitivity, specificity and the share of all studies filtered as normal at ``threshold``.

    Args:
        probs: P(abnormal) per study, shape (N,), in [0, 1].
        labels: 1 abnormal, 0 normal, shape (N,); both classes present.
        threshold: prob >= threshold is flagged abnormal, in [0, 1].

    Returns:
        ``(sensitivity, specificity, filtered_share)``.

    Raises:
        ValueError: mismatched or non-1-D inputs, one class only, probabilities or threshold outside [0, 1].
    """
    p = probabilities(probs)
    positive = _labels(labels, p.size, "probs")
    return _rates(p, positive, unit_interval(threshold, "threshold"))


@dataclass(frozen=True)
class OperatingPoint:
    """The threshold that filters normals while sensitivity's exact lower bound stays at its target.

    ``attainable`` is False when even catching every positive leaves the lower bound below the target
    (fewer than ``min_positives`` positives); the threshold is then the lowest positive's probability.
    """

    threshold: float  # prob >= threshold is flagged abnormal
    sensitivity: float
    sensitivity_lower: float  # one-sided Clopper-Pearson lower bound at the requested confidence
    specificity: float
    filtered_share: float  # share of all studies below the threshold, i.e. closed as normal
    n_positive: int
    n_negative: int
    attainable: bool
    min_positives: int  # the fewest positives for which the target can be reached at all


def sensitivity_threshold(
    probs: npt.ArrayLike,
    labels: npt.ArrayLike,
    *,
    target: float = 0.99,
    confidence: float = 0.95,
) -> OperatingPoint:
    """Return the highest threshold whose sensitivity has an exact lower bound >= ``target``.

    Catching k of the P positives, the one-sided Clopper-Pearson lower bound grows with k; the
    fewest k that reaches the target fixes the threshold at the k-th highest positive probability:
    any threshold above it loses that positive, any below it filters fewer normals for the same
    positives caught. Negatives tied with it are flagged (prob >= threshold).

    Args:
        probs: P(abnormal) per study, shape (N,), finite, in [0, 1].
        labels: 1 abnormal, 0 normal, shape (N,); both classes present.
        target: the sensitivity the lower bound must reach, in (0, 1).
        confidence: coverage of the one-sided lower bound, in (0, 1).

    Returns:
        The operating point; with ``attainable`` False (too few positives), the lowest positive's
        probability, where every positive is caught, and the numbers there.

    Raises:
        ValueError: mismatched or non-1-D inputs, one class only, probabilities not finite or outside
            [0, 1], ``target`` or ``confidence`` outside (0, 1).
    """
    p = probabilities(probs)
    positive = _labels(labels, p.size, "probs")
    goal = open_unit(target, "target")
    level = open_unit(confidence, "confidence")
    n_positive = int(positive.sum())
    descending = np.sort(p[positive])[::-1]
    caught = np.arange(1, n_positive + 1)
    # lower bound of k/P for k = 1..P, increasing in k
    bounds = sps.beta.ppf(1.0 - level, caught, n_positive - caught + 1)
    reached = np.flatnonzero(bounds >= goal)
    attainable = reached.size > 0
    threshold = float(descending[reached[0]] if attainable else descending[-1])
    rates = _rates(p, positive, threshold)
    tp = int(np.sum(p[positive] >= threshold))
    return OperatingPoint(
        threshold=threshold,
        sensitivity=rates.sensitivity,
        sensitivity_lower=clopper_pearson_lower(tp, n_positive, level),
        specificity=rates.specificity,
        filtered_share=rates.filtered_share,
        n_positive=n_positive,
        n_negative=int(p.size - n_positive),
        attainable=attainable,
        min_positives=min_trials(goal, level),
    )
