"""Writer -> reader round trips on tiny real files."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pydicom
import pytest

from pipeline.dicom import (
    AcquisitionMeta,
    DicomWriteError,
    StudyMeta,
    format_age,
    image_statistics,
    load_study,
    parse_age,
    pseudonymize_uid,
    read_pixels,
    read_study,
    to_stored,
    write_dicom,
)
from pipeline.simulate import Acquisition, make_phantom

KEY = "test-key"
PHI_FIELDS = ("patient_name", "patient_id", "patient_birth_date", "accession_number", "study_instance_uid")


def test_every_tag_round_trips(tmp_path: Path, image: np.ndarray, study: StudyMeta) -> None:
    acq = AcquisitionMeta(
        modality="CR",
        manufacturer="Acme Medical",
        model_name="XR-9",
        institution_name="SITE B",
        view_position="AP",
        body_part="CHEST",
        kvp=110.5,
        exposure_mas=3.2,
        pixel_spacing_mm=0.2,
        bits_stored=14,
        photometric="MONOCHROME2",
    )
    path = write_dicom(tmp_path / "a" / "study.dcm", image, study, acq)
    record = read_study(path, KEY)

    assert record.study_id == pseudonymize_uid(study.study_instance_uid, KEY)
    assert record.acquired_at == study.acquired_at
    assert (record.modality, record.manufacturer, record.model_name) == ("CR", "Acme Medical", "XR-9")
    assert (record.view_position, record.body_part) == ("AP", "CHEST")
    assert record.kvp == pytest.approx(110.5)
    assert record.exposure_mas == pytest.approx(3.2)
    assert record.pixel_spacing_mm == pytest.approx(0.2)
    assert (record.rows, record.columns, record.bits_stored) == (64, 64, 14)
    assert record.photometric == "MONOCHROME2"
    assert record.patient_age_years == 45.0
    assert record.patient_sex == "F"

    # statistics: those of the image itself, up to the 14-bit quantisation
    assert record.img_mean == pytest.approx(float(image.mean()), abs=1e-4)
    assert record.img_std == pytest.approx(float(image.std()), abs=1e-4)
    for name, q in (("img_p01", 1), ("img_p50", 50), ("img_p99", 99)):
        assert getattr(record, name) == pytest.approx(float(np.percentile(image, q)), abs=1e-3)
    assert record.img_clipped_frac == 0.0
    assert np.abs(read_pixels(path) - image).max() <= 0.5 / (2**14 - 1) + 1e-6


def test_file_is_a_valid_dx_part10_file(tmp_path: Path, image: np.ndarray, study: StudyMeta) -> None:
    path = write_dicom(tmp_path / "dx.dcm", image, study)
    raw = path.read_bytes()
    assert raw[128:132] == b"DICM"
    ds = pydicom.dcmread(path)
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.1.1"
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert (ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation) == (16, 12, 11, 0)
    assert ds.SamplesPerPixel == 1
    assert len({ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID}) == 3
    assert ds.ExposureInuAs == 2500 and ds.ImagerPixelSpacing == ds.PixelSpacing
    assert 0 < float(ds.WindowWidth) <= 4095
    cr = pydicom.dcmread(write_dicom(tmp_path / "cr.dcm", image, study, AcquisitionMeta(modality="CR")))
    assert cr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.1"


def test_record_carries_no_phi(tmp_path: Path, image: np.ndarray, study: StudyMeta) -> None:
    path = write_dicom(tmp_path / "s.dcm", image, study)
    ds = pydicom.dcmread(path)
    assert str(ds.PatientName) == study.patient_name  # the file has PHI ...
    record = read_study(path, KEY)
    values = " ".join(str(v) for v in dataclasses.asdict(record).values())
    for field in PHI_FIELDS:  # ... the record does not
        phi = getattr(study, field)
        text = phi.strftime("%Y%m%d") if field == "patient_birth_date" else str(phi)
        assert text not in values
        assert str(phi) not in values
    for uid in (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID):
        assert str(uid) not in values
    assert record.study_id != study.study_instance_uid
    names = {f.name for f in dataclasses.fields(record)}
    assert not names & {"patient_name", "patient_id", "patient_birth_date", "accession_number", "study_uid"}


def test_record_fields_are_store_columns() -> None:
    from pipeline.dicom import StudyRecord
    from pipeline.store.schema import studies

    names = {f.name for f in dataclasses.fields(StudyRecord)}
    columns = set(studies.columns.keys())
    assert names <= columns
    assert columns - names == {"site", "dicom_uri"}


def test_monochrome1_reads_like_monochrome2(tmp_path: Path, image: np.ndarray, study: StudyMeta) -> None:
    m2 = write_dicom(tmp_path / "m2.dcm", image, study, AcquisitionMeta(photometric="MONOCHROME2"))
    m1 = write_dicom(tmp_path / "m1.dcm", image, study, AcquisitionMeta(photometric="MONOCHROME1"))
    stored1, stored2 = pydicom.dcmread(m1).pixel_array, pydicom.dcmread(m2).pixel_array
    np.testing.assert_array_equal(stored1.astype(int), 4095 - stored2.astype(int))  # stored inverted
    r1, r2 = load_study(m1, KEY), load_study(m2, KEY)
    assert r1.record.photometric == "MONOCHROME1"
    for name in ("img_mean", "img_std", "img_p01", "img_p50", "img_p99", "img_clipped_frac"):
        assert getattr(r1.record, name) == pytest.approx(getattr(r2.record, name), abs=1e-6), name
    np.testing.assert_allclose(r1.pixels, r2.pixels, atol=1e-6)


def test_clipped_fraction_counts_both_ends(image: np.ndarray) -> None:
    img = image.copy()
    img[:6] = 0.0  # 6 of 64 rows black
    img[-4:] = 1.0  # 4 of 64 rows saturated
    for photometric in ("MONOCHROME2", "MONOCHROME1"):
        stored = to_stored(img, bits_stored=12, photometric=photometric)
        _, stats = image_statistics(stored, bits_stored=12, photometric=photometric)
        assert stats.clipped_frac == pytest.approx(10 / 64, abs=0.01)
        assert stats.p01 == 0.0 and stats.p99 == 1.0


def test_collimated_phantom_shows_as_clipped(tmp_path: Path, study: StudyMeta) -> None:
    ph = make_phantom(acquisition=Acquisition(collimation_top=0.25), size=64, rng=1)
    record = read_study(write_dicom(tmp_path / "c.dcm", ph.image, study), KEY)
    assert record.img_clipped_frac >= 0.25


@pytest.mark.parametrize(
    ("age", "expected"),
    [
        (None, None),
        ("045Y", 45.0),
        ("45Y", 45.0),
        ("008M", 8 / 12),
        ("003W", 3 * 7 / 365.25),
        ("012D", 12 / 365.25),
        ("45", None),
        ("0045Y", None),
        ("ABC", None),
        ("045X", None),
    ],
)
def test_patient_age_variants(
    tmp_path: Path, image: np.ndarray, study: StudyMeta, age: str | None, expected: float | None
) -> None:
    path = write_dicom(tmp_path / "age.dcm", image, dataclasses.replace(study, patient_age=age))
    got = read_study(path, KEY).patient_age_years
    assert got == (pytest.approx(expected) if expected is not None else None)


@pytest.mark.parametrize(
    ("acq", "field", "expected"),
    [
        (AcquisitionMeta(view_position="LATERAL"), "view_position", "LATERAL"),
        (AcquisitionMeta(view_position=None), "view_position", None),
        (AcquisitionMeta(body_part="CHEST PA"), "body_part", "CHEST PA"),  # ABDOMEN is refused: test_dicom_inputs
        (AcquisitionMeta(body_part=None), "body_part", None),
        (AcquisitionMeta(kvp=None), "kvp", None),
        (AcquisitionMeta(exposure_mas=None), "exposure_mas", None),
        (AcquisitionMeta(omit=("PixelSpacing",), pixel_spacing_mm=0.3), "pixel_spacing_mm", 0.3),
        (AcquisitionMeta(omit=("PixelSpacing", "ImagerPixelSpacing")), "pixel_spacing_mm", None),
        (AcquisitionMeta(omit=("Manufacturer", "ManufacturerModelName")), "manufacturer", None),
        (AcquisitionMeta(omit=("AcquisitionDateTime", "StudyDate")), "acquired_at", None),
        (AcquisitionMeta(modality="DR"), "modality", "DR"),
        (AcquisitionMeta(bits_stored=16), "bits_stored", 16),
    ],
)
def test_tag_error_variants_read_back(
    tmp_path: Path, image: np.ndarray, study: StudyMeta, acq: AcquisitionMeta, field: str, expected: object
) -> None:
    record = read_study(write_dicom(tmp_path / "v.dcm", image, study, acq), KEY)
    got = getattr(record, field)
    assert got == (pytest.approx(expected) if isinstance(expected, float) else expected)


@pytest.mark.parametrize(("sex", "expected"), [("M", "M"), ("f", "F"), ("O", "O"), ("X", None), (None, None)])
def test_patient_sex_variants(
    tmp_path: Path, image: np.ndarray, study: StudyMeta, sex: str | None, expected: str | None
) -> None:
    path = write_dicom(tmp_path / "sex.dcm", image, dataclasses.replace(study, patient_sex=sex))
    assert read_study(path, KEY).patient_sex == expected


def test_acquired_at_is_utc(tmp_path: Path, image: np.ndarray, study: StudyMeta) -> None:
    local = datetime(2025, 6, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    record = read_study(write_dicom(tmp_path / "t.dcm", image, dataclasses.replace(study, acquired_at=local)), KEY)
    assert record.acquired_at == local
    assert record.acquired_at is not None and record.acquired_at.utcoffset() == timedelta(0)


def test_write_is_atomic_and_idempotent(tmp_path: Path, image: np.ndarray, study: StudyMeta) -> None:
    target = tmp_path / "x.dcm"
    write_dicom(target, image, study)
    first = target.read_bytes()
    write_dicom(target, image, study)
    assert target.read_bytes() == first  # same inputs, same bytes (UIDs derive from the study UID)
    assert [p.name for p in tmp_path.iterdir()] == ["x.dcm"]
    with pytest.raises(DicomWriteError):
        write_dicom(tmp_path / "bad.dcm", np.full((8, 8), np.nan), study)
    with pytest.raises(DicomWriteError):
        write_dicom(tmp_path / "bad.dcm", np.zeros((2, 8, 8)), study)
    assert [p.name for p in tmp_path.iterdir()] == ["x.dcm"]


def test_reads_from_a_buffer(tmp_path: Path, image: np.ndarray, study: StudyMeta) -> None:
    import io

    path = write_dicom(tmp_path / "b.dcm", image, study)
    assert read_study(io.BytesIO(path.read_bytes()), KEY) == read_study(path, KEY)


@pytest.mark.parametrize(
    ("years", "text"), [(45.3, "045Y"), (2.0, "002Y"), (1.99, "023M"), (0.7, "008M"), (0.02, "007D"), (101, "101Y")]
)
def test_format_age_round_trips_with_parse_age(years: float, text: str) -> None:
    assert format_age(years) == text
    parsed = parse_age(text)
    assert parsed is not None and parsed == pytest.approx(years, abs=1.0)
