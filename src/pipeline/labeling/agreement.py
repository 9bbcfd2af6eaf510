"""Agreement between annotators on normal versus abnormal: Cohen's kappa (2 raters) and Fleiss' kappa (more)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np


def cohen_kappa(rater_a: Sequence[object], rater_b: Sequence[object]) -> float:
    """Return Cohen's kappa of two raters over the same items.

    Args:
        rater_a: one category per item.
        rater_b: the other rater's category per item, same order and length.

    Returns:
        kappa in [-1, 1]; 1.0 when both raters use one and the same category throughout (no chance
        correction is possible, and they agree).
    """
    if len(rater_a) != len(rater_b):
        raise ValueError(f"raters judged different numbers of items: {len(rater_a)} and {len(rater_b)}")
    if not rater_a:
        raise ValueError("no items to compare")
    if len({*rater_a, *rater_b}) == 1:
        return 1.0
    from sklearn.metrics import cohen_kappa_score

    return float(cohen_kappa_score([str(a) for a in rater_a], [str(b) for b in rater_b]))


def fleiss_kappa(counts: np.ndarray) -> float:
    """Return Fleiss' kappa of items rated by two or more raters each.

    Args:
        counts: (items, categories) number of raters who put each item in each category. Items may have
            different numbers of raters (each at least 2); with equal numbers this is Fleiss (1971).

    Returns:
        kappa (at most 1); 1.0 when every rating falls in one category.
    """
    table = np.asarray(counts, dtype=float)
    if table.ndim != 2 or table.shape[0] == 0:
        raise ValueError(f"counts must be (items, categories) with at least one item, got shape {table.shape}")
    raters = table.sum(axis=1)
    if (raters < 2).any():
        raise ValueError("every item needs at least two ratings")
    per_item = ((table**2).sum(axis=1) - raters) / (raters * (raters - 1))
    observed = float(per_item.mean())
    shares = table.sum(axis=0) / raters.sum()
    expected = float((shares**2).sum())
    if expected >= 1.0:
        return 1.0
    return (observed - expected) / (1.0 - expected)


@dataclass(frozen=True)
class AgreementResult:
    """Inter-annotator agreement of one project on normal versus abnormal.

    Args:
        project: the project kind.
        statistic: ``cohen_kappa`` when every multiply-labeled study has exactly 2 labels, else ``fleiss_kappa``;
            None without such studies.
        value: the kappa, None without multiply-labeled studies.
        studies: studies with two or more usable labels (the kappa's items).
        disagreements: those of them whose labels are not all the same.
    """

    project: str
    statistic: str | None
    value: float | None
    studies: int
    disagreements: int


def agreement(project: str, votes: Mapping[str, Sequence[bool]]) -> AgreementResult:
    """Return the agreement on normal versus abnormal of the studies of ``project`` with two or more votes.

    Args:
        project: the project kind (for the result).
        votes: study id -> each annotator's ``abnormal`` (unusable marks left out), in annotation order.
    """
    rated = {study: list(v) for study, v in votes.items() if len(v) >= 2}
    disagreements = sum(1 for v in rated.values() if len(set(v)) > 1)
    if not rated:
        return AgreementResult(project, None, None, 0, 0)
    if all(len(v) == 2 for v in rated.values()):
        first, second = zip(*rated.values(), strict=True)
        return AgreementResult(project, "cohen_kappa", cohen_kappa(first, second), len(rated), disagreements)
    counts = np.array([[sum(1 for x in v if not x), sum(1 for x in v if x)] for v in rated.values()])
    return AgreementResult(project, "fleiss_kappa", fleiss_kappa(counts), len(rated), disagreements)
