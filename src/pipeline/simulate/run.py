"""Run a scenario day by day: DICOM files to storage, ground truth, tags and feedback to the store."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
from sqlalchemy.engine import Engine
from tqdm import tqdm

from pipeline.dicom import DicomError, NotChestRadiograph, read_study
from pipeline.inference import InferenceRequest, InferenceService
from pipeline.simulate.generate import RenderedStudy, feedback_row, ground_truth_row, render_study
from pipeline.simulate.plan import plan_day
from pipeline.simulate.scenario import Scenario
from pipeline.simulate.world import model_on
from pipeline.store import ingest_batch

log = logging.getLogger(__name__)

ServiceFor = Callable[[str], InferenceService]
"""Returns the inference service for a model alias or version (the scenario can switch models)."""


@dataclass
class SimulationSummary:
    """Counts of what a simulation run wrote."""

    scenario: str
    days: list[int] = field(default_factory=list)
    studies: int = 0
    abnormal: int = 0
    feedback: int = 0
    unreadable: int = 0
    rejected: int = 0  # read, but not a chest radiograph (a site that sends a wrong BodyPartExamined)
    inference_logs: int = 0
    shadow_logs: int = 0
    failed: int = 0
    per_site: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


def studies_row(rendered: RenderedStudy, key: str) -> dict[str, object]:
    """Return the ``studies`` row of a written study: its tags and statistics as read back from the file."""
    record = read_study(rendered.dicom_path, key)
    row = dataclasses.asdict(record)
    row["acquired_at"] = row["acquired_at"] or rendered.planned.acquired_at
    row["site"] = rendered.planned.site.id
    row["dicom_uri"] = str(rendered.dicom_path)
    return row


def _register_tags(rendered: Sequence[RenderedStudy], key: str, summary: SimulationSummary) -> list[dict[str, object]]:
    rows = []
    for r in rendered:
        try:
            rows.append(studies_row(r, key))
        except NotChestRadiograph as exc:  # a tag error the scenario asked for: the service would reject it too
            summary.rejected += 1
            log.info("simulated study rejected: %s", exc)
        except DicomError as exc:  # cannot happen for our own files unless storage is broken
            summary.unreadable += 1
            log.error("simulated study unreadable: %s", exc)
    return rows


def _request(rendered: RenderedStudy) -> InferenceRequest:
    """Return the request production would receive: the study arrives minutes after acquisition."""
    planned = rendered.planned
    delay_s = float(np.random.default_rng([planned.render_seed, 2]).uniform(30, 600))
    return InferenceRequest(
        path=rendered.dicom_path,
        site=planned.site.id,
        received_at=planned.acquired_at + timedelta(seconds=delay_s),
        injected_failure=planned.failure,
    )


def simulate(
    scenario: Scenario,
    *,
    engine: Engine,
    storage_root: Path,
    key: str,
    days: Sequence[int],
    image_size: int | None = None,
    service_for: ServiceFor | None = None,
    sites: Collection[str] | None = None,
    progress: bool = True,
) -> SimulationSummary:
    """Simulate ``days`` of ``scenario``: write DICOMs under ``storage_root`` and rows to the store.

    Every write is keyed (file path, study id), so simulating a day again changes nothing.

    Args:
        scenario: the world.
        engine: the store.
        storage_root: folder for DICOM files.
        key: pseudonymisation key for StudyInstanceUIDs.
        days: day indexes (0 = ``scenario.start``).
        image_size: rows and columns of the images; default the scenario's.
        service_for: the production inference service for a model alias or version; with it, each
            day's studies are scored and logged (tags then come from the service's single read),
            without it only their tags are registered.
        sites: simulate only these sites (default: all); see ``pipeline.simulate.world.changed_sites``.
        progress: show a progress bar.
    """
    size = image_size or scenario.image_size
    summary = SimulationSummary(scenario=scenario.name)
    for day in days:
        planned = [p for p in plan_day(scenario, day) if sites is None or p.site.id in sites]
        label = f"{scenario.name} day {day} ({scenario.start + pd.Timedelta(days=day):%Y-%m-%d})"
        rendered = [
            render_study(p, storage_root=storage_root, key=key, image_size=size)
            for p in tqdm(planned, desc=label, unit="study", disable=not progress, leave=False)
        ]
        if service_for is not None:
            service = service_for(model_on(scenario, day))
            output = service.process([_request(r) for r in rendered])
            study_rows, logs, shadow_logs = output.studies, output.logs, output.shadow_logs
        else:
            study_rows, logs, shadow_logs = _register_tags(rendered, key, summary), [], []
        truth = [ground_truth_row(scenario, r) for r in rendered]
        scored = {str(row["study_id"]): row for row in logs}
        feedback = [row for r in rendered if (row := feedback_row(scenario, r, scored.get(r.study_id))) is not None]
        source = f"simulate:{scenario.name}:day{day}"
        tables = {"studies": study_rows, "ground_truth": truth, "feedback": feedback, "inference_logs": logs}
        tables["shadow_logs"] = shadow_logs
        # one transaction: a study is written with its tags, outcome and inference rows, or not at all
        ingest_batch(engine, {name: pd.DataFrame(rows) for name, rows in tables.items() if rows}, source=source)
        summary.days.append(day)
        summary.studies += len(rendered)
        summary.abnormal += sum(r.planned.abnormal for r in rendered)
        summary.feedback += len(feedback)
        summary.inference_logs += len(logs)
        summary.shadow_logs += len(shadow_logs)
        summary.failed += sum(1 for row in logs if row["status"] != "ok")
        for r in rendered:
            summary.per_site[r.planned.site.id] = summary.per_site.get(r.planned.site.id, 0) + 1
        log.info(
            "%s: %d studies, %d abnormal, %d outcomes to come back",
            label,
            len(rendered),
            sum(r.planned.abnormal for r in rendered),
            len(feedback),
        )
    return summary
