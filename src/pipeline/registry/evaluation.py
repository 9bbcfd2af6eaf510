"""How a trained model does on its validation set: ROC, precision-recall, calibration, the confusion at the threshold.

:func:`evaluate_probs` is a pure function over probabilities and labels returning an :class:`Evaluation`
(numbers and the curves behind them); :func:`log_evaluation` logs its numbers as run metrics. Its plots and page
are drawn from the result by ``pipeline.reports.log_evaluation_report``, into the run's ``EVALUATION_ARTIFACTS``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import mlflow
import numpy as np
from mlflow import MlflowClient
from mlflow.entities import Metric
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

from pipeline.drift.checks import binary, both_classes, finite_1d, probabilities, same_length, unit_interval
from pipeline.registry.models import NoActiveRun

log = logging.getLogger(__name__)

#: Artifact folder of the evaluation plots and page inside the run.
EVALUATION_ARTIFACTS = "evaluation"


class EvaluationError(ValueError):
    """Probabilities and labels that cannot be evaluated (empty, one class, mismatched, out of range)."""


@dataclass(frozen=True, eq=False)
class Evaluation:
    """A binary classifier's results on one labeled set at one threshold (label 1 = abnormal = positive).

    A study is flagged abnormal when its probability is >= ``threshold`` (the inference service's rule).
    Reliability bins are equal-width over [0, 1]; empty bins have ``nan`` mean probability and frequency.
    """

    n: int
    n_positive: int
    threshold: float
    auroc: float
    average_precision: float
    ece: float  # expected calibration error: count-weighted mean |observed frequency - mean probability| over bins
    sensitivity: float  # TP / (TP + FN) at the threshold
    specificity: float  # TN / (TN + FP) at the threshold
    tp: int
    fp: int
    tn: int
    fn: int
    roc_fpr: np.ndarray
    roc_tpr: np.ndarray
    pr_precision: np.ndarray
    pr_recall: np.ndarray
    bin_edges: np.ndarray  # (n_bins + 1,)
    bin_mean_prob: np.ndarray  # (n_bins,)
    bin_frac_positive: np.ndarray  # (n_bins,)
    bin_count: np.ndarray  # (n_bins,)

    @property
    def prevalence(self) -> float:
        """Share of positives in the set."""
        return self.n_positive / self.n

    def metrics(self, prefix: str = "validation") -> dict[str, float]:
        """Return the scalar results as MLflow metric names (``<prefix>_auroc``, ...) and values."""
        values = {
            "auroc": self.auroc,
            "average_precision": self.average_precision,
            "ece": self.ece,
            "sensitivity": self.sensitivity,
            "specificity": self.specificity,
            "prevalence": self.prevalence,
            "threshold": self.threshold,
        }
        return {f"{prefix}_{k}" if prefix else k: float(v) for k, v in values.items()}


def _check(probs: np.ndarray, labels: np.ndarray, threshold: float) -> None:
    try:
        p = probabilities(probs, "probs")
        y = finite_1d(labels, "labels")
        same_length("probs", p.size, "labels", y.size)
        both_classes(binary(y, "labels"), "studies")
        unit_interval(threshold, "threshold")
    except ValueError as exc:
        raise EvaluationError(str(exc)) from exc


def evaluate_probs(probs: np.ndarray, labels: np.ndarray, threshold: float, *, n_bins: int = 10) -> Evaluation:
    """Return AUROC, average precision, ECE and the confusion at ``threshold``, with the curves behind them.

    Args:
        probs: P(abnormal) per study, shape (N,), in [0, 1].
        labels: 1 abnormal, 0 normal, shape (N,).
        threshold: the deployed threshold; prob >= threshold is flagged abnormal.
        n_bins: equal-width reliability bins over [0, 1].

    Raises:
        EvaluationError: empty or mismatched inputs, one class only, probabilities or threshold out of [0, 1].
    """
    probs = np.asarray(probs, dtype=float)
    labels = np.asarray(labels)
    _check(probs, labels, threshold)
    labels = labels.astype(int)
    flagged = probs >= threshold
    positive = labels == 1
    tp, fn = int((flagged & positive).sum()), int((~flagged & positive).sum())
    fp, tn = int((flagged & ~positive).sum()), int((~flagged & ~positive).sum())
    fpr, tpr, _ = roc_curve(labels, probs)
    precision, recall, _ = precision_recall_curve(labels, probs)

    edges = np.linspace(0.0, 1.0, n_bins + 1)
    index = np.clip(np.digitize(probs, edges[1:-1], right=False), 0, n_bins - 1)
    count = np.bincount(index, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_prob = np.bincount(index, weights=probs, minlength=n_bins) / count
        frac_positive = np.bincount(index, weights=labels.astype(float), minlength=n_bins) / count
    filled = count > 0
    ece = float(np.sum(count[filled] / len(probs) * np.abs(frac_positive[filled] - mean_prob[filled])))
    return Evaluation(
        n=len(probs),
        n_positive=int(positive.sum()),
        threshold=float(threshold),
        auroc=float(roc_auc_score(labels, probs)),
        average_precision=float(average_precision_score(labels, probs)),
        ece=ece,
        sensitivity=tp / (tp + fn),
        specificity=tn / (tn + fp),
        tp=tp,
        fp=fp,
        tn=tn,
        fn=fn,
        roc_fpr=fpr,
        roc_tpr=tpr,
        pr_precision=precision,
        pr_recall=recall,
        bin_edges=edges,
        bin_mean_prob=mean_prob,
        bin_frac_positive=frac_positive,
        bin_count=count,
    )


def log_evaluation(
    probs: np.ndarray,
    labels: np.ndarray,
    threshold: float,
    *,
    run_id: str | None = None,
    prefix: str = "validation",
    title: str = "validation set",
) -> Evaluation:
    """Evaluate ``probs`` against ``labels`` at ``threshold`` and log it to a run; return the evaluation.

    Metrics ``<prefix>_auroc``, ``_average_precision``, ``_ece``, ``_sensitivity``, ``_specificity``,
    ``_prevalence``, ``_threshold`` at step 0 (the default prefix ``validation`` keeps them apart from the
    per-epoch ``val_auroc`` of ``train``, which is the model before calibration at each epoch). Re-logging adds
    the same metric values.

    Args:
        probs: P(abnormal) per study, shape (N,).
        labels: 1 abnormal, 0 normal, shape (N,).
        threshold: the deployed threshold.
        run_id: the run to log into; the active run when None.
        prefix: metric name prefix (the set's name; not ``val``, which the per-epoch metrics use).
        title: what the set is, in the log line.

    Raises:
        EvaluationError: see :func:`evaluate_probs`.
        NoActiveRun: no ``run_id`` and no active run.
    """
    if run_id is None:
        active = mlflow.active_run()
        if active is None:
            raise NoActiveRun("log_evaluation needs a run_id or an active MLflow run")
        run_id = active.info.run_id
    evaluation = evaluate_probs(probs, labels, threshold)
    client = MlflowClient()
    timestamp = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, v, timestamp, 0) for k, v in evaluation.metrics(prefix).items()])
    log.info(
        "%s: AUROC %.3f, AP %.3f, ECE %.3f, sensitivity %.3f / specificity %.3f at threshold %.4f",
        title,
        evaluation.auroc,
        evaluation.average_precision,
        evaluation.ece,
        evaluation.sensitivity,
        evaluation.specificity,
        threshold,
    )
    return evaluation
