"""The input checks of the statistics: arrays and numbers parsed at the door into what the functions trust.

The drift statistics (``pipeline.drift.stats``), the validation gate's (``pipeline.validation.stats``) and the
evaluation of a trained model (``pipeline.registry.evaluation``) take their inputs through these, so one bad input
fails the same way wherever it goes: a ``ValueError`` naming the argument and what is wrong with it. Label 1 is
abnormal (positive), 0 normal.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


def finite_1d(values: npt.ArrayLike, name: str, *, drop_nan: bool = False) -> FloatArray:
    """Return ``values`` as a non-empty 1-D float array without infinities, NaNs dropped or refused.

    Args:
        values: the numbers, shape (N,).
        name: the argument's name, for the message.
        drop_nan: drop NaNs (a missing value is not part of a distribution) instead of refusing them.

    Raises:
        ValueError: not numeric, not 1-D, a NaN (unless dropped), an infinity, or nothing left.
    """
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric: {exc}") from exc
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    nan = np.isnan(arr)
    if nan.any():
        if not drop_nan:
            raise ValueError(f"{name} has {int(nan.sum())} NaN value(s), first at index {int(np.argmax(nan))}")
        arr = arr[~nan]
    if np.isinf(arr).any():
        raise ValueError(f"{name} has infinite value(s), first at index {int(np.argmax(np.isinf(arr)))}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty" + (" once NaNs are dropped" if drop_nan else ""))
    return arr


def probabilities(probs: npt.ArrayLike, name: str = "probs") -> FloatArray:
    """Return ``probs`` as a non-empty, finite 1-D array of probabilities in [0, 1].

    Raises:
        ValueError: see :func:`finite_1d`, or a value outside [0, 1].
    """
    p = finite_1d(probs, name)
    if p.min() < 0.0 or p.max() > 1.0:
        raise ValueError(f"{name} must lie in [0, 1], got values in [{p.min():.6g}, {p.max():.6g}]")
    return p


def same_length(name_a: str, size_a: int, name_b: str, size_b: int) -> None:
    """Refuse two paired arrays of different lengths (``size_a`` and ``size_b`` elements).

    Raises:
        ValueError: the sizes differ.
    """
    if size_a != size_b:
        raise ValueError(f"{name_a} and {name_b} must have the same length, got {size_a} and {size_b}")


def binary(values: FloatArray, name: str = "labels") -> BoolArray:
    """Return the mask of the ones (abnormal) of ``values``, a finite 1-D array checked to hold only 0 and 1.

    Raises:
        ValueError: a value other than 0 or 1.
    """
    if not np.isin(values, (0.0, 1.0)).all():
        raise ValueError(f"{name} must be 0 or 1 (0 normal, 1 abnormal), got {sorted(set(np.unique(values).tolist()))}")
    return np.asarray(values == 1.0)


def both_classes(positive: BoolArray, what: str = "labels") -> None:
    """Refuse a mask of positives (abnormal) that is all True or all False; ``what`` names its elements.

    Raises:
        ValueError: one class only.
    """
    n_positive = int(positive.sum())
    if n_positive == 0 or n_positive == positive.size:
        only = "abnormal (1)" if n_positive else "normal (0)"
        raise ValueError(f"all {positive.size} {what} are {only}: both classes are needed")


def unit_interval(value: float, name: str) -> float:
    """Return ``value`` as a float, checked to be finite and in [0, 1] (a threshold on a probability).

    Raises:
        ValueError: NaN, infinite, or outside [0, 1].
    """
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise ValueError(f"{name} must lie in [0, 1], got {value}")
    return float(value)


def open_unit(value: float, name: str) -> float:
    """Return ``value`` as a float, checked to lie strictly between 0 and 1 (a confidence, a prevalence).

    Raises:
        ValueError: 0, 1 or outside.
    """
    if not 0.0 < value < 1.0:
        raise ValueError(f"{name} must lie strictly between 0 and 1, got {value}")
    return float(value)
