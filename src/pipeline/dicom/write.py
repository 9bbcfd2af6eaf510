"""Write a chest radiograph as a DX or CR DICOM file (Explicit VR Little Endian)."""

from __future__ import annotations

import os
import tempfile
import warnings
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    ComputedRadiographyImageStorage,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
)

from pipeline.dicom.errors import DicomWriteError
from pipeline.dicom.meta import AcquisitionMeta, StudyMeta, derived_uid

_ORIENTATION = {"PA": ["L", "F"], "AP": ["L", "F"]}  # as displayed: patient's left on the viewer's right


def to_stored(image: np.ndarray, *, bits_stored: int = 12, photometric: str = "MONOCHROME2") -> np.ndarray:
    """Return the stored pixel values of a display image.

    Args:
        image: (H, W) float in [0, 1], bright = dense; values outside are clipped.
        bits_stored: BitsStored, 8 to 16; values span ``0 .. 2**bits_stored - 1``.
        photometric: ``"MONOCHROME1"`` inverts the values (bright = low).

    Returns:
        (H, W) uint16.

    Raises:
        DicomWriteError: for a non-2D or non-finite image, or an unsupported bit depth.
    """
    if image.ndim != 2:
        raise DicomWriteError(f"image must be 2D (H, W), got shape {image.shape}", field="PixelData")
    if not 8 <= bits_stored <= 16:
        raise DicomWriteError(f"BitsStored must be in [8, 16], got {bits_stored}", field="BitsStored")
    if not np.isfinite(image).all():
        raise DicomWriteError("image has non-finite values", field="PixelData")
    max_value = (1 << bits_stored) - 1
    scaled = np.clip(image.astype(np.float64, copy=False), 0.0, 1.0) * max_value
    stored = np.rint(scaled).astype(np.uint16)
    if photometric == "MONOCHROME1":
        stored = np.uint16(max_value) - stored
    elif photometric != "MONOCHROME2":
        raise DicomWriteError(f"photometric must be MONOCHROME1 or MONOCHROME2, got {photometric!r}")
    return stored


def _ds(value: float) -> str:
    """Return a DICOM Decimal String of at most 16 characters."""
    text = f"{value:.10g}"
    return text if len(text) <= 16 else f"{value:.6g}"


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def build_dataset(image: np.ndarray, study: StudyMeta, acquisition: AcquisitionMeta | None = None) -> Dataset:
    """Return the dataset (with file meta) that :func:`write_dicom` saves.

    Args:
        image: (H, W) float in [0, 1], bright = dense.
        study: patient and study identity.
        acquisition: device, site and encoding; default a clean DX PA acquisition.
    """
    with warnings.catch_warnings():
        # garbled values (a "45" PatientAge, an "f" PatientSex) are written on purpose
        warnings.filterwarnings("ignore", message="Invalid value for VR", category=UserWarning)
        return _build(image, study, acquisition or AcquisitionMeta())


def _build(image: np.ndarray, study: StudyMeta, acq: AcquisitionMeta) -> Dataset:
    stored = to_stored(image, bits_stored=acq.bits_stored, photometric=acq.photometric)
    rows, cols = stored.shape
    modality = acq.modality
    sop_class = ComputedRadiographyImageStorage if modality == "CR" else DigitalXRayImageStorageForPresentation
    study_uid = study.study_instance_uid
    series_uid = study.series_instance_uid or derived_uid(study_uid, "series")
    sop_uid = study.sop_instance_uid or derived_uid(study_uid, "instance")
    when = _utc(study.acquired_at)
    date_s, time_s = when.strftime("%Y%m%d"), when.strftime("%H%M%S.%f")

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID

    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    # patient
    ds.PatientName = study.patient_name
    ds.PatientID = study.patient_id
    ds.PatientBirthDate = study.patient_birth_date.strftime("%Y%m%d") if study.patient_birth_date else ""
    ds.PatientSex = study.patient_sex or ""
    if study.patient_age is not None:
        ds.PatientAge = study.patient_age
    # study
    ds.StudyInstanceUID = study_uid
    ds.StudyDate = date_s
    ds.StudyTime = time_s
    ds.StudyID = "1"
    ds.AccessionNumber = study.accession_number
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = study.study_description
    # series and equipment
    ds.Modality = modality
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = 1
    ds.SeriesDate = date_s
    ds.SeriesTime = time_s
    ds.BodyPartExamined = acq.body_part or ""
    ds.ViewPosition = acq.view_position or ""
    if modality != "CR":
        ds.PresentationIntentType = "FOR PRESENTATION"
    ds.Manufacturer = acq.manufacturer
    ds.ManufacturerModelName = acq.model_name
    ds.InstitutionName = acq.institution_name
    if acq.station_name is not None:
        ds.StationName = acq.station_name
    # image
    ds.InstanceNumber = 1
    ds.ImageType = ["DERIVED", "PRIMARY"] if modality != "CR" else ["ORIGINAL", "PRIMARY"]
    ds.ContentDate = date_s
    ds.ContentTime = time_s
    ds.AcquisitionDateTime = when.strftime("%Y%m%d%H%M%S.%f") + "+0000"
    ds.TimezoneOffsetFromUTC = "+0000"
    ds.PatientOrientation = _ORIENTATION.get(acq.view_position or "", "")
    ds.ImageLaterality = "U"
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    # acquisition
    if acq.kvp is not None:
        ds.KVP = _ds(acq.kvp)
    if acq.exposure_mas is not None:
        ds.Exposure = round(acq.exposure_mas)
        ds.ExposureInuAs = round(acq.exposure_mas * 1000)
    spacing = acq.pixel_spacing_mm if acq.pixel_spacing_mm is not None else acq.detector_width_mm / cols
    ds.ImagerPixelSpacing = [_ds(spacing), _ds(spacing)]
    ds.PixelSpacing = [_ds(spacing), _ds(spacing)]
    ds.DetectorType = "SCINTILLATOR"
    # pixel encoding
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = acq.photometric
    ds.Rows = rows
    ds.Columns = cols
    ds.BitsAllocated = 16
    ds.BitsStored = acq.bits_stored
    ds.HighBit = acq.bits_stored - 1
    ds.PixelRepresentation = 0
    ds.PixelIntensityRelationship = "LOG"
    ds.PixelIntensityRelationshipSign = 1 if acq.photometric == "MONOCHROME1" else -1  # -1: high = dense
    ds.RescaleIntercept = "0"
    ds.RescaleSlope = "1"
    ds.RescaleType = "US"
    ds.PresentationLUTShape = "INVERSE" if acq.photometric == "MONOCHROME1" else "IDENTITY"
    if acq.window_center is not None and acq.window_width is not None:
        center, width = acq.window_center, acq.window_width
    else:
        lo, hi = np.percentile(stored, [1.0, 99.0])
        center, width = (lo + hi) / 2.0, max(hi - lo, 1.0)
    ds.WindowCenter = _ds(float(center))
    ds.WindowWidth = _ds(float(width))
    ds.PixelData = stored.astype("<u2", copy=False).tobytes()

    for keyword in acq.omit:
        if keyword in ds:
            delattr(ds, keyword)
    return ds


def write_dicom(
    path: str | os.PathLike[str],
    image: np.ndarray,
    study: StudyMeta,
    acquisition: AcquisitionMeta | None = None,
) -> Path:
    """Write ``image`` as a DICOM file at ``path`` and return the path.

    The file appears atomically: it is written to a temporary file in the same folder and
    renamed, so a reader never sees half a file and a re-run overwrites it whole.

    Args:
        path: target file; its folder is created.
        image: (H, W) float in [0, 1], bright = dense (as :mod:`pipeline.simulate` draws it).
        study: patient and study identity (synthetic PHI).
        acquisition: device, site and encoding; default a clean DX PA acquisition.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        DicomWriteError: for an image or encoding the writer cannot store.
    """
    target = Path(path)
    ds = build_dataset(image, study, acquisition)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            ds.save_as(handle, enforce_file_format=True)
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return target
