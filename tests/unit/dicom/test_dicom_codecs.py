"""Compressed pixel data decodes to the pixels of its uncompressed twin, and scores the same study the same way."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from pydicom.data import get_testdata_file
from pydicom.encaps import encapsulate
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

from pipeline.dicom import (
    AcquisitionMeta,
    StudyMeta,
    UnsupportedPixelData,
    build_dataset,
    load_study,
    read_pixels,
    write_dicom,
)
from pipeline.model import NetConfig, NormalFilterNet, preprocess
from pipeline.simulate import make_phantom
from tests.unit.dicom.compressed import as_chest_dx, compress_copy, gdcm_copy

KEY = "test-key"
IMAGE_STATS = ("img_mean", "img_std", "img_p01", "img_p50", "img_p99", "img_clipped_frac")

Encode = Callable[[Path, Path], Path]
LOSSLESS: dict[str, Encode] = {
    "RLE Lossless (pydicom)": lambda s, t: compress_copy(s, t, RLELossless),
    "JPEG 2000 Lossless (OpenJPEG)": lambda s, t: compress_copy(s, t, JPEG2000Lossless),
    "JPEG-LS Lossless (GDCM)": lambda s, t: gdcm_copy(s, t, JPEGLSLossless),
    "JPEG Lossless SV1 (GDCM)": lambda s, t: gdcm_copy(s, t, JPEGLosslessSV1),
    "JPEG Lossless P14 (GDCM)": lambda s, t: gdcm_copy(s, t, JPEGLossless),
}
# encoder, largest pixel difference in stored units for BitsStored: JPEG-LS's own bound (NEAR), else a share of the
# range a little above the measured one (JPEG q90: 0.4 % at 12 bits, 1.7 % at 10; JPEG 2000 10:1: 4.3 %, 5.1 %)
LOSSY: dict[str, tuple[Encode, Callable[[int], float]]] = {
    "JPEG-LS near-lossless NEAR=2 (GDCM)": (lambda s, t: gdcm_copy(s, t, JPEGLSNearLossless, near=2), lambda b: 2),
    "JPEG Extended 12-bit q90 (GDCM)": (
        lambda s, t: gdcm_copy(s, t, JPEGExtended12Bit, quality=90),
        lambda b: 0.025 * ((1 << b) - 1),
    ),
    "JPEG 2000 10:1 (OpenJPEG)": (
        lambda s, t: compress_copy(s, t, JPEG2000, j2k_cr=[10]),
        lambda b: 0.07 * ((1 << b) - 1),
    ),
}
ENCODINGS = [(12, "MONOCHROME2"), (10, "MONOCHROME1")]


@pytest.fixture(scope="module")
def net() -> tuple[torch.nn.Module, Callable[[np.ndarray], float]]:
    """An untrained, seeded network and the inference service's preprocessing: pixels -> P(abnormal)."""
    torch.manual_seed(0)
    model = NormalFilterNet(NetConfig(init_features=8, growth_rate=4, block_config=(2, 2))).eval()
    transform = preprocess(64, load=False)

    @torch.no_grad()
    def score(pixels: np.ndarray) -> float:
        return float(torch.sigmoid(model(transform({"image": pixels})["image"][None]))[0])

    return model, score


def _dx(tmp_path: Path, study: StudyMeta, bits: int, photometric: str) -> Path:
    image = make_phantom(size=128, rng=7).image
    acq = AcquisitionMeta(bits_stored=bits, photometric=photometric)  # type: ignore[arg-type]
    return write_dicom(tmp_path / "dx.dcm", image, study, acq)


@pytest.mark.parametrize(("bits", "photometric"), ENCODINGS)
@pytest.mark.parametrize("codec", sorted(LOSSLESS))
def test_lossless_copy_reads_and_scores_identically(
    tmp_path: Path, study: StudyMeta, net: tuple, codec: str, bits: int, photometric: str
) -> None:
    source = _dx(tmp_path, study, bits, photometric)
    copy = LOSSLESS[codec](source, tmp_path / "copy.dcm")
    assert pydicom.dcmread(copy).file_meta.TransferSyntaxUID.is_compressed
    plain, packed = load_study(source, KEY), load_study(copy, KEY)
    np.testing.assert_array_equal(pydicom.dcmread(copy).pixel_array, pydicom.dcmread(source).pixel_array)
    assert packed.record == plain.record
    np.testing.assert_array_equal(packed.pixels, plain.pixels)
    np.testing.assert_array_equal(read_pixels(copy), plain.pixels)
    _, score = net
    assert score(packed.pixels) == score(plain.pixels)


@pytest.mark.parametrize(("bits", "photometric"), ENCODINGS)
@pytest.mark.parametrize("codec", sorted(LOSSY))
def test_lossy_copy_reads_within_the_codecs_loss(
    tmp_path: Path, study: StudyMeta, net: tuple, codec: str, bits: int, photometric: str
) -> None:
    encode, bound = LOSSY[codec]
    max_error = bound(bits)
    source = _dx(tmp_path, study, bits, photometric)
    copy = encode(source, tmp_path / "copy.dcm")
    plain, packed = load_study(source, KEY), load_study(copy, KEY)
    stored = pydicom.dcmread(source).pixel_array.astype(int)
    assert np.abs(pydicom.dcmread(copy).pixel_array.astype(int) - stored).max() <= max_error
    assert np.abs(packed.pixels - plain.pixels).max() <= max_error / ((1 << bits) - 1) + 1e-6
    tags = {f.name for f in dataclasses.fields(plain.record)} - set(IMAGE_STATS)
    assert {name: getattr(packed.record, name) for name in tags} == {name: getattr(plain.record, name) for name in tags}
    for name in IMAGE_STATS:
        assert getattr(packed.record, name) == pytest.approx(getattr(plain.record, name), abs=0.01), name
    _, score = net
    assert score(packed.pixels) == pytest.approx(score(plain.pixels), abs=1e-3)


# pydicom's own twins: the same image stored uncompressed and compressed by the vendors' tools; the last flag says
# whether their headers describe the pixels alike (693_J2KR says BitsStored 16, its twin 14: the same stored values
# then span another range, and display pixels and statistics differ, as they must)
TWINS = [
    ("MR_small_jpeg_ls_lossless.dcm", "MR_small.dcm", True),
    ("MR_small_jp2klossless.dcm", "MR_small.dcm", True),
    ("MR_small_RLE.dcm", "MR_small.dcm", True),
    ("JPEG2000.dcm", "JPEG2000_UNC.dcm", True),
    ("693_J2KI.dcm", "693_UNCI.dcm", True),  # UNCI holds the lossy image decompressed: exact
    ("RG1_J2KR.dcm", "RG1_UNCR.dcm", True),
    ("RG1_J2KI.dcm", "RG1_UNCI.dcm", True),
    ("693_J2KR.dcm", "693_UNCR.dcm", False),
]


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize(("compressed", "plain", "same_header"), TWINS, ids=[c for c, _, _ in TWINS])
def test_pydicom_twins_decode_to_the_same_pixels(
    tmp_path: Path, compressed: str, plain: str, same_header: bool
) -> None:
    packed = as_chest_dx(get_testdata_file(compressed), tmp_path / compressed)
    twin = as_chest_dx(get_testdata_file(plain), tmp_path / plain)
    np.testing.assert_array_equal(pydicom.dcmread(packed).pixel_array, pydicom.dcmread(twin).pixel_array)
    a, b = load_study(packed, KEY), load_study(twin, KEY)
    stats_a, stats_b = ([getattr(r.record, n) for n in IMAGE_STATS] for r in (a, b))
    assert (np.array_equal(a.pixels, b.pixels) and stats_a == stats_b) is same_header


@pytest.mark.filterwarnings("ignore")
def test_12_bit_jpeg_extended_decodes_to_pydicoms_reference_values(tmp_path: Path) -> None:
    # pydicom's reference for JPGExtended.dcm (the fixed JPEG-lossy.dcm), which its GDCM plugin refuses at 12 bits
    path = as_chest_dx(get_testdata_file("JPGExtended.dcm"), tmp_path / "JPGExtended.dcm")
    loaded = load_study(path, KEY)
    assert (loaded.record.bits_stored, loaded.pixels.shape) == (12, (1024, 256))
    assert round(float(loaded.pixels[420, 140]) * 4095) == 244
    assert round(float(loaded.pixels[230, 120]) * 4095) == 95


def test_an_unknown_transfer_syntax_is_unsupported_by_name(tmp_path: Path, image: np.ndarray, study: StudyMeta) -> None:
    ds = build_dataset(image, study)
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2 Main Profile / Main Level
    ds.PixelData = encapsulate([b"\x00\x00\x01\xb3 not really MPEG2"])
    ds["PixelData"].VR = "OB"
    ds.save_as(tmp_path / "mpeg.dcm", enforce_file_format=True)
    with pytest.raises(UnsupportedPixelData) as err:
        load_study(tmp_path / "mpeg.dcm", KEY)
    assert "unsupported transfer syntax MPEG2 Main Profile / Main Level (1.2.840.10008.1.2.4.100)" in str(err.value)


@pytest.mark.parametrize(
    ("encode", "edit"),
    [
        (lambda s, t: gdcm_copy(s, t, JPEGLSLossless), {"Rows": 65}),  # GDCM aborts: Rows above the JPEG-LS frame's
        (lambda s, t: gdcm_copy(s, t, JPEGLosslessSV1), {"BitsAllocated": 32}),  # GDCM aborts: 32 bits, JPEG Lossless
    ],
    ids=["jpeg-ls-rows", "jpeg-lossless-32-bits"],
)
def test_a_decoder_crash_refuses_the_file_and_spares_the_process(
    tmp_path: Path, image: np.ndarray, study: StudyMeta, encode: Encode, edit: dict[str, int]
) -> None:
    source = write_dicom(tmp_path / "dx.dcm", image, study)
    ds = pydicom.dcmread(encode(source, tmp_path / "packed.dcm"))
    for keyword, value in edit.items():
        setattr(ds, keyword, value)
    ds.save_as(tmp_path / "bad.dcm")
    with pytest.raises(UnsupportedPixelData) as err:
        load_study(tmp_path / "bad.dcm", KEY)
    assert str(err.value).startswith("bad.dcm: cannot decode ") and "the decoder crashed" in str(err.value)
    assert load_study(tmp_path / "packed.dcm", KEY).record == load_study(source, KEY).record  # a fresh child decodes


def test_a_corrupt_jpeg_2000_codestream_is_refused_by_openjpeg(
    tmp_path: Path, image: np.ndarray, study: StudyMeta
) -> None:
    packed = compress_copy(write_dicom(tmp_path / "dx.dcm", image, study), tmp_path / "j2k.dcm", JPEG2000, j2k_cr=[10])
    raw = bytearray(packed.read_bytes())
    siz = raw.index(b"\xff\x51")  # the SIZ marker: image and tile sizes
    raw[siz + 4 : siz + 12] = b"\xff" * 8
    (tmp_path / "bad.dcm").write_bytes(bytes(raw))
    with pytest.raises(UnsupportedPixelData) as err:
        load_study(tmp_path / "bad.dcm", KEY)
    assert "pylibjpeg" in str(err.value) and "crashed" not in str(err.value)
