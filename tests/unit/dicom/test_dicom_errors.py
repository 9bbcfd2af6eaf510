"""Every bad input ends as one of the DICOM layer's exceptions, with the right error type."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_files
from pydicom.encaps import encapsulate
from pydicom.uid import JPEGLSLossless

from pipeline.dicom import (
    AcquisitionMeta,
    DicomError,
    DicomWriteError,
    LoadedStudy,
    NotChestRadiograph,
    StudyMeta,
    UnreadableDicom,
    UnsupportedPixelData,
    build_dataset,
    load_study,
    read_pixels,
    read_study,
    write_dicom,
)

KEY = "test-key"


def _save(ds: pydicom.Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path


def test_error_types_are_the_store_error_types() -> None:
    from pipeline.store.schema import ErrorType

    assert UnreadableDicom.error_type == ErrorType.DICOM_READ_ERROR
    assert UnsupportedPixelData.error_type == ErrorType.UNSUPPORTED_PIXEL_DATA
    assert NotChestRadiograph.error_type == ErrorType.NOT_CHEST_RADIOGRAPH
    assert DicomWriteError.error_type in {e.value for e in ErrorType}
    assert issubclass(UnsupportedPixelData, UnreadableDicom)


def _assert_one_line(message: str) -> None:
    assert message and "\n" not in message and "\r" not in message and "force=True" not in message


def test_not_dicom(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    with pytest.raises(UnreadableDicom) as err:
        read_study(path, KEY)
    assert "notes.txt" in str(err.value) and str(tmp_path) not in str(err.value)
    assert str(err.value).startswith("notes.txt: not a DICOM file")
    _assert_one_line(str(err.value))
    assert err.value.error_type == "dicom_read_error"


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UnreadableDicom):
        read_study(tmp_path / "absent.dcm", KEY)


def test_truncated_pixel_data(tmp_path: Path, image: np.ndarray, study: StudyMeta) -> None:
    path = write_dicom(tmp_path / "t.dcm", image, study)
    path.write_bytes(path.read_bytes()[:-3000])
    with pytest.raises(UnreadableDicom) as err:
        read_study(path, KEY)
    assert type(err.value) is UnreadableDicom
    assert err.value.field == "PixelData"
    assert str(err.value) == "t.dcm: truncated file (ends inside PixelData: 5192 of 8192 bytes)"


def test_an_undecodable_codestream_is_unsupported(tmp_path: Path, image: np.ndarray, study: StudyMeta) -> None:
    ds = build_dataset(image, study)
    ds.file_meta.TransferSyntaxUID = JPEGLSLossless
    ds.PixelData = encapsulate([b"\xff\xd8 not really JPEG-LS \xff\xd9"])
    ds["PixelData"].VR = "OB"
    path = _save(ds, tmp_path / "jls.dcm")
    with pytest.raises(UnsupportedPixelData) as err:
        load_study(path, KEY)
    assert err.value.error_type == "unsupported_pixel_data"
    assert str(err.value).startswith(
        "jls.dcm: cannot decode JPEG-LS Lossless Image Compression (1.2.840.10008.1.2.4.80)"
    )
    _assert_one_line(str(err.value))


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        ({"Modality": "CT"}, "Modality"),
        ({"Modality": None}, "Modality"),
        ({"NumberOfFrames": 2}, "NumberOfFrames"),
        ({"SamplesPerPixel": 3}, "SamplesPerPixel"),
        ({"PhotometricInterpretation": "RGB"}, "PhotometricInterpretation"),
        ({"BodyPartExamined": "HAND"}, "BodyPartExamined"),
    ],
)
def test_not_a_chest_radiograph(
    tmp_path: Path, image: np.ndarray, study: StudyMeta, edit: dict[str, object], field: str
) -> None:
    ds = build_dataset(image, study)
    for keyword, value in edit.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    path = _save(ds, tmp_path / "x.dcm")
    with pytest.raises(NotChestRadiograph) as err:
        read_study(path, KEY)
    assert err.value.field == field and field in str(err.value)
    assert str(err.value).startswith("x.dcm: not a chest radiograph: ")
    assert err.value.error_type == "not_chest_radiograph"
    with pytest.raises(NotChestRadiograph):
        read_pixels(path)


def test_no_pixel_data_is_unreadable(tmp_path: Path, image: np.ndarray, study: StudyMeta) -> None:
    ds = build_dataset(image, study)
    del ds.PixelData
    with pytest.raises(UnreadableDicom) as err:
        read_study(_save(ds, tmp_path / "x.dcm"), KEY)
    assert type(err.value) is UnreadableDicom and err.value.field == "PixelData"
    assert str(err.value) == (
        "x.dcm: no pixel data (PixelData is missing; SOP class Digital X-Ray Image Storage - For Presentation)"
    )


def test_missing_study_uid(tmp_path: Path, image: np.ndarray, study: StudyMeta) -> None:
    ds = build_dataset(image, study, AcquisitionMeta())
    del ds.StudyInstanceUID
    with pytest.raises(UnreadableDicom) as err:
        read_study(_save(ds, tmp_path / "u.dcm"), KEY)
    assert err.value.field == "StudyInstanceUID"


def test_garbled_numbers_read_as_none(tmp_path: Path, image: np.ndarray, study: StudyMeta) -> None:
    acq = AcquisitionMeta(kvp=123.0, pixel_spacing_mm=0.3217, omit=("ExposureInuAs",))
    path = write_dicom(tmp_path / "g.dcm", image, study, acq)
    raw = path.read_bytes()
    assert raw.count(b"123 ") == 1 and raw.count(b"0.3217\\0.3217") == 2
    # same lengths, so the file stays well-formed: only the values are garbage
    path.write_bytes(raw.replace(b"123 ", b"12O ").replace(b"0.3217\\0.3217", b"abcdef\\-1.000"))
    record = read_study(path, KEY)
    assert (record.kvp, record.pixel_spacing_mm) == (None, None)
    assert record.exposure_mas == 2.0  # falls back to Exposure (integer mAs)


def test_empty_key_is_a_programming_error(tmp_path: Path, image: np.ndarray, study: StudyMeta) -> None:
    path = write_dicom(tmp_path / "k.dcm", image, study)
    with pytest.raises(ValueError) as err:
        read_study(path, "")
    assert not isinstance(err.value, DicomError)


_TESTDATA = sorted(p for p in get_testdata_files() if Path(p).is_file())
_REASONS = (
    "not a DICOM file",
    "truncated file",
    "no pixel data",
    "not a chest radiograph: Modality is missing",
    "not a chest radiograph: Modality",
    "not a chest radiograph: body part",
    "not a chest radiograph: several frames",
    "not a chest radiograph: colour image",
    "unsupported transfer syntax",
    "cannot decode",
)


def _outcome(path: str) -> str:
    """Return ``"accepted"`` or the reason words that open the refusal's message."""
    try:
        load_study(path, KEY)
    except DicomError as exc:
        reason = str(exc).removeprefix(f"{Path(path).name}: ")
        return next((words for words in _REASONS if reason.startswith(words)), reason)
    return "accepted"


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("path", _TESTDATA, ids=[Path(p).name for p in _TESTDATA])
def test_pydicom_testdata_reads_or_raises_our_errors(path: str) -> None:
    try:
        loaded = load_study(path, KEY)
    except DicomError as exc:
        assert exc.error_type in {"dicom_read_error", "unsupported_pixel_data", "not_chest_radiograph"}
        assert str(exc).startswith(f"{Path(path).name}: ")
        _assert_one_line(str(exc))
        return
    assert isinstance(loaded, LoadedStudy)
    assert loaded.record.modality in ("CR", "DX", "DR") and loaded.record.body_part in (None, "CHEST")
    assert loaded.pixels.dtype == np.float32 and loaded.pixels.ndim == 2
    assert 0.0 <= loaded.pixels.min() <= loaded.pixels.max() <= 1.0


# Measured over pydicom-data 1.0 and pydicom 3.0's own files (docs/dicom.md): what each of the 244 gets. Most are
# other modalities (pydicom's test set is CT, MR, US, RT, SR); the four accepted are RG1, a CR chest, in four
# encodings (uncompressed and JPEG 2000, lossless and lossy).
PYDICOM_TESTDATA_OUTCOMES = {
    "accepted": 4,
    "not a chest radiograph: Modality": 194,
    "not a chest radiograph: Modality is missing": 10,
    "not a chest radiograph: body part": 7,
    "not a DICOM file": 14,
    "no pixel data": 12,
    "truncated file": 3,
}


def test_pydicom_testdata_outcomes() -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        outcome = {p: _outcome(p) for p in _TESTDATA}
    counts = Counter(outcome.values())
    outcomes = {Path(p).name: o for p, o in outcome.items()}  # the few names found twice have one outcome
    assert dict(counts) == PYDICOM_TESTDATA_OUTCOMES
    assert {name for name, outcome in outcomes.items() if outcome == "accepted"} == {
        "RG1_UNCR.dcm",
        "RG1_UNCI.dcm",
        "RG1_J2KR.dcm",
        "RG1_J2KI.dcm",
    }
    assert outcomes["RG3_J2KR.dcm"] == "not a chest radiograph: body part"  # CR, BodyPartExamined EXTREMITY
    assert outcomes["MR_truncated.dcm"] == outcomes["rtplan_truncated.dcm"] == "truncated file"
    assert outcomes["emri_small_jpeg_2k_lossless_too_short.dcm"] == "truncated file"
    assert outcomes["DICOMDIR"] == "no pixel data" and outcomes["no_meta.dcm"] == "not a DICOM file"
