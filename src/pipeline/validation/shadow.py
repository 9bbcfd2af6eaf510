"""Shadow evaluation: a validated candidate scores live traffic beside the champion before anyone approves it.

:func:`start_shadow` points the ``shadow`` alias at the candidate; from the next batch on, the inference
service scores every study the champion scored with the shadow model too and logs its answers to
``shadow_logs`` (never acted on: the champion's decision is the one used). :func:`shadow_report` then
pairs the two models' answers on the same studies: how often they agree, where they differ (per site,
in both directions, with the studies that differ most), and the label-free performance estimate of
both (expected AUROC, sensitivity and specificity at each one's threshold, and the share each would
close as normal). Where radiologists' outcomes have come back, their sensitivity on those studies
stands beside it. :func:`end_shadow` takes the alias away once the release manager has decided.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from sqlalchemy.engine import Engine

from pipeline.drift.stats import expected_performance
from pipeline.registry import (
    CHAMPION,
    SHADOW,
    SHADOW_AGREEMENT,
    SHADOW_ENDED_AT,
    SHADOW_REPORT,
    SHADOW_STARTED_AT,
    SHADOW_STUDIES,
    log_version_files,
    version_for,
)
from pipeline.store.schema import feedback, inference_logs, shadow_logs
from pipeline.validation.audit import record_event
from pipeline.validation.promotion import PromotionRefused, validated_version

log = logging.getLogger(__name__)

SHADOW_ARTIFACTS = "shadow"
EXAMPLES = 10


@dataclass(frozen=True)
class ShadowStart:
    """The version in shadow, since when, and whether this call put it there."""

    version: str
    started_at: str
    started: bool


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def start_shadow(engine: Engine, model_name: str, version: str, actor: str) -> ShadowStart:
    """Point the ``shadow`` alias at ``version``, a validated candidate; calling again changes nothing.

    A version already in shadow keeps its start. Another version in shadow is displaced (its shadow ends,
    recorded): its report covers the days it had.

    Raises:
        PromotionRefused: no such version, a validation that did not pass, or the serving champion.
    """
    champion = version_for(model_name, CHAMPION)
    if champion is not None and version_for(model_name, version) == champion:
        raise PromotionRefused(f"{model_name} version {champion} is the serving champion: nothing to shadow")
    number, tags = validated_version(model_name, version)
    current = version_for(model_name, SHADOW)
    if current == number and SHADOW_STARTED_AT in tags:
        return ShadowStart(number, tags[SHADOW_STARTED_AT], started=False)
    client = MlflowClient()
    at = _now()
    client.set_registered_model_alias(model_name, SHADOW, number)
    client.set_model_version_tag(model_name, number, SHADOW_STARTED_AT, at)
    if current is not None:
        client.set_model_version_tag(model_name, current, SHADOW_ENDED_AT, at)
        record_event(engine, model_name, current, "shadow_ended", actor, {"displaced_by": number})
    record_event(engine, model_name, number, "shadow_started", actor, {"displaced": current})
    log.info("%s version %s scores live traffic in shadow from %s (displaced %s)", model_name, number, at, current)
    return ShadowStart(number, at, started=True)


def end_shadow(engine: Engine, model_name: str, version: str, actor: str) -> bool:
    """Take the ``shadow`` alias from ``version`` if it has it; return whether it had."""
    if version_for(model_name, SHADOW) != version:
        return False
    client = MlflowClient()
    try:
        client.delete_registered_model_alias(model_name, SHADOW)
    except MlflowException:
        log.warning("could not remove the shadow alias of %s", model_name)
        return False
    client.set_model_version_tag(model_name, version, SHADOW_ENDED_AT, _now())
    record_event(engine, model_name, version, "shadow_ended", actor, {})
    return True


@dataclass(frozen=True)
class Estimate:
    """One model's label-free performance estimate on the shadowed studies, and its outcomes where known."""

    threshold: float
    filtered_normal: float  # share it closes as normal
    expected_auroc: float
    expected_sensitivity: float
    expected_specificity: float
    outcome_studies: int = 0  # studies with a radiologist's outcome
    outcome_sensitivity: float | None = None  # on the abnormal ones among them
    outcome_misses: int = 0  # abnormal, closed as normal


@dataclass
class ShadowReport:
    """The candidate's and the champion's answers paired on the same live studies."""

    model_name: str
    version: str
    champion: str
    first: str | None
    last: str | None
    studies: int
    agreement: float | None
    champion_normal_candidate_not: int  # the champion closes it, the candidate would refer it
    candidate_normal_champion_not: int  # the candidate would close what the champion refers
    probability_correlation: float | None
    candidate: Estimate | None
    champion_estimate: Estimate | None
    sites: list[dict[str, Any]] = field(default_factory=list)
    examples: list[dict[str, Any]] = field(default_factory=list)
    reported_at: str = field(default_factory=_now)
    # (candidate, champion) probabilities of the paired studies, for the report's plot; not in the JSON
    probs: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        return _finite({k: v for k, v in asdict(self).items() if k != "probs"})

    def summary(self) -> str:
        """Return the report in a few Markdown lines, for the approval request."""
        if not self.studies or self.candidate is None or self.champion_estimate is None:
            return f"- shadow: no live study was scored by version {self.version} beside the champion"
        c, h = self.candidate, self.champion_estimate
        return (
            f"- shadow: {self.studies} live studies ({self.first} to {self.last}), decisions agree on "
            f"{self.agreement:.1%}; the candidate would refer {self.champion_normal_candidate_not} that the champion "
            f"closed and close {self.candidate_normal_champion_not} that it referred\n"
            f"- label-free estimate, candidate vs champion: expected AUROC {c.expected_auroc:.3f} vs "
            f"{h.expected_auroc:.3f}, sensitivity {c.expected_sensitivity:.3f} vs {h.expected_sensitivity:.3f}, "
            f"closed as normal {c.filtered_normal:.1%} vs {h.filtered_normal:.1%}"
        )


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _paired(engine: Engine, version: str) -> pd.DataFrame:
    s, log_, fb = shadow_logs.c, inference_logs.c, feedback.c
    query = (
        sa.select(
            s.study_id,
            s.site,
            s.received_at,
            s.champion_version,
            s.prob_abnormal.label("prob_candidate"),
            s.threshold.label("threshold_candidate"),
            log_.prob_abnormal.label("prob_champion"),
            log_.threshold.label("threshold_champion"),
            fb.final_abnormal,
        )
        .select_from(
            shadow_logs.join(
                inference_logs,
                sa.and_(log_.study_id == s.study_id, log_.model_version == s.champion_version),
            ).outerjoin(feedback, fb.study_id == s.study_id)
        )
        .where(s.model_version == version, log_.prob_abnormal.is_not(None))
        .order_by(s.received_at, s.study_id)
    )
    with engine.connect() as conn:
        return pd.read_sql(query, conn)


def _estimate(probs: np.ndarray, threshold: float, outcome: pd.Series) -> Estimate:
    perf = expected_performance(probs, threshold)
    normal = probs < threshold
    known = outcome.notna().to_numpy()
    abnormal = known & outcome.fillna(False).astype(bool).to_numpy()
    misses = int((abnormal & normal).sum())
    return Estimate(
        threshold=float(threshold),
        filtered_normal=float(normal.mean()),
        expected_auroc=perf.auroc,
        expected_sensitivity=perf.sensitivity,
        expected_specificity=perf.specificity,
        outcome_studies=int(known.sum()),
        outcome_sensitivity=None if not abnormal.any() else 1.0 - misses / int(abnormal.sum()),
        outcome_misses=misses,
    )


def _agreement(frame: pd.DataFrame) -> dict[str, Any]:
    cand_normal = frame["prob_candidate"] < frame["threshold_candidate"]
    champ_normal = frame["prob_champion"] < frame["threshold_champion"]
    return {
        "studies": len(frame),
        "agreement": float((cand_normal == champ_normal).mean()) if len(frame) else None,
        "champion_normal_candidate_not": int((champ_normal & ~cand_normal).sum()),
        "candidate_normal_champion_not": int((cand_normal & ~champ_normal).sum()),
        "filtered_candidate": float(cand_normal.mean()) if len(frame) else None,
        "filtered_champion": float(champ_normal.mean()) if len(frame) else None,
    }


def shadow_report(engine: Engine, model_name: str, version: str) -> ShadowReport:
    """Pair ``version``'s shadow answers with the champion's on the same studies and summarise them.

    Each study is paired with the answer of the champion that served it (``shadow_logs.champion_version``).
    """
    number = version_for(model_name, version) or version
    frame = _paired(engine, number)
    champion = ",".join(sorted(frame["champion_version"].astype(str).unique())) or (
        version_for(model_name, CHAMPION) or "none"
    )
    if frame.empty:
        return ShadowReport(model_name, number, champion, None, None, 0, None, 0, 0, None, None, None)
    overall = _agreement(frame)
    cand = frame["prob_candidate"].to_numpy(float)
    champ = frame["prob_champion"].to_numpy(float)
    sites = [{"site": site, **_agreement(part)} for site, part in frame.groupby("site", sort=True)]
    gap = np.abs(cand - champ)
    differ = (cand < frame["threshold_candidate"].to_numpy()) != (champ < frame["threshold_champion"].to_numpy())
    order = np.lexsort((-gap, ~differ))[:EXAMPLES]
    examples = [
        {
            "study_id": frame["study_id"].iat[i],
            "site": frame["site"].iat[i],
            "prob_candidate": round(float(cand[i]), 4),
            "prob_champion": round(float(champ[i]), 4),
            "decisions_differ": bool(differ[i]),
        }
        for i in order
    ]
    received = pd.to_datetime(frame["received_at"], utc=True)
    return ShadowReport(
        model_name=model_name,
        version=number,
        champion=champion,
        first=received.min().isoformat(timespec="seconds"),
        last=received.max().isoformat(timespec="seconds"),
        studies=overall["studies"],
        agreement=overall["agreement"],
        champion_normal_candidate_not=overall["champion_normal_candidate_not"],
        candidate_normal_champion_not=overall["candidate_normal_champion_not"],
        probability_correlation=float(np.corrcoef(cand, champ)[0, 1]) if len(frame) > 2 else None,
        candidate=_estimate(cand, float(frame["threshold_candidate"].iat[-1]), frame["final_abnormal"]),
        champion_estimate=_estimate(champ, float(frame["threshold_champion"].iat[-1]), frame["final_abnormal"]),
        sites=sites,
        examples=examples,
        probs=(cand, champ),
    )


def record_shadow_report(
    engine: Engine, report: ShadowReport, actor: str, *, report_dir: Path | None = None, pages: Sequence[Path] = ()
) -> str:
    """Log the report (its JSON and ``pages``, the HTML ``pipeline.reports.record_shadow`` writes) into the
    version's run under ``shadow/`` and tag the version; return its URI (the last page's)."""
    folder = report_dir or Path(tempfile.mkdtemp(prefix="shadow-"))
    folder.mkdir(parents=True, exist_ok=True)
    result = folder / "shadow.json"
    result.write_text(json.dumps(report.to_json(), indent=2, sort_keys=True))
    uri = log_version_files(report.model_name, report.version, [result, *pages], SHADOW_ARTIFACTS)
    client = MlflowClient()
    tags = {
        SHADOW_STUDIES: str(report.studies),
        SHADOW_AGREEMENT: "none" if report.agreement is None else f"{report.agreement:.4f}",
        SHADOW_REPORT: uri,
    }
    for key, value in tags.items():
        client.set_model_version_tag(report.model_name, report.version, key, value)
    detail = {k: tags[k] for k in (SHADOW_STUDIES, SHADOW_AGREEMENT)} | {"champion": report.champion}
    record_event(engine, report.model_name, report.version, "shadow_report", actor, detail, once=True)
    return uri
