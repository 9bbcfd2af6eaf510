"""The clinical checks of the validation gate: candidate against champion on the scored test sets.

Pure functions over one frame per test set with, per study, its label, its subgroups and both
models' probabilities (``prob_candidate``, ``prob_champion``). Each check returns a :class:`Check`:
pass, fail or not applicable (a set with nothing to judge: no confirmed errors yet), with its
numbers. Both models are put at an operating point chosen by the same rule on the same studies,
so the business value (the share of normals filtered) is compared like with like.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field
from scipy import special
from scipy import stats as sps

from pipeline.drift import platt_scaling
from pipeline.registry.evaluation import evaluate_probs
from pipeline.validation.stats import (
    OperatingPoint,
    below_target,
    clopper_pearson_interval,
    delong,
    sensitivity_threshold,
)
from pipeline.validation.testsets import (
    EVIDENCE_POSITIVES,
    REAL_BALANCE,
    REGRESSION,
    TYPICAL_ERRORS,
    UNUSUAL,
    ServedUnit,
)

CANDIDATE, CHAMPION = "prob_candidate", "prob_champion"
SUBGROUPS = ("site", "manufacturer", "age_band", "patient_sex", "view_position")
Status = Literal["pass", "fail", "n/a"]


class ValidationConfig(BaseModel):
    """The margins of the gate; every comparison is candidate against champion.

    Args:
        confidence: of every confidence bound (one-sided).
        auroc_margin: the candidate's AUROC may be at most this much below the champion's (lower bound, DeLong).
        auroc_min_class: a set with fewer normal or abnormal studies than this gets no AUROC bound (a real-balance
            set of a small site: at 5% prevalence its bound would be wider than any margin).
        sensitivity_target: the operating point keeps the lower bound of sensitivity at or above this.
        sensitivity_target_by_site: a site whose notion of normal differs gets its own target (and threshold).
        filtered_margin: the share of studies filtered as normal at screening prevalence may fall at most this much.
        ece_margin: the expected calibration error may grow at most this much.
        calibration_loss_margin: the log-loss lost to miscalibration (nats per study) may grow at most this much.
        subgroup_margin: no subgroup's AUROC (lower bound) nor sensitivity may fall more than this.
        subgroup_min_studies, subgroup_min_class: subgroups smaller than this (or with fewer of a class) are not judged.
        confident_normal_fraction: "called normal with confidence" is a probability below this share of the threshold.
        unusual_margin: the share of the unusual studies that must reach a radiologist (abnormal or unusable)
            closed as normal may grow at most this much.
        min_positives: every served site and scanner needs this many labeled abnormal studies in the test sets, or
            the verdict fails with "insufficient evidence at <site>". With 40, a candidate whose sensitivity there
            has fallen to 0.85 is caught with probability 0.95 (0.78 at 0.90) by the exact test against the site's
            target of 0.99, whether the site is judged alone or, Holm-corrected, among six served sites and
            scanners; one exactly at the target is failed with probability 0.007 (``stats.detection_power``; with
            30 the power among six falls to 0.85). A 0.99 lower bound would need 299.
        max_latency_ms: per study, batch of one, on the validating machine.
        max_memory_mb: the model's parameters and buffers.
        reproduce_atol: the loaded model's logits on its stored input example may differ this much at most.
        age_bands: edges (years) of the age bands.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    confidence: float = Field(0.95, gt=0.5, lt=1.0)
    auroc_margin: float = Field(0.02, ge=0.0)
    auroc_min_class: int = Field(30, ge=2)
    sensitivity_target: float = Field(0.99, gt=0.0, lt=1.0)
    sensitivity_target_by_site: dict[str, float] = Field(default_factory=dict)
    filtered_margin: float = Field(0.05, ge=0.0)
    ece_margin: float = Field(0.03, ge=0.0)
    calibration_loss_margin: float = Field(0.02, ge=0.0)
    subgroup_margin: float = Field(0.05, ge=0.0)
    subgroup_min_studies: int = Field(30, ge=2)
    subgroup_min_class: int = Field(5, ge=2)
    confident_normal_fraction: float = Field(0.5, gt=0.0, le=1.0)
    unusual_margin: float = Field(0.05, ge=0.0)
    min_positives: int = Field(EVIDENCE_POSITIVES, ge=1)
    max_latency_ms: float = Field(2000.0, gt=0.0)
    max_memory_mb: float = Field(1024.0, gt=0.0)
    reproduce_atol: float = Field(1e-4, gt=0.0)
    age_bands: tuple[float, ...] = (0.0, 16.0, 40.0, 65.0, 200.0)


@dataclass(frozen=True)
class Check:
    """One check's outcome: ``name`` (``auroc_noninferiority[regression]``...), its status, a one-line
    summary with the numbers a release manager reads, and the numbers themselves."""

    name: str
    status: Status
    summary: str
    numbers: dict[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return self.status == "fail"


@dataclass(frozen=True)
class Thresholds:
    """Both models' operating points: one threshold each, and per site where a site has its own target."""

    candidate: OperatingPoint
    champion: OperatingPoint
    candidate_by_site: dict[str, float] = field(default_factory=dict)
    champion_by_site: dict[str, float] = field(default_factory=dict)

    def for_rows(self, sites: pd.Series, which: str) -> np.ndarray:
        base = self.candidate.threshold if which == CANDIDATE else self.champion.threshold
        by_site = self.candidate_by_site if which == CANDIDATE else self.champion_by_site
        return sites.map(lambda s: by_site.get(str(s), base)).to_numpy(dtype=np.float64)


def _ok(passed: bool) -> Status:
    return "pass" if passed else "fail"


def _both_classes(frame: pd.DataFrame, at_least: int = 2) -> bool:
    positives = int(frame["label"].sum())
    return positives >= at_least and len(frame) - positives >= at_least


def missed_more(
    caught_candidate: np.ndarray, caught_champion: np.ndarray, margin: float, alpha: float
) -> tuple[bool, float]:
    """Whether the candidate catches a share of these must-see studies more than ``margin`` below the champion's,
    and significantly so (McNemar's exact test on the studies one model catches and the other misses); and its p."""
    lost = int((caught_champion & ~caught_candidate).sum())
    gained = int((caught_candidate & ~caught_champion).sum())
    p = float(sps.binomtest(lost, lost + gained, 0.5, alternative="greater").pvalue) if lost else 1.0
    drop = float(caught_champion.mean() - caught_candidate.mean()) if caught_candidate.size else 0.0
    return drop > margin and p < alpha, p


def auroc_check(name: str, frame: pd.DataFrame, config: ValidationConfig) -> Check:
    """AUROC non-inferiority on one set: the lower bound of (candidate - champion) above ``-auroc_margin``."""
    check = f"auroc_noninferiority[{name}]"
    if not _both_classes(frame, config.auroc_min_class):
        return Check(
            check,
            "n/a",
            f"{name}: {len(frame)} studies, {int(frame['label'].sum())} abnormal: too few of a class for a bound "
            f"(at least {config.auroc_min_class} each); its site is judged in the subgroup check",
        )
    paired = delong(frame["label"], frame[CANDIDATE], frame[CHAMPION])
    lower = paired.lower(config.confidence)
    numbers = {
        "auroc_candidate": paired.auroc_a,
        "auroc_champion": paired.auroc_b,
        "difference": paired.difference,
        "lower_bound": lower,
        "margin": config.auroc_margin,
        "n": paired.n,
        "n_abnormal": paired.n_positive,
    }
    summary = (
        f"{name}: AUROC {paired.auroc_a:.3f} vs champion {paired.auroc_b:.3f}, difference "
        f"{paired.difference:+.3f} (lower {config.confidence:.0%} bound {lower:+.3f}, margin -{config.auroc_margin:.3f})"
    )
    return Check(check, _ok(lower > -config.auroc_margin), summary, numbers)


def operating_points(regression: pd.DataFrame, config: ValidationConfig) -> Thresholds:
    """Choose both models' thresholds on the regression set: sensitivity's lower bound at the target."""

    def point(frame: pd.DataFrame, which: str, target: float) -> OperatingPoint:
        return sensitivity_threshold(frame[which], frame["label"], target=target, confidence=config.confidence)

    by_site: dict[str, dict[str, float]] = {CANDIDATE: {}, CHAMPION: {}}
    for site, target in config.sensitivity_target_by_site.items():
        part = regression[regression["site"] == site]
        if _both_classes(part, 1):
            for which in (CANDIDATE, CHAMPION):
                by_site[which][site] = point(part, which, target).threshold
    return Thresholds(
        candidate=point(regression, CANDIDATE, config.sensitivity_target),
        champion=point(regression, CHAMPION, config.sensitivity_target),
        candidate_by_site=by_site[CANDIDATE],
        champion_by_site=by_site[CHAMPION],
    )


def operating_point_check(thresholds: Thresholds, real_balance: pd.DataFrame, config: ValidationConfig) -> Check:
    """The candidate reaches the sensitivity target and filters no fewer normals (at screening prevalence) than allowed."""
    op = thresholds.candidate
    numbers: dict[str, Any] = {
        "threshold": op.threshold,
        "threshold_by_site": thresholds.candidate_by_site,
        "sensitivity": op.sensitivity,
        "sensitivity_lower": op.sensitivity_lower,
        "target": config.sensitivity_target,
        "specificity": op.specificity,
        "champion_threshold": thresholds.champion.threshold,
    }
    if not op.attainable:
        return Check(
            "operating_point",
            "fail",
            f"the regression set has {op.n_positive} abnormal studies: a {config.confidence:.0%} lower bound of "
            f"sensitivity >= {config.sensitivity_target} needs at least {op.min_positives} (rebuild larger test sets "
            "or lower the target)",
            numbers,
        )
    if real_balance.empty:
        return Check("operating_point", "fail", "no real-balance test set: the share filtered cannot be measured")
    filtered = {
        which: float((real_balance[which].to_numpy() < thresholds.for_rows(real_balance["site"], which)).mean())
        for which in (CANDIDATE, CHAMPION)
    }
    numbers |= {"filtered_candidate": filtered[CANDIDATE], "filtered_champion": filtered[CHAMPION]}
    numbers["margin"] = config.filtered_margin
    passed = filtered[CANDIDATE] >= filtered[CHAMPION] - config.filtered_margin
    summary = (
        f"threshold {op.threshold:.4f}: sensitivity {op.sensitivity:.3f} (lower bound {op.sensitivity_lower:.3f} >= "
        f"{config.sensitivity_target}); filters {filtered[CANDIDATE]:.1%} of screening studies as normal vs champion "
        f"{filtered[CHAMPION]:.1%} (margin {config.filtered_margin:.0%})"
    )
    return Check("operating_point", _ok(passed), summary, numbers)


def calibration_loss(probs: np.ndarray, labels: np.ndarray) -> tuple[float, float, float]:
    """Return (log-loss the probabilities lose to their own Platt recalibration, in nats per study; slope; intercept).

    Zero for calibrated probabilities; a shift of the logits (over-calling one class) or a sharpening
    (overconfidence) costs log-loss that recalibration wins back, however well the model ranks.
    """
    p = np.clip(probs.astype(np.float64), 1e-6, 1 - 1e-6)
    y = labels.astype(np.float64)
    fit = platt_scaling(p, y)
    mapped = np.clip(special.expit(fit.slope * special.logit(p) + fit.intercept), 1e-6, 1 - 1e-6)

    def log_loss(q: np.ndarray) -> float:
        return float(-np.mean(y * np.log(q) + (1 - y) * np.log(1 - q)))

    return max(0.0, log_loss(p) - log_loss(mapped)), fit.slope, fit.intercept


def calibration_check(regression: pd.DataFrame, thresholds: Thresholds, config: ValidationConfig) -> Check:
    """Calibration is not worse: expected calibration error (10 bins) within ``ece_margin`` of the champion's,
    and the log-loss lost to miscalibration (Platt) within ``calibration_loss_margin`` of the champion's."""
    labels = regression["label"].to_numpy()
    ece, loss, slope, intercept = {}, {}, {}, {}
    for which, t in ((CANDIDATE, thresholds.candidate.threshold), (CHAMPION, thresholds.champion.threshold)):
        probs = regression[which].to_numpy()
        ece[which] = evaluate_probs(probs, labels, t).ece
        loss[which], slope[which], intercept[which] = calibration_loss(probs, labels)
    passed = ece[CANDIDATE] <= ece[CHAMPION] + config.ece_margin and (
        loss[CANDIDATE] <= loss[CHAMPION] + config.calibration_loss_margin
    )
    summary = (
        f"ECE {ece[CANDIDATE]:.3f} vs champion {ece[CHAMPION]:.3f} (margin {config.ece_margin:.3f}); log-loss lost to "
        f"miscalibration {loss[CANDIDATE]:.3f} vs {loss[CHAMPION]:.3f} nats (margin {config.calibration_loss_margin:.3f}; "
        f"Platt slope {slope[CANDIDATE]:.2f}, intercept {intercept[CANDIDATE]:+.2f})"
    )
    numbers = {
        "ece_candidate": ece[CANDIDATE],
        "ece_champion": ece[CHAMPION],
        "calibration_loss_candidate": loss[CANDIDATE],
        "calibration_loss_champion": loss[CHAMPION],
        "platt_slope_candidate": slope[CANDIDATE],
        "platt_intercept_candidate": intercept[CANDIDATE],
        "platt_slope_champion": slope[CHAMPION],
        "platt_intercept_champion": intercept[CHAMPION],
        "margin": config.ece_margin,
        "calibration_loss_margin": config.calibration_loss_margin,
    }
    return Check("calibration", _ok(passed), summary, numbers)


def subgroup_check(frame: pd.DataFrame, thresholds: Thresholds, config: ValidationConfig) -> Check:
    """No subgroup (site, manufacturer, age band, sex, view) is worse than the champion beyond ``subgroup_margin``.

    A subgroup is worse when its AUROC falls more than the margin and DeLong's upper bound of the
    difference is below 0, or its sensitivity at the operating points falls more than the margin and
    McNemar's exact test on its abnormal studies says the candidate misses significantly more. Small
    subgroups are noisy: a drop must be both large and real to fail the gate.
    """
    rows: list[dict[str, Any]] = []
    alpha = 1.0 - config.confidence
    flagged = {
        which: frame[which].to_numpy() >= thresholds.for_rows(frame["site"], which) for which in (CANDIDATE, CHAMPION)
    }
    for column in SUBGROUPS:
        for value, part in frame.groupby(column, sort=True, dropna=False):
            if len(part) < config.subgroup_min_studies or not _both_classes(part, config.subgroup_min_class):
                continue
            paired = delong(part["label"], part[CANDIDATE], part[CHAMPION])
            where = frame.index.get_indexer(part.index)
            positive = part["label"].to_numpy() == 1
            caught = {which: flagged[which][where][positive] for which in (CANDIDATE, CHAMPION)}
            sens = {which: float(caught[which].mean()) for which in (CANDIDATE, CHAMPION)}
            worse_sens, mcnemar = missed_more(caught[CANDIDATE], caught[CHAMPION], config.subgroup_margin, alpha)
            upper = paired.ci(1.0 - 2.0 * alpha)[1]  # the one-sided upper bound at ``confidence``
            worse_auroc = paired.difference < -config.subgroup_margin and upper < 0.0
            rows.append(
                {
                    "subgroup": f"{column}={value}",
                    "n": len(part),
                    "n_abnormal": int(positive.sum()),
                    "auroc_candidate": paired.auroc_a,
                    "auroc_champion": paired.auroc_b,
                    "auroc_difference": paired.difference,
                    "auroc_upper_bound": upper,
                    "sensitivity_candidate": sens[CANDIDATE],
                    "sensitivity_champion": sens[CHAMPION],
                    "sensitivity_p": mcnemar,
                    "worse": bool(worse_auroc or worse_sens),
                }
            )
    if not rows:
        return Check("subgroups", "n/a", "no subgroup is large enough to judge", {"subgroups": []})
    worse = [r for r in rows if r["worse"]]
    if worse:
        w = min(worse, key=lambda r: float(r["auroc_difference"]))
        summary = (
            f"{len(worse)} of {len(rows)} subgroups worse; {w['subgroup']}: AUROC {w['auroc_candidate']:.3f} vs "
            f"{w['auroc_champion']:.3f}, sensitivity {w['sensitivity_candidate']:.3f} vs {w['sensitivity_champion']:.3f}"
        )
    else:
        summary = (
            f"{len(rows)} subgroups judged, none worse than the champion by more than {config.subgroup_margin:.2f}"
        )
    return Check("subgroups", _ok(not worse), summary, {"subgroups": rows, "margin": config.subgroup_margin})


def evidence_check(
    frame: pd.DataFrame, thresholds: Thresholds, served: Sequence[ServedUnit], config: ValidationConfig
) -> Check:
    """Every served site and scanner has its evidence, and the candidate is safe there whatever the pooled figures say.

    ``frame`` is ``regression`` and the real-balance sets together (one row per study, with ``site`` and
    ``scanner``); ``served`` the sites and scanners the champion serves (every site in ``frame`` when empty).
    Each unit fails for one of: fewer than ``min_positives`` labeled abnormal studies ("insufficient evidence
    at <site>"); a ranking worse than the champion's there (AUROC down more than ``subgroup_margin`` and DeLong's
    upper bound below 0: a model blind at one scanner, whose pooled threshold falls to rescue it); a
    sensitivity at the deployed thresholds more than ``subgroup_margin`` below the champion's on
    the same abnormal studies with McNemar's exact test significant; or a sensitivity significantly below the
    site's target at the threshold the candidate would use there (exact one-sided binomial test, Holm-corrected
    over the units, so that a candidate at its target everywhere fails none of them at more than the gate's
    ``1 - confidence``, however many sites it serves). Each unit's
    row has its studies, abnormal studies, both sensitivities and the candidate's exact interval.
    """
    units = list(served) or [ServedUnit(str(site), None, 0) for site in sorted(frame["site"].astype(str).unique())]
    alpha = 1.0 - config.confidence
    caught = {
        which: frame[which].to_numpy() >= thresholds.for_rows(frame["site"], which) for which in (CANDIDATE, CHAMPION)
    }
    positive = frame["label"].to_numpy() == 1
    rows: list[dict[str, Any]] = []
    for unit in units:
        mask = unit.matches(frame)
        hits = positive & mask
        n_pos = int(hits.sum())
        target = config.sensitivity_target_by_site.get(unit.site, config.sensitivity_target)
        threshold = float(thresholds.for_rows(pd.Series([unit.site]), CANDIDATE)[0])
        row: dict[str, Any] = {
            "site": unit.site,
            "scanner": unit.scanner,
            "served_studies": unit.studies,
            "studies": int(mask.sum()),
            "abnormal": n_pos,
            "target": target,
            "threshold": threshold,
            "problem": "",
        }
        if n_pos < config.min_positives:
            row["problem"] = (
                f"insufficient evidence at {unit.where}: {n_pos} labeled abnormal studies in the test sets, "
                f"{config.min_positives} needed"
            )
            rows.append(row)
            continue
        part = frame.loc[mask]
        if _both_classes(part, config.subgroup_min_class):
            paired = delong(part["label"], part[CANDIDATE], part[CHAMPION])
            upper = paired.ci(1.0 - 2.0 * alpha)[1]  # the one-sided upper bound at ``confidence``
            row |= {"auroc_candidate": paired.auroc_a, "auroc_champion": paired.auroc_b, "auroc_upper_bound": upper}
            if paired.difference < -config.subgroup_margin and upper < 0.0:
                row["problem"] = (
                    f"the candidate ranks studies at {unit.where} worse than the champion: AUROC {paired.auroc_a:.3f} "
                    f"vs {paired.auroc_b:.3f} (upper bound of the difference {upper:+.3f})"
                )
        mine, theirs = caught[CANDIDATE][hits], caught[CHAMPION][hits]
        k = int(mine.sum())
        low, high = clopper_pearson_interval(k, n_pos, config.confidence)
        worse, p_paired = missed_more(mine, theirs, config.subgroup_margin, alpha)
        p_target = below_target(k, n_pos, target, config.confidence)[1]
        row |= {
            "sensitivity_candidate": k / n_pos,
            "sensitivity_low": low,
            "sensitivity_high": high,
            "sensitivity_champion": float(theirs.mean()),
            "p_paired": p_paired,
            "p_target": p_target,
        }
        if worse and not row["problem"]:
            row["problem"] = (
                f"sensitivity at {unit.where} {k / n_pos:.3f} vs champion {theirs.mean():.3f} on the same {n_pos} "
                f"abnormal studies (McNemar p={p_paired:.2g})"
            )
        rows.append(row)
    judged = sorted((r for r in rows if "p_target" in r), key=lambda r: r["p_target"])
    for rank, row in enumerate(judged):  # Holm's step-down: stop at the first p-value that is not small enough
        if row["p_target"] >= alpha / (len(judged) - rank):
            break
        row["problem"] = row["problem"] or (
            f"sensitivity at {ServedUnit(row['site'], row['scanner'], 0).where} {row['sensitivity_candidate']:.3f} "
            f"[{row['sensitivity_low']:.3f}, {row['sensitivity_high']:.3f}] is below its target {row['target']} at "
            f"threshold {row['threshold']:.4f} (exact p={row['p_target']:.2g}, Holm over {len(judged)})"
        )
    failing = [r for r in rows if r["problem"]]
    numbers = {"units": rows, "min_positives": config.min_positives, "margin": config.subgroup_margin}
    n_sites = sum(r["scanner"] is None for r in rows)
    if failing:
        summary = f"{len(failing)} of {len(rows)} served sites and scanners fail: " + "; ".join(
            r["problem"] for r in failing
        )
        return Check("site_evidence", "fail", summary, numbers)
    lowest = min(rows, key=lambda r: r["sensitivity_candidate"])
    summary = (
        f"{n_sites} sites and {len(rows) - n_sites} scanners served, each with >= {config.min_positives} labeled "
        f"abnormal studies; lowest sensitivity {lowest['sensitivity_candidate']:.3f} "
        f"[{lowest['sensitivity_low']:.3f}, {lowest['sensitivity_high']:.3f}] at {ServedUnit(lowest['site'], lowest['scanner'], 0).where}"
    )
    return Check("site_evidence", "pass", summary, numbers)


def typical_errors_check(errors: pd.DataFrame, thresholds: Thresholds) -> Check:
    """On the champion's confirmed errors, the candidate makes fewer (or none where the champion makes none)."""
    if errors.empty:
        return Check("typical_errors", "n/a", "no confirmed model errors in the store yet", {"n": 0})
    wrong = {
        which: int(
            ((errors[which].to_numpy() >= thresholds.for_rows(errors["site"], which)) != (errors["label"] == 1)).sum()
        )
        for which in (CANDIDATE, CHAMPION)
    }
    passed = wrong[CANDIDATE] < wrong[CHAMPION] or wrong[CANDIDATE] == 0
    missed = int(
        ((errors[CANDIDATE].to_numpy() < thresholds.for_rows(errors["site"], CANDIDATE)) & (errors["label"] == 1)).sum()
    )
    summary = (
        f"{wrong[CANDIDATE]} errors on {len(errors)} confirmed errors vs champion {wrong[CHAMPION]} "
        f"({missed} of {int(errors['label'].sum())} missed abnormal studies still missed)"
    )
    numbers = {
        "n": len(errors),
        "errors_candidate": wrong[CANDIDATE],
        "errors_champion": wrong[CHAMPION],
        "missed": missed,
    }
    return Check("typical_errors", _ok(passed), summary, numbers)


def unusual_check(unusual: pd.DataFrame, thresholds: Thresholds, config: ValidationConfig) -> Check:
    """Unusual studies that must reach a radiologist (abnormal, or unusable) are not closed as normal more often.

    The share of the unusual set's not-normal studies (label 1: abnormal, or an image unusable for
    positioning or artefacts) that the candidate closes as normal may not exceed the champion's by more
    than ``unusual_margin`` with McNemar's test significant. The share of all unusual studies called normal with confidence (below
    ``confident_normal_fraction`` of the threshold) is reported beside it, per reason.
    """
    if unusual.empty:
        return Check(
            "unusual_data", "n/a", "no unusual studies (children, rare scanners, unusable images) yet", {"n": 0}
        )
    must_see = unusual[unusual["label"] == 1]
    caught = {
        which: must_see[which].to_numpy() >= thresholds.for_rows(must_see["site"], which)
        for which in (CANDIDATE, CHAMPION)
    }
    closed = {which: float((~caught[which]).mean()) if len(must_see) else 0.0 for which in (CANDIDATE, CHAMPION)}
    limit = config.confident_normal_fraction
    confident = {
        which: float((unusual[which].to_numpy() < thresholds.for_rows(unusual["site"], which) * limit).mean())
        for which in (CANDIDATE, CHAMPION)
    }
    by_reason = {
        str(reason): float((part[CANDIDATE].to_numpy() < thresholds.for_rows(part["site"], CANDIDATE) * limit).mean())
        for reason, part in unusual.groupby("reason", sort=True)
    }
    if must_see.empty:
        return Check(
            "unusual_data",
            "n/a",
            f"none of the {len(unusual)} unusual studies is abnormal or unusable: no miss to count; "
            f"{confident[CANDIDATE]:.1%} called normal with confidence",
            {"n": len(unusual), "confident_normal_candidate": confident[CANDIDATE], "by_reason": by_reason},
        )
    worse, p_value = missed_more(caught[CANDIDATE], caught[CHAMPION], config.unusual_margin, 1.0 - config.confidence)
    passed = not worse
    summary = (
        f"closes {closed[CANDIDATE]:.1%} of {len(must_see)} abnormal or unusable unusual studies as normal vs champion "
        f"{closed[CHAMPION]:.1%} (margin {config.unusual_margin:.0%}); {confident[CANDIDATE]:.1%} of all "
        f"{len(unusual)} unusual studies called normal with confidence (champion {confident[CHAMPION]:.1%})"
    )
    numbers = {
        "n": len(unusual),
        "n_must_see": len(must_see),
        "closed_as_normal_candidate": closed[CANDIDATE],
        "closed_as_normal_champion": closed[CHAMPION],
        "confident_normal_candidate": confident[CANDIDATE],
        "confident_normal_champion": confident[CHAMPION],
        "by_reason": by_reason,
        "margin": config.unusual_margin,
        "p_value": p_value,
    }
    return Check("unusual_data", _ok(passed), summary, numbers)


def age_band(ages: pd.Series, edges: tuple[float, ...]) -> pd.Series:
    """Return each age's band as ``"16-40"`` (``"unknown"`` where the age is missing)."""
    labels = [f"{edges[i]:g}-{edges[i + 1]:g}" for i in range(len(edges) - 1)]
    bands = pd.cut(ages.astype(float), bins=list(edges), right=False, labels=labels)
    return bands.astype(object).where(bands.notna(), "unknown").astype(str)


def clinical_checks(
    sets: Mapping[str, pd.DataFrame], config: ValidationConfig, served: Sequence[ServedUnit] = ()
) -> tuple[list[Check], Thresholds]:
    """Run every clinical check on the scored sets (by name); return the checks and the operating points.

    ``served`` is the population the champion serves (sites and scanners) whose evidence is checked; every
    site of the sets when empty. The frames need a ``scanner`` column for scanner units.

    Raises:
        ValueError: the regression set is missing or lacks a class (nothing can be judged without it).
    """
    regression = sets.get(REGRESSION)
    if regression is None or not _both_classes(regression):
        n = 0 if regression is None else len(regression)
        raise ValueError(
            f"the regression test set has {n} studies and needs both normal and abnormal ones: build the test sets "
            "from a store with labeled studies (`pipeline testsets`)"
        )
    thresholds = operating_points(regression, config)
    real_names = sorted(n for n in sets if n.startswith(f"{REAL_BALANCE}:"))
    real = [sets[n] for n in real_names if not sets[n].empty]
    real_balance = pd.concat(real, ignore_index=True) if real else regression.iloc[:0]
    checks = [auroc_check(REGRESSION, regression, config)]
    checks += [auroc_check(n, sets[n], config) for n in real_names]
    checks.append(operating_point_check(thresholds, real_balance, config))
    checks.append(calibration_check(regression, thresholds, config))
    everything = pd.concat([regression, real_balance], ignore_index=True).drop_duplicates("study_id")
    checks.append(subgroup_check(everything.reset_index(drop=True), thresholds, config))
    checks.append(evidence_check(everything.reset_index(drop=True), thresholds, served, config))
    checks.append(typical_errors_check(sets.get(TYPICAL_ERRORS, regression.iloc[:0]), thresholds))
    checks.append(unusual_check(sets.get(UNUSUAL, regression.iloc[:0]), thresholds, config))
    return checks, thresholds
