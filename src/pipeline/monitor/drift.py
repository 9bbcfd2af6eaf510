"""Drift per site and overall: what moved against the reference, whether it is the prevalence, and what it costs.

The window is compared with a reference (by default the 14 most recent days that end a few days
before it and had no open drift alert at the site; or a fixed period, such as the model's
validation period) on DICOM tags, image statistics, predictions, uncertainty and embeddings.

- **Effect sizes, not p-values, raise alerts.** Each feature's distance (Wasserstein in units of
  the reference's spread for numbers, Hellinger for categories, MMD on PCA components for
  embeddings) is set against a threshold calibrated on the reference itself: each reference day
  against the rest, the spread of those distances, a margin (``pipeline.drift.calibrated_threshold``).
  A test's p-value is required beside it (KS, chi-square; Benjamini-Hochberg across features and
  sites; the permutation p of the MMD on its own), so a large distance from a handful of studies
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
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from pipeline.alerts import GLOBAL, Finding, Kind, Severity, alert_periods
from pipeline.drift import (
    PCA,
    benjamini_hochberg,
    calibrated_threshold,
    cusum,
    em_prevalence,
    expected_performance,
    mmd_permutation_test,
    pca_fit,
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
        alpha: false discovery rate of the KS and chi-square tests across features and sites.
        mmd_alpha: the permutation p-value the embedding test must reach (0.002 with 500 permutations:
            no permutation came as far as the window).
        mmd_permutations, mmd_samples, pca_components: the embedding test.
        cusum_k, cusum_h: the CUSUM's allowance and decision interval, in daily standard deviations.
        performance_floor: the smallest drop in expected AUROC worth an alert.
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
    mmd_permutations: int = 500
    mmd_samples: int = 300
    pca_components: int = 32
    cusum_k: float = 0.5
    cusum_h: float = 5.0
    performance_floor: float = 0.03
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
        frame[c] = frame[c].astype(object).where(frame[c].notna(), None).astype(str)
    return frame


# --- the check ----------------------------------------------------------------------------------------------------


@dataclass
class _Prepared:
    """Rows as arrays: each numeric feature as bin indices, each category as codes, one chunk (day) per row."""

    frame: pd.DataFrame
    chunk: np.ndarray  # day index: 0 the window, -1 the day before...
    bins: dict[str, Bins]
    index: dict[str, np.ndarray]
    categories: dict[str, np.ndarray]  # codes
    levels: dict[str, int]
    pca: PCA | None
    scores: np.ndarray | None  # PCA scores of the embeddings


def _prepare(frame: pd.DataFrame, chunk: np.ndarray, reference: np.ndarray, config: DriftThresholds) -> _Prepared:
    rng = np.random.default_rng(0)
    window = chunk == 0
    bins: dict[str, Bins] = {}
    index: dict[str, np.ndarray] = {}
    for f in NUMERIC_FEATURES:
        values = frame[f].to_numpy(dtype=np.float64)
        ref_values, cur_values = values[reference], values[window]
        ref_sample = ref_values if ref_values.size <= 50_000 else rng.choice(ref_values, 50_000, replace=False)
        cur_sample = cur_values if cur_values.size <= 50_000 else rng.choice(cur_values, 50_000, replace=False)
        fitted = fit_bins(ref_sample, cur_sample, bins=config.bins)
        if fitted is not None:
            bins[f], index[f] = fitted, fitted.index(values)
    categories: dict[str, np.ndarray] = {}
    levels: dict[str, int] = {}
    for f in CATEGORICAL_FEATURES:
        codes, uniques = pd.factorize(frame[f], sort=True)
        categories[f], levels[f] = codes.astype(np.int32), len(uniques)
    pca, scores = None, None
    if EMBEDDING in frame and frame[EMBEDDING].notna().all() and reference.sum() >= 10:
        embeddings = decode_embeddings(frame[EMBEDDING])
        if embeddings.ndim == 2 and embeddings.shape[1] >= 2:
            k = min(config.pca_components, embeddings.shape[1], int(reference.sum()))
            pca = pca_fit(embeddings[reference], n_components=k, max_samples=20_000)
            scores = pca.transform(embeddings)
            scores /= scores[reference].std(axis=0, keepdims=True).clip(min=1e-6)
    return _Prepared(frame, chunk, bins, index, categories, levels, pca, scores)


def _chunk_counts(codes: np.ndarray, groups: np.ndarray, n_groups: int, size: int) -> np.ndarray:
    keep = codes >= 0
    flat = np.bincount(groups[keep] * size + codes[keep], minlength=n_groups * size)
    return flat.reshape(n_groups, size).astype(np.float64)


@dataclass
class _Side:
    """The rows of one comparison: reference rows grouped by day, and the window's rows."""

    ref: np.ndarray  # row indices
    ref_group: np.ndarray  # 0..n_groups-1, the reference day (per site for a pooled reference)
    n_groups: int
    cur: np.ndarray
    recent: np.ndarray  # row indices of the days between reference and window, and the window
    recent_day: np.ndarray  # their day index (negative .. 0)


def _compare(
    p: _Prepared, side: _Side, config: DriftThresholds, rng: np.random.Generator, weights: np.ndarray | None = None
) -> dict[str, tuple[float, float, float, float | None]]:
    """Return per feature (distance, threshold, p-value, CUSUM) of the window against the reference.

    With ``weights`` (one per reference row), the reference is resampled with them first
    (the re-test under the window's prevalence), and thresholds come from the unweighted days.
    """
    out: dict[str, tuple[float, float, float, float | None]] = {}
    ref = side.ref
    if weights is not None:
        ref = rng.choice(side.ref, size=side.ref.size, p=weights / weights.sum())
    for f, b in p.bins.items():
        codes = p.index[f]
        per_day = _chunk_counts(codes[side.ref], side.ref_group, side.n_groups, b.size)
        total = per_day.sum(axis=0)
        full = np.bincount(codes[ref][codes[ref] >= 0], minlength=b.size).astype(np.float64)
        cur = np.bincount(codes[side.cur][codes[side.cur] >= 0], minlength=b.size).astype(np.float64)
        if cur.sum() == 0 or full.sum() == 0:
            continue
        days = per_day[per_day.sum(axis=1) > 0]
        null = binned_wasserstein(total - days, days, b)
        null = null[np.isfinite(null)]
        threshold = calibrated_threshold(
            null if null.size >= 2 else np.zeros(2),
            quantile=config.quantile,
            margin_sd=config.margin_sd,
            floor=config.numeric_floor,
        )
        distance = float(binned_wasserstein(full, cur, b))
        _, p_value = binned_ks(full, cur)
        out[f] = (distance, threshold, p_value, _cusum(p, f, side, config))
    for f, codes in p.categories.items():
        size = p.levels[f]
        per_day = _chunk_counts(codes[side.ref], side.ref_group, side.n_groups, size)
        total = per_day.sum(axis=0)
        full = np.bincount(codes[ref], minlength=size).astype(np.float64)
        cur = np.bincount(codes[side.cur], minlength=size).astype(np.float64)
        days = per_day[per_day.sum(axis=1) > 0]
        null = hellinger_rows(total - days, days)
        null = null[np.isfinite(null)]
        threshold = calibrated_threshold(
            null if null.size >= 2 else np.zeros(2),
            quantile=config.quantile,
            margin_sd=config.margin_sd,
            floor=config.categorical_floor,
        )
        out[f] = (float(hellinger_rows(full, cur)), threshold, chi_square_p(full, cur), None)
    if p.scores is not None:
        out[EMBEDDING] = _embedding(p.scores, ref, side, config, rng)
    return out


def _cusum(p: _Prepared, feature: str, side: _Side, config: DriftThresholds) -> float | None:
    """Return the larger CUSUM sum on the window's day of the feature's daily mean, in daily sd (None: too few days)."""
    values = p.frame[feature].to_numpy(dtype=np.float64)
    ref_values = values[side.ref]
    ok = np.isfinite(ref_values)
    daily = pd.Series(ref_values[ok]).groupby(side.ref_group[ok]).mean()
    if len(daily) < 3:
        return None
    recent = pd.Series(values[side.recent]).groupby(side.recent_day).mean().dropna().sort_index()
    if recent.empty or 0 not in recent.index:
        return None
    # Daily means vary by more than sampling alone; the floor keeps a constant tag from dividing by zero.
    per_study = float(np.nanstd(ref_values)) / np.sqrt(max(1.0, ok.sum() / len(daily)))
    sd = max(float(daily.std(ddof=1)), per_study, 1e-9)
    result = cusum(recent.to_numpy(), target=float(daily.mean()), sd=sd, k=config.cusum_k, h=config.cusum_h)
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
        np.array(null) if len(null) >= 2 else np.zeros(2), quantile=config.quantile, margin_sd=config.margin_sd
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
        far = np.linalg.norm(p.scores[cur] - centre, axis=1)
        order = np.argsort(-far)
    elif top.feature in p.bins:
        values = frame[top.feature].to_numpy(dtype=np.float64)
        ref_median = np.nanmedian(values[side.ref])
        away = np.abs(values[cur] - ref_median)
        order = np.argsort(-np.nan_to_num(away, nan=-1.0))
    else:
        codes = p.categories[top.feature]
        size = p.levels[top.feature]
        ref_share = np.bincount(codes[side.ref], minlength=size) / max(1, side.ref.size)
        cur_share = np.bincount(codes[cur], minlength=size) / max(1, cur.size)
        grown = int(np.argmax(cur_share - ref_share))
        order = np.flatnonzero(codes[cur] == grown)
    ids = frame["study_id"].to_numpy()[cur[order[: config.sample_studies]]]
    return tuple(str(i) for i in ids)


def _sides(
    frame: pd.DataFrame,
    chunk: np.ndarray,
    reference: np.ndarray,
    excluded: set[tuple[str, int]],
    config: DriftThresholds,
) -> tuple[dict[str, tuple[_Side, str]], list[str]]:
    """Return, per site to judge (and ``*``), its comparison rows and whether its reference is its own."""
    site = frame["site"].to_numpy().astype(str)
    window = chunk == 0
    recent = (chunk > -config.gap_days - 1) if config.reference == "rolling" else window
    out: dict[str, tuple[_Side, str]] = {}
    thin: list[str] = []
    own_days: dict[str, list[int]] = {}
    usable = reference.copy()
    for s in np.unique(site):
        days = sorted({int(d) for d in chunk[(site == s) & reference] if (s, int(d)) not in excluded}, reverse=True)
        if config.reference == "rolling":
            days = days[: config.reference_days]
        own_days[str(s)] = days
        usable &= ~((site == s) & ~np.isin(chunk, days))
    pooled_sites = [s for s, d in own_days.items() if len(d) >= config.min_reference_days]
    pooled = usable & np.isin(site, pooled_sites)

    def side(rows_ref: np.ndarray, group_keys: np.ndarray, rows_cur: np.ndarray, rows_recent: np.ndarray) -> _Side:
        _, group = np.unique(group_keys, return_inverse=True)
        return _Side(
            ref=rows_ref,
            ref_group=group.ravel().astype(np.int64),
            n_groups=int(group.max()) + 1 if group.size else 0,
            cur=rows_cur,
            recent=rows_recent,
            recent_day=chunk[rows_recent],
        )

    for s in sorted({str(x) for x in site[window]}):
        cur = np.flatnonzero(window & (site == s))
        if cur.size < config.min_studies:
            thin.append(s)
            continue
        if len(own_days.get(s, [])) >= config.min_reference_days:
            ref = np.flatnonzero(usable & (site == s))
            out[s] = (side(ref, chunk[ref], cur, np.flatnonzero(recent & (site == s))), "own")
        elif pooled.any():
            ref = np.flatnonzero(pooled)
            keys = np.char.add(site[ref], chunk[ref].astype(str))
            # a new site's days are compared with other sites' days of the same size: one group per site and day
            out[s] = (side(ref, keys, cur, np.flatnonzero(recent & (site == s))), "all sites")
        else:
            thin.append(s)
    cur = np.flatnonzero(window)
    if pooled.any() and cur.size >= config.min_studies:
        ref = np.flatnonzero(pooled)
        out[GLOBAL] = (side(ref, chunk[ref], cur, np.flatnonzero(recent & np.isin(site, pooled_sites))), "own")
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
    sides, thin = _sides(frame, chunk, reference, set(excluded), config)
    compared = {s: _compare(prepared, side, config, rng) for s, (side, _) in sides.items()}

    # One false-discovery-rate family for the analytic tests of every feature at every site.
    keys = [(s, f) for s, feats in compared.items() for f in feats if f != EMBEDDING]
    p_values = np.array([compared[s][f][2] for s, f in keys], dtype=np.float64)
    passed = benjamini_hochberg(np.nan_to_num(p_values, nan=1.0), alpha=config.alpha) if keys else np.array([])
    significant = {k: bool(v) for k, v in zip(keys, passed, strict=True)}

    probs = frame["prob_abnormal"].to_numpy(dtype=np.float64)
    deployed = frame["threshold"].to_numpy(dtype=np.float64)
    sites: dict[str, SiteDrift] = {}
    for s, (side, origin) in sides.items():
        features = []
        for f, (distance, threshold, p_value, cusum_sum) in compared[s].items():
            ok = (p_value < config.mmd_alpha) if f == EMBEDDING else significant.get((s, f), False)
            sequential = cusum_sum is not None and cusum_sum > config.cusum_h and distance > config.numeric_floor
            drifted = (distance > threshold and ok) or (sequential and ok)
            features.append(
                FeatureDrift(s, f, GROUP[f], distance, threshold, p_value, cusum_sum, bool(ok), bool(drifted))
            )
        sites[s] = _judge(prepared, side, origin, features, probs, deployed, config, rng)

    metrics = _metrics(sites)
    findings = _findings(sites)
    return DriftRun(sites, metrics, tuple(findings), tuple(sorted(thin)), tuple(sorted(sides)))


def _judge(
    p: _Prepared,
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
                f if f.feature not in explained else _with(f, explained_by_prevalence=explained[f.feature])
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
    ref_auroc, _, _ = _performance(ref_probs, threshold)
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
    _, ref_sens, ref_spec = _performance(ref_probs, threshold)
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
        site=features[0].site if features else GLOBAL,
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
        expected_sensitivity_window=now_sens,
        expected_specificity_window=now_spec,
        auroc_drop_threshold=drop_threshold,
        ppv=float(ppv),
        npv=float(npv),
        samples=_samples(p, side, ranked[0] if ranked else None, config),
        values=values,
    )


def _with(f: FeatureDrift, **changes: object) -> FeatureDrift:
    from dataclasses import replace

    return replace(f, **changes)  # type: ignore[arg-type]


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
            top = ", ".join(_describe(f) for f in ranked[:3])
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
        return check_drift(frame, day=days, reference=reference, config=config)
    since = start - span * (config.lookback_days + config.gap_days)
    frame = read_drift_frame(engine, since, end)
    days = ((frame["received_at"] - pd.Timestamp(start)) // span).to_numpy(dtype=np.int64)
    reference = days <= -config.gap_days - 1
    excluded: set[tuple[str, int]] = set()
    for (site, _feature, _statistic), (opened, closed) in alert_periods(engine, str(Kind.DRIFT), since, start).items():
        first = int((pd.Timestamp(opened) - pd.Timestamp(start)) // span)
        last = int(np.ceil((pd.Timestamp(closed) - pd.Timestamp(start)) / span))
        excluded.update((site, d) for d in range(first, last))
    return check_drift(frame, day=days, reference=reference, excluded=excluded, config=config)
