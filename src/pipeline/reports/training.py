"""The evaluation report of a training run: ROC, precision-recall, reliability diagram, confusion matrix.

Built from an :class:`~pipeline.registry.evaluation.Evaluation` (the numbers and curves are computed
there); this module only draws. Each plot is written as a PNG, and one self-contained HTML page
bundles them (summary first, then the plots, then the table) so it opens from the MLflow UI.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pipeline.reports.figures import pyplot

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from pipeline.registry.evaluation import Evaluation


@dataclass(frozen=True)
class EvaluationReport:
    """Where the report's files went."""

    roc: Path
    precision_recall: Path
    calibration: Path
    confusion_matrix: Path
    html: Path


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, format="png", bbox_inches="tight")
    pyplot().close(fig)
    return path


def roc_figure(ev: Evaluation, title: str) -> Figure:
    """Return the ROC curve with AUROC and the operating point at the deployed threshold."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.8, 4.4), dpi=100)
    ax.plot(ev.roc_fpr, ev.roc_tpr, label=f"model (AUROC {ev.auroc:.3f})")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="chance")
    ax.scatter([1 - ev.specificity], [ev.sensitivity], color="black", zorder=3, label=f"threshold {ev.threshold:.3f}")
    ax.set_xlabel("false positive rate (1 - specificity)")
    ax.set_ylabel("true positive rate (sensitivity)")
    ax.set_title(f"ROC, {title} (n={ev.n})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return fig


def precision_recall_figure(ev: Evaluation, title: str) -> Figure:
    """Return the precision-recall curve with average precision, the prevalence baseline and the operating point."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.8, 4.4), dpi=100)
    ax.step(ev.pr_recall, ev.pr_precision, where="post", label=f"model (AP {ev.average_precision:.3f})")
    ax.axhline(ev.prevalence, linestyle="--", color="grey", label=f"prevalence {ev.prevalence:.2f}")
    if ev.tp + ev.fp > 0:
        ax.scatter(
            [ev.sensitivity],
            [ev.tp / (ev.tp + ev.fp)],
            color="black",
            zorder=3,
            label=f"threshold {ev.threshold:.3f}",
        )
    ax.set_xlabel("recall (sensitivity)")
    ax.set_ylabel("precision (PPV)")
    ax.set_title(f"Precision-recall, {title}")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    return fig


def calibration_figure(ev: Evaluation, title: str) -> Figure:
    """Return the reliability diagram (observed frequency by mean probability per bin) with ECE, and bin counts."""
    plt = pyplot()
    fig, (ax, counts) = plt.subplots(
        2, 1, figsize=(4.8, 5.2), dpi=100, sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    filled = ev.bin_count > 0
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect calibration")
    ax.plot(ev.bin_mean_prob[filled], ev.bin_frac_positive[filled], marker="o", label=f"model (ECE {ev.ece:.3f})")
    ax.set_ylabel("observed share abnormal")
    ax.set_title(f"Reliability, {title}")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    widths = np.diff(ev.bin_edges)
    counts.bar(ev.bin_edges[:-1], ev.bin_count, width=widths, align="edge", color="lightsteelblue", edgecolor="grey")
    counts.set_xlabel("predicted P(abnormal), binned")
    counts.set_ylabel("studies")
    counts.set_xlim(0, 1)
    return fig


def confusion_figure(ev: Evaluation, title: str) -> Figure:
    """Return the confusion matrix at the deployed threshold (rows: truth, columns: decision), counts and row shares."""
    plt = pyplot()
    matrix = np.array([[ev.tn, ev.fp], [ev.fn, ev.tp]])
    shares = matrix / matrix.sum(axis=1, keepdims=True)
    fig, ax = plt.subplots(figsize=(4.4, 3.8), dpi=100)
    ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    for i in range(2):
        for j in range(2):
            color = "white" if shares[i, j] > 0.6 else "black"
            ax.text(j, i, f"{matrix[i, j]}\n({shares[i, j]:.1%})", ha="center", va="center", color=color)
    ax.set_xticks([0, 1], ["normal", "abnormal"])
    ax.set_yticks([0, 1], ["normal", "abnormal"])
    ax.set_xlabel("model decision")
    ax.set_ylabel("ground truth")
    ax.set_title(
        f"Confusion at threshold {ev.threshold:.3f}, {title}\n"
        f"sensitivity {ev.sensitivity:.3f}, specificity {ev.specificity:.3f}",
        fontsize=10,
    )
    return fig


def write_evaluation_report(ev: Evaluation, folder: Path, *, title: str = "validation set") -> EvaluationReport:
    """Write the four plots as PNGs and ``evaluation.html`` bundling them into ``folder``; return their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    report = EvaluationReport(
        roc=_save(roc_figure(ev, title), folder / "roc.png"),
        precision_recall=_save(precision_recall_figure(ev, title), folder / "precision_recall.png"),
        calibration=_save(calibration_figure(ev, title), folder / "calibration.png"),
        confusion_matrix=_save(confusion_figure(ev, title), folder / "confusion_matrix.png"),
        html=folder / "evaluation.html",
    )
    name = html.escape(title)
    figures = "".join(
        f"<figure><img alt='{alt}' src='data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()}'></figure>"
        for alt, path in (
            ("ROC curve", report.roc),
            ("precision-recall curve", report.precision_recall),
            ("reliability diagram", report.calibration),
            ("confusion matrix", report.confusion_matrix),
        )
    )
    rows = [
        ("studies", f"{ev.n}"),
        ("abnormal (positives)", f"{ev.n_positive} ({ev.prevalence:.1%})"),
        ("AUROC", f"{ev.auroc:.4f}"),
        ("average precision", f"{ev.average_precision:.4f}"),
        ("expected calibration error", f"{ev.ece:.4f}"),
        ("threshold on P(abnormal)", f"{ev.threshold:.4f}"),
        ("sensitivity at threshold", f"{ev.sensitivity:.4f} ({ev.tp} of {ev.tp + ev.fn})"),
        ("specificity at threshold", f"{ev.specificity:.4f} ({ev.tn} of {ev.tn + ev.fp})"),
        ("missed abnormal (false normal)", f"{ev.fn}"),
    ]
    table = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
    page = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>Evaluation: {name}</title>"
        "<style>body{font-family:sans-serif;margin:2em;max-width:1100px}figure{display:inline-block;margin:0.5em}"
        "table{border-collapse:collapse}th,td{border:1px solid #ccc;padding:4px 8px;text-align:left}</style>"
        f"</head><body><h1>Evaluation: {name}</h1>"
        f"<p>{ev.n} studies, {ev.prevalence:.1%} abnormal. AUROC {ev.auroc:.3f}, average precision "
        f"{ev.average_precision:.3f}, ECE {ev.ece:.3f}. At the deployed threshold {ev.threshold:.4f}: "
        f"sensitivity {ev.sensitivity:.3f}, specificity {ev.specificity:.3f}, {ev.fn} abnormal studies "
        "called normal.</p>"
        f"<h2>Plots</h2>{figures}<h2>Numbers</h2><table>{table}</table></body></html>"
    )
    report.html.write_text(page, encoding="utf-8")
    return report


def log_evaluation_report(
    ev: Evaluation, run_id: str, *, title: str = "validation set", artifact_path: str | None = None
) -> EvaluationReport:
    """Write the evaluation's report (:func:`write_evaluation_report`) and log it into the MLflow run ``run_id``
    under ``artifact_path`` (default the registry's ``EVALUATION_ARTIFACTS``); logging again overwrites it.

    Returns the report's files (in a temporary folder, gone once logged: read them in the run)."""
    import tempfile

    from mlflow import MlflowClient

    from pipeline.registry.evaluation import EVALUATION_ARTIFACTS

    with tempfile.TemporaryDirectory(prefix="evaluation-") as folder:
        report = write_evaluation_report(ev, Path(folder), title=title)
        MlflowClient().log_artifacts(run_id, folder, artifact_path or EVALUATION_ARTIFACTS)
    return report
