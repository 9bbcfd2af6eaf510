"""Exceptions of the DICOM layer; each names the store's ``error_type`` it maps to.

Messages are one line: the file's base name, then the problem in a PACS administrator's words and
the offending field (``IM0001.dcm: not a chest radiograph: body part 'HAND' (BodyPartExamined)``),
never a patient identifier.
"""

from __future__ import annotations

from typing import ClassVar


class DicomError(Exception):
    """Base class of the DICOM layer's errors.

    Args:
        message: what went wrong, with the file name and the field.
        source: base name of the file (or ``"<buffer>"``).
        field: the DICOM keyword at fault, when one is.
    """

    error_type: ClassVar[str] = "dicom_read_error"
    """Value of ``pipeline.store.schema.ErrorType`` that an inference log records for this error."""

    def __init__(self, message: str, *, source: str | None = None, field: str | None = None) -> None:
        super().__init__(message)
        self.source = source
        self.field = field


class UnreadableDicom(DicomError):
    """The file is empty, not DICOM, truncated (also a header only), corrupt, without pixel data, or lacks a tag
    every study must have (StudyInstanceUID)."""

    error_type: ClassVar[str] = "dicom_read_error"


class UnsupportedPixelData(UnreadableDicom):
    """The pixel data cannot be decoded here: a transfer syntax without a decoder, a codestream the decoders
    refuse (or crash on), float pixel data, or a bit depth or image size the pipeline does not take."""

    error_type: ClassVar[str] = "unsupported_pixel_data"


class NotChestRadiograph(DicomError):
    """A readable DICOM that is not a single-frame grayscale chest projection radiograph: a modality other than
    CR, DX, DR (or none), a BodyPartExamined other than the chest, several frames, or a colour image."""

    error_type: ClassVar[str] = "not_chest_radiograph"


class DicomWriteError(DicomError, ValueError):
    """The writer was given an image or metadata it cannot turn into a valid file."""

    error_type: ClassVar[str] = "internal_error"
