"""Pick the studies worth a radiologist's time: the model's errors, its doubts, the drifting sites, a control.

A day's selection reads the successful studies of the last ``lookback_days`` (and the radiologists'
outcomes reported by the day's end), splits a budget between four strategies, caps every site's
share, takes each strategy's candidates best first but skips near-duplicates of studies already
picked (in embedding space) and writes the picks to ``relabel_queue`` with every reason each was
picked for. A study is never picked twice, nor one that a validation test set holds (its label could
never train a model). Running the selection again for the same day tops the day up to its budget, so
a second run with nothing new changes nothing.

Strategies (``Pick``):

- ``error``: the radiologist overturned the model's decision (``feedback.agrees_with_model`` false);
  misses (closed as normal, abnormal for the radiologist) first, then the most confident mistakes.
  Project ``error_review``.
- ``uncertain``: studies the filter closed as normal (nobody reads them) near the deployed threshold
  in logits or with a high MC-dropout variance (the higher of the two percentile ranks). Project
  ``relabeling``.
- ``drift``: studies at a site with an open drift alert, the most unusual (farthest from the
  site's earlier studies in embedding space) first. Project ``relabeling``.
- ``random``: a uniform sample of every study, for unbiased estimates. Project ``clinical_qa``.
- ``evidence``: while a served site or scanner (a hospital that just joined and raised its drift alert, a
  detector with a small share of its site) has fewer labeled abnormal studies for the validation test sets
  than the gate needs (``evidence_positives``), a uniform sample of its reserved patients' studies that no
  radiologist's outcome came back for (``pipeline.training.snapshot.reserved_for_testing``: they never
  train, the gate judges on them), ``evidence_share`` of the budget, within the site caps.
  Project ``clinical_qa``. The strategies that pick labels to train on (error, uncertain, drift) skip
  reserved patients: their labels could not train a model.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta

import numpy as np
import pandas as pd
import sqlalchemy as sa
from scipy import special
from sqlalchemy.engine import Engine

from pipeline.alerts import Kind
from pipeline.store import decode_embeddings, insert_for
from pipeline.store.schema import (
    Pick,
    QueueStatus,
    alerts,
    feedback,
    inference_logs,
    labels,
    relabel_queue,
    studies,
    test_set_items,
)
from pipeline.training.snapshot import reserved_for_testing
from pipeline.validation.testsets import (
    EVIDENCE_POSITIVES,
    ServedUnit,
    scanner_name,
    short_of_evidence,
)

log = logging.getLogger(__name__)

PROJECT = {
    Pick.ERROR: "error_review",
    Pick.UNCERTAIN: "relabeling",
    Pick.DRIFT: "relabeling",
    Pick.RANDOM: "clinical_qa",
    Pick.EVIDENCE: "clinical_qa",
}
DEFAULT_SHARES = {Pick.ERROR: 0.3, Pick.UNCERTAIN: 0.35, Pick.DRIFT: 0.25, Pick.RANDOM: 0.1}


@dataclass(frozen=True)
class SelectionConfig:
    """How a day's budget is spent.

    Args:
        budget: studies picked per day at most (all strategies, all sites).
        site_cap: the largest share of the budget one site may take.
        drift_site_cap: the same for a site with an open drift alert (where labels are needed most).
        shares: the budget's split between strategies; what one cannot fill goes to the others
            (in the order error, drift, uncertain, random).
        drift_share_on_alert: while some site has an open drift alert, the drift strategy's share
            of the budget (the others keep their proportions in the rest); None keeps ``shares``.
        evidence_share: while a served site or scanner is short of test-set evidence, the evidence strategy's
            share of the budget (the other shares are scaled into the rest).
        evidence_positives: labeled abnormal studies a site's test sets need (the gate's ``min_positives``).
        lookback_days: candidates are the studies received in the ``lookback_days`` days up to the
            day's end (feedback comes back up to a week late).
        near_threshold: a study closed as normal within this many logits of the deployed threshold
            counts as uncertain (so does one in the top quarter of closeness or MC-dropout variance).
        duplicate_quantile: two studies closer in embedding space than this quantile of the distances
            between random pairs of candidates are near-duplicates; the second is skipped while
            others are left.
        seed: the random control sample's seed (mixed with the day).
    """

    budget: int = 200
    site_cap: float = 0.4
    drift_site_cap: float = 0.6
    shares: dict[Pick, float] = field(default_factory=lambda: dict(DEFAULT_SHARES))
    drift_share_on_alert: float | None = 0.5
    evidence_share: float = 0.3
    evidence_positives: int = EVIDENCE_POSITIVES
    lookback_days: int = 7
    near_threshold: float = 1.0
    duplicate_quantile: float = 0.02
    seed: int = 0

    def __post_init__(self) -> None:
        if self.budget < 0:
            raise ValueError(f"budget must be >= 0, got {self.budget}")
        for name in ("site_cap", "drift_site_cap"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"{name} must lie in (0, 1], got {getattr(self, name)}")
        if self.drift_share_on_alert is not None and not 0 <= self.drift_share_on_alert <= 1:
            raise ValueError(f"drift_share_on_alert must lie in [0, 1], got {self.drift_share_on_alert}")
        if not 0 <= self.evidence_share < 1:
            raise ValueError(f"evidence_share must lie in [0, 1), got {self.evidence_share}")
        if self.evidence_positives < 0:
            raise ValueError(f"evidence_positives must be >= 0, got {self.evidence_positives}")
        unknown = set(self.shares) - set(Pick)
        if unknown:
            raise ValueError(
                f"shares has unknown strategies {sorted(map(str, unknown))}; known: {[str(p) for p in Pick]}"
            )
        if any(v < 0 for v in self.shares.values()) or sum(self.shares.values()) <= 0:
            raise ValueError(f"shares must be >= 0 and not all 0, got {self.shares}")
        if self.lookback_days < 1:
            raise ValueError(f"lookback_days must be >= 1, got {self.lookback_days}")


@dataclass(frozen=True)
class Selection:
    """What a day's selection picked (this run's new picks) and what the day holds now."""

    day: date
    picks: pd.DataFrame  # the rows written by this run (relabel_queue's columns)
    candidates: dict[str, int]  # per strategy, how many studies qualified
    already_picked: int  # picks for this day from earlier runs

    def counts(self) -> dict[str, int]:
        """Return this run's picks per strategy."""
        return {str(k): int(v) for k, v in self.picks["strategy"].value_counts().items()} if len(self.picks) else {}

    def as_json(self) -> dict[str, object]:
        """Return a JSON-able summary (ids are pseudonymous)."""
        return {
            "day": self.day.isoformat(),
            "picked": len(self.picks),
            "already_picked": self.already_picked,
            "by_strategy": self.counts(),
            "by_site": {str(k): int(v) for k, v in self.picks["site"].value_counts().items()}
            if len(self.picks)
            else {},
            "candidates": self.candidates,
            "studies": [
                {"study_id": r.study_id, "site": r.site, "strategy": r.strategy, "reasons": json.loads(r.reasons)}
                for r in self.picks.itertuples()
            ],
        }


# --- candidates ---------------------------------------------------------------------------------------------------


def _bounds(day: date, lookback_days: int) -> tuple[datetime, datetime]:
    end = datetime.combine(day + timedelta(days=1), time.min, tzinfo=UTC)
    return end - timedelta(days=lookback_days), end


def read_candidates(engine: Engine, day: date, config: SelectionConfig) -> pd.DataFrame:
    """Return the day's candidate studies: the newest successful log row of each, with its outcome if one came
    back by the day's end; studies already picked or labeled, and those a validation test set holds out of
    training, are left out."""
    start, end = _bounds(day, config.lookback_days)
    logs, fb = inference_logs.c, feedback.c
    query = (
        sa.select(
            logs.study_id,
            logs.site,
            logs.model_version,
            logs.received_at,
            logs.finished_at,
            logs.prob_abnormal,
            logs.threshold,
            logs.decision,
            logs.entropy,
            logs.epistemic_var,
            logs.embedding,
            fb.agrees_with_model,
            fb.final_abnormal,
            studies.c.patient_key,
            studies.c.manufacturer,
            studies.c.model_name,
        )
        .select_from(
            inference_logs.outerjoin(feedback, sa.and_(fb.study_id == logs.study_id, fb.reported_at < end)).outerjoin(
                studies, studies.c.study_id == logs.study_id
            )
        )
        .where(logs.status == "ok", logs.received_at >= start, logs.received_at < end)
        .where(~logs.study_id.in_(sa.select(relabel_queue.c.study_id)))
        .where(~logs.study_id.in_(sa.select(labels.c.study_id)))
        .where(~logs.study_id.in_(sa.select(test_set_items.c.study_id)))
    )
    with engine.connect() as conn:
        frame = pd.DataFrame(conn.execute(query).all(), columns=list(query.selected_columns.keys()))
    frame = frame.sort_values(["study_id", "finished_at"]).drop_duplicates("study_id", keep="last")
    frame["patient_key"] = frame["patient_key"].fillna(frame["study_id"])  # no PatientID: its own patient
    frame["reserved"] = reserved_for_testing(frame["patient_key"]) if len(frame) else np.zeros(0, dtype=bool)
    frame["scanner"] = [scanner_name(m, n) for m, n in zip(frame["manufacturer"], frame["model_name"], strict=True)]
    frame = frame.drop(columns=["manufacturer", "model_name"])
    return frame.sort_values("study_id").reset_index(drop=True)


def open_drift_sites(engine: Engine) -> dict[str, str]:
    """Return the sites with an open drift alert, each with its alert's id (the global ``*`` left out)."""
    query = sa.select(alerts.c.site, alerts.c.alert_id).where(
        alerts.c.status == "open", alerts.c.kind == str(Kind.DRIFT), alerts.c.site != "*"
    )
    with engine.connect() as conn:
        return {site: alert_id for site, alert_id in conn.execute(query.order_by(alerts.c.first_seen)).all()}


def _percentile(values: pd.Series) -> np.ndarray:
    """Return each value's percentile rank in (0, 1]; missing values rank 0."""
    ranked = values.astype(float).rank(pct=True, method="average")
    return ranked.fillna(0.0).to_numpy(dtype=np.float64)


def score_candidates(
    frame: pd.DataFrame,
    drifting: dict[str, str],
    config: SelectionConfig,
    short: dict[ServedUnit, int] | None = None,
) -> pd.DataFrame:
    """Add, per strategy, whether each study qualifies (``is_<pick>``), its priority (``<pick>_priority``) and
    the reason's detail (``<pick>_detail``). ``short`` holds the served sites and scanners short of test-set
    evidence, with the labeled abnormal studies they have."""
    out = frame.copy()
    if "reserved" not in out:
        out["reserved"] = False
    reserved = out["reserved"].fillna(False).to_numpy(dtype=bool)
    prob = np.clip(out["prob_abnormal"].astype(float), 1e-6, 1 - 1e-6)
    threshold = np.clip(out["threshold"].astype(float), 1e-6, 1 - 1e-6)
    # Distance to the deployed threshold in logits: a filter tuned for 99% sensitivity has its
    # threshold near 0 in probability, where absolute differences say nothing.
    margin = pd.Series(np.abs(special.logit(prob) - special.logit(threshold)), index=out.index)
    closed = (out["decision"] == "normal").to_numpy(dtype=bool)

    wrong = out["agrees_with_model"].eq(False).fillna(False).to_numpy(dtype=bool)
    missed = wrong & closed  # closed as normal, abnormal for the radiologist: the error that matters
    out["is_error"] = wrong & ~reserved
    out["error_priority"] = margin.to_numpy(dtype=np.float64) + np.where(missed, 1e3, 0.0)  # misses, then surest
    out["error_detail"] = [
        {"decision": d, "radiologist_abnormal": bool(a)} if w else None
        for d, a, w in zip(out["decision"], out["final_abnormal"], wrong, strict=True)
    ]

    # Uncertain among the studies the filter closed: nobody reads them, and a miss hides there.
    # (A study sent to a radiologist is read anyway; its report comes back as feedback.)
    ranks = np.vstack([_percentile(-margin), _percentile(out["epistemic_var"])])
    out["uncertain_priority"] = np.where(closed, ranks.max(axis=0), 0.0)
    near = (margin <= config.near_threshold).to_numpy(dtype=bool)
    out["is_uncertain"] = closed & (near | (ranks.max(axis=0) >= 0.75)) & ~reserved
    out["uncertain_detail"] = [
        {"entropy": _round(e), "epistemic_var": _round(v), "logit_margin": _round(m)}
        for e, v, m in zip(out["entropy"], out["epistemic_var"], margin, strict=True)
    ]

    at_drifting = out["site"].isin(list(drifting)).to_numpy(dtype=bool)
    out["is_drift"] = at_drifting & ~reserved
    out["drift_priority"] = _unusualness(out, at_drifting)
    out["drift_detail"] = [
        {"alert_id": drifting[s]} if d else None for s, d in zip(out["site"], at_drifting, strict=True)
    ]

    no_outcome = out["final_abnormal"].isna().to_numpy(dtype=bool)
    wanted: list[dict[str, object] | None] = [None] * len(out)
    for unit, have in (short or {}).items():
        for i in np.flatnonzero(unit.matches(out) & reserved & no_outcome):
            wanted[i] = wanted[i] or {
                "for": unit.where,
                "abnormal_in_evidence": have,
                "needed": config.evidence_positives,
            }
    out["is_evidence"] = [w is not None for w in wanted]
    out["evidence_priority"] = 0.0
    out["evidence_detail"] = wanted

    out["is_random"] = True
    out["random_priority"] = 0.0
    out["random_detail"] = [{} for _ in range(len(out))]
    return out


def _round(value: object) -> float | None:
    return None if value is None or pd.isna(value) else round(float(value), 4)  # type: ignore[arg-type]


def _unit_embeddings(frame: pd.DataFrame) -> np.ndarray | None:
    """Return the L2-normalised embeddings of ``frame`` (rows without one are zeros), or None without any."""
    present = frame["embedding"].notna().to_numpy() if "embedding" in frame else np.zeros(len(frame), bool)
    if not present.any():
        return None
    vectors = decode_embeddings(frame.loc[present, "embedding"])
    out = np.zeros((len(frame), vectors.shape[1]), dtype=np.float32)
    out[present] = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    return out


def _unusualness(frame: pd.DataFrame, at_drifting: np.ndarray) -> np.ndarray:
    """Return, for studies at drifting sites, the distance of their embedding from the mean of the other sites'
    studies (the shifted region first); 0 elsewhere."""
    score = np.zeros(len(frame), dtype=np.float64)
    vectors = _unit_embeddings(frame) if at_drifting.any() else None
    if vectors is None:
        return score
    others = ~at_drifting
    centre = vectors[others].mean(axis=0) if others.any() else vectors.mean(axis=0)
    score[at_drifting] = np.linalg.norm(vectors[at_drifting] - centre, axis=1)
    return score


# --- picking ------------------------------------------------------------------------------------------------------


def spread(vectors: np.ndarray | None, order: Sequence[int], k: int, taken: Sequence[int], radius: float) -> list[int]:
    """Return up to ``k`` of ``order`` (best first), skipping near-duplicates while others are left.

    A candidate within ``radius`` of a study already picked (``taken`` or earlier in this walk) is
    set aside; the set-aside ones fill what is left of ``k``, in order.
    """
    picked: list[int] = []
    aside: list[int] = []
    centres = [vectors[i] for i in taken] if vectors is not None else []
    for i in order:
        if len(picked) >= k:
            break
        if vectors is not None and centres:
            nearest = float(np.min(np.linalg.norm(np.asarray(centres) - vectors[i], axis=1)))
            if nearest < radius:
                aside.append(int(i))
                continue
        picked.append(int(i))
        if vectors is not None:
            centres.append(vectors[i])
    return picked + aside[: k - len(picked)]


def duplicate_radius(vectors: np.ndarray | None, quantile: float, rng: np.random.Generator) -> float:
    """Return the distance below which two candidates count as near-duplicates (a low quantile of random pairs)."""
    if vectors is None or len(vectors) < 2:
        return 0.0
    a, b = rng.integers(0, len(vectors), size=(2, 4000))
    distances = np.linalg.norm(vectors[a] - vectors[b], axis=1)[a != b]
    return float(np.quantile(distances, quantile)) if distances.size else 0.0


def _quotas(budget: int, shares: dict[Pick, float], available: dict[Pick, int]) -> dict[Pick, int]:
    """Split ``budget`` by ``shares``; what a strategy cannot fill passes to the next ones."""
    total = sum(shares.values())
    quota = {p: min(available.get(p, 0), math.floor(budget * shares.get(p, 0.0) / total + 1e-9)) for p in Pick}
    left = budget - sum(quota.values())
    for p in (Pick.ERROR, Pick.DRIFT, Pick.UNCERTAIN, Pick.RANDOM):
        extra = min(left, available.get(p, 0) - quota[p])
        if extra > 0 and shares.get(p, 0.0) > 0:
            quota[p] += extra
            left -= extra
    return quota


def pick(scored: pd.DataFrame, budget: int, config: SelectionConfig, rng: np.random.Generator) -> pd.DataFrame:
    """Return up to ``budget`` picks from scored candidates: ``strategy`` and ``reasons`` (JSON) per study."""
    if budget <= 0 or scored.empty:
        return scored.iloc[0:0].assign(
            strategy=pd.Series(dtype=str), reasons=pd.Series(dtype=str), priority=pd.Series(dtype=float)
        )
    vectors = _unit_embeddings(scored)
    drifting = set(scored.loc[scored["is_drift"], "site"])
    site_left = {
        s: max(1, math.floor((config.drift_site_cap if s in drifting else config.site_cap) * config.budget))
        for s in scored["site"].unique()
    }
    available = {p: int(scored[f"is_{p}"].sum()) for p in Pick}
    shares: dict[Pick, float] = {p: v for p, v in config.shares.items() if p is not Pick.EVIDENCE}
    if drifting and config.drift_share_on_alert is not None and config.shares.get(Pick.DRIFT, 0.0) > 0:
        others = sum(v for p, v in shares.items() if p is not Pick.DRIFT)
        rest = 1.0 - config.drift_share_on_alert
        shares = {p: (config.drift_share_on_alert if p is Pick.DRIFT else rest * v / others) for p, v in shares.items()}
    if available[Pick.EVIDENCE] and config.evidence_share > 0:
        total = sum(shares.values())
        keep = (1.0 - config.evidence_share) / total
        shares = {p: v * keep for p, v in shares.items()} | {Pick.EVIDENCE: config.evidence_share}
    quota = _quotas(budget, shares, available)
    taken: list[int] = []
    strategy: dict[int, Pick] = {}
    random_order = rng.permutation(len(scored))
    sites = scored["site"].to_numpy()

    radius = duplicate_radius(vectors, config.duplicate_quantile, rng)

    def take(p: Pick, k: int) -> None:
        ok = scored[f"is_{p}"].to_numpy(dtype=bool).copy()
        ok[taken] = False
        priority = scored[f"{p}_priority"].to_numpy(dtype=np.float64)
        order = [int(i) for i in np.flatnonzero(ok)[np.argsort(-priority[ok], kind="stable")]]
        if p in (Pick.RANDOM, Pick.EVIDENCE):  # samples: a uniform order, no spreading
            order = [int(i) for i in random_order if ok[i]]
        room = dict(site_left)
        capped = []
        for i in order:  # the site caps, in priority order
            if room[sites[i]] > 0:
                capped.append(i)
                room[sites[i]] -= 1
        chosen = capped[:k] if p in (Pick.RANDOM, Pick.EVIDENCE) else spread(vectors, capped, k, taken, radius)
        for i in chosen:
            site_left[sites[i]] -= 1
            strategy[i] = p
        taken.extend(chosen)

    # The control sample first, so that it is a sample of every candidate, not of what the others left.
    for p in (Pick.RANDOM, Pick.EVIDENCE, Pick.ERROR, Pick.DRIFT, Pick.UNCERTAIN):
        if quota[p] > 0:
            take(p, quota[p])
    # What a strategy could not fill (its candidates taken by another, or capped) passes on.
    for p in (Pick.ERROR, Pick.DRIFT, Pick.UNCERTAIN, Pick.RANDOM):
        if len(taken) < budget and shares.get(p, 0.0) > 0:
            take(p, budget - len(taken))
    rows = scored.iloc[taken].copy()
    rows["strategy"] = [str(strategy[i]) for i in taken]
    rows["reasons"] = [
        json.dumps(
            {str(p): scored[f"{p}_detail"].iat[i] for p in Pick if p is not Pick.RANDOM and scored[f"is_{p}"].iat[i]}
            | ({"random": {}} if strategy[i] is Pick.RANDOM else {}),
            sort_keys=True,
        )
        for i in taken
    ]
    rows["priority"] = [float(scored[f"{strategy[i]}_priority"].iat[i]) for i in taken]
    return rows


# --- the day's run ------------------------------------------------------------------------------------------------


def _picked_for(engine: Engine, day: date) -> int:
    with engine.connect() as conn:
        count = conn.execute(
            sa.select(sa.func.count()).select_from(relabel_queue).where(relabel_queue.c.picked_for == day)
        ).scalar_one()
    return int(count)


def select_for_relabeling(
    engine: Engine, day: date, config: SelectionConfig | None = None, *, now: datetime | None = None
) -> Selection:
    """Pick the day's studies for labeling and queue them (``relabel_queue``, status ``queued``).

    Idempotent: the day's earlier picks count against its budget, and a study is never picked twice.

    Args:
        engine: the store.
        day: the selection's logical date; candidates are received up to its end.
        config: budget, caps and strategy shares.
        now: when the picks are recorded (defaults to the current time).
    """
    config = config or SelectionConfig()
    already = _picked_for(engine, day)
    frame = read_candidates(engine, day, config)
    drifting = open_drift_sites(engine)
    short = short_of_evidence(engine, config.evidence_positives) if config.evidence_share > 0 else {}
    scored = score_candidates(frame, drifting, config, short)
    candidates = {str(p): int(scored[f"is_{p}"].sum()) for p in Pick} if len(scored) else {str(p): 0 for p in Pick}
    rng = np.random.default_rng([config.seed, day.toordinal()])
    chosen = pick(scored, config.budget - already, config, rng)
    picks = pd.DataFrame(
        {
            "study_id": chosen["study_id"].astype(str),
            "site": chosen["site"].astype(str),
            "model_version": chosen["model_version"].astype(str),
            "project": [PROJECT[Pick(s)] for s in chosen["strategy"]],
            "strategy": chosen["strategy"].astype(str),
            "reasons": chosen["reasons"].astype(str),
            "priority": chosen["priority"].astype(float),
            "prob_abnormal": chosen["prob_abnormal"].astype(float),
            "picked_for": day,
            "picked_at": now or datetime.now(UTC),
            "status": str(QueueStatus.QUEUED),
        }
    ).reset_index(drop=True)
    if len(picks):
        insert = insert_for(engine)
        with engine.begin() as conn:
            conn.execute(
                insert(relabel_queue).on_conflict_do_nothing(index_elements=["study_id"]),
                picks.to_dict("records"),
            )
    log.info(
        "selection for %s: %d picked (%s), %d picked earlier; candidates %s",
        day,
        len(picks),
        picks["strategy"].value_counts().to_dict() if len(picks) else {},
        already,
        candidates,
    )
    return Selection(day=day, picks=picks, candidates=candidates, already_picked=already)
