"""The validation suite: a candidate version against the champion on the fixed test sets, with a verdict.

:func:`validate` loads both versions from the registry, brings the stored test sets up to the population
the champion serves (building them on first use; ``testsets.follow_served_population``), leaves out the patients either model was trained or tuned on, scores every test
study with both models, runs the clinical checks (``pipeline.validation.checks``) and the technical
ones (latency, memory, the loaded model reproducing its training-time outputs), and returns a
:class:`Verdict`: passed only when no check failed. :func:`record_verdict` writes it onto the version
in MLflow (a JSON result and an HTML report as artifacts; tags ``validation_status``,
``validation_threshold``, ``validation_report``, ``validated_against``) and into the audit trail.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import sqlalchemy as sa
import torch
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from sqlalchemy.engine import Engine

from pipeline.model import UNREADABLE_KEY, PrepareStudyd, finish
from pipeline.registry import (
    CHAMPION,
    DATASET_SNAPSHOT,
    VALIDATED_AGAINST,
    VALIDATED_AT,
    VALIDATION_EVIDENCE,
    VALIDATION_FAILED_CHECKS,
    VALIDATION_REPORT,
    VALIDATION_SITES,
    VALIDATION_STATUS,
    VALIDATION_THRESHOLD,
    LoadedModel,
    input_example,
    load_model,
    log_version_files,
    version_for,
)
from pipeline.store.schema import studies
from pipeline.training.snapshot import SnapshotNotFound, load_snapshot
from pipeline.validation.audit import record_event
from pipeline.validation.checks import (
    CANDIDATE,
    Check,
    Thresholds,
    ValidationConfig,
    age_band,
    clinical_checks,
)
from pipeline.validation.checks import (
    CHAMPION as CHAMPION_COLUMN,
)
from pipeline.validation.testsets import REGRESSION, SCANNER, TestSetConfig, follow_served_population, scanner_name

log = logging.getLogger(__name__)

PASSED, FAILED = "passed", "failed"
#: Artifact folder of the validation result and report inside the version's run.
VALIDATION_ARTIFACTS = "validation"
LATENCY_STUDIES = 20


class ValidationError(ValueError):
    """A validation that cannot run: no such version, no signature, no champion, an empty test set."""


@dataclass(frozen=True)
class Verdict:
    """What the suite decided: every check with its numbers, and the sets and versions it judged."""

    model_name: str
    candidate: str
    champion: str
    passed: bool
    checks: tuple[Check, ...]
    threshold: float
    threshold_by_site: dict[str, float]
    test_sets: dict[str, str]  # name -> hash
    studies: int
    left_out: dict[str, int] = field(default_factory=dict)  # seen in training, unreadable
    validated_at: str = ""
    evidence: list[dict[str, Any]] = field(default_factory=list)  # per served site and scanner
    test_set_changes: list[str] = field(default_factory=list)  # what following the served population changed
    curves: dict[str, Any] = field(default_factory=dict, repr=False)  # what the report plots

    @property
    def status(self) -> str:
        return PASSED if self.passed else FAILED

    @property
    def failed_checks(self) -> list[Check]:
        return [c for c in self.checks if c.failed]

    def summary(self) -> str:
        """Return the lines a release manager reads first (verdict, then each check)."""
        head = (
            f"{self.model_name} version {self.candidate} against champion {self.champion}: {self.status.upper()} "
            f"({sum(c.status == 'pass' for c in self.checks)} passed, {len(self.failed_checks)} failed, "
            f"{sum(c.status == 'n/a' for c in self.checks)} not applicable; {self.studies} test studies)"
        )
        marks = {"pass": "PASS", "fail": "FAIL", "n/a": "n/a "}
        lines = [head, *(f"  {marks[c.status]} {c.name}: {c.summary}" for c in self.checks)]
        if self.evidence:
            lines.append("  evidence per served site and scanner:")
            lines += [f"    {evidence_line(row)}" for row in self.evidence]
        return "\n".join(lines)

    @property
    def sites(self) -> list[str]:
        """The served sites the test sets held evidence for (at least the gate's minimum of abnormal studies)."""
        return [r["site"] for r in self.evidence if r["scanner"] is None and "sensitivity_candidate" in r]

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("curves")
        out["status"] = self.status
        return json.loads(json.dumps(out, default=_plain))


def evidence_line(row: Mapping[str, Any]) -> str:
    """Return one served site's or scanner's evidence in words: studies, abnormal, sensitivity with its interval."""
    where = row["site"] if row.get("scanner") is None else f"{row['site']} ({row['scanner']})"
    head = f"{where}: {row['studies']} studies, {row['abnormal']} abnormal"
    if "sensitivity_candidate" not in row:
        return f"{head}: {row['problem']}"
    tail = f" - FAIL: {row['problem']}" if row.get("problem") else ""
    return (
        f"{head}, sensitivity {row['sensitivity_candidate']:.3f} [{row['sensitivity_low']:.3f}, "
        f"{row['sensitivity_high']:.3f}] vs champion {row['sensitivity_champion']:.3f} at threshold "
        f"{row['threshold']:.4f} (target {row['target']}){tail}"
    )


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


# --- the models -----------------------------------------------------------------------------------------------


def _resolve(model_name: str, candidate: str, champion: str) -> tuple[str, str]:
    version = version_for(model_name, candidate)
    if version is None:
        raise ValidationError(f"model {model_name!r} has no version {candidate!r}: nothing to validate")
    against = version_for(model_name, champion)
    if against is None:
        raise ValidationError(
            f"model {model_name!r} has no {champion!r} to validate against: promote a first version with "
            "`pipeline promote` after its validation, or name a version with --champion"
        )
    if against == version:
        raise ValidationError(f"version {version} of {model_name!r} is the {champion!r} itself: nothing to compare")
    return version, against


def _model_info(model_name: str, version: str) -> mlflow.models.model.ModelInfo:
    try:
        info = mlflow.models.get_model_info(f"models:/{model_name}/{version}")
    except (MlflowException, OSError) as error:
        raise ValidationError(f"version {version} of {model_name!r} has no loadable model: {error}") from error
    if info.signature is None:
        raise ValidationError(
            f"version {version} of {model_name!r} has no signature: it was logged without one and cannot be "
            "served safely (log it with register_candidate)"
        )
    return info


def _seen_patients(model_name: str, version: str, engine: Engine) -> set[str]:
    """Return the patients in the training and validation splits of the version's dataset snapshot."""
    snapshot = MlflowClient().get_model_version(model_name, version).tags.get(DATASET_SNAPSHOT)
    if not snapshot:
        return set()
    try:
        items = load_snapshot(engine, snapshot).items
    except SnapshotNotFound:
        log.warning("version %s: its dataset snapshot %s is not in this store", version, snapshot)
        return set()
    return set(items.loc[items["split"].isin(["train", "val"]), "patient_key"].astype(str))


def _technical(
    loaded: LoadedModel, info: mlflow.models.model.ModelInfo, images: list[torch.Tensor], config: ValidationConfig
) -> list[Check]:
    model = loaded.model
    model.eval()
    checks = []
    stored = (info.metadata or {}).get("example_logits")
    if stored is None:
        checks.append(
            Check("reproducible", "fail", "the version stores no example outputs to check the loaded model by")
        )
    else:
        example = input_example(loaded.image_size, batch=len(stored))
        with torch.no_grad():
            logits = model(torch.from_numpy(example)).float().numpy()
        gap = float(np.max(np.abs(logits - np.asarray(stored, dtype=np.float64))))
        checks.append(
            Check(
                "reproducible",
                "pass" if gap <= config.reproduce_atol else "fail",
                f"loaded from the registry by version, its logits on the stored input example differ by {gap:.2e} "
                f"(tolerance {config.reproduce_atol:.0e})",
                {"max_abs_difference": gap},
            )
        )
    timings = []
    with torch.no_grad():
        for image in images[: LATENCY_STUDIES + 2]:
            started = time.perf_counter()
            model(image[None])
            timings.append((time.perf_counter() - started) * 1000.0)
    latency = float(np.median(timings[2:] or timings)) if timings else float("nan")
    checks.append(
        Check(
            "latency",
            "pass" if latency <= config.max_latency_ms else "fail",
            f"median {latency:.1f} ms per study at batch 1 over {max(0, len(timings) - 2)} studies "
            f"(limit {config.max_latency_ms:.0f} ms)",
            {"median_ms": latency, "limit_ms": config.max_latency_ms},
        )
    )
    memory = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers())) / 2**20
    checks.append(
        Check(
            "memory",
            "pass" if memory <= config.max_memory_mb else "fail",
            f"{memory:.1f} MiB of parameters and buffers (limit {config.max_memory_mb:.0f} MiB)",
            {"mib": memory, "limit_mib": config.max_memory_mb},
        )
    )
    return checks


# --- the data -----------------------------------------------------------------------------------------------------


def _subgroups(engine: Engine, ids: list[str], config: ValidationConfig) -> pd.DataFrame:
    query = sa.select(
        studies.c.study_id,
        studies.c.manufacturer,
        studies.c.model_name,
        studies.c.patient_sex,
        studies.c.view_position,
        studies.c.patient_age_years,
    ).where(studies.c.study_id.in_(sa.bindparam("ids", expanding=True)))
    frames = []
    with engine.connect() as conn:
        for start in range(0, len(ids), 500):
            result = conn.execute(query, {"ids": ids[start : start + 500]})
            frames.append(pd.DataFrame(result.fetchall(), columns=list(result.keys())))
    facts = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["study_id"])
    facts["age_band"] = age_band(facts["patient_age_years"], config.age_bands)
    facts[SCANNER] = [scanner_name(m, n) for m, n in zip(facts["manufacturer"], facts["model_name"], strict=True)]
    for c in ("manufacturer", "patient_sex", "view_position"):
        facts[c] = facts[c].fillna("unknown").astype(str)
    return facts.drop(columns=["patient_age_years", "model_name"]).set_index("study_id")


def _images(uris: Mapping[str, str], image_size: int, progress: Callable[[str], None]) -> dict[str, torch.Tensor]:
    """Return each readable study's network input at ``image_size`` (unreadable ones are left out)."""
    prepare, normalise = PrepareStudyd(image_size), finish(train=False)
    out: dict[str, torch.Tensor] = {}
    for i, (study_id, uri) in enumerate(uris.items(), 1):
        prepared = prepare({"image": uri})
        if prepared.get(UNREADABLE_KEY) is None:
            out[study_id] = normalise({"image": prepared["image"]})["image"]
        if i % 500 == 0 or i == len(uris):
            progress(f"prepared {i}/{len(uris)} studies at {image_size} px")
    return out


def _probs(model: torch.nn.Module, images: list[torch.Tensor], batch_size: int = 64) -> np.ndarray:
    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            batch = torch.stack(images[start : start + batch_size])
            out.append(torch.sigmoid(model(batch).float()).numpy())
    return np.concatenate(out) if out else np.zeros(0)


def _curves(regression: pd.DataFrame) -> dict[str, Any]:
    return {
        "labels": regression["label"].to_numpy(dtype=int).tolist(),
        CANDIDATE: regression[CANDIDATE].to_numpy().tolist(),
        CHAMPION_COLUMN: regression[CHAMPION_COLUMN].to_numpy().tolist(),
    }


# --- the suite ------------------------------------------------------------------------------------------------


def validate(
    engine: Engine,
    model_name: str,
    candidate: str,
    *,
    champion: str = CHAMPION,
    config: ValidationConfig | None = None,
    test_set_config: TestSetConfig | None = None,
    progress: Callable[[str], None] | None = None,
) -> Verdict:
    """Validate ``candidate`` (a version or alias) against ``champion`` on the store's fixed test sets.

    Raises:
        ValidationError: the candidate or champion does not exist, the candidate has no signature, or
            the regression test set is empty (after leaving out the patients either model trained on).
    """
    config = config or ValidationConfig()
    say = progress or log.info
    version, against = _resolve(model_name, candidate, champion)
    info = _model_info(model_name, version)
    _model_info(model_name, against)
    following = follow_served_population(engine, test_set_config)
    sets = following.sets
    for note in following.changes + following.blocked:
        say(f"test sets: {note}")
    if REGRESSION not in sets or sets[REGRESSION].items.empty:
        raise ValidationError("the regression test set is empty: the store holds no labeled studies to validate on")
    seen = _seen_patients(model_name, version, engine) | _seen_patients(model_name, against, engine)
    frames = {name: s.items[~s.items["patient_key"].astype(str).isin(seen)] for name, s in sets.items()}
    left_out = {"seen_in_training": int(sum(len(s.items) - len(frames[n]) for n, s in sets.items()))}
    if frames[REGRESSION].empty:
        raise ValidationError(
            f"the regression test set ({sets[REGRESSION].describe()}) is empty once the patients the candidate or "
            "champion trained on are left out: rebuild the test sets from newer labels"
        )
    uris = {r.study_id: r.dicom_uri for f in frames.values() for r in f.itertuples(index=False)}
    say(f"validating {model_name} {version} against {against} on {len(uris)} studies of {len(sets)} test sets")

    loaded = {CANDIDATE: load_model(model_name, version), CHAMPION_COLUMN: load_model(model_name, against)}
    probs: dict[str, dict[str, float]] = {}
    by_size: dict[int, dict[str, torch.Tensor]] = {}  # both at one size: each study is decoded once
    readable: set[str] = set(uris)
    for column, model in loaded.items():
        if model.image_size not in by_size:
            by_size[model.image_size] = _images(uris, model.image_size, say)
        images = by_size[model.image_size]
        readable &= set(images)
        ids = list(images)
        probs[column] = dict(zip(ids, _probs(model.model, [images[i] for i in ids]).tolist(), strict=True))
        say(f"scored {len(ids)} studies with version {model.version}")
        if column == CANDIDATE:
            candidate_images = images
    left_out["unreadable"] = len(uris) - len(readable)
    facts = _subgroups(engine, sorted(readable), config)
    scored = {}
    for name, frame in frames.items():
        frame = frame[frame["study_id"].isin(readable)].join(facts, on="study_id")
        frame = frame.assign(
            **{column: frame["study_id"].map(probs[column]).astype(float) for column in (CANDIDATE, CHAMPION_COLUMN)}
        )
        scored[name] = frame.reset_index(drop=True)
    try:
        checks, thresholds = clinical_checks(scored, config, following.served)
    except ValueError as error:
        raise ValidationError(str(error)) from error
    checks += _technical(loaded[CANDIDATE], info, [candidate_images[i] for i in sorted(readable)], config)
    verdict = Verdict(
        model_name=model_name,
        candidate=version,
        champion=against,
        passed=not any(c.failed for c in checks),
        checks=tuple(checks),
        threshold=thresholds.candidate.threshold,
        threshold_by_site=dict(thresholds.candidate_by_site),
        test_sets={name: s.hash for name, s in sets.items()},
        studies=len(readable),
        left_out=left_out,
        validated_at=datetime.now(UTC).isoformat(timespec="seconds"),
        curves=_curves(scored[REGRESSION]) | {"thresholds": _threshold_pair(thresholds)},
        evidence=next(c.numbers["units"] for c in checks if c.name == "site_evidence"),
        test_set_changes=following.changes + following.blocked,
    )
    say(verdict.summary())
    return verdict


def _threshold_pair(thresholds: Thresholds) -> dict[str, float]:
    return {CANDIDATE: thresholds.candidate.threshold, CHAMPION_COLUMN: thresholds.champion.threshold}


def record_verdict(
    engine: Engine, verdict: Verdict, *, report_dir: Path | None = None, pages: Sequence[Path] = ()
) -> str:
    """Write the verdict onto the candidate version in MLflow and into the audit trail; return the report's URI.

    The JSON result and ``pages`` (the HTML report ``pipeline.reports.record_validation`` writes; the URI is the
    last page's) are logged into the version's run under ``validation/``; the
    version gets the tags ``validation_status`` (passed/failed), ``validation_threshold``,
    ``validation_report``, ``validated_against`` and ``validated_at``. Recording the same verdict again
    overwrites them and adds no audit event.
    """
    folder = report_dir or Path(tempfile.mkdtemp(prefix="validation-"))
    folder.mkdir(parents=True, exist_ok=True)
    result = folder / "validation.json"
    result.write_text(json.dumps(verdict.to_json(), indent=2, sort_keys=True))
    report_uri = log_version_files(verdict.model_name, verdict.candidate, [result, *pages], VALIDATION_ARTIFACTS)
    client = MlflowClient()
    tags = {
        VALIDATION_STATUS: verdict.status,
        VALIDATION_THRESHOLD: f"{verdict.threshold:.6f}",
        VALIDATION_REPORT: report_uri,
        VALIDATED_AGAINST: verdict.champion,
        VALIDATED_AT: verdict.validated_at,
        VALIDATION_FAILED_CHECKS: ",".join(c.name for c in verdict.failed_checks) or "none",
        VALIDATION_SITES: ",".join(verdict.sites) or "none",
        VALIDATION_EVIDENCE: "\n".join(evidence_line(r) for r in verdict.evidence)[:4900] or "none",
    }
    for key, value in tags.items():
        client.set_model_version_tag(verdict.model_name, verdict.candidate, key, value)
    detail = {
        "status": verdict.status,
        "against": verdict.champion,
        "threshold": round(verdict.threshold, 6),
        "failed": [c.name for c in verdict.failed_checks],
        "test_sets": verdict.test_sets,
        "sites": verdict.sites,
    }
    record_event(engine, verdict.model_name, verdict.candidate, "validated", "validation-suite", detail, once=True)
    log.info("recorded the verdict %s on %s version %s", verdict.status, verdict.model_name, verdict.candidate)
    return report_uri
