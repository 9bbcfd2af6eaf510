"""Stored values -> Modality LUT -> the LUT's full range onto [0, 1] -> MONOCHROME1 inverted; no window, no VOI LUT."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset

from pipeline.dicom import AcquisitionMeta, StudyMeta, build_dataset, image_statistics, load_study, read_pixels

KEY = "test-key"


def _save(ds: Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.mark.parametrize("bits", [8, 10, 12, 14, 16])
@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
def test_the_projects_files_read_as_stored_over_the_bits_stored_range(
    tmp_path: Path, image: np.ndarray, study: StudyMeta, bits: int, photometric: str
) -> None:
    # what the trained models saw before the reader took the Modality LUT through pydicom: the same, bit for bit
    ds = build_dataset(image, study, AcquisitionMeta(bits_stored=bits, photometric=photometric))  # type: ignore[arg-type]
    assert (ds.RescaleSlope, ds.RescaleIntercept, "WindowCenter" in ds) == ("1", "0", True)
    values = ds.pixel_array.astype(np.float32)
    expected = np.clip(values * np.float32(1.0 / ((1 << bits) - 1)), 0.0, 1.0)
    if photometric == "MONOCHROME1":
        expected = np.float32(1.0) - expected
    np.testing.assert_array_equal(read_pixels(_save(ds, tmp_path / "p.dcm")), expected)


def test_a_linear_rescale_keeps_the_display_pixels(tmp_path: Path, image: np.ndarray, study: StudyMeta) -> None:
    # the rescaled range is mapped onto [0, 1], so slope and intercept change the units, not the picture
    plain = load_study(_save(build_dataset(image, study), tmp_path / "a.dcm"), KEY)
    ds = build_dataset(image, study)
    ds.RescaleSlope, ds.RescaleIntercept = "2.5", "-1000"
    rescaled = load_study(_save(ds, tmp_path / "b.dcm"), KEY)
    np.testing.assert_allclose(rescaled.pixels, plain.pixels, atol=1e-6)
    ds.RescaleSlope = "-1"  # a falling rescale turns the picture over
    flipped = read_pixels(_save(ds, tmp_path / "c.dcm"))
    np.testing.assert_allclose(flipped, 1.0 - plain.pixels, atol=1e-6)


def test_a_modality_lut_sequence_is_applied(tmp_path: Path, image: np.ndarray, study: StudyMeta) -> None:
    ds = build_dataset(image, study, AcquisitionMeta(bits_stored=12))
    del ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType
    lut = np.sqrt(np.arange(4096) / 4095.0) * 65535  # a gamma the vendor put into the Modality LUT
    item = Dataset()
    item.LUTDescriptor = [4096, 0, 16]
    item.ModalityLUTType = "OD"
    item.LUTData = np.rint(lut).astype("<u2").tobytes()
    item["LUTData"].VR = "OW"
    ds.ModalityLUTSequence = [item]
    pixels = read_pixels(_save(ds, tmp_path / "lut.dcm"))
    stored = ds.pixel_array
    np.testing.assert_allclose(pixels, np.rint(lut)[stored] / 65535.0, atol=1e-6)
    assert float(np.abs(pixels - stored / 4095.0).max()) > 0.1  # not the stored values


def test_a_garbled_rescale_reads_as_missing(tmp_path: Path, image: np.ndarray, study: StudyMeta) -> None:
    plain = read_pixels(_save(build_dataset(image, study), tmp_path / "a.dcm"))
    ds = build_dataset(image, study)
    raw = _save(ds, tmp_path / "b.dcm").read_bytes()
    assert raw.count(b"\x28\x00\x53\x10DS\x02\x001 ") == 1  # RescaleSlope "1 "
    (tmp_path / "b.dcm").write_bytes(raw.replace(b"\x28\x00\x53\x10DS\x02\x001 ", b"\x28\x00\x53\x10DS\x02\x00x "))
    np.testing.assert_array_equal(read_pixels(tmp_path / "b.dcm"), plain)
    ds.RescaleSlope = "0"  # every value to one: no picture left, so the stored values are kept
    np.testing.assert_array_equal(read_pixels(_save(ds, tmp_path / "c.dcm")), plain)


def test_the_window_and_voi_lut_are_not_applied(tmp_path: Path, image: np.ndarray, study: StudyMeta) -> None:
    plain = load_study(_save(build_dataset(image, study), tmp_path / "a.dcm"), KEY)
    ds = build_dataset(image, study)
    ds.WindowCenter, ds.WindowWidth = "400", "200"
    item = Dataset()
    item.LUTDescriptor = [4096, 0, 8]
    item.LUTData = np.minimum(np.arange(4096) // 4, 255).astype("<u2").tobytes()
    item["LUTData"].VR = "OW"
    ds.VOILUTSequence = [item]
    windowed = load_study(_save(ds, tmp_path / "w.dcm"), KEY)
    np.testing.assert_array_equal(windowed.pixels, plain.pixels)
    assert windowed.record == plain.record


def test_signed_values_span_their_range() -> None:
    stored = np.array([[-2048, 0], [1024, 2047]], dtype=np.int16)
    pixels, stats = image_statistics(stored, bits_stored=12, photometric="MONOCHROME2", signed=True)
    np.testing.assert_allclose(pixels, [[0.0, 2048 / 4095], [3072 / 4095, 1.0]], atol=1e-6)
    assert stats.clipped_frac == 0.5  # the lowest and the highest value a 12-bit signed file can store


def test_pydicoms_cr_chest_reads_with_its_rescale(tmp_path: Path) -> None:
    from pydicom.data import get_testdata_file

    # RG1: a CR chest, MONOCHROME1, 15 bits stored in 16, no rescale: bright = dense after inversion
    path = get_testdata_file("RG1_UNCR.dcm")
    loaded = load_study(path, KEY)
    stored = pydicom.dcmread(path).pixel_array
    np.testing.assert_allclose(loaded.pixels, 1.0 - stored / 32767.0, atol=1e-6)
    assert loaded.record.photometric == "MONOCHROME1" and loaded.record.bits_stored == 15
