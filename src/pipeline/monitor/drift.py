"""Drift per site and overall: what moved against the reference, whether it is the prevalence, and what it costs.

The window is compared with a reference (by default the 14 most recent days that end a few days
before it and had no open drift alert at the site; or a fixed period, such as the model's
validation period) on DICOM tags, image statistics, predictions, uncertainty and embeddings.

- **Effect sizes, not p-values, raise alerts.** Each feature's distance (Wasserstein in units of
  the reference's spread for numbers, Hellinger for categories, MMD on PCA components for
  embeddings) is set against a threshold calibrated on the reference itself: each reference day
  against the rest, the spread of those distances, a margin (``pipeline.drift.calibrated_threshold``).
  A test's p-value is required beside it (KS, chi-square; Holm across features and sites; the
  permutation p of the MMD on its own), so a large distance from a handful of studies
  does not page anyone.
- **Gradual drift**: a CUSUM on each numeric feature's daily mean over the days between the
  reference and the window.
- **Prevalence or covariate shift**: the prevalence of the window is estimated by EM on the
  model's probabilities; the reference is resampled to it and every drifted feature tested
  again. If that explains the shift, it is a prevalence shift (review the threshold: PPV and NPV
  at the deployed threshold under the new prevalence are in the message); else a covariate
  shift (relabel studies from the site).
- **Label-free performance**: sensitivity, specificity and AUROC expected from the calibrated
  probabilities (after reweighting under a prevalence shift), against the reference's own.

One drift alert per site (feature ``distribution``; statistic ``covariate_shift`` or
``prevalence_shift``) names the features that moved most; one ``performance`` alert per site
when the expected AUROC drops. A site with no history of its own is compared with all sites.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Literal

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from pipeline.alerts import GLOBAL, Finding, Kind, Severity, alert_periods
from pipeline.drift import (
    calibrated_threshold,
    cusum,
    em_prevalence,
    expected_auroc,
    expected_performance,
    holm,
    mmd_permutation_test,
    pca_fit,
    platt_scaling,
    reweight_to_prevalence,
)
from pipeline.drift.sketch import Bins, binned_ks, binned_wasserstein, chi_square_p, fit_bins, hellinger_rows
from pipeline.store import decode_embeddings
from pipeline.store.schema import inference_logs, studies

log = logging.getLogger(__name__)

NUMERIC: dict[str, tuple[str, ...]] = {
    "tags": ("kvp", "exposure_mas", "pixel_spacing_mm", "patient_age_years", "bits_stored"),
    "image": ("img_mean", "img_std", "img_p01", "img_p50", "img_p99", "img_clipped_frac"),
    "predictions": ("prob_abnormal",),
    "uncertainty": ("entropy", "epistemic_var"),
}
CATEGORICAL: dict[str, tuple[str, ...]] = {
    "tags": ("modality", "manufacturer", "model_name", "view_position", "body_part", "photometric", "patient_sex"),
    "predictions": ("decision",),
}
EMBEDDING = "embedding"
GROUP = {f: g for g, fs in (*NUMERIC.items(), *CATEGORICAL.items()) for f in fs} | {EMBEDDING: "embedding"}
NUMERIC_FEATURES = tuple(f for fs in NUMERIC.values() for f in fs)
CATEGORICAL_FEATURES = tuple(f for fs in CATEGORICAL.values() for f in fs)
OUTPUTS = frozenset(("prob_abnormal", "decision", "entropy", "epistemic_var"))


@dataclass(frozen=True)
class DriftThresholds:
    """Where the reference comes from and when a distance becomes an alert.

    Args:
        reference: ``rolling`` (recent days, see below) or ``fixed`` (``reference_start`` to ``reference_end``).
        reference_days: days in a rolling reference (the most recent ones without an open drift alert).
        gap_days: the rolling reference ends this many days before the window, so that a slow drift
            has not crept into it; the CUSUM runs over these days and the window.
        lookback_days: how far back a rolling reference may reach to find its days.
        min_reference_days: fewer reference days than this: the site is compared with all sites.
        min_studies: fewer successful studies than this in the window: the site is not judged.
        quantile, margin_sd: the calibrated threshold (``pipeline.drift.calibrated_threshold``).
        numeric_floor: the smallest Wasserstein distance (in reference spreads) worth an alert.
        categorical_floor: the smallest Hellinger distance worth an alert.
        alpha: family-wise error rate of the KS and chi-square tests across features and sites (Holm).
        mmd_alpha: the permutation p-value the embedding test must reach (0.002 with 500 permutations:
            no permutation came as far as the window).
        mmd_floor: the smallest embedding MMD worth an alert, whatever the reference days show (0.005: about
            a shift of 0.7 reference sd along one principal axis; days of an unchanged site reach 0.002, the
            incidents of the shipped scenarios 0.01 and more). Days of one site are not exchangeable studies
            (each day has its own mix), so the permutation p alone says "another day", not "a drift".
        mmd_permutations, mmd_samples, pca_components: the embedding test.
        cusum_k, cusum_h: the CUSUM's allowance and decision interval, in daily standard deviations.
        performance_floor: the smallest drop in expected AUROC worth an alert (on a day of 200 studies
            the estimate moves by about 0.03 by chance).
        recalibration_days, min_outcomes: the label-free estimate is also given after re-mapping the
            window's probabilities (Platt scaling) on the radiologists' outcomes of the site's studies
            from the last ``recalibration_days`` days, where at least ``min_outcomes`` came back. Where
            those outcomes reject the probabilities as they are (likelihood-ratio p below
            ``calibration_alpha``), the recalibrated figure is the site's estimate.
        bins: quantile bins per numeric feature.
        top_features: how many features an alert names.
        sample_studies: how many studies from the shifted region the report lists.
    """

    reference: Literal["rolling", "fixed"] = "rolling"
    reference_start: datetime | None = None
    reference_end: datetime | None = None
    reference_days: int = 14
    gap_days: int = 2
    lookback_days: int = 28
    min_reference_days: int = 5
    min_studies: int = 50
    quantile: float = 0.99
    margin_sd: float = 0.5
    numeric_floor: float = 0.1
    categorical_floor: float = 0.05
    alpha: float = 0.01
    mmd_alpha: float = 0.002
    mmd_floor: float = 0.005
    mmd_permutations: int = 500
    mmd_samples: int = 300
    pca_components: int = 32
    cusum_k: float = 0.5
    cusum_h: float = 5.0
    performance_floor: float = 0.05
    recalibration_days: int = 14
    min_outcomes: int = 30
    calibration_alpha: float = 0.01
    bins: int = 256
    top_features: int = 3
    sample_studies: int = 10

    def __post_init__(self) -> None:
        if self.reference == "fixed" and (self.reference_start is None or self.reference_end is None):
            raise ValueError("a fixed reference needs reference_start and reference_end")
        if self.reference_days < 2 or self.min_reference_days < 2:
            raise ValueError("reference_days and min_reference_days must be >= 2 (a threshold is calibrated on them)")


@dataclass(frozen=True)
class FeatureDrift:
    """One feature at one site: how far it moved, against what, and whether that is drift."""

    site: str
    feature: str
    group: str
    distance: float
    threshold: float
    p_value: float
    cusum: float | None = None  # the larger CUSUM sum on the window's day, in sd
    significant: bool = False  # the test's p-value passes (after BH for KS and chi-square)
    drifted: bool = False
    explained_by_prevalence: bool | None = None

    @property
    def score(self) -> float:
        """Return distance / threshold: above 1 is beyond what reference days show."""
        return self.distance / self.threshold if self.threshold > 0 else float("inf")


@dataclass(frozen=True)
class SiteDrift:
    """Everything the drift check found at one site (or ``*``)."""

    site: str
    reference: str  # "own" or "all sites"
    reference_days: int
    reference_studies: int
    window_studies: int
    features: tuple[FeatureDrift, ...]
    shift: Literal["covariate", "prevalence"] | None = None
    prevalence_reference: float | None = None
    prevalence_window: float | None = None
    expected_auroc_reference: float | None = None
    expected_auroc_window: float | None = None
    expected_sensitivity_window: float | None = None
    expected_specificity_window: float | None = None
    auroc_drop_threshold: float | None = None
    ppv: float | None = None
    npv: float | None = None
    feedback_auroc: float | None = None  # from radiologists' outcomes on the reference period, where they exist
    feedback_studies: int = 0
    # The expected AUROC of the window once its probabilities are re-mapped on recent outcomes: what the
    # label-free estimate cannot see where the model is confidently wrong (a new scanner).
    recalibrated_auroc: float | None = None
    recalibration_outcomes: int = 0
    calibration_p: float | None = None  # the outcomes' test of the probabilities as they are (low: miscalibrated)
    # The best estimate: recalibrated where the outcomes reject the calibration, else expected; none under a
    # covariate shift that no outcome has checked yet.
    estimated_auroc: float | None = None
    samples: tuple[str, ...] = ()
    values: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)

    def drifted(self) -> list[FeatureDrift]:
        """Return the drifted features, most moved first."""
        return sorted((f for f in self.features if f.drifted), key=lambda f: -f.score)


@dataclass(frozen=True)
class DriftRun:
    """The drift check of one window: per site, its metrics, findings and where data was too thin."""

    sites: dict[str, SiteDrift]
    metrics: pd.DataFrame
    findings: tuple[Finding, ...]
    insufficient: tuple[str, ...]
    evaluated: tuple[str, ...]


# --- reading ------------------------------------------------------------------------------------------------------

_COLUMNS = (*NUMERIC_FEATURES, *CATEGORICAL_FEATURES)


def read_drift_frame(engine: Engine, start: datetime, end: datetime) -> pd.DataFrame:
    """Return the successful studies received in ``[start, end)``: site, time, id, threshold, features, embedding."""
    logs, st = inference_logs.c, studies.c
    columns = [
        logs.study_id,
        logs.site,
        logs.received_at,
        logs.threshold,
        logs.embedding,
        *(logs[c] if c in logs else st[c] for c in _COLUMNS),
    ]
    query = (
        sa.select(*columns)
        .select_from(inference_logs.join(studies, logs.study_id == st.study_id))
        .where(logs.status == "ok", logs.received_at >= start, logs.received_at < end)
    )
    with engine.connect() as conn:
        result = conn.execute(query)
        frame = pd.DataFrame(result.fetchall(), columns=list(result.keys()))
    frame["received_at"] = pd.to_datetime(frame["received_at"], utc=True)
    for c in NUMERIC_FEATURES:
        frame[c] = pd.to_numeric(frame[c], errors="coerce").astype("float64")
    for c in CATEGORICAL_FEATURES:
        frame[c] = frame[c].astype(object).where(frame[c].notna(), "<missing>").astype(str)
    return frame


# --- the check ----------------------------------------------------------------------------------------------------


@dataclass
class _Prepared:
    """The rows as sketches: per (site, day) cell, each numeric feature's bin counts, sums and counts of
    values, and each category's counts; row-level arrays are kept for what needs rows (embeddings,
    probabilities, samples, the reweighted re-test)."""

    frame: pd.DataFrame
    cell: np.ndarray  # per row: site_code * n_days + (day - first_day)
    site_names: list[str]
    first_day: int
    n_days: int
    bins: dict[str, Bins]
    index: dict[str, np.ndarray]  # per numeric feature, each row's bin (-1: missing)
    values: dict[str, np.ndarray]  # per numeric feature, each row's value
    categories: dict[str, np.ndarray]  # per categorical feature, each row's code
    levels: dict[str, int]
    counts: dict[str, np.ndarray]  # per feature, (n_cells, bins or levels)
    sums: dict[str, np.ndarray]  # per numeric feature, (n_cells,) sum of finite values
    finite: dict[str, np.ndarray]  # per numeric feature, (n_cells,) count of finite values
    scores: np.ndarray | None  # PCA scores of the embeddings, in reference sd

    def cell_of(self, site: int, day: int) -> int:
        return site * self.n_days + (day - self.first_day)


def _prepare(frame: pd.DataFrame, chunk: np.ndarray, reference: np.ndarray, config: DriftThresholds) -> _Prepared:
    window = chunk == 0
    site_codes, names = pd.factorize(frame["site"])
    first_day = int(chunk.min())
    n_days = int(chunk.max()) - first_day + 1
    cell = site_codes.astype(np.int64) * n_days + (chunk - first_day)
    n_cells = len(names) * n_days

    def binned(feature: str) -> tuple[str, np.ndarray, Bins | None, np.ndarray | None, np.ndarray | None]:
        rng = np.random.default_rng(0)
        values = frame[feature].to_numpy(dtype=np.float64)
        ref_values, cur_values = values[reference], values[window]
        ref_sample = ref_values if ref_values.size <= 50_000 else rng.choice(ref_values, 50_000)
        cur_sample = cur_values if cur_values.size <= 50_000 else rng.choice(cur_values, 50_000)
        fitted = fit_bins(ref_sample, cur_sample, bins=config.bins)
        if fitted is None:
            return feature, values, None, None, None
        index = fitted.index(values)
        keep = index >= 0
        counts = np.bincount(cell[keep] * fitted.size + index[keep], minlength=n_cells * fitted.size)
        return feature, values, fitted, index, counts.reshape(n_cells, fitted.size).astype(np.float64)

    # numpy releases the GIL in searchsorted and bincount: the features bin in parallel.
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        done = list(pool.map(binned, NUMERIC_FEATURES))
    prepared = _Prepared(
        frame=frame,
        cell=cell,
        site_names=[str(n) for n in names],
        first_day=first_day,
        n_days=n_days,
        bins={},
        index={},
        values={},
        categories={},
        levels={},
        counts={},
        sums={},
        finite={},
        scores=None,
    )
    for f, values, fitted, index, counts in done:
        if fitted is None or index is None or counts is None:
            continue
        ok = np.isfinite(values)
        prepared.bins[f], prepared.index[f], prepared.values[f], prepared.counts[f] = fitted, index, values, counts
        prepared.sums[f] = np.bincount(cell[ok], weights=values[ok], minlength=n_cells)
        prepared.finite[f] = np.bincount(cell[ok], minlength=n_cells).astype(np.float64)
    for f in CATEGORICAL_FEATURES:
        codes, uniques = pd.factorize(frame[f], sort=True, use_na_sentinel=False)  # missing: a category
        codes = codes.astype(np.int64)
        size = max(1, len(uniques))
        prepared.categories[f], prepared.levels[f] = codes, size
        keep = codes >= 0
        counts = np.bincount(cell[keep] * size + codes[keep], minlength=n_cells * size)
        prepared.counts[f] = counts.reshape(n_cells, size).astype(np.float64)
    if EMBEDDING in frame and frame[EMBEDDING].notna().all() and reference.sum() >= 10:
        embeddings = decode_embeddings(frame[EMBEDDING])
        if embeddings.ndim == 2 and embeddings.shape[1] >= 2:
            k = min(config.pca_components, embeddings.shape[1], int(reference.sum()))
            pca = pca_fit(embeddings[reference], n_components=k, max_samples=20_000)
            scores = pca.transform(embeddings)
            scores /= scores[reference].std(axis=0, keepdims=True).clip(min=1e-6)
            prepared.scores = scores
    return prepared


@dataclass
class _Side:
    """One comparison: the reference's (site, day) cells and their groups (reference days), the window's
    cells, the cells between them (for the CUSUM); and the same as rows."""

    ref_cells: np.ndarray
    ref_cell_group: np.ndarray
    n_groups: int
    cur_cells: np.ndarray
    recent_cells: np.ndarray
    recent_cell_day: np.ndarray
    ref: np.ndarray  # row indices
    ref_group: np.ndarray  # per reference row, its group
    cur: np.ndarray
    ref_cell_weight: np.ndarray  # per reference cell (all sites: the window's site mix)
    recent_cell_weight: np.ndarray
    ref_row_weight: np.ndarray | None = None


def _side(
    p: _Prepared,
    ref_cells: np.ndarray,
    groups: np.ndarray,
    cur_cells: np.ndarray,
    recent_cells: np.ndarray,
    *,
    same_mix: bool = False,
) -> _Side:
    """Return a comparison; with ``same_mix`` (all sites together) the reference and the days between
    are weighted so each site weighs as much as in the window: a site sending fewer studies is a
    volume alert, not a drift of all sites."""
    _, group = np.unique(groups, return_inverse=True)
    group = group.ravel().astype(np.int64)
    lookup = np.full(len(p.site_names) * p.n_days, -1, dtype=np.int64)
    lookup[ref_cells] = group
    ref = np.flatnonzero(lookup[p.cell] >= 0)
    ref_w = recent_w = np.ones(len(p.site_names))
    if same_mix:
        ref_w, recent_w = _mix_weights(p, ref_cells, cur_cells), _mix_weights(p, recent_cells, cur_cells)
    return _Side(
        ref_cells=ref_cells,
        ref_cell_group=group,
        n_groups=int(group.max()) + 1 if group.size else 0,
        cur_cells=cur_cells,
        recent_cells=recent_cells,
        recent_cell_day=recent_cells % p.n_days + p.first_day,
        ref=ref,
        ref_group=lookup[p.cell[ref]],
        cur=np.flatnonzero(np.isin(p.cell, cur_cells)),
        ref_cell_weight=ref_w[ref_cells // p.n_days],
        recent_cell_weight=recent_w[recent_cells // p.n_days],
        ref_row_weight=ref_w[p.cell[ref] // p.n_days] if same_mix else None,
    )


def _mix_weights(p: _Prepared, cells: np.ndarray, target_cells: np.ndarray) -> np.ndarray:
    """Return per site the weight that gives ``cells`` the site mix of ``target_cells`` (0 for a site absent there)."""
    volume = p.counts[CATEGORICAL_FEATURES[0]].sum(axis=1)

    def shares(of: np.ndarray) -> np.ndarray:
        per_site = np.bincount(of // p.n_days, weights=volume[of], minlength=len(p.site_names))
        return per_site / max(per_site.sum(), 1.0)

    with np.errstate(divide="ignore", invalid="ignore"):
        return np.nan_to_num(shares(target_cells) / shares(cells), nan=0.0, posinf=0.0)


def _grouped(per_cell: np.ndarray, side: _Side) -> np.ndarray:
    out = np.zeros((side.n_groups, *per_cell.shape[1:]))
    weight = side.ref_cell_weight.reshape(-1, *([1] * (per_cell.ndim - 1)))
    np.add.at(out, side.ref_cell_group, per_cell[side.ref_cells] * weight)
    return out


def _compare(
    p: _Prepared, side: _Side, config: DriftThresholds, rng: np.random.Generator, weights: np.ndarray | None = None
) -> dict[str, tuple[float, float, float, float | None]]:
    """Return per feature (distance, threshold, p-value, CUSUM) of the window against the reference.

    Thresholds come from each reference day against the rest of the reference. With ``weights``
    (one per reference row), the reference is first resampled with them: the re-test under the
    window's prevalence.
    """
    out: dict[str, tuple[float, float, float, float | None]] = {}
    if weights is None and side.ref_row_weight is not None:
        weights = side.ref_row_weight  # all sites: the reference at the window's site mix
    resampled = None if weights is None else rng.choice(side.ref, size=side.ref.size, p=weights / weights.sum())
    for f, counts in p.counts.items():
        numeric = f in p.bins
        size = counts.shape[1]
        per_day = _grouped(counts, side)
        total = per_day.sum(axis=0)
        if resampled is not None:
            codes = p.index[f] if numeric else p.categories[f]
            picked = codes[resampled]
            total = np.bincount(picked[picked >= 0], minlength=size).astype(np.float64)
        cur = counts[side.cur_cells].sum(axis=0)
        if cur.sum() == 0 or total.sum() == 0:
            continue
        days = per_day[per_day.sum(axis=1) > 0]
        rest = per_day.sum(axis=0) - days
        if numeric:
            null = binned_wasserstein(rest, days, p.bins[f])
            distance = float(binned_wasserstein(total, cur, p.bins[f]))
            p_value = binned_ks(total, cur)[1]
            floor = config.numeric_floor
        else:
            null = hellinger_rows(rest, days)
            distance = float(hellinger_rows(total, cur))
            p_value = chi_square_p(total, cur)
            floor = config.categorical_floor
        null = null[np.isfinite(null)]
        threshold = calibrated_threshold(
            null if null.size >= 2 else np.zeros(2), quantile=config.quantile, margin_sd=config.margin_sd, floor=floor
        )
        out[f] = (distance, threshold, p_value, _cusum(p, f, side, config) if numeric else None)
    if p.scores is not None:
        ref = side.ref if resampled is None else resampled
        out[EMBEDDING] = _embedding(p.scores, ref, side, config, rng)
    return out


def _cusum(p: _Prepared, feature: str, side: _Side, config: DriftThresholds) -> float | None:
    """Return the larger CUSUM sum on the window's day of the feature's daily mean, in daily sd (None: too few days)."""
    sums, counts = _grouped(p.sums[feature], side), _grouped(p.finite[feature], side)
    seen = counts > 0
    if seen.sum() < 3:
        return None
    daily = sums[seen] / counts[seen]
    days = np.unique(side.recent_cell_day)
    weighted_sums = p.sums[feature][side.recent_cells] * side.recent_cell_weight
    weighted_counts = p.finite[feature][side.recent_cells] * side.recent_cell_weight
    recent_sums = np.array([weighted_sums[side.recent_cell_day == d].sum() for d in days])
    recent_counts = np.array([weighted_counts[side.recent_cell_day == d].sum() for d in days])
    if days.size == 0 or days[-1] != 0 or recent_counts[-1] == 0:
        return None
    recent = recent_sums[recent_counts > 0] / recent_counts[recent_counts > 0]
    # Daily means vary by more than sampling alone; the floor keeps a constant tag from dividing by zero.
    values = p.values[feature][side.ref]
    per_study = float(np.nanstd(values)) / np.sqrt(max(1.0, counts.sum() / seen.sum()))
    sd = max(float(np.std(daily, ddof=1)), per_study)
    if sd == 0.0:  # a constant in the reference (a tag of one device): the window test alone judges it
        return None
    result = cusum(recent, target=float(daily.mean()), sd=sd, k=config.cusum_k, h=config.cusum_h)
    return float(max(result.upper[-1], result.lower[-1]))


def _embedding(
    scores: np.ndarray, ref: np.ndarray, side: _Side, config: DriftThresholds, rng: np.random.Generator
) -> tuple[float, float, float, None]:
    cur = scores[side.cur]
    mmd, p_value = mmd_permutation_test(
        scores[ref], cur, n_permutations=config.mmd_permutations, max_samples=config.mmd_samples, rng=rng
    )
    null = []
    for g in range(side.n_groups):
        day = side.ref_group == g
        if day.sum() < 10 or (~day).sum() < 10:
            continue
        value, _ = mmd_permutation_test(
            scores[side.ref[~day]], scores[side.ref[day]], n_permutations=1, max_samples=config.mmd_samples, rng=rng
        )
        null.append(value)
    threshold = calibrated_threshold(
        np.array(null) if len(null) >= 2 else np.zeros(2),
        quantile=config.quantile,
        margin_sd=config.margin_sd,
        floor=config.mmd_floor,
    )
    return float(mmd), max(threshold, 1e-6), float(p_value), None


def _performance(probs: np.ndarray, threshold: float) -> tuple[float, float, float]:
    perf = expected_performance(probs, threshold)
    return perf.auroc, perf.sensitivity, perf.specificity


def _samples(p: _Prepared, side: _Side, top: FeatureDrift | None, config: DriftThresholds) -> tuple[str, ...]:
    """Return study ids from the shifted region of the top feature: the window's studies least like the reference."""
    if top is None:
        return ()
    frame = p.frame
    cur = side.cur
    if top.feature == EMBEDDING and p.scores is not None:
        centre = p.scores[side.ref].mean(axis=0)
        order = _largest(np.linalg.norm(p.scores[cur] - centre, axis=1), config.sample_studies)
    elif top.feature in p.bins:
        values = p.values[top.feature]
        away = np.abs(values[cur] - np.nanmedian(values[side.ref]))
        order = _largest(np.nan_to_num(away, nan=-1.0), config.sample_studies)
    else:
        codes = p.categories[top.feature]
        size = p.levels[top.feature]
        ref_share = np.bincount(codes[side.ref], minlength=size) / max(1, side.ref.size)
        cur_share = np.bincount(codes[cur], minlength=size) / max(1, cur.size)
        grown = int(np.argmax(cur_share - ref_share))
        order = np.flatnonzero(codes[cur] == grown)
    ids = frame["study_id"].iloc[cur[order[: config.sample_studies]]]
    return tuple(str(i) for i in ids)


def _largest(values: np.ndarray, k: int) -> np.ndarray:
    """Return the positions of the ``k`` largest values, largest first (O(n), not a full sort)."""
    if values.size > k:
        top = np.argpartition(-values, k)[:k]
        return top[np.argsort(-values[top])]
    return np.argsort(-values)


def _sides(
    p: _Prepared, chunk: np.ndarray, reference: np.ndarray, excluded: set[tuple[str, int]], config: DriftThresholds
) -> tuple[dict[str, tuple[_Side, str]], list[str]]:
    """Return, per site to judge (and ``*``), its comparison and whether its reference is its own."""
    site_of_cell = np.arange(len(p.site_names) * p.n_days) // p.n_days
    ref_cells_all = np.unique(p.cell[reference])
    window_cells = np.unique(p.cell[chunk == 0])
    recent_low = -config.gap_days if config.reference == "rolling" else 0
    out: dict[str, tuple[_Side, str]] = {}
    thin: list[str] = []
    own: dict[int, np.ndarray] = {}
    for k, s in enumerate(p.site_names):
        cells = ref_cells_all[site_of_cell[ref_cells_all] == k][::-1]  # most recent first
        cells = np.array([c for c in cells if (s, int(c % p.n_days + p.first_day)) not in excluded], dtype=np.int64)
        own[k] = cells[: config.reference_days] if config.reference == "rolling" else cells
    pooled_sites = [k for k, cells in own.items() if cells.size >= config.min_reference_days]
    pooled = np.concatenate([own[k] for k in pooled_sites]) if pooled_sites else np.zeros(0, dtype=np.int64)

    def recent(sites: list[int]) -> np.ndarray:
        return np.array([p.cell_of(k, d) for k in sites for d in range(recent_low, 1)], dtype=np.int64)

    for cell in window_cells:
        k = int(site_of_cell[cell])
        s = p.site_names[k]
        if p.counts[CATEGORICAL_FEATURES[0]][cell].sum() < config.min_studies:
            thin.append(s)
        elif own[k].size >= config.min_reference_days:
            out[s] = (_side(p, own[k], own[k], np.array([cell]), recent([k])), "own")
        elif pooled.size:
            # a new site's day is compared with other sites' days of the same size: one group per site and day
            out[s] = (_side(p, pooled, pooled, np.array([cell]), recent([k])), "all sites")
        else:
            thin.append(s)
    # All sites together: the sites with history that sent studies in the window (a silent site
    # is a technical alert, not a change of mix), one group per day.
    present = [
        k for k in pooled_sites if p.counts[CATEGORICAL_FEATURES[0]][p.cell_of(k, 0)].sum() >= config.min_studies
    ]
    if present:
        cells = np.concatenate([own[k] for k in present])
        cur = np.array([p.cell_of(k, 0) for k in present], dtype=np.int64)
        if p.counts[CATEGORICAL_FEATURES[0]][cur].sum() >= config.min_studies:
            out[GLOBAL] = (_side(p, cells, cells % p.n_days, cur, recent(present), same_mix=True), "own")
    return out, thin


def check_drift(
    frame: pd.DataFrame,
    *,
    day: np.ndarray,
    reference: np.ndarray,
    excluded: Iterable[tuple[str, int]] = (),
    config: DriftThresholds | None = None,
    seed: int = 0,
) -> DriftRun:
    """Judge the window's rows (``day == 0``) against the reference rows (``reference``) per site and overall.

    Args:
        frame: one row per successful study: ``site``, ``study_id``, ``threshold``, the features
            (``NUMERIC_FEATURES``, ``CATEGORICAL_FEATURES`` as strings) and optionally ``embedding``.
        day: per row, its day relative to the window (0 the window, -1 the day before, ...).
        reference: per row, whether it may be part of the reference.
        excluded: (site, day) pairs kept out of that site's reference (an open alert then).
        config: thresholds.
        seed: the source of subsamples and permutations.
    """
    config = config or DriftThresholds()
    rng = np.random.default_rng(seed)
    chunk = np.asarray(day, dtype=np.int64)
    reference = np.asarray(reference, dtype=bool) & (chunk < 0)
    if len(frame) == 0 or not (chunk == 0).any():
        return DriftRun({}, _empty_metrics(), (), (), ())
    prepared = _prepare(frame, chunk, reference, config)
    sides, thin = _sides(prepared, chunk, reference, set(excluded), config)
    compared = {s: _compare(prepared, side, config, rng) for s, (side, _) in sides.items()}

    # One family for the analytic tests of every feature at every site, its family-wise error held
    # by Holm (Benjamini-Hochberg would let one drifting site lower the bar for every other).
    keys = [(s, f) for s, feats in compared.items() for f in feats if f != EMBEDDING]
    p_values = np.array([compared[s][f][2] for s, f in keys], dtype=np.float64)
    passed = holm(np.nan_to_num(p_values, nan=1.0), alpha=config.alpha) if keys else np.array([])
    significant = {k: bool(v) for k, v in zip(keys, passed, strict=True)}

    probs = frame["prob_abnormal"].to_numpy(dtype=np.float64)
    deployed = frame["threshold"].to_numpy(dtype=np.float64)
    sites: dict[str, SiteDrift] = {}
    for s, (side, origin) in sides.items():
        features = []
        for f, (distance, threshold, p_value, cusum_sum) in compared[s].items():
            ok = (p_value < config.mmd_alpha) if f == EMBEDDING else significant.get((s, f), False)
            sequential = cusum_sum is not None and cusum_sum > config.cusum_h and distance > config.numeric_floor
            drifted = ok and (distance > threshold or sequential)
            features.append(
                FeatureDrift(s, f, GROUP[f], distance, threshold, p_value, cusum_sum, bool(ok), bool(drifted))
            )
        sites[s] = _judge(prepared, s, side, origin, features, probs, deployed, config, rng)

    metrics = _metrics(sites)
    findings = _findings(sites)
    return DriftRun(sites, metrics, tuple(findings), tuple(sorted(thin)), tuple(sorted(sides)))


def _judge(
    p: _Prepared,
    site: str,
    side: _Side,
    origin: str,
    features: list[FeatureDrift],
    probs: np.ndarray,
    deployed: np.ndarray,
    config: DriftThresholds,
    rng: np.random.Generator,
) -> SiteDrift:
    """Label the site's shift (prevalence or covariate), estimate its performance, pick samples and plot data."""
    ref_probs, cur_probs = probs[side.ref], probs[side.cur]
    threshold = float(np.nanmedian(deployed[side.cur]))
    prevalence_ref = float(np.clip(ref_probs.mean(), 1e-3, 1 - 1e-3))
    prevalence_now = em_prevalence(cur_probs, train_prevalence=prevalence_ref)
    drifted = [f for f in features if f.drifted]
    shift: Literal["covariate", "prevalence"] | None = None
    adjusted = cur_probs
    if drifted:
        shift = "covariate"
        if any(f.feature in OUTPUTS for f in drifted):
            # Resample the reference to the window's prevalence: under a pure label shift every
            # feature's distribution is then the window's.
            new = float(np.clip(prevalence_now, 1e-3, 1 - 1e-3))
            weights = ref_probs * new / prevalence_ref + (1 - ref_probs) * (1 - new) / (1 - prevalence_ref)
            again = _compare(p, side, config, rng, weights=weights)
            explained = {f.feature: again[f.feature][0] <= again[f.feature][1] for f in drifted if f.feature in again}
            features = [
                f if f.feature not in explained else replace(f, explained_by_prevalence=explained[f.feature])
                for f in features
            ]
            # Under a prevalence shift the model-side features (outputs, embedding) are explained by
            # the reweighting; image statistics may move too (findings change pixels) but the model
            # sees more than they do, so they are not required to be; a moved tag never comes from it.
            model_side = [f for f in explained if f in OUTPUTS or f == EMBEDDING]
            tags_moved = any(f.group == "tags" for f in drifted)
            if model_side and all(explained[f] for f in model_side) and not tags_moved:
                shift = "prevalence"
                adjusted = reweight_to_prevalence(cur_probs, train_prevalence=prevalence_ref, new_prevalence=new)
    ref_auroc, ref_sens, ref_spec = _performance(ref_probs, threshold)
    now_auroc, now_sens, now_spec = _performance(adjusted, threshold)
    drops = []
    for g in range(side.n_groups):
        day = side.ref_group == g
        if day.sum() >= config.min_studies:
            drops.append(ref_auroc - _performance(ref_probs[day], threshold)[0])
    drop_threshold = calibrated_threshold(
        np.array(drops) if len(drops) >= 2 else np.zeros(2),
        quantile=config.quantile,
        margin_sd=config.margin_sd,
        floor=config.performance_floor,
    )
    # PPV and NPV at the deployed threshold under the window's prevalence (sensitivity and
    # specificity do not change under a pure prevalence shift).
    pi = prevalence_now
    ppv = ref_sens * pi / max(1e-12, ref_sens * pi + (1 - ref_spec) * (1 - pi))
    npv = ref_spec * (1 - pi) / max(1e-12, ref_spec * (1 - pi) + (1 - ref_sens) * pi)
    ranked = sorted((f for f in features if f.drifted), key=lambda f: -f.score)
    values = {}
    for f in ranked[: config.top_features]:
        if f.feature == EMBEDDING and p.scores is not None:
            values[f.feature] = (p.scores[side.ref, 0], p.scores[side.cur, 0])
        elif f.feature in p.frame:
            column = p.frame[f.feature].to_numpy()
            values[f.feature] = (column[side.ref], column[side.cur])
    return SiteDrift(
        site=site,
        reference=origin,
        reference_days=side.n_groups,
        reference_studies=int(side.ref.size),
        window_studies=int(side.cur.size),
        features=tuple(features),
        shift=shift,
        prevalence_reference=prevalence_ref,
        prevalence_window=float(prevalence_now),
        expected_auroc_reference=ref_auroc,
        expected_auroc_window=now_auroc,
        estimated_auroc=now_auroc,
        expected_sensitivity_window=now_sens,
        expected_specificity_window=now_spec,
        auroc_drop_threshold=drop_threshold,
        ppv=float(ppv),
        npv=float(npv),
        samples=_samples(p, side, ranked[0] if ranked else None, config),
        values=values,
    )


def _empty_metrics() -> pd.DataFrame:
    return pd.DataFrame(columns=["site", "model_version", "metric", "value"])


def _metrics(sites: dict[str, SiteDrift]) -> pd.DataFrame:
    rows: list[dict[str, object]] = []
    for s, d in sites.items():
        values: dict[str, float | None] = {
            "drift.features_drifted": float(sum(f.drifted for f in d.features)),
            "prevalence.estimated": d.prevalence_window,
            "prevalence.reference": d.prevalence_reference,
            "performance.expected_auroc": d.expected_auroc_window,
            "performance.expected_auroc_reference": d.expected_auroc_reference,
            "performance.expected_sensitivity": d.expected_sensitivity_window,
            "performance.expected_specificity": d.expected_specificity_window,
        }
        for f in d.features:
            values[f"drift.{f.feature}.distance"] = f.distance
            values[f"drift.{f.feature}.threshold"] = f.threshold
        rows.extend(
            {"site": s, "model_version": GLOBAL, "metric": k, "value": float(v)}
            for k, v in values.items()
            if v is not None and np.isfinite(v)
        )
    return pd.DataFrame(rows, columns=["site", "model_version", "metric", "value"]) if rows else _empty_metrics()


def _describe(f: FeatureDrift) -> str:
    unit = {"embedding": "MMD"}.get(f.group, "")
    how = "W" if f.feature in NUMERIC_FEATURES else ("H" if f.feature in CATEGORICAL_FEATURES else unit)
    extra = f", CUSUM {f.cusum:.1f}" if f.cusum is not None and f.cusum > 0 else ""
    return f"{f.feature} ({how} {f.distance:.3g} > {f.threshold:.3g}{extra})"


def _dropped(d: SiteDrift) -> bool:
    if d.expected_auroc_reference is None or d.expected_auroc_window is None or d.auroc_drop_threshold is None:
        return False
    return bool(d.expected_auroc_reference - d.expected_auroc_window > d.auroc_drop_threshold)


def _findings(sites: dict[str, SiteDrift]) -> list[Finding]:
    findings: list[Finding] = []
    for s, d in sites.items():
        ranked = d.drifted()
        if (
            ranked
            and d.shift is not None
            and not (s == GLOBAL and any(x.drifted() for k, x in sites.items() if k != GLOBAL))
        ):
            top = ", ".join(_describe(f) for f in ranked[:5])
            who = "all sites" if s == GLOBAL else s
            basis = "" if d.reference == "own" else " (no history of its own: compared with all sites)"
            if d.shift == "prevalence":
                message = (
                    f"Prevalence shift at {who}{basis}: estimated prevalence {d.prevalence_window:.1%} "
                    f"(reference {d.prevalence_reference:.1%}); {top} moved, explained by the prevalence. "
                    f"Review the threshold: at the deployed threshold PPV would be {d.ppv:.2f} and NPV {d.npv:.4f}."
                )
            else:
                message = (
                    f"Covariate shift at {who}{basis}: {top} moved beyond what reference days show. "
                    f"Relabel studies from this site (samples in the report)."
                )
            top_score = ranked[0].score
            findings.append(
                Finding(
                    kind=Kind.DRIFT,
                    site=s,
                    feature="distribution",
                    statistic=f"{d.shift}_shift",
                    value=round(float(min(top_score, 1e6)), 4),
                    threshold=1.0,
                    severity=Severity.CRITICAL if top_score > 3 or d.reference != "own" else Severity.WARNING,
                    message=message,
                )
            )
        site_alerts = s == GLOBAL and any(
            x.expected_auroc_window is not None and _dropped(x) for k, x in sites.items() if k != GLOBAL
        )
        if (
            not site_alerts
            and d.expected_auroc_reference is not None
            and d.expected_auroc_window is not None
            and d.auroc_drop_threshold is not None
            and np.isfinite(d.expected_auroc_window)
        ):
            drop = d.expected_auroc_reference - d.expected_auroc_window
            if drop > d.auroc_drop_threshold:
                findings.append(
                    Finding(
                        kind=Kind.PERFORMANCE,
                        site=s,
                        feature="expected_auroc",
                        statistic="label_free_drop",
                        value=round(float(d.expected_auroc_window), 4),
                        threshold=round(float(d.expected_auroc_reference - d.auroc_drop_threshold), 4),
                        severity=Severity.CRITICAL if drop > 3 * d.auroc_drop_threshold else Severity.WARNING,
                        message=(
                            f"Expected AUROC at {s} without labels is {d.expected_auroc_window:.3f}, "
                            f"{drop:.3f} below the reference's {d.expected_auroc_reference:.3f} "
                            f"(expected sensitivity {d.expected_sensitivity_window:.3f}, "
                            f"specificity {d.expected_specificity_window:.3f} at the deployed threshold)."
                        ),
                    )
                )
    return findings


# --- against the store --------------------------------------------------------------------------------------------


def run_drift(engine: Engine, start: datetime, end: datetime, config: DriftThresholds | None = None) -> DriftRun:
    """Read the window and its reference from the store and judge the window; days with an open drift
    alert at a site are left out of that site's rolling reference."""
    config = config or DriftThresholds()
    span = end - start
    if config.reference == "fixed":
        assert config.reference_start is not None and config.reference_end is not None
        ref_frame = read_drift_frame(engine, config.reference_start, config.reference_end)
        cur = read_drift_frame(engine, start, end)
        frame = pd.concat([ref_frame, cur], ignore_index=True)
        days = np.concatenate(
            [
                np.minimum(-1, ((ref_frame["received_at"] - pd.Timestamp(start)) // span).to_numpy(dtype=np.int64)),
                np.zeros(len(cur), dtype=np.int64),
            ]
        )
        reference = np.concatenate([np.ones(len(ref_frame), bool), np.zeros(len(cur), bool)])
        run = check_drift(frame, day=days, reference=reference, config=config)
        return _with_feedback(engine, run, cur, (config.reference_start, config.reference_end), end, config)
    since = start - span * (config.lookback_days + config.gap_days)
    frame = read_drift_frame(engine, since, end)
    days = ((frame["received_at"] - pd.Timestamp(start)) // span).to_numpy(dtype=np.int64)
    reference = days <= -config.gap_days - 1
    excluded: set[tuple[str, int]] = set()
    for (site, _feature, _statistic), (opened, closed) in alert_periods(engine, str(Kind.DRIFT), since, start).items():
        first = int((pd.Timestamp(opened) - pd.Timestamp(start)) // span)
        last = int(np.ceil((pd.Timestamp(closed) - pd.Timestamp(start)) / span))
        excluded.update((site, d) for d in range(first, last))
    run = check_drift(frame, day=days, reference=reference, excluded=excluded, config=config)
    return _with_feedback(engine, run, frame[days == 0], (since, start), end, config)


def _with_feedback(
    engine: Engine,
    run: DriftRun,
    window: pd.DataFrame,
    reference: tuple[datetime, datetime],
    end: datetime,
    config: DriftThresholds,
) -> DriftRun:
    """Put the radiologists' outcomes (reported before ``end``) beside each site's label-free estimate.

    The AUROC on the outcomes of the reference period's studies, where both classes came back; and the
    window's expected AUROC after Platt scaling on the outcomes of the site's last ``recalibration_days``.
    """
    from sklearn.metrics import roc_auc_score

    from pipeline.store.schema import feedback

    recent = end - timedelta(days=config.recalibration_days)
    logs, fb = inference_logs.c, feedback.c
    query = (
        sa.select(logs.site, logs.prob_abnormal, fb.final_abnormal, logs.received_at)
        .select_from(inference_logs.join(feedback, logs.study_id == fb.study_id))
        .where(logs.status == "ok", logs.received_at >= min(reference[0], recent), fb.reported_at < end)
        .where(sa.or_(logs.received_at < reference[1], logs.received_at >= recent))
    )
    with engine.connect() as conn:
        outcomes = pd.DataFrame(conn.execute(query).all(), columns=["site", "prob", "abnormal", "received_at"])
    received = pd.to_datetime(outcomes["received_at"], utc=True)
    of_reference = outcomes[(received >= pd.Timestamp(reference[0])) & (received < pd.Timestamp(reference[1]))]
    of_recent = outcomes[received >= pd.Timestamp(recent)]
    sites = dict(run.sites)
    rows = []
    for site, d in run.sites.items():
        part = of_reference if site == GLOBAL else of_reference[of_reference["site"] == site]
        if part["abnormal"].nunique() == 2:
            auroc = float(roc_auc_score(part["abnormal"].astype(int), part["prob"].astype(float)))
            d = replace(d, feedback_auroc=auroc, feedback_studies=len(part))
            rows.append(_metric(site, "performance.feedback_auroc", auroc))
        fit_on = of_recent if site == GLOBAL else of_recent[of_recent["site"] == site]
        probs = window if site == GLOBAL else window[window["site"] == site]
        if len(fit_on) >= config.min_outcomes and len(probs):
            try:
                platt = platt_scaling(fit_on["prob"].astype(float), fit_on["abnormal"].astype(float))
            except ValueError:  # too few of one class came back
                platt = None
            if platt is not None:
                estimate = expected_auroc(platt(probs["prob_abnormal"].to_numpy(dtype=np.float64)))
                d = replace(
                    d,
                    recalibrated_auroc=estimate,
                    recalibration_outcomes=platt.n_outcomes,
                    calibration_p=platt.p_value,
                    estimated_auroc=estimate if platt.p_value < config.calibration_alpha else d.estimated_auroc,
                )
                rows.append(_metric(site, "performance.recalibrated_auroc", estimate))
                rows.append(_metric(site, "performance.calibration_p", platt.p_value))
        if d.shift == "covariate" and d.calibration_p is None:
            # The images moved and no outcome has checked the probabilities yet: a confidently wrong
            # model looks as good as ever to the label-free estimate, so there is none to give.
            d = replace(d, estimated_auroc=None)
        if d.estimated_auroc is not None:
            rows.append(_metric(site, "performance.estimated_auroc", d.estimated_auroc))
        sites[site] = d
    metrics = pd.concat([run.metrics, pd.DataFrame(rows)], ignore_index=True) if rows else run.metrics
    return replace(run, sites=sites, metrics=metrics)


def _metric(site: str, metric: str, value: float) -> dict[str, object]:
    return {"site": site, "model_version": GLOBAL, "metric": metric, "value": value}
