"""Inputs the project never made, as hospitals send them: body parts, dirty text, garbled dates, cut files."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset

from pipeline.dicom import (
    STUDY_TEXT_MAX_CHARS,
    AcquisitionMeta,
    DicomError,
    NotChestRadiograph,
    StudyMeta,
    UnreadableDicom,
    build_dataset,
    clean_text,
    is_chest_body_part,
    load_study,
    read_pixels,
    read_study,
    write_dicom,
)

KEY = "test-key"
# the tests write garbled and overlong values on purpose
pytestmark = pytest.mark.filterwarnings("ignore:.*(Invalid value for VR|exceeds the maximum length).*:UserWarning")


def _save(ds: Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path


def _refusal(source: Path | io.BytesIO) -> DicomError:
    with pytest.raises(DicomError) as err:
        load_study(source, KEY)
    message = str(err.value)
    assert "\n" not in message and "force=True" not in message
    return err.value


# --- body part ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value", ["CHEST", "chest", " Chest ", "CHEST PA", "CHEST_AP", "CHEST^LAT", "THORAX", "THORAX PA", "LUNG", "LUNGS"]
)
def test_chest_spellings_are_chest(tmp_path: Path, image: np.ndarray, study: StudyMeta, value: str) -> None:
    assert is_chest_body_part(value)
    record = read_study(write_dicom(tmp_path / "c.dcm", image, study, AcquisitionMeta(body_part=value)), KEY)
    assert record.body_part == value.strip()


@pytest.mark.parametrize("value", ["HAND", "hand", "CSPINE", "ABDOMEN", "SHOULDER", "EXTREMITY", "THORACIC SPINE"])
def test_other_body_parts_are_refused(tmp_path: Path, image: np.ndarray, study: StudyMeta, value: str) -> None:
    assert not is_chest_body_part(value)
    path = write_dicom(tmp_path / "IM0001.dcm", image, study, AcquisitionMeta(modality="DX", body_part=value))
    err = _refusal(path)
    assert isinstance(err, NotChestRadiograph) and err.field == "BodyPartExamined"
    assert str(err) == f"IM0001.dcm: not a chest radiograph: body part {value!r} (BodyPartExamined)"
    with pytest.raises(NotChestRadiograph):
        read_pixels(path)  # training and renderings refuse it too


def test_a_missing_body_part_is_allowed(tmp_path: Path, image: np.ndarray, study: StudyMeta) -> None:
    for acq in (AcquisitionMeta(body_part=None), AcquisitionMeta(omit=("BodyPartExamined",))):
        assert read_study(write_dicom(tmp_path / "m.dcm", image, study, acq), KEY).body_part is None


# --- text tags ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"Acme\x00Medical", "AcmeMedical"),  # PostgreSQL refuses NUL in text
        (b"SIEMENS\x00", "SIEMENS"),  # NUL padding
        (b"Acme\x1b[31mRed\x07", "Acme[31mRed"),  # escape and bell
        (b"GE\r\nHealthcare\t", "GE Healthcare"),  # line breaks become a space: messages and rows stay one line
        (b"Philips\xff\xfeMed", "Philips\ufffd\ufffdMed"),  # not UTF-8 although ISO_IR 192 says so: replaced
        (b"Canon\xe2\x80\x8bInc", "CanonInc"),  # zero-width space (a format character)
        (b"\x00\x00  ", None),
    ],
)
def test_text_tags_are_cleaned(
    tmp_path: Path, image: np.ndarray, study: StudyMeta, raw: bytes, expected: str | None
) -> None:
    path = write_dicom(tmp_path / "t.dcm", image, study, AcquisitionMeta(manufacturer="X" * len(raw)))
    data = path.read_bytes()
    assert data.count(b"X" * len(raw)) == 1
    path.write_bytes(data.replace(b"X" * len(raw), raw))  # same length: only the value is dirty
    assert read_study(path, KEY).manufacturer == expected


def test_text_tags_are_cut_to_the_store_columns(tmp_path: Path, image: np.ndarray, study: StudyMeta) -> None:
    acq = AcquisitionMeta(manufacturer="M" * 200, model_name="N" * 64, view_position="POSTEROANTERIOR VIEW")
    ds = build_dataset(image, study, acq)
    ds["ManufacturerModelName"].VR = "LT"  # a vendor's overlong value in a wider VR
    ds.ManufacturerModelName = "N" * 300
    record = read_study(_save(ds, tmp_path / "long.dcm"), KEY)
    assert record.manufacturer == "M" * 128 and record.model_name == "N" * 128
    assert record.view_position == "POSTEROANTERIOR"  # cut to 16, trailing space trimmed


def test_text_limits_are_the_store_column_lengths() -> None:
    from pipeline.store.schema import studies

    assert {name: studies.c[name].type.length for name in STUDY_TEXT_MAX_CHARS} == STUDY_TEXT_MAX_CHARS


def test_clean_text() -> None:
    assert clean_text(None) is None
    assert clean_text(b"\xc3\xa9cole\x00") == "école"
    assert clean_text("  a \u2028 b  ") == "a b"
    assert clean_text("\ud800lone surrogate") == "lone surrogate"
    assert clean_text("abcdef ghi", max_chars=7) == "abcdef"


def test_no_record_text_carries_a_control_character(tmp_path: Path, image: np.ndarray, study: StudyMeta) -> None:
    ds = build_dataset(image, study, AcquisitionMeta(view_position="PA"))
    ds.Manufacturer = "A\x00B\x01C\x7fD\x9fE"
    ds.ViewPosition = "P\x00A"
    record = read_study(_save(ds, tmp_path / "c.dcm"), KEY)
    assert (record.manufacturer, record.view_position) == ("ABCDE", "PA")
    for field in dataclasses.fields(record):
        value = getattr(record, field.name)
        if isinstance(value, str):
            assert value.isprintable() and value == value.strip(), field.name


# --- dates -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "00000101120000",  # year 0000
        "20251301120000",  # month 13
        "20250230120000",  # 30 February
        "20250101250000",  # hour 25
        "00010101000000+0100",  # one hour before year 1 in UTC: OverflowError
        "99991231233000-0100",  # past 9999 in UTC
        "20250101120000+2500",  # a 25-hour offset
        "not a date",
    ],
)
def test_a_garbled_acquisition_datetime_reads_as_missing(
    tmp_path: Path, image: np.ndarray, study: StudyMeta, value: str
) -> None:
    ds = build_dataset(image, study, AcquisitionMeta(omit=("StudyDate", "StudyTime")))
    ds.AcquisitionDateTime = value
    record = read_study(_save(ds, tmp_path / "d.dcm"), KEY)
    assert record.acquired_at is None and record.study_id  # the study goes on
    ds = build_dataset(image, study)
    ds.AcquisitionDateTime = value
    assert read_study(_save(ds, tmp_path / "e.dcm"), KEY).acquired_at == study.acquired_at  # StudyDate/Time instead


def test_a_garbled_timezone_offset_is_ignored(tmp_path: Path, image: np.ndarray, study: StudyMeta) -> None:
    ds = build_dataset(image, study, AcquisitionMeta(omit=("AcquisitionDateTime",)))
    ds.TimezoneOffsetFromUTC = "+9999"
    assert read_study(_save(ds, tmp_path / "z.dcm"), KEY).acquired_at == study.acquired_at


# --- cut and empty files -----------------------------------------------------------------------------------------


def test_cut_files_are_truncated_not_modality_missing(tmp_path: Path, image: np.ndarray, study: StudyMeta) -> None:
    raw = write_dicom(tmp_path / "whole.dcm", image, study).read_bytes()
    pixel_tag = raw.index(b"\xe0\x7f\x10\x00")
    seen = set()
    for cut in [132, 140, 200, 300, 500, 700, 900, pixel_tag + 2, pixel_tag + 6, pixel_tag + 100, len(raw) - 1]:
        path = tmp_path / "cut.dcm"
        path.write_bytes(raw[:cut])
        err = _refusal(path)
        assert type(err) is UnreadableDicom, (cut, str(err))
        assert str(err).startswith("cut.dcm: truncated file ("), (cut, str(err))
        seen.add(str(err).split("(", 1)[1])
    assert "header only: the file meta and no data set)" in seen
    assert any(reason.startswith("ends inside PixelData") for reason in seen)


def test_a_header_only_file_is_truncated(tmp_path: Path, image: np.ndarray, study: StudyMeta) -> None:
    ds = build_dataset(image, study)
    header = Dataset()
    header.file_meta = ds.file_meta
    err = _refusal(_save(header, tmp_path / "meta.dcm"))
    assert str(err) == "meta.dcm: truncated file (header only: the file meta and no data set)"
    (tmp_path / "preamble.dcm").write_bytes(b"\x00" * 128 + b"DICM")
    assert str(_refusal(tmp_path / "preamble.dcm")) == (
        "preamble.dcm: truncated file (preamble only: no file meta, no data set)"
    )


def test_empty_and_missing_files(tmp_path: Path) -> None:
    (tmp_path / "empty.dcm").write_bytes(b"")
    assert str(_refusal(tmp_path / "empty.dcm")) == "empty.dcm: empty file (0 bytes)"
    assert str(_refusal(tmp_path / "gone.dcm")) == "gone.dcm: cannot read the file (No such file or directory)"
    assert str(_refusal(io.BytesIO(b"GIF89a" * 40))).startswith("<buffer>: not a DICOM file")


def test_the_project_files_read_whole(tmp_path: Path, image: np.ndarray, study: StudyMeta) -> None:
    # the truncation check must never refuse a whole file, whatever is last in it
    for acq in (AcquisitionMeta(), AcquisitionMeta(photometric="MONOCHROME1", bits_stored=16, omit=("PixelSpacing",))):
        path = write_dicom(tmp_path / "w.dcm", image, study, acq)
        assert read_study(path, KEY).rows == 64
        assert read_study(io.BytesIO(path.read_bytes()), KEY) == read_study(path, KEY)
    deflated = pydicom.dcmread(path)
    deflated.file_meta.TransferSyntaxUID = pydicom.uid.DeflatedExplicitVRLittleEndian
    deflated.save_as(tmp_path / "deflated.dcm", enforce_file_format=True)
    assert read_study(tmp_path / "deflated.dcm", KEY) == read_study(path, KEY)
