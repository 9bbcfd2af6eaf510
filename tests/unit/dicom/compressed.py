"""Compressed and relabelled copies of DICOM files for the tests, from pydicom's encoders and GDCM's.

pydicom 3 encodes RLE Lossless itself and JPEG 2000 through pylibjpeg-openjpeg; GDCM (python-gdcm, a
dependency for decoding) also encodes JPEG Lossless, JPEG Extended (12-bit) and JPEG-LS, which pydicom
cannot without the encoders the project does not install.
"""

from __future__ import annotations

from pathlib import Path

import pydicom
from pydicom.uid import (
    JPEG2000,
    JPEG2000Lossless,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

PYDICOM_ENCODED = (RLELossless, JPEG2000Lossless, JPEG2000)
GDCM_ENCODED = (JPEGLossless, JPEGLosslessSV1, JPEGExtended12Bit, JPEGLSLossless, JPEGLSNearLossless)


def compress_copy(source: Path, target: Path, syntax: str, **options: object) -> Path:
    """Write ``source`` compressed to ``syntax`` with pydicom's ``Dataset.compress`` (OpenJPEG for JPEG 2000)."""
    ds = pydicom.dcmread(source)
    if syntax in (JPEG2000Lossless, JPEG2000):
        options.setdefault("encoding_plugin", "pylibjpeg")
    ds.compress(syntax, **options)  # type: ignore[arg-type]
    ds.save_as(target, enforce_file_format=True)
    return target


def gdcm_copy(source: Path, target: Path, syntax: str, *, near: int | None = None, quality: int | None = None) -> Path:
    """Write ``source`` compressed to ``syntax`` by GDCM.

    Args:
        near: the JPEG-LS NEAR value (largest error per pixel, stored units) for near-lossless.
        quality: the JPEG quality (1-100) for JPEG Extended.
    """
    import gdcm

    names = {
        JPEGLossless: gdcm.TransferSyntax.JPEGLosslessProcess14,
        JPEGLosslessSV1: gdcm.TransferSyntax.JPEGLosslessProcess14_1,
        JPEGExtended12Bit: gdcm.TransferSyntax.JPEGExtendedProcess2_4,
        JPEGLSLossless: gdcm.TransferSyntax.JPEGLSLossless,
        JPEGLSNearLossless: gdcm.TransferSyntax.JPEGLSNearLossless,
    }
    reader = gdcm.ImageReader()
    reader.SetFileName(str(source))
    assert reader.Read(), source
    change = gdcm.ImageChangeTransferSyntax()
    change.SetTransferSyntax(gdcm.TransferSyntax(names[syntax]))
    if near is not None:
        codec = gdcm.JPEGLSCodec()
        codec.SetLossless(False)
        codec.SetLossyError(near)
        change.SetUserCodec(codec)
    if quality is not None:
        jpeg = gdcm.JPEGCodec()
        jpeg.SetLossless(False)
        jpeg.SetQuality(quality)
        change.SetUserCodec(jpeg)
    change.SetInput(reader.GetImage())
    assert change.Change(), syntax
    writer = gdcm.ImageWriter()
    writer.SetFileName(str(target))
    writer.SetFile(reader.GetFile())
    writer.SetImage(change.GetOutput())
    assert writer.Write(), target
    return target


def as_chest_dx(source: str | Path, target: Path) -> Path:
    """Write a copy of ``source`` (pixel data untouched) labelled as a DX chest study with a StudyInstanceUID."""
    ds = pydicom.dcmread(source)
    ds.Modality = "DX"
    ds.BodyPartExamined = "CHEST"
    if "StudyInstanceUID" not in ds:
        ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    ds.save_as(target)
    return target
