"""What the DICOM writer puts in a file besides the pixels: patient/study and acquisition metadata.

Fields that can be wrong in the wild are optional free strings, so that a simulated site can
write a missing PatientAge, a ``"LATERAL"`` ViewPosition or an ``"ABDOMEN"`` BodyPartExamined.
Patient identifiers here are synthetic PHI: they exist so tests can prove that none of them
reaches the store.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Literal

import numpy as np

Photometric = Literal["MONOCHROME2", "MONOCHROME1"]

_FAMILY = ("SMITH", "MUELLER", "GARCIA", "NGUYEN", "ROSSI", "KOWALSKI", "OKAFOR", "TANAKA", "DUBOIS", "SILVA")
_GIVEN_F = ("ANNA", "MARIA", "LENA", "AMARA", "YUKI", "SOFIA", "CHLOE", "IDA")
_GIVEN_M = ("JAN", "LUCA", "OMAR", "KENJI", "PAUL", "MATEO", "NOAH", "IVAN")


@dataclass(frozen=True)
class StudyMeta:
    """Patient and study identity of one file (synthetic PHI).

    Args:
        study_instance_uid: the StudyInstanceUID; the store only ever sees its keyed hash.
        acquired_at: acquisition time (timezone-aware; naive means UTC); written to StudyDate,
            StudyTime, AcquisitionDateTime and ContentDate/Time.
        patient_name: DICOM PN, e.g. ``"DOE^JANE"``.
        patient_id: PatientID.
        patient_birth_date: PatientBirthDate, or None to leave it empty.
        patient_age: PatientAge written verbatim (DICOM AS such as ``"045Y"``, see :func:`format_age`);
            None leaves the tag out, any other string writes a garbled value.
        patient_sex: PatientSex written verbatim (``"M"``, ``"F"``, ``"O"``), None for empty.
        accession_number: AccessionNumber.
        series_instance_uid: SeriesInstanceUID; None derives one from the study UID.
        sop_instance_uid: SOPInstanceUID; None derives one from the study UID.
        study_description: StudyDescription.
    """

    study_instance_uid: str
    acquired_at: datetime
    patient_name: str = "DOE^JANE"
    patient_id: str = "PID0000000"
    patient_birth_date: date | None = None
    patient_age: str | None = None
    patient_sex: str | None = None
    accession_number: str = "ACC0000000"
    series_instance_uid: str | None = None
    sop_instance_uid: str | None = None
    study_description: str = "XR CHEST PA"


@dataclass(frozen=True)
class AcquisitionMeta:
    """Device, site and encoding of one file.

    Args:
        modality: ``"DX"`` writes Digital X-Ray Image Storage - For Presentation, ``"CR"`` Computed
            Radiography Image Storage; any other string is written verbatim into a DX file (to
            simulate a wrongly routed study).
        manufacturer: Manufacturer.
        model_name: ManufacturerModelName.
        institution_name: InstitutionName (the site).
        station_name: StationName, or None to leave it out.
        view_position: ViewPosition (``"PA"``, ``"AP"``, ``"LL"``...), None for empty.
        body_part: BodyPartExamined, None for empty.
        kvp: peak kilovoltage, kV; None leaves KVP out.
        exposure_mas: exposure, mAs; written as Exposure (integer mAs) and ExposureInuAs.
        pixel_spacing_mm: PixelSpacing and ImagerPixelSpacing (square pixels), mm; None derives it
            from ``detector_width_mm`` and the number of columns.
        detector_width_mm: width of the detector field, mm.
        bits_stored: BitsStored, 8 to 16 (BitsAllocated is always 16).
        photometric: MONOCHROME2 (bright = dense) or MONOCHROME1 (stored values inverted).
        window_center: WindowCenter in stored-value units; None derives it from the image.
        window_width: WindowWidth in stored-value units; None derives it from the image.
        omit: DICOM keywords to leave out of the file (e.g. ``("PixelSpacing", "ImagerPixelSpacing")``).
    """

    modality: str = "DX"
    manufacturer: str = "Simulated Imaging"
    model_name: str = "SimDR 1000"
    institution_name: str = "SITE A"
    station_name: str | None = None
    view_position: str | None = "PA"
    body_part: str | None = "CHEST"
    kvp: float | None = 120.0
    exposure_mas: float | None = 2.5
    pixel_spacing_mm: float | None = None
    detector_width_mm: float = 430.0
    bits_stored: int = 12
    photometric: Photometric = "MONOCHROME2"
    window_center: float | None = None
    window_width: float | None = None
    omit: tuple[str, ...] = ()


def format_age(age_years: float) -> str:
    """Return ``age_years`` as a DICOM Age String: days under a month, months under two years, else years.

    Examples: ``45.3 -> "045Y"``, ``0.7 -> "008M"``, ``0.02 -> "007D"``.

    Raises:
        ValueError: for a negative, non-finite or over-999-year age.
    """
    if not math.isfinite(age_years) or age_years < 0 or age_years >= 1000:
        raise ValueError(f"age must be in [0, 1000) years, got {age_years}")
    if age_years < 1 / 12:
        return f"{round(age_years * 365.25):03d}D"
    if age_years < 2:
        return f"{min(int(age_years * 12), 23):03d}M"
    return f"{int(age_years):03d}Y"


def uid_from(*parts: str) -> str:
    """Return a deterministic ``2.25.<int>`` UID: the first 128 bits of SHA-256 over ``parts``."""
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8")).digest()
    return f"2.25.{int.from_bytes(digest[:16], 'big')}"


def derived_uid(parent_uid: str, role: str) -> str:
    """Return a UID derived deterministically from ``parent_uid`` for ``role`` (e.g. ``"series"``)."""
    return uid_from(parent_uid, role)


def synthetic_study_meta(
    rng: np.random.Generator | int | None,
    *,
    acquired_at: datetime,
    age_years: float,
    sex: str,
    view_description: str = "PA",
) -> StudyMeta:
    """Return a :class:`StudyMeta` with random but plausible synthetic PHI.

    The StudyInstanceUID, names, PatientID and AccessionNumber all come from ``rng``, so a seed
    reproduces them; the birth date is consistent with ``age_years`` at ``acquired_at``.

    Args:
        rng: a seeded generator, or a seed.
        acquired_at: acquisition time (timezone-aware).
        age_years: the patient's age in years.
        sex: ``"M"``, ``"F"`` or ``"O"``.
        view_description: appended to the StudyDescription ``"XR CHEST "``.
    """
    rng = np.random.default_rng(rng)
    given = _GIVEN_F if sex == "F" else _GIVEN_M
    name = f"{_FAMILY[int(rng.integers(len(_FAMILY)))]}^{given[int(rng.integers(len(given)))]}"
    entropy = f"{int(rng.integers(2**62)):x}"
    birth = (acquired_at - timedelta(days=age_years * 365.25 + float(rng.uniform(0, 30)))).date()
    return StudyMeta(
        study_instance_uid=uid_from("synthetic-study", entropy),
        acquired_at=acquired_at if acquired_at.tzinfo else acquired_at.replace(tzinfo=UTC),
        patient_name=name,
        patient_id=f"PID{int(rng.integers(10**9)):09d}",
        patient_birth_date=birth,
        patient_age=format_age(age_years),
        patient_sex=sex,
        accession_number=f"ACC{int(rng.integers(10**9)):09d}",
        study_description=f"XR CHEST {view_description}",
    )
