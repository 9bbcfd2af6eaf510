"""Render a planned day into what hospitals produce: DICOM files, and what they know later.

For each planned study: a phantom with the site's device effects, a DICOM file with synthetic
PHI (so tests can prove it never leaks), its ground truth, and (for a share of studies, after a
delay) the radiologist's outcome as ``feedback``. File names and ids are pseudonymous.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np

from pipeline.dicom import AcquisitionMeta, pseudonymize_uid, synthetic_study_meta, write_dicom
from pipeline.dicom.meta import format_age
from pipeline.simulate.phantom import make_phantom
from pipeline.simulate.plan import PlannedStudy
from pipeline.simulate.scenario import Scenario


@dataclass(frozen=True)
class RenderedStudy:
    """A planned study written to storage."""

    planned: PlannedStudy
    study_id: str  # pseudonymous
    dicom_path: Path
    organ_fully_captured: bool


def dicom_path(storage_root: Path, planned: PlannedStudy, study_id: str) -> Path:
    """Return where a study's DICOM lives: ``dicom/<site>/<date>/<pseudonymous id>.dcm``."""
    return storage_root / "dicom" / planned.site.id / planned.acquired_at.date().isoformat() / f"{study_id}.dcm"


def render_study(planned: PlannedStudy, *, storage_root: Path, key: str, image_size: int) -> RenderedStudy:
    """Draw the phantom of ``planned`` and write its DICOM file (atomically; a re-run rewrites it identically)."""
    rng = np.random.default_rng(planned.render_seed)
    phantom = make_phantom(planned.patient, planned.acquisition, size=image_size, rng=rng)
    patient = planned.patient
    meta = synthetic_study_meta(
        rng,
        acquired_at=planned.acquired_at,
        age_years=patient.age_years,
        sex=patient.sex,
        view_description=planned.acquisition.view,
    )
    meta = dataclasses.replace(
        meta,
        study_instance_uid=planned.study_uid,
        patient_age=None if planned.tags.drop_age else format_age(patient.age_years),
    )
    device = planned.device
    acquisition = AcquisitionMeta(
        modality=device.modality,
        manufacturer=device.manufacturer,
        model_name=device.model_name,
        institution_name=planned.site.institution,
        station_name=device.id.upper(),
        view_position=planned.tags.view_position or planned.acquisition.view,
        body_part="CHEST" if planned.tags.body_part is None else (planned.tags.body_part or None),
        kvp=device.kvp,
        exposure_mas=device.exposure_mas,
        pixel_spacing_mm=device.pixel_spacing_mm * 2048 / image_size,  # the same field of view at any size
        bits_stored=device.bits_stored,
        photometric=device.photometric,
    )
    study_id = pseudonymize_uid(planned.study_uid, key)
    path = write_dicom(dicom_path(storage_root, planned, study_id), phantom.image, meta, acquisition)
    return RenderedStudy(planned, study_id, path, phantom.organ_fully_captured)


def ground_truth_row(scenario: Scenario, rendered: RenderedStudy) -> dict[str, object]:
    """Return the ``ground_truth`` row of a rendered study."""
    planned = rendered.planned
    tags = planned.tags
    return {
        "study_id": rendered.study_id,
        "scenario": scenario.name,
        "day": planned.day,
        "site": planned.site.id,
        "device_id": planned.device.id,
        "acquired_at": planned.acquired_at,
        "abnormal": planned.abnormal,
        "findings": ",".join(planned.patient.findings),
        "organ_fully_captured": rendered.organ_fully_captured,
        "patient_age_years": planned.patient.age_years,
        "patient_sex": planned.patient.sex,
        "view": planned.acquisition.view,
        "foreign_objects": ",".join(planned.acquisition.foreign_objects),
        "tag_error": tags.drop_age or tags.view_position is not None or tags.body_part is not None,
        "injected_failure": None if planned.failure is None else str(planned.failure),
    }


def feedback_row(
    scenario: Scenario, rendered: RenderedStudy, decision: dict[str, object] | None = None
) -> dict[str, object] | None:
    """Return the radiologist's later outcome for a study, or None when none comes back.

    Studies the model sent to a radiologist (decision ``abnormal``) come back more often
    (``extra_rate_when_flagged``); with the model's log row at hand the outcome also says whether
    the radiologist agreed. Whether and when it comes back is drawn from the study's own seed,
    so it does not depend on which other studies were simulated.

    Args:
        scenario: the world (its ``feedback`` settings).
        rendered: the study.
        decision: the study's inference-log row, if it was scored.
    """
    rng = np.random.default_rng([rendered.planned.render_seed, 1])
    fb = scenario.feedback
    flagged = decision is not None and decision.get("decision") == "abnormal"
    draw, extra = rng.random(), rng.random()
    if draw >= fb.rate and not (flagged and extra < fb.extra_rate_when_flagged):
        return None
    planned = rendered.planned
    delay = timedelta(days=float(rng.uniform(fb.min_delay_days, max(fb.min_delay_days, fb.max_delay_days))))
    row: dict[str, object] = {
        "study_id": rendered.study_id,
        "site": planned.site.id,
        "reported_at": planned.acquired_at + delay,
        "final_abnormal": planned.abnormal,
        "final_finding": planned.patient.findings[0] if planned.patient.findings else "normal",
    }
    if decision is not None and decision.get("status") == "ok":
        row["model_version"] = decision["model_version"]
        row["agrees_with_model"] = (decision["decision"] == "abnormal") == planned.abnormal
    return row
