"""The DICOM layer: pseudonymous ids, writing and reading chest radiographs, PNG renderings.

Reading turns any file into either a :class:`StudyRecord` (the pseudonymous tag record the
store keeps, with image statistics) and display pixels, or one of the exceptions below, whose
``error_type`` is the store's error type (``docs/dicom.md``: what is accepted, the decoders, the scaling).
"""

from __future__ import annotations

from pipeline.dicom.decode import DECODE_TIMEOUT_S
from pipeline.dicom.errors import DicomError, DicomWriteError, NotChestRadiograph, UnreadableDicom, UnsupportedPixelData
from pipeline.dicom.meta import AcquisitionMeta, StudyMeta, derived_uid, format_age, synthetic_study_meta, uid_from
from pipeline.dicom.pseudonymize import STUDY_ID_HEX_CHARS, pseudonymize_patient_id, pseudonymize_uid
from pipeline.dicom.read import (
    CHEST_BODY_PARTS,
    MAX_IMAGE_PIXELS,
    RADIOGRAPH_MODALITIES,
    STUDY_TEXT_MAX_CHARS,
    ImageStats,
    LoadedStudy,
    StudyRecord,
    clean_text,
    image_statistics,
    is_chest_body_part,
    load_study,
    parse_age,
    read_pixels,
    read_study,
)
from pipeline.dicom.render import render_png, window_to_uint8
from pipeline.dicom.write import build_dataset, to_stored, write_dicom

__all__ = [
    "CHEST_BODY_PARTS",
    "DECODE_TIMEOUT_S",
    "MAX_IMAGE_PIXELS",
    "RADIOGRAPH_MODALITIES",
    "STUDY_ID_HEX_CHARS",
    "STUDY_TEXT_MAX_CHARS",
    "AcquisitionMeta",
    "DicomError",
    "DicomWriteError",
    "ImageStats",
    "LoadedStudy",
    "NotChestRadiograph",
    "StudyMeta",
    "StudyRecord",
    "UnreadableDicom",
    "UnsupportedPixelData",
    "build_dataset",
    "clean_text",
    "derived_uid",
    "format_age",
    "image_statistics",
    "is_chest_body_part",
    "load_study",
    "parse_age",
    "pseudonymize_patient_id",
    "pseudonymize_uid",
    "read_pixels",
    "read_study",
    "render_png",
    "synthetic_study_meta",
    "to_stored",
    "uid_from",
    "window_to_uint8",
    "write_dicom",
]
