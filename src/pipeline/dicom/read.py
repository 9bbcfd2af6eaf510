"""Read a chest radiograph: the pseudonymous tag record the store keeps, and the display pixels.

Everything that can go wrong with a file from the wild ends as one of the exceptions of
:mod:`pipeline.dicom.errors`; a tag that is missing or garbled but not essential reads as None
(the quality checks downstream judge it), and no patient identifier leaves this module.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.valuerep import DT

from pipeline.dicom.errors import DicomError, NotChestRadiograph, UnreadableDicom, UnsupportedPixelData
from pipeline.dicom.pseudonymize import pseudonymize_patient_id, pseudonymize_uid

RADIOGRAPH_MODALITIES: tuple[str, ...] = ("CR", "DX", "DR")
"""Modalities the normal filter accepts (DR is not a DICOM term but some devices write it)."""

_AGE = re.compile(r"^(\d{1,3})([DWMY])$")
_AGE_UNIT_YEARS = {"D": 1 / 365.25, "W": 7 / 365.25, "M": 1 / 12, "Y": 1.0}

Source = str | os.PathLike[str] | IO[bytes]


@dataclass(frozen=True)
class ImageStats:
    """Statistics of the stored values scaled to [0, 1] by BitsStored, bright = dense.

    Args:
        mean: mean value.
        std: standard deviation.
        p01: 1st percentile.
        p50: median.
        p99: 99th percentile.
        clipped_frac: share of pixels at the lowest or highest value BitsStored allows.
    """

    mean: float
    std: float
    p01: float
    p50: float
    p99: float
    clipped_frac: float


@dataclass(frozen=True)
class StudyRecord:
    """The pseudonymous tag record of one study; field names are columns of the store's ``studies`` table.

    The caller adds ``site`` and ``dicom_uri``. No patient name, id, birth date, accession
    number or original UID is kept; ``patient_key`` is a keyed hash of the PatientID, like the study id.
    """

    study_id: str
    acquired_at: datetime | None
    modality: str | None
    manufacturer: str | None
    model_name: str | None
    view_position: str | None
    body_part: str | None
    kvp: float | None
    exposure_mas: float | None
    pixel_spacing_mm: float | None
    rows: int
    columns: int
    bits_stored: int
    photometric: str
    patient_age_years: float | None
    patient_sex: str | None
    img_mean: float
    img_std: float
    img_p01: float
    img_p50: float
    img_p99: float
    img_clipped_frac: float
    patient_key: str | None = None  # keyed hash of the PatientID; None when the file has none


@dataclass(frozen=True, eq=False)
class LoadedStudy:
    """A study read once: its record and its display pixels.

    Args:
        record: the pseudonymous tag record.
        pixels: (H, W) float32 in [0, 1], bright = dense (MONOCHROME1 already inverted).
    """

    record: StudyRecord
    pixels: np.ndarray


def parse_age(value: object) -> float | None:
    """Return a DICOM Age String (``"045Y"``, ``"008M"``, ``"003W"``, ``"012D"``) in years.

    Returns None for a missing, empty or garbled value (no unit, wrong unit, not a number).
    Up to three digits are accepted, so ``"45Y"`` reads as 45 years.
    """
    if value is None:
        return None
    match = _AGE.match(str(value).strip().upper())
    if match is None:
        return None
    return int(match.group(1)) * _AGE_UNIT_YEARS[match.group(2)]


def image_statistics(
    stored: np.ndarray, *, bits_stored: int, photometric: str, signed: bool = False
) -> tuple[np.ndarray, ImageStats]:
    """Return the display image and its statistics from stored pixel values.

    Args:
        stored: (H, W) integer stored values.
        bits_stored: BitsStored; the values are scaled from its full range to [0, 1].
        photometric: ``"MONOCHROME1"`` inverts, so that bright = dense for both interpretations.
        signed: PixelRepresentation 1 (two's complement values).

    Returns:
        ``(pixels, stats)``: (H, W) float32 in [0, 1] and its :class:`ImageStats`.
    """
    if signed:
        lo, hi = -(1 << (bits_stored - 1)), (1 << (bits_stored - 1)) - 1
    else:
        lo, hi = 0, (1 << bits_stored) - 1
    values = stored.astype(np.float32, copy=False)
    clipped = float(np.count_nonzero((values <= lo) | (values >= hi))) / max(values.size, 1)
    pixels = (values - np.float32(lo)) * np.float32(1.0 / (hi - lo))
    np.clip(pixels, 0.0, 1.0, out=pixels)
    if photometric == "MONOCHROME1":
        pixels = np.float32(1.0) - pixels
    p01, p50, p99 = (float(v) for v in np.percentile(pixels, [1.0, 50.0, 99.0]))
    stats = ImageStats(
        mean=float(pixels.mean(dtype=np.float64)),
        std=float(pixels.std(dtype=np.float64)),
        p01=p01,
        p50=p50,
        p99=p99,
        clipped_frac=clipped,
    )
    return pixels.astype(np.float32, copy=False), stats


def _name(source: Source) -> str:
    if isinstance(source, (str, os.PathLike)):
        return Path(source).name
    return Path(str(getattr(source, "name", "<buffer>"))).name


def _get(ds: Dataset, keyword: str) -> Any:
    """Return the value of ``keyword``, or None when it is absent, empty or cannot be decoded."""
    try:
        value = ds.get(keyword)
    except (ValueError, TypeError, KeyError, AttributeError, OverflowError, UnicodeError):
        return None
    if value is None or value == "" or (hasattr(value, "__len__") and len(value) == 0):
        return None
    return value


def _first(value: Any) -> Any:
    if isinstance(value, (list, tuple, MultiValue)):
        return value[0] if len(value) else None
    return value


def _text(ds: Dataset, keyword: str) -> str | None:
    value = _first(_get(ds, keyword))
    if value is None:
        return None
    text = str(value).strip("\x00 ")
    return text or None


def _float(ds: Dataset, keyword: str) -> float | None:
    value = _first(_get(ds, keyword))
    try:
        number = float(value) if value is not None else None
    except (TypeError, ValueError, OverflowError):
        return None
    return number if number is not None and math.isfinite(number) else None


def _int(ds: Dataset, keyword: str) -> int | None:
    number = _float(ds, keyword)
    return int(number) if number is not None and number.is_integer() else None


def _exposure_mas(ds: Dataset) -> float | None:
    micro = _float(ds, "ExposureInuAs")
    if micro is not None:
        return micro / 1000.0
    milli = _float(ds, "ExposureInmAs")
    return milli if milli is not None else _float(ds, "Exposure")


def _pixel_spacing_mm(ds: Dataset) -> float | None:
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = _float(ds, keyword)
        if value is not None and value > 0:
            return value
    return None


def _acquired_at(ds: Dataset) -> datetime | None:
    """Return AcquisitionDateTime (else StudyDate + StudyTime) as UTC, None when absent or garbled."""
    offset = _text(ds, "TimezoneOffsetFromUTC")
    candidates = [_text(ds, "AcquisitionDateTime")]
    study_date, study_time = _text(ds, "StudyDate"), _text(ds, "StudyTime")
    if study_date:
        candidates.append(study_date + (study_time or "") + (offset or ""))
    for text in candidates:
        if not text:
            continue
        try:
            moment = DT(text)
        except (ValueError, TypeError, OverflowError):
            continue
        naive = datetime.combine(moment.date(), moment.time())
        utc_offset = moment.utcoffset()
        if utc_offset is None and offset and re.fullmatch(r"[+-]\d{4}", offset):
            sign = 1 if offset[0] == "+" else -1
            utc_offset = sign * timedelta(hours=int(offset[1:3]), minutes=int(offset[3:5]))
        return (naive - (utc_offset or timedelta(0))).replace(tzinfo=UTC)
    return None


def _patient_key(ds: Dataset, key: str | bytes) -> str | None:
    patient_id = _text(ds, "PatientID")
    return pseudonymize_patient_id(patient_id, key) if patient_id else None


def _open(source: Source, name: str) -> Dataset:
    try:
        return pydicom.dcmread(source, force=False)
    except InvalidDicomError as exc:
        raise UnreadableDicom(f"{name}: not a DICOM file ({exc})", source=name) from exc
    except (OSError, EOFError) as exc:
        raise UnreadableDicom(f"{name}: cannot read the file ({type(exc).__name__})", source=name) from exc
    except Exception as exc:  # pydicom raises many types on corrupt headers; all mean the same here
        raise UnreadableDicom(f"{name}: corrupt DICOM header ({type(exc).__name__})", source=name) from exc


def _check_radiograph(ds: Dataset, name: str) -> None:
    modality = _text(ds, "Modality")
    if modality is None:
        raise NotChestRadiograph(f"{name}: Modality is missing", source=name, field="Modality")
    if modality.upper() not in RADIOGRAPH_MODALITIES:
        raise NotChestRadiograph(
            f"{name}: Modality {modality!r} is not a radiograph ({', '.join(RADIOGRAPH_MODALITIES)})",
            source=name,
            field="Modality",
        )
    if "PixelData" not in ds:
        if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
            raise UnsupportedPixelData(f"{name}: FloatPixelData is not supported", source=name, field="FloatPixelData")
        raise NotChestRadiograph(f"{name}: PixelData is missing", source=name, field="PixelData")
    frames = _int(ds, "NumberOfFrames")
    if frames is not None and frames != 1:
        raise NotChestRadiograph(f"{name}: NumberOfFrames is {frames}, want 1", source=name, field="NumberOfFrames")
    samples = _int(ds, "SamplesPerPixel")
    if samples is not None and samples != 1:
        raise NotChestRadiograph(
            f"{name}: SamplesPerPixel is {samples}, want 1 (grayscale)", source=name, field="SamplesPerPixel"
        )
    photometric = _text(ds, "PhotometricInterpretation")
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise NotChestRadiograph(
            f"{name}: PhotometricInterpretation {photometric!r} is not MONOCHROME1/2",
            source=name,
            field="PhotometricInterpretation",
        )


def _decode(ds: Dataset, name: str) -> tuple[np.ndarray, int, bool]:
    """Return the stored values (H, W), BitsStored and whether they are signed."""
    allocated = _int(ds, "BitsAllocated")
    if allocated not in (8, 16, 32):
        raise UnsupportedPixelData(
            f"{name}: BitsAllocated {allocated} is not supported", source=name, field="BitsAllocated"
        )
    bits_stored = _int(ds, "BitsStored") or allocated
    if not 1 <= bits_stored <= allocated:
        raise UnreadableDicom(
            f"{name}: BitsStored {bits_stored} > BitsAllocated {allocated}", source=name, field="BitsStored"
        )
    rows, cols = _int(ds, "Rows"), _int(ds, "Columns")
    if not rows or not cols:
        raise UnreadableDicom(f"{name}: Rows or Columns missing or zero", source=name, field="Rows")
    transfer_syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    try:
        stored = ds.pixel_array
    except Exception as exc:  # decoders raise anything from RuntimeError to struct.error
        compressed = bool(getattr(transfer_syntax, "is_compressed", False))
        cls = UnsupportedPixelData if compressed else UnreadableDicom
        what = f"transfer syntax {transfer_syntax}" if compressed else "pixel data"
        raise cls(
            f"{name}: PixelData: cannot decode {what} ({type(exc).__name__}: {exc})", source=name, field="PixelData"
        ) from exc
    if stored.ndim != 2 or stored.shape != (rows, cols):
        raise NotChestRadiograph(
            f"{name}: PixelData of shape {stored.shape} is not one {rows}x{cols} image", source=name, field="PixelData"
        )
    if not np.issubdtype(stored.dtype, np.integer):
        raise UnsupportedPixelData(
            f"{name}: PixelData of type {stored.dtype} is not supported", source=name, field="PixelData"
        )
    return stored, bits_stored, _int(ds, "PixelRepresentation") == 1


def load_study(source: Source, key: str | bytes) -> LoadedStudy:
    """Return the pseudonymous record and the display pixels of one chest radiograph.

    Args:
        source: a path, or a binary file object (its ``name``, if any, is used in messages).
        key: the pseudonymisation key of the StudyInstanceUID.

    Raises:
        UnreadableDicom: not DICOM, truncated, corrupt, or without StudyInstanceUID.
        UnsupportedPixelData: pixel data that cannot be decoded here (compressed without decoder,
            float, unusual bit depth).
        NotChestRadiograph: a modality other than CR/DX/DR, several frames, colour, or no image.
    """
    if not key:
        raise ValueError("the pseudonymisation key must not be empty")
    with warnings.catch_warnings():
        # pydicom warns about every odd value it reads and also logs it; the record shows them as None
        warnings.simplefilter("ignore", UserWarning)
        return _load(source, key)


def _load(source: Source, key: str | bytes) -> LoadedStudy:
    name = _name(source)
    ds = _open(source, name)
    try:
        _check_radiograph(ds, name)
        study_uid = _text(ds, "StudyInstanceUID")
        if study_uid is None:
            raise UnreadableDicom(f"{name}: StudyInstanceUID is missing", source=name, field="StudyInstanceUID")
        stored, bits_stored, signed = _decode(ds, name)
        photometric = str(_text(ds, "PhotometricInterpretation"))
        pixels, stats = image_statistics(stored, bits_stored=bits_stored, photometric=photometric, signed=signed)
        sex = _text(ds, "PatientSex")
        record = StudyRecord(
            study_id=pseudonymize_uid(study_uid, key),
            acquired_at=_acquired_at(ds),
            modality=_text(ds, "Modality"),
            manufacturer=_text(ds, "Manufacturer"),
            model_name=_text(ds, "ManufacturerModelName"),
            view_position=_text(ds, "ViewPosition"),
            body_part=_text(ds, "BodyPartExamined"),
            kvp=_float(ds, "KVP"),
            exposure_mas=_exposure_mas(ds),
            pixel_spacing_mm=_pixel_spacing_mm(ds),
            rows=int(stored.shape[0]),
            columns=int(stored.shape[1]),
            bits_stored=bits_stored,
            photometric=photometric,
            patient_age_years=parse_age(_text(ds, "PatientAge")),
            patient_sex=sex.upper() if sex and sex.upper() in ("M", "F", "O") else None,
            img_mean=stats.mean,
            img_std=stats.std,
            img_p01=stats.p01,
            img_p50=stats.p50,
            img_p99=stats.p99,
            img_clipped_frac=stats.clipped_frac,
            patient_key=_patient_key(ds, key),
        )
    except DicomError:
        raise
    except Exception as exc:  # a malformed element deep in the dataset; the file is unusable
        raise UnreadableDicom(f"{name}: malformed dataset ({type(exc).__name__})", source=name) from exc
    return LoadedStudy(record=record, pixels=pixels)


def read_study(source: Source, key: str | bytes) -> StudyRecord:
    """Return the pseudonymous tag record of one chest radiograph (see :func:`load_study`)."""
    return load_study(source, key).record


def read_pixels(source: Source) -> np.ndarray:
    """Return the display pixels of one chest radiograph: (H, W) float32 in [0, 1], bright = dense.

    Stored values are scaled from the BitsStored range; MONOCHROME1 is inverted. Raises the
    same exceptions as :func:`load_study`.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return _pixels(source)


def _pixels(source: Source) -> np.ndarray:
    name = _name(source)
    ds = _open(source, name)
    try:
        _check_radiograph(ds, name)
        stored, bits_stored, signed = _decode(ds, name)
        photometric = str(_text(ds, "PhotometricInterpretation"))
        pixels, _ = image_statistics(stored, bits_stored=bits_stored, photometric=photometric, signed=signed)
    except DicomError:
        raise
    except Exception as exc:
        raise UnreadableDicom(f"{name}: malformed dataset ({type(exc).__name__})", source=name) from exc
    return pixels
