"""Run a scenario day by day: DICOM files to storage, ground truth, tags and feedback to the store."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from sqlalchemy.engine import Engine
from tqdm import tqdm

from pipeline.dicom import DicomError, read_study
from pipeline.simulate.generate import RenderedStudy, feedback_row, ground_truth_row, render_study
from pipeline.simulate.plan import plan_day
from pipeline.simulate.scenario import Scenario
from pipeline.store import ingest

log = logging.getLogger(__name__)

DayHook = Callable[[int, Sequence[RenderedStudy]], None]
"""Called after each simulated day with the day index and its studies (e.g. the inference service)."""


@dataclass
class SimulationSummary:
    """Counts of what a simulation run wrote."""

    scenario: str
    days: list[int] = field(default_factory=list)
    studies: int = 0
    abnormal: int = 0
    feedback: int = 0
    unreadable: int = 0
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


def simulate(
    scenario: Scenario,
    *,
    engine: Engine,
    storage_root: Path,
    key: str,
    days: Sequence[int],
    image_size: int | None = None,
    after_day: DayHook | None = None,
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
        after_day: called with each day's studies once they are written (the inference service).
        progress: show a progress bar.
    """
    size = image_size or scenario.image_size
    summary = SimulationSummary(scenario=scenario.name)
    for day in days:
        planned = plan_day(scenario, day)
        label = f"{scenario.name} day {day} ({scenario.start + pd.Timedelta(days=day):%Y-%m-%d})"
        rendered = [
            render_study(p, storage_root=storage_root, key=key, image_size=size)
            for p in tqdm(planned, desc=label, unit="study", disable=not progress, leave=False)
        ]
        study_rows = []
        for r in rendered:
            try:
                study_rows.append(studies_row(r, key))
            except DicomError as exc:  # cannot happen for our own files unless storage is broken
                summary.unreadable += 1
                log.error("simulated study unreadable: %s", exc)
        truth = [ground_truth_row(scenario, r) for r in rendered]
        feedback = [row for r in rendered if (row := feedback_row(scenario, r)) is not None]
        source = f"simulate:{scenario.name}:day{day}"
        ingest(engine, "studies", pd.DataFrame(study_rows), source=source)
        ingest(engine, "ground_truth", pd.DataFrame(truth), source=source)
        if feedback:
            ingest(engine, "feedback", pd.DataFrame(feedback), source=source)
        if after_day is not None:
            after_day(day, rendered)
        summary.days.append(day)
        summary.studies += len(rendered)
        summary.abnormal += sum(r.planned.abnormal for r in rendered)
        summary.feedback += len(feedback)
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
