"""The reports a release manager reads before approving: the validation verdict, and the shadow evaluation.

Self-contained HTML pages (they open from the MLflow UI). Validation: the verdict and each check with
its numbers first, then the ROC curves and reliability diagrams of candidate and champion on the
regression set, then the subgroup table. Shadow: agreement on live traffic, per site, the studies
where the two differ most, both models' label-free estimates, and a scatter of their probabilities.
This module only draws; the numbers come from ``pipeline.validation``.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.registry.evaluation import evaluate_probs
from pipeline.reports.figures import png_base64, pyplot

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from pipeline.validation.shadow import ShadowReport
    from pipeline.validation.suite import Verdict

_WHO = (("prob_candidate", "candidate"), ("prob_champion", "champion"))


def _figures(verdict: Verdict) -> list[tuple[str, str]]:
    curves = verdict.curves
    if not curves.get("labels"):
        return []
    labels = np.asarray(curves["labels"], dtype=int)
    thresholds = curves.get("thresholds", {})
    plt = pyplot()
    roc, (ax_roc) = plt.subplots(figsize=(4.8, 4.4), dpi=100)
    reliability, ax_rel = plt.subplots(figsize=(4.8, 4.4), dpi=100)
    for column, who in _WHO:
        probs = np.asarray(curves[column], dtype=float)
        ev = evaluate_probs(probs, labels, float(thresholds.get(column, 0.5)))
        ax_roc.plot(ev.roc_fpr, ev.roc_tpr, label=f"{who} (AUROC {ev.auroc:.3f})")
        ax_roc.scatter([1 - ev.specificity], [ev.sensitivity], zorder=3)
        filled = ev.bin_count > 0
        ax_rel.plot(
            ev.bin_mean_prob[filled], ev.bin_frac_positive[filled], marker="o", label=f"{who} (ECE {ev.ece:.3f})"
        )
    ax_roc.plot([0, 1], [0, 1], linestyle="--", color="grey")
    ax_roc.set_xlabel("1 - specificity")
    ax_roc.set_ylabel("sensitivity")
    ax_roc.set_title(f"ROC, regression set (n={len(labels)}); dots: operating points")
    ax_roc.legend(loc="lower right")
    ax_rel.plot([0, 1], [0, 1], linestyle="--", color="grey")
    ax_rel.set_xlabel("mean predicted P(abnormal)")
    ax_rel.set_ylabel("observed share abnormal")
    ax_rel.set_title("reliability diagram, regression set")
    ax_rel.legend(loc="upper left")
    return [("ROC curves", png_base64(roc)), ("reliability diagrams", png_base64(reliability))]


def _subgroup_table(verdict: Verdict) -> str:
    rows: list[dict[str, Any]] = next(
        (c.numbers.get("subgroups", []) for c in verdict.checks if c.name == "subgroups"), []
    )
    if not rows:
        return "<p>No subgroup was large enough to judge.</p>"
    head = "<tr><th>subgroup</th><th>n</th><th>abnormal</th><th>AUROC candidate</th><th>AUROC champion</th>"
    head += "<th>difference (upper bound)</th><th>sensitivity candidate</th><th>sensitivity champion</th></tr>"
    body = "".join(
        f"<tr class='{'fail' if r['worse'] else ''}'><td>{html.escape(r['subgroup'])}</td><td>{r['n']}</td>"
        f"<td>{r['n_abnormal']}</td><td>{r['auroc_candidate']:.3f}</td><td>{r['auroc_champion']:.3f}</td>"
        f"<td>{r['auroc_difference']:+.3f} ({r['auroc_upper_bound']:+.3f})</td><td>{r['sensitivity_candidate']:.3f}</td>"
        f"<td>{r['sensitivity_champion']:.3f}</td></tr>"
        for r in rows
    )
    return f"<table>{head}{body}</table>"


_STYLE = (
    "<style>body{font-family:sans-serif;margin:2em;max-width:1200px}figure{display:inline-block;margin:0.5em}"
    "table{border-collapse:collapse}th,td{border:1px solid #ccc;padding:4px 8px;text-align:left}"
    "tr.fail{background:#fdd}.verdict{font-size:1.4em}</style>"
)


def write_validation_report(verdict: Verdict, path: Path) -> Path:
    """Write the report page to ``path``; return it."""
    checks = "".join(
        f"<tr class='{'fail' if c.failed else ''}'><td>{html.escape(c.status.upper())}</td>"
        f"<td>{html.escape(c.name)}</td><td>{html.escape(c.summary)}</td></tr>"
        for c in verdict.checks
    )
    figures = "".join(
        f"<figure><img alt='{html.escape(alt)}' src='data:image/png;base64,{png}'></figure>"
        for alt, png in _figures(verdict)
    )
    sets = "".join(f"<li>{html.escape(n)}: <code>{h}</code></li>" for n, h in sorted(verdict.test_sets.items()))
    changes = "".join(
        f"<p>Test sets changed for this validation: {html.escape(c)}</p>" for c in verdict.test_set_changes
    )
    left_out = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in verdict.left_out.items())
    title = f"Validation of {verdict.model_name} version {verdict.candidate} against version {verdict.champion}"
    page = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title>"
        f"{_STYLE}</head><body><h1>{html.escape(title)}</h1>"
        f"<p class='verdict'>Verdict: <b>{verdict.status.upper()}</b> ({len(verdict.failed_checks)} failed checks); "
        f"operating point {verdict.threshold:.4f}; {verdict.studies} test studies ({html.escape(left_out)} left out); "
        f"validated {html.escape(verdict.validated_at)}.</p>"
        f"<h2>Checks</h2><table><tr><th>status</th><th>check</th><th>numbers</th></tr>{checks}</table>"
        f"<h2>Evidence per served site and scanner</h2>{_evidence_table(verdict)}"
        f"<h2>Plots</h2>{figures}<h2>Subgroups</h2>{_subgroup_table(verdict)}"
        f"<h2>Test sets</h2><ul>{sets}</ul>{changes}</body></html>"
    )
    path.write_text(page, encoding="utf-8")
    return path


def _evidence_table(verdict: Verdict) -> str:
    """One row per served site and scanner: its evidence, both sensitivities, the candidate's exact interval."""
    if not verdict.evidence:
        return "<p>No served site or scanner was judged.</p>"
    rows = []
    for r in verdict.evidence:
        where = r["site"] if r.get("scanner") is None else f"{r['site']} ({r['scanner']})"
        judged = "sensitivity_candidate" in r
        interval = f"[{r['sensitivity_low']:.3f}, {r['sensitivity_high']:.3f}]" if judged else ""
        rows.append(
            f"<tr class='{'fail' if r['problem'] else ''}'><td>{html.escape(where)}</td><td>{r['served_studies']}</td>"
            f"<td>{r['studies']}</td><td>{r['abnormal']}</td>"
            f"<td>{_num(r.get('sensitivity_candidate'))} {interval}</td><td>{_num(r.get('sensitivity_champion'))}</td>"
            f"<td>{r['threshold']:.4f} (target {r['target']})</td><td>{html.escape(r['problem'] or 'ok')}</td></tr>"
        )
    return (
        "<table><tr><th>served</th><th>studies served</th><th>test studies</th><th>abnormal</th>"
        "<th>sensitivity, candidate [exact interval]</th><th>champion</th><th>threshold</th><th>verdict</th></tr>"
        f"{''.join(rows)}</table>"
    )


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _num(value: float | None) -> str:
    return "n/a" if value is None or value != value else f"{value:.3f}"


def _shadow_scatter(report: ShadowReport) -> str:
    if report.probs is None or not len(report.probs[0]):
        return ""
    candidate, champion = report.probs
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 4.6), dpi=100)
    ax.scatter(champion, candidate, s=6, alpha=0.4)
    if report.candidate is not None and report.champion_estimate is not None:
        ax.axvline(report.champion_estimate.threshold, color="grey", linestyle="--", linewidth=1)
        ax.axhline(report.candidate.threshold, color="grey", linestyle="--", linewidth=1)
    ax.set_xlabel("champion P(abnormal)")
    ax.set_ylabel("candidate P(abnormal)")
    ax.set_title(f"the same {len(candidate)} live studies; dashed: thresholds")
    return f"<figure><img alt='probabilities' src='data:image/png;base64,{png_base64(fig)}'></figure>"


def write_shadow_report(report: ShadowReport, path: Path) -> Path:
    """Write the shadow page to ``path``; return it."""
    title = f"Shadow evaluation of {report.model_name} version {report.version} beside version {report.champion}"
    estimates = ""
    if report.candidate is not None and report.champion_estimate is not None:
        rows = []
        for who, e in (("candidate", report.candidate), ("champion", report.champion_estimate)):
            outcome = (
                f"{_num(e.outcome_sensitivity)} ({e.outcome_misses} missed of {e.outcome_studies} with an outcome)"
                if e.outcome_studies
                else "no outcome yet"
            )
            rows.append(
                f"<tr><td>{who}</td><td>{e.threshold:.4f}</td><td>{_pct(e.filtered_normal)}</td>"
                f"<td>{_num(e.expected_auroc)}</td><td>{_num(e.expected_sensitivity)}</td>"
                f"<td>{_num(e.expected_specificity)}</td><td>{outcome}</td></tr>"
            )
        estimates = (
            "<h2>Label-free estimates</h2><table><tr><th>model</th><th>threshold</th><th>closed as normal</th>"
            "<th>expected AUROC</th><th>expected sensitivity</th><th>expected specificity</th>"
            f"<th>sensitivity on radiologists' outcomes</th></tr>{''.join(rows)}</table>"
        )
    sites = "".join(
        f"<tr><td>{html.escape(str(s['site']))}</td><td>{s['studies']}</td><td>{_pct(s['agreement'])}</td>"
        f"<td>{s['champion_normal_candidate_not']}</td><td>{s['candidate_normal_champion_not']}</td>"
        f"<td>{_pct(s['filtered_champion'])}</td><td>{_pct(s['filtered_candidate'])}</td></tr>"
        for s in report.sites
    )
    examples = "".join(
        f"<tr class='{'fail' if e['decisions_differ'] else ''}'><td><code>{html.escape(str(e['study_id']))}</code></td>"
        f"<td>{html.escape(str(e['site']))}</td><td>{e['prob_champion']:.4f}</td><td>{e['prob_candidate']:.4f}</td></tr>"
        for e in report.examples
    )
    headline = (
        f"{report.studies} live studies from {report.first} to {report.last}; decisions agree on "
        f"{_pct(report.agreement)}."
        if report.studies
        else "No live study was scored in shadow: the candidate was never beside the champion."
    )
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>{_STYLE}</head>"
        f"<body><h1>{html.escape(title)}</h1><p class='verdict'>{html.escape(headline)}</p>"
        f"{estimates}<h2>Per site</h2><table><tr><th>site</th><th>studies</th><th>agreement</th>"
        "<th>champion closes, candidate refers</th><th>candidate closes, champion refers</th>"
        f"<th>closed, champion</th><th>closed, candidate</th></tr>{sites}</table>"
        f"<h2>Where they differ most</h2><table><tr><th>study</th><th>site</th><th>champion</th><th>candidate</th></tr>"
        f"{examples}</table>{_shadow_scatter(report)}<p>Reported {html.escape(report.reported_at)}.</p>"
        "</body></html>"
    )
    path.write_text(page, encoding="utf-8")
    return path


def record_validation(engine: Engine, verdict: Verdict, *, report_dir: Path | None = None) -> str:
    """Write the verdict's report (``validation.html``) and record both onto the candidate version
    (``pipeline.validation.record_verdict``); return the report's URI."""
    import tempfile

    from pipeline.validation import record_verdict

    folder = report_dir or Path(tempfile.mkdtemp(prefix="validation-"))
    folder.mkdir(parents=True, exist_ok=True)
    page = write_validation_report(verdict, folder / "validation.html")
    return record_verdict(engine, verdict, report_dir=folder, pages=[page])


def record_shadow(engine: Engine, report: ShadowReport, actor: str, *, report_dir: Path | None = None) -> str:
    """Write the shadow report (``shadow.html``) and record both onto the version
    (``pipeline.validation.shadow.record_shadow_report``); return the report's URI."""
    import tempfile

    from pipeline.validation.shadow import record_shadow_report

    folder = report_dir or Path(tempfile.mkdtemp(prefix="shadow-"))
    folder.mkdir(parents=True, exist_ok=True)
    page = write_shadow_report(report, folder / "shadow.html")
    return record_shadow_report(engine, report, actor, report_dir=folder, pages=[page])
