"""Damaged copies of real files (cut, bytes flipped, ranges zeroed) read as a study or as one of our errors, never
anything else: no other exception, no message past one line, no crash of the process (a decoder that aborts on a
corrupt codestream runs in the reader's child process).

The examples are derived from the test's name (``derandomize``) and no example database is kept, so every run, here
and in CI, tries the same damaged files.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.data import get_testdata_file
from pydicom.uid import JPEG2000Lossless, JPEGExtended12Bit, JPEGLosslessSV1, JPEGLSLossless, RLELossless

from pipeline.dicom import (
    STUDY_TEXT_MAX_CHARS,
    AcquisitionMeta,
    DicomError,
    load_study,
    synthetic_study_meta,
    write_dicom,
)
from pipeline.simulate import make_phantom
from tests.unit.dicom.compressed import as_chest_dx, compress_copy, gdcm_copy
from tests.unit.dicom.conftest import ACQUIRED_AT

KEY = "test-key"
FUZZ = settings(
    deadline=None,
    max_examples=200,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """The bytes of small real files: the project's own (uncompressed and in five codecs) and four of pydicom's."""
    root = tmp_path_factory.mktemp("fuzz")
    image = make_phantom(size=48, rng=3).image
    study = synthetic_study_meta(5, acquired_at=ACQUIRED_AT, age_years=50, sex="M")
    own = write_dicom(root / "own.dcm", image, study)
    paths = [
        own,
        write_dicom(root / "own_m1.dcm", image, study, AcquisitionMeta(photometric="MONOCHROME1", bits_stored=14)),
        compress_copy(own, root / "own_rle.dcm", RLELossless),
        compress_copy(own, root / "own_j2k.dcm", JPEG2000Lossless),
        gdcm_copy(own, root / "own_jls.dcm", JPEGLSLossless),
        gdcm_copy(own, root / "own_jpll.dcm", JPEGLosslessSV1),
        gdcm_copy(own, root / "own_jpge12.dcm", JPEGExtended12Bit, quality=90),
    ]
    for name in ("CT_small.dcm", "MR_small_RLE.dcm", "MR_small_jpeg_ls_lossless.dcm", "JPEGLSNearLossless_16.dcm"):
        paths.append(as_chest_dx(get_testdata_file(name), root / f"pydicom_{name}"))
    return {path.name: path.read_bytes() for path in paths}


def _reads_or_refuses(data: bytes, name: str) -> None:
    buffer = io.BytesIO(data)
    buffer.name = name
    try:
        loaded = load_study(buffer, KEY)
    except DicomError as exc:
        message = str(exc)
        assert message.startswith(f"{name}: ") and len(message) > len(name) + 2, message
        assert "\n" not in message and "\r" not in message and "force=True" not in message, message
        return
    record = loaded.record
    assert loaded.pixels.dtype == np.float32 and loaded.pixels.shape == (record.rows, record.columns)
    assert 0.0 <= float(loaded.pixels.min()) <= float(loaded.pixels.max()) <= 1.0
    for field, limit in STUDY_TEXT_MAX_CHARS.items():
        value = getattr(record, field)
        assert value is None or (len(value) <= limit and value.isprintable() and "\x00" not in value), field


@FUZZ
@given(data=st.data())
def test_cut_copies(files: dict[str, bytes], data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(sorted(files)), label="file")
    raw = files[name]
    cut = data.draw(st.integers(0, len(raw) - 1), label="cut at")
    _reads_or_refuses(raw[:cut], name)


@FUZZ
@given(data=st.data())
def test_copies_with_flipped_bytes(files: dict[str, bytes], data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(sorted(files)), label="file")
    raw = bytearray(files[name])
    header = min(len(raw), raw.find(b"\xe0\x7f\x10\x00") + 256)  # the tags and the codestream's own header
    span = data.draw(st.sampled_from([header, len(raw)]), label="span")
    flips = data.draw(
        st.lists(st.tuples(st.integers(0, span - 1), st.integers(1, 255)), min_size=1, max_size=6), label="flips"
    )
    for position, mask in flips:
        raw[position] ^= mask
    _reads_or_refuses(bytes(raw), name)


@FUZZ
@given(data=st.data())
def test_copies_with_zeroed_ranges(files: dict[str, bytes], data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(sorted(files)), label="file")
    raw = bytearray(files[name])
    start = data.draw(st.integers(0, len(raw) - 1), label="start")
    length = data.draw(st.integers(1, 512), label="length")
    raw[start : start + length] = bytes(len(raw[start : start + length]))
    _reads_or_refuses(bytes(raw), name)


def test_the_undamaged_files_read(files: dict[str, bytes]) -> None:
    for name, raw in files.items():
        buffer = io.BytesIO(raw)
        buffer.name = name
        assert load_study(buffer, KEY).record.modality == "DX", name


def test_many_cuts_of_one_file(files: dict[str, bytes]) -> None:
    # every 7th offset of a compressed file: Hypothesis samples, this sweeps
    raw = files["own_jls.dcm"]
    for cut in range(0, len(raw), 7):
        _reads_or_refuses(raw[:cut], "own_jls.dcm")
