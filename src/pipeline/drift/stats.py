"""Drift statistics: plain, vectorised functions over arrays, each fast on a million rows.

Distances between a reference and a current sample (Wasserstein, Hellinger, Jensen-Shannon, MMD),
their small-sample correction and alert thresholds calibrated on reference windows, change
detection over days (CUSUM), label shift (EM prevalence, prior-shift reweighting), performance
estimated from calibrated probabilities without labels, and Holm's correction over many tests.
Probabilities are of the positive class, "abnormal".

Inputs are checked at the door (``pipeline.drift.checks``, shared with the validation gate): an empty array,
mismatched shapes or a NaN where none is allowed raise ``ValueError`` naming the argument. One-dimensional
distribution comparisons (``wasserstein``) drop NaNs, as a missing value is not part of a distribution;
everything else refuses them.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from scipy import optimize, special
from scipy import stats as sps
from scipy.spatial import distance

from pipeline.drift.checks import binary, finite_1d, open_unit, probabilities, same_length, unit_interval

FloatArray = npt.NDArray[np.float64]
Counts = Mapping[Hashable, float] | npt.ArrayLike
"""Category counts: a mapping from category to count, or an array aligned with the other side's."""

_IQR_PER_SD = 1.349  # the interquartile range of a normal distribution, in standard deviations


# --- Input checks -------------------------------------------------------------------------------------------------


def _rows(
    values: npt.ArrayLike,
    name: str,
    *,
    max_samples: int | None = None,
    rng: np.random.Generator | None = None,
) -> FloatArray:
    """Return ``values`` as a finite 2-D float array (n_rows, n_features), 1-D as one feature.

    With ``max_samples``, at most that many rows drawn without replacement by ``rng``; the whole
    input is checked, but only the rows kept are copied to float64 (a million embeddings in
    float32 would otherwise cost gigabytes).
    """
    arr = np.asarray(values)
    if arr.dtype.kind not in "biuf":
        try:
            arr = arr.astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{name} must be numeric: {exc}") from exc
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 1-D or 2-D (n_rows, n_features), got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} is empty, shape {arr.shape}")
    if not np.isfinite(arr).all():
        bad = int(np.argmax(~np.isfinite(arr).all(axis=1)))
        raise ValueError(f"{name} has NaN or infinite values, first in row {bad}")
    if max_samples is not None and arr.shape[0] > max_samples:
        if rng is None:
            raise ValueError("rng is required to subsample rows")
        arr = arr[rng.choice(arr.shape[0], size=max_samples, replace=False)]
    return np.asarray(arr, dtype=np.float64)


# --- Continuous features ------------------------------------------------------------------------------------------


def robust_scale(values: npt.ArrayLike) -> float:
    """Return a robust standard deviation of ``values``: IQR / 1.349, else the std, else 1.0.

    The IQR is zero for a feature that is mostly one value (a saturated pixel statistic, a flag);
    the std still sees its tails, and 1.0 keeps a constant feature from dividing by zero.

    Args:
        values: 1-D sample; NaNs are dropped.

    Returns:
        The scale, in the units of ``values``; always positive.
    """
    x = finite_1d(values, "values", drop_nan=True)
    q25, q75 = np.percentile(x, [25.0, 75.0])
    for scale in ((q75 - q25) / _IQR_PER_SD, np.std(x)):
        if scale > 0.0:
            return float(scale)
    return 1.0


def wasserstein(ref: npt.ArrayLike, cur: npt.ArrayLike, *, scale: float | None = None) -> float:
    """Return the 1-D earth mover's distance between two samples, in units of the reference's spread.

    Exact, computed on the quantile functions of the sorted samples (O(n log n), a few tenths of
    a second for a million rows each): W1 = integral over q in (0, 1) of |F_ref^-1(q) - F_cur^-1(q)|.
    Divided by ``scale`` so that thresholds carry across features: 0.5 reads "the distribution
    moved by about half a reference standard deviation".

    Args:
        ref: reference sample, 1-D; NaNs are dropped.
        cur: current sample, 1-D; NaNs are dropped.
        scale: the unit to divide by; default ``robust_scale(ref)``.

    Returns:
        The unit-free distance, >= 0.
    """
    u = np.sort(finite_1d(ref, "ref", drop_nan=True))
    v = np.sort(finite_1d(cur, "cur", drop_nan=True))
    if scale is None:
        scale = robust_scale(u)
    elif not (np.isfinite(scale) and scale > 0.0):
        raise ValueError(f"scale must be positive and finite, got {scale}")
    n, m = u.size, v.size
    # Both quantile functions are steps, constant between consecutive breakpoints of {i/n} and {j/m}.
    # Two sorted runs: the stable sort merges them in linear time.
    edges = np.sort(np.concatenate([np.arange(1, n + 1) / n, np.arange(1, m + 1) / m]), kind="stable")
    edges = np.concatenate([[0.0], edges])
    width = np.diff(edges)
    mid = (edges[1:] + edges[:-1]) / 2.0
    keep = width > 0.0
    width, mid = width[keep], mid[keep]
    iu = np.minimum((mid * n).astype(np.int64), n - 1)
    iv = np.minimum((mid * m).astype(np.int64), m - 1)
    return float(np.sum(width * np.abs(u[iu] - v[iv])) / scale)


# --- Categorical features -----------------------------------------------------------------------------------------


def aligned_counts(ref: npt.ArrayLike, cur: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Return the counts of each category in two samples of labels, aligned on the union of categories.

    Object arrays (mixed labels, None) are compared as strings, so None is a category of its own.

    Args:
        ref: reference labels, 1-D.
        cur: current labels, 1-D.

    Returns:
        ``(ref_counts, cur_counts)``, each of shape (n_categories,), categories in sorted order.
    """
    arrays = []
    for name, values in (("ref", ref), ("cur", cur)):
        arr = np.asarray(values)
        if arr.ndim != 1:
            raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
        if arr.size == 0:
            raise ValueError(f"{name} is empty")
        arrays.append(arr.astype(str) if arr.dtype == object else arr)
    _, codes = np.unique(np.concatenate(arrays), return_inverse=True)
    codes = codes.ravel()
    k = int(codes.max()) + 1
    n_ref = arrays[0].size
    ref_counts = np.bincount(codes[:n_ref], minlength=k).astype(np.float64)
    cur_counts = np.bincount(codes[n_ref:], minlength=k).astype(np.float64)
    return ref_counts, cur_counts


def _distributions(ref_counts: Counts, cur_counts: Counts) -> tuple[FloatArray, FloatArray]:
    """Return two aligned probability vectors from counts; a category missing on one side counts 0 there."""
    ref_values: npt.ArrayLike
    cur_values: npt.ArrayLike
    if isinstance(ref_counts, Mapping) and isinstance(cur_counts, Mapping):
        keys = list(dict.fromkeys([*ref_counts, *cur_counts]))
        if not keys:
            raise ValueError("ref_counts and cur_counts have no categories")
        ref_values = [ref_counts.get(key, 0) for key in keys]
        cur_values = [cur_counts.get(key, 0) for key in keys]
    elif isinstance(ref_counts, Mapping) or isinstance(cur_counts, Mapping):
        raise ValueError("ref_counts and cur_counts must both be mappings or both be arrays")
    else:
        ref_values, cur_values = ref_counts, cur_counts
    p = finite_1d(ref_values, "ref_counts")
    q = finite_1d(cur_values, "cur_counts")
    if p.shape != q.shape:
        raise ValueError(f"ref_counts and cur_counts must be aligned, got {p.size} and {q.size} categories")
    for name, counts in (("ref_counts", p), ("cur_counts", q)):
        if counts.min() < 0.0:
            raise ValueError(f"{name} has a negative count at index {int(np.argmin(counts))}")
        if counts.sum() <= 0.0:
            raise ValueError(f"{name} sums to zero: no observation to compare")
    return p / p.sum(), q / q.sum()


def hellinger(ref_counts: Counts, cur_counts: Counts) -> float:
    """Return the Hellinger distance between two categorical distributions given by counts.

    H = sqrt(1 - sum_i sqrt(p_i q_i)): 0 for the same shares, 1 for disjoint categories. A
    category only in ``cur_counts`` (a new view position, a new manufacturer) adds to it.

    Args:
        ref_counts: reference counts per category: a mapping, or an array aligned with ``cur_counts``.
        cur_counts: current counts per category, same form as ``ref_counts``.

    Returns:
        The distance, in [0, 1].
    """
    p, q = _distributions(ref_counts, cur_counts)
    # The same as sqrt(1 - sum sqrt(p q)), without the cancellation that leaves 1e-8 for equal shares.
    return float(np.sqrt(min(1.0, 0.5 * float(np.sum((np.sqrt(p) - np.sqrt(q)) ** 2)))))


def jensen_shannon(ref_counts: Counts, cur_counts: Counts) -> float:
    """Return the Jensen-Shannon distance (base 2) between two categorical distributions given by counts.

    The square root of the JS divergence with base-2 logarithms, as ``scipy.spatial.distance``
    and Evidently report it: a metric, 0 for the same shares and 1 for disjoint categories.

    Args:
        ref_counts: reference counts per category: a mapping, or an array aligned with ``cur_counts``.
        cur_counts: current counts per category, same form as ``ref_counts``.

    Returns:
        The distance, in [0, 1].
    """
    p, q = _distributions(ref_counts, cur_counts)
    return float(np.clip(distance.jensenshannon(p, q, base=2.0), 0.0, 1.0))


# --- Small-sample correction and thresholds ----------------------------------------------------------------------


def jackknife_distance(
    distance: Callable[[Any, Any], float],
    ref: npt.ArrayLike,
    cur: npt.ArrayLike,
    *,
    rng: np.random.Generator,
) -> float:
    """Return the distance from reference to current less the distance between two halves of the reference.

    An MMC+-style effect size: two finite samples from one distribution are never at distance
    0, and how far apart they sit depends on sample size. Split ``ref`` at random into halves
    ``a`` and ``b`` of equal size and return ``distance(a, cur) - distance(a, b)``; the second
    term is the distance expected from sampling alone, so the result is centred near 0 when
    nothing changed. The correction is closest when ``cur`` is about half the size of ``ref``.

    Args:
        distance: a distance over raw values, e.g. ``wasserstein``, or for labels
            ``lambda a, b: hellinger(*aligned_counts(a, b))``.
        ref: reference values, split along the first axis (numbers, labels, or rows of features).
        cur: current values, passed to ``distance`` as they are.
        rng: the source of the random split.

    Returns:
        The corrected distance; negative when ``cur`` is closer to ``a`` than ``b`` is.
    """
    ref_arr = np.asarray(ref)
    if ref_arr.ndim == 0 or ref_arr.shape[0] < 2:
        raise ValueError(f"ref needs at least 2 values to split in halves, got shape {ref_arr.shape}")
    if np.asarray(cur).size == 0:
        raise ValueError("cur is empty")
    half = ref_arr.shape[0] // 2
    order = rng.permutation(ref_arr.shape[0])
    a, b = ref_arr[order[:half]], ref_arr[order[half : 2 * half]]
    return float(distance(a, cur) - distance(a, b))


def calibrated_threshold(
    values: npt.ArrayLike,
    *,
    quantile: float = 0.99,
    floor: float = 0.0,
    margin_sd: float = 0.5,
) -> float:
    """Return an alert threshold for a statistic from its values between windows with no drift.

    ``values`` shows how much the statistic moves by chance (reference window against reference
    window). The threshold is ``max(floor, Q(quantile) + margin_sd * sd)``: an empirical
    quantile rather than mean + k sd, because drift statistics are non-negative and right-skewed
    and a normal-theory cut under-covers their tail; plus a margin of half a standard deviation,
    because a high quantile from a few dozen windows is noisy and biased low. ``floor`` is the
    smallest change worth an alert, so a statistic that barely moves cannot alert on trivia.

    Args:
        values: the statistic on pairs of no-drift windows, 1-D, at least 2 values, no NaN.
        quantile: the share of no-drift values that should stay below the threshold, in (0, 1].
        floor: the threshold never goes below this.
        margin_sd: how many standard deviations of ``values`` to add to the quantile, >= 0.

    Returns:
        The threshold, in the statistic's units.
    """
    x = finite_1d(values, "values")
    if x.size < 2:
        raise ValueError(f"values needs at least 2 no-drift values to calibrate on, got {x.size}")
    if not 0.0 < quantile <= 1.0:
        raise ValueError(f"quantile must lie in (0, 1], got {quantile}")
    if margin_sd < 0.0:
        raise ValueError(f"margin_sd must be >= 0, got {margin_sd}")
    cut = float(np.quantile(x, quantile)) + margin_sd * float(np.std(x, ddof=1))
    return max(float(floor), cut)


# --- Multivariate features ----------------------------------------------------------------------------------------


def mmd_permutation_test(
    x: npt.ArrayLike,
    y: npt.ArrayLike,
    *,
    n_permutations: int = 200,
    max_samples: int = 1000,
    rng: np.random.Generator,
) -> tuple[float, float]:
    """Return the squared maximum mean discrepancy between two samples and its permutation p-value.

    RBF kernel k(a, b) = exp(-|a - b|^2 / (2 s^2)) with s the median pairwise distance of the
    pooled sample (the median heuristic; fixed across permutations, so the test stays exact).
    The unbiased estimate (diagonal excluded) is used, so it can be slightly negative with no
    drift. Every permutation reuses one kernel matrix: the block sums of all permutations come
    from one matrix product, K @ A with A the (n, n_permutations) membership matrix.

    Args:
        x: reference sample, (n_rows,) or (n_rows, n_features); no NaN.
        y: current sample, same number of features as ``x``; no NaN.
        n_permutations: relabellings of the pooled sample that make the null distribution.
        max_samples: each side is subsampled to at most this many rows (cost grows as its square).
        rng: the source of the subsamples and permutations.

    Returns:
        ``(mmd2, p_value)`` with p = (k + 1) / (n_permutations + 1), k the permutations whose
        statistic is at least the observed one.
    """
    if n_permutations < 1:
        raise ValueError(f"n_permutations must be >= 1, got {n_permutations}")
    if max_samples < 2:
        raise ValueError(f"max_samples must be >= 2, got {max_samples}")
    xs = _rows(x, "x", max_samples=max_samples, rng=rng)
    ys = _rows(y, "y", max_samples=max_samples, rng=rng)
    if xs.shape[1] != ys.shape[1]:
        raise ValueError(f"x and y must have the same number of features, got {xs.shape[1]} and {ys.shape[1]}")
    m, n = xs.shape[0], ys.shape[0]
    if m < 2 or n < 2:
        raise ValueError(f"x and y need at least 2 rows each, got {m} and {n}")
    pooled = np.concatenate([xs, ys])
    sq_norms = np.einsum("ij,ij->i", pooled, pooled)
    kernel = sq_norms[:, None] + sq_norms[None, :] - 2.0 * (pooled @ pooled.T)
    np.maximum(kernel, 0.0, out=kernel)
    np.fill_diagonal(kernel, 0.0)
    upper = kernel[np.triu_indices(m + n, k=1)]
    bandwidth2 = float(np.median(upper)) or float(upper.mean()) or 1.0  # ties everywhere: mean, then 1
    kernel *= -1.0 / (2.0 * bandwidth2)
    np.exp(kernel, out=kernel)  # squared distances become the kernel matrix, in place

    labels = np.zeros(m + n)
    labels[:m] = 1.0
    permuted = rng.permuted(np.tile(labels, (n_permutations, 1)), axis=1)
    members = np.concatenate([labels[None, :], permuted]).T  # (m + n, 1 + n_permutations); column 0 observed
    sum_xx = np.einsum("ip,ip->p", members, kernel @ members)
    sum_xy = kernel.sum(axis=1) @ members - sum_xx
    sum_yy = kernel.sum() - sum_xx - 2.0 * sum_xy
    mmd2 = (sum_xx - m) / (m * (m - 1)) + (sum_yy - n) / (n * (n - 1)) - 2.0 * sum_xy / (m * n)
    observed = float(mmd2[0])
    exceed = int(np.sum(mmd2[1:] >= observed))
    return observed, (exceed + 1) / (n_permutations + 1)


@dataclass(frozen=True, eq=False)
class PCA:
    """A fitted principal component projection: centre on ``mean``, project on ``components``.

    Args:
        mean: the training mean, shape (n_features,).
        components: orthonormal rows, shape (n_components, n_features), by decreasing variance;
            each signed so that its largest-magnitude loading is positive.
        explained_variance_ratio: each component's share of the total variance, shape (n_components,).
    """

    mean: FloatArray
    components: FloatArray
    explained_variance_ratio: FloatArray

    def transform(self, x: npt.ArrayLike) -> FloatArray:
        """Return ``x`` projected on the components.

        Args:
            x: rows to project, shape (n_rows, n_features); no NaN.

        Returns:
            The scores, shape (n_rows, n_components).
        """
        rows = _rows(x, "x")
        if rows.shape[1] != self.mean.size:
            raise ValueError(f"x must have {self.mean.size} features, got {rows.shape[1]}")
        return np.asarray((rows - self.mean) @ self.components.T, dtype=np.float64)


def pca_fit(
    x: npt.ArrayLike,
    n_components: int = 32,
    *,
    max_samples: int = 50_000,
    rng: np.random.Generator | None = None,
) -> PCA:
    """Return the principal components of ``x``, by SVD.

    Fitted on at most ``max_samples`` rows drawn at random: the leading components of image
    embeddings are settled long before a million rows. With more rows than features, the SVD
    is of the (n_features, n_features) scatter matrix of the centred rows, whose singular
    vectors are the same and which one matrix product builds (a few seconds for 50,000 x 512,
    against a minute for the SVD of the tall matrix); it loses precision only on components
    whose standard deviation is some 1e-8 of the first's, far past any kept for monitoring.

    Args:
        x: training rows (reference embeddings), shape (n_rows, n_features); no NaN.
        n_components: how many components to keep, at most min(n_rows, n_features).
        max_samples: fit on at most this many rows, >= 2.
        rng: the source of that subsample; default a fixed seed, so a refit gives the same projection.

    Returns:
        The fitted projection.
    """
    if np.ndim(x) != 2:
        raise ValueError(f"x must be 2-D (n_rows, n_features), got shape {np.shape(x)}")
    if max_samples < 2:
        raise ValueError(f"max_samples must be >= 2, got {max_samples}")
    rows = _rows(x, "x", max_samples=max_samples, rng=rng if rng is not None else np.random.default_rng(0))
    n_rows, n_features = rows.shape
    if not 1 <= n_components <= min(n_rows, n_features):
        raise ValueError(
            f"n_components must lie in [1, min(n_rows, n_features)] = [1, {min(n_rows, n_features)}], got {n_components}"
        )
    mean = rows.mean(axis=0)
    centred = rows - mean
    if n_rows > n_features:
        _, variance, vt = np.linalg.svd(centred.T @ centred, hermitian=True)
    else:
        _, singular, vt = np.linalg.svd(centred, full_matrices=False)
        variance = singular**2
    components = vt[:n_components]
    signs = np.sign(components[np.arange(n_components), np.argmax(np.abs(components), axis=1)])
    components = components * np.where(signs == 0.0, 1.0, signs)[:, None]
    total = variance.sum()
    ratio = variance[:n_components] / total if total > 0.0 else np.zeros(n_components)
    return PCA(mean=mean, components=components, explained_variance_ratio=ratio)


# --- Change over days ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class CusumResult:
    """Running tabular CUSUM sums of a daily statistic, in standard deviations, and its first alarm.

    Args:
        upper: the upper sum per day, shape (n_days,); grows while the statistic sits above target.
        lower: the lower sum per day, shape (n_days,), as a positive number; grows while below target.
        alarm_index: the first day on which either sum exceeds ``h``, or None if none does.
        alarm_direction: ``"up"`` or ``"down"``, which sum raised the alarm; None without one.
    """

    upper: FloatArray
    lower: FloatArray
    alarm_index: int | None
    alarm_direction: Literal["up", "down"] | None

    @property
    def alarmed(self) -> bool:
        """Return whether either sum crossed its decision interval."""
        return self.alarm_index is not None


def _reflected_cumsum(steps: FloatArray) -> FloatArray:
    """Return S_t = max(0, S_(t-1) + steps_t), S_0 = 0, without a Python loop.

    The recursion has the closed form S_t = C_t - min(0, C_1, ..., C_t), with C the cumulative sum.
    """
    cumulative = np.cumsum(steps)
    return np.asarray(cumulative - np.minimum.accumulate(np.minimum(cumulative, 0.0)), dtype=np.float64)


def cusum(values: npt.ArrayLike, *, target: float, sd: float, k: float = 0.5, h: float = 5.0) -> CusumResult:
    """Return the one-sided upper and lower tabular CUSUM of a sequence of daily statistics.

    With z_t = (values_t - target) / sd: upper_t = max(0, upper_(t-1) + z_t - k) and
    lower_t = max(0, lower_(t-1) - z_t - k). The defaults (k = 0.5, h = 5) are Montgomery's:
    tuned to a 1-sd shift, about 465 in-control days between false alarms (both sides together),
    and far quicker than a 3-sd rule on a slow drift that no single day shows.

    Args:
        values: the statistic per day, in order, 1-D; no NaN (fill or drop missing days first).
        target: the in-control mean of the statistic (from reference windows).
        sd: its in-control standard deviation, > 0.
        k: the allowance, in sd: half the shift to detect.
        h: the decision interval, in sd.

    Returns:
        The running sums and the first day either exceeds ``h``.
    """
    x = finite_1d(values, "values")
    if not (np.isfinite(target)):
        raise ValueError(f"target must be finite, got {target}")
    if not (np.isfinite(sd) and sd > 0.0):
        raise ValueError(f"sd must be positive and finite, got {sd}")
    if not (np.isfinite(k) and k >= 0.0):
        raise ValueError(f"k must be >= 0, got {k}")
    if not (np.isfinite(h) and h > 0.0):
        raise ValueError(f"h must be positive, got {h}")
    z = (x - target) / sd
    upper = _reflected_cumsum(z - k)
    lower = _reflected_cumsum(-z - k)
    crossed = (upper > h) | (lower > h)
    if not crossed.any():
        return CusumResult(upper, lower, None, None)
    first = int(np.argmax(crossed))
    return CusumResult(upper, lower, first, "up" if upper[first] > h else "down")


# --- Label shift --------------------------------------------------------------------------------------------------


def _reweight(p: FloatArray, train_prevalence: float, new_prevalence: float) -> FloatArray:
    """Return the posteriors ``p`` moved from one positive-class prior to another (Bayes rule)."""
    up = new_prevalence / train_prevalence
    down = (1.0 - new_prevalence) / (1.0 - train_prevalence)
    with np.errstate(invalid="ignore", divide="ignore"):
        adjusted = up * p / (up * p + down * (1.0 - p))
    return np.asarray(np.where(np.isnan(adjusted), p, adjusted), dtype=np.float64)


def reweight_to_prevalence(probs: npt.ArrayLike, *, train_prevalence: float, new_prevalence: float) -> FloatArray:
    """Return calibrated probabilities adjusted from the training prevalence to a new one.

    p' = w1 p / (w1 p + w0 (1 - p)), w1 = new / train and w0 = (1 - new) / (1 - train): the
    class-conditional score distributions are unchanged under pure label shift, only the prior
    moves. Use it to re-test calibration or performance once a window's prevalence is known or
    estimated (``em_prevalence``).

    Args:
        probs: probabilities of the positive class, calibrated at ``train_prevalence``, 1-D in [0, 1].
        train_prevalence: the positive share the model was calibrated on, in (0, 1).
        new_prevalence: the positive share to adjust to, in (0, 1).

    Returns:
        The adjusted probabilities, same shape as ``probs``.
    """
    p = probabilities(probs)
    train = open_unit(train_prevalence, "train_prevalence")
    new = open_unit(new_prevalence, "new_prevalence")
    return _reweight(p, train, new)


def em_prevalence(
    probs: npt.ArrayLike,
    *,
    train_prevalence: float,
    max_iter: int = 100,
    tol: float = 1e-6,
) -> float:
    """Return the positive-class prevalence of a window, estimated by EM without labels.

    Saerens, Latinne and Decaestecker (2002): starting from the training prevalence, adjust the
    posteriors to the current estimate (``reweight_to_prevalence``) and take their mean as the
    next estimate, until it moves by less than ``tol``. Valid under label shift with calibrated
    probabilities; with ``max_iter`` reached, the last estimate is returned.

    Args:
        probs: probabilities of the positive class in the window, calibrated at ``train_prevalence``,
            1-D in [0, 1].
        train_prevalence: the positive share the model was calibrated on, in (0, 1).
        max_iter: the most EM steps to take, >= 1.
        tol: stop once the estimate moves by less than this, > 0.

    Returns:
        The estimated prevalence, in [0, 1].
    """
    p = probabilities(probs)
    train = open_unit(train_prevalence, "train_prevalence")
    if max_iter < 1:
        raise ValueError(f"max_iter must be >= 1, got {max_iter}")
    if not tol > 0.0:
        raise ValueError(f"tol must be > 0, got {tol}")
    estimate = train
    for _ in range(max_iter):
        updated = float(np.mean(_reweight(p, train, estimate)))
        if abs(updated - estimate) < tol:
            return updated
        estimate = updated
    return estimate


# --- Performance without labels ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExpectedPerformance:
    """Performance expected from calibrated probabilities alone, at one decision threshold.

    Each study counts as positive (abnormal) with weight p and negative with weight 1 - p, so the
    counts are expectations over labels drawn as Bernoulli(p). A rate with no expected positive
    (or negative) to divide by is NaN.

    Args:
        threshold: studies with p >= threshold are called positive.
        n_studies: how many studies the estimate covers.
        tp: expected true positives; fp, tn, fn likewise.
        sensitivity: expected TP / (TP + FN).
        specificity: expected TN / (TN + FP).
        auroc: expected probability that a positive scores above a negative, ties counting half.
    """

    threshold: float
    n_studies: int
    tp: float
    fp: float
    tn: float
    fn: float
    sensitivity: float
    specificity: float
    auroc: float

    @property
    def prevalence(self) -> float:
        """Return the expected share of positives."""
        return (self.tp + self.fn) / self.n_studies


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0.0 else float("nan")


def expected_auroc(probs: npt.ArrayLike) -> float:
    """Return the AUROC expected from calibrated probabilities without labels, in O(n log n).

    The sum over pairs i != j of p_i (1 - p_j) [p_i > p_j, or 1/2 on a tie], over the sum of
    p_i (1 - p_j) over the same pairs: the ratio of the expected numerator and denominator of the
    realised AUROC when labels are Bernoulli(p). A study is never paired with itself. Computed on
    the groups of tied values, sorted, with cumulative sums.

    Args:
        probs: probabilities of the positive class, 1-D in [0, 1].

    Returns:
        The expected AUROC in [0, 1]; NaN when no pair can be a positive and a negative
        (every p is 0, or every p is 1).
    """
    p = probabilities(probs)
    _, group = np.unique(p, return_inverse=True)
    group = group.ravel()
    pos = np.bincount(group, weights=p)
    neg = np.bincount(group, weights=1.0 - p)
    neg_below = np.cumsum(neg) - neg
    self_pairs = float(np.sum(p * (1.0 - p)))
    wins = float(np.sum(pos * neg_below)) + 0.5 * (float(np.sum(pos * neg)) - self_pairs)
    pairs = float(pos.sum() * neg.sum()) - self_pairs
    return _ratio(wins, pairs)


def expected_performance(probs: npt.ArrayLike, threshold: float) -> ExpectedPerformance:
    """Return sensitivity, specificity and AUROC expected from calibrated probabilities, without labels.

    Confidence-based performance estimation: expected TP = sum(p[p >= t]), FN = sum(p[p < t]),
    FP = sum(1 - p[p >= t]) and TN = sum(1 - p[p < t]). It holds only while the probabilities stay
    calibrated (no concept shift); re-weight them first under label shift.

    Args:
        probs: probabilities of the positive class (abnormal), 1-D in [0, 1].
        threshold: studies with p >= threshold are called positive, in [0, 1].

    Returns:
        The expected confusion counts and rates at ``threshold``, and the expected AUROC.
    """
    p = probabilities(probs)
    unit_interval(threshold, "threshold")
    called = p >= threshold
    tp = float(p[called].sum())
    fp = float(called.sum()) - tp
    fn = float(p[~called].sum())
    tn = float((~called).sum()) - fn
    return ExpectedPerformance(
        threshold=float(threshold),
        n_studies=int(p.size),
        tp=tp,
        fp=fp,
        tn=tn,
        fn=fn,
        sensitivity=_ratio(tp, tp + fn),
        specificity=_ratio(tn, tn + fp),
        auroc=expected_auroc(p),
    )


@dataclass(frozen=True)
class Platt:
    """A recalibration map ``p -> sigmoid(slope * logit(p) + intercept)`` fitted on outcomes."""

    slope: float
    intercept: float
    n_outcomes: int
    p_value: float  # likelihood-ratio test of the probabilities as they are (slope 1, intercept 0)

    def __call__(self, probs: npt.ArrayLike) -> FloatArray:
        """Return ``probs`` recalibrated (monotone in ``p`` when the slope is positive)."""
        p = np.clip(probabilities(probs), _EPS, 1.0 - _EPS)
        return np.asarray(special.expit(self.slope * special.logit(p) + self.intercept), dtype=np.float64)


_EPS = 1e-6


def platt_scaling(probs: npt.ArrayLike, outcomes: npt.ArrayLike, *, min_per_class: int = 5) -> Platt:
    """Fit P(positive | p) = sigmoid(a logit(p) + b) to observed outcomes by maximum likelihood.

    Where a model's probabilities stopped being calibrated (a new scanner it is confidently wrong
    on), the label-free estimate goes with them; outcomes that come back for some studies
    (radiologists' reports) re-map the score of every study. Outcomes picked by the score itself
    (flagged studies come back more often) do not bias the fit: given p, being picked says
    nothing more about the label.

    Args:
        probs: the model's probabilities of the studies whose outcome is known, 1-D in [0, 1].
        outcomes: their outcomes (1 positive, 0 negative), same length.
        min_per_class: the fewest outcomes of each class to fit on.

    Returns:
        The fitted map; slope 1 and intercept 0 leave calibrated probabilities as they are. Its
        ``p_value`` tests whether the probabilities were calibrated on these outcomes (likelihood
        ratio against the identity map, chi-square with 2 degrees of freedom).
    """
    p = np.clip(probabilities(probs), _EPS, 1.0 - _EPS)
    y = finite_1d(outcomes, "outcomes")
    same_length("probs", p.size, "outcomes", y.size)
    binary(y, "outcomes")
    positives = int(y.sum())
    if min(positives, y.size - positives) < min_per_class:
        raise ValueError(
            f"platt_scaling needs at least {min_per_class} outcomes of each class, "
            f"got {positives} positive and {y.size - positives} negative"
        )
    x = special.logit(p)

    def loss(theta: FloatArray) -> tuple[float, FloatArray]:
        z = theta[0] * x + theta[1]
        # -log-likelihood of Bernoulli(sigmoid(z)), written with log_expit to stay finite.
        value = -float(np.sum(y * special.log_expit(z) + (1.0 - y) * special.log_expit(-z)))
        residual = special.expit(z) - y
        return value, np.array([float(residual @ x), float(residual.sum())])

    identity = np.array([1.0, 0.0])
    fit = optimize.minimize(loss, identity, jac=True, method="L-BFGS-B")
    statistic = max(0.0, 2.0 * (loss(identity)[0] - float(fit.fun)))
    return Platt(
        slope=float(fit.x[0]),
        intercept=float(fit.x[1]),
        n_outcomes=int(y.size),
        p_value=float(sps.chi2.sf(statistic, df=2)),
    )


# --- Multiple testing -------------------------------------------------------------------------------------------


def holm(p_values: npt.ArrayLike, alpha: float = 0.01) -> npt.NDArray[np.bool_]:
    """Return which hypotheses to reject, keeping the family-wise error rate at ``alpha`` (Holm's step-down).

    Unlike Benjamini-Hochberg, a family with many true shifts (one site drifting on a dozen
    features) does not lower the bar for the others: the chance that any unchanged feature at any
    site is rejected stays below ``alpha``, which is what "no false alarm" needs.

    Args:
        p_values: one p-value per test, 1-D in [0, 1]; no NaN.
        alpha: the family-wise error rate, in (0, 1).

    Returns:
        A boolean mask, same shape as ``p_values``: True where the test is rejected.
    """
    p = probabilities(p_values, "p_values")
    level = open_unit(alpha, "alpha")
    order = np.argsort(p, kind="stable")
    m = p.size
    passed = p[order] <= level / (m - np.arange(m))
    # step-down: stop at the first test that is not rejected
    keep = np.cumprod(passed).astype(bool)
    out = np.zeros(m, dtype=np.bool_)
    out[order[keep]] = True
    return out
