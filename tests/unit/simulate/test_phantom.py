"""Behaviour of the chest-radiograph phantom on tiny images."""

from __future__ import annotations

import time

import numpy as np
import pytest
from scipy import ndimage

from pipeline.simulate import (
    FINDINGS,
    FOREIGN_OBJECTS,
    Acquisition,
    InvalidParameter,
    Patient,
    UnknownFinding,
    UnknownForeignObject,
    apply_acquisition,
    make_phantom,
    render_anatomy,
)

CLEAN = Acquisition(noise_std=0.0)


def _box_mask(shape: tuple[int, int], box: tuple[int, int, int, int]) -> np.ndarray:
    x, y, w, h = box
    mask = np.zeros(shape, dtype=bool)
    mask[y : y + h, x : x + w] = True
    return mask


@pytest.mark.parametrize("size", [64, 128, (96, 128)])
def test_image_shape_range_and_dtype(size: int | tuple[int, int]) -> None:
    ph = make_phantom(size=size, rng=0)
    shape = (size, size) if isinstance(size, int) else size
    assert ph.image.shape == shape and ph.lung_mask.shape == shape
    assert ph.image.dtype == np.float32
    assert ph.image.min() >= 0.0 and ph.image.max() <= 1.0
    assert not ph.abnormal and ph.findings == () and ph.organ_fully_captured


def test_looks_like_a_chest_radiograph() -> None:
    ph = render_anatomy(Patient(), size=128, rng=3)
    img, lung = ph.image, ph.lung_mask
    assert 0.1 < lung.mean() < 0.4  # lungs fill a good part of the field
    left, right = lung[:, 64:], lung[:, :64]
    assert left.sum() > 0.5 * right.sum() and right.sum() > 0.5 * left.sum()  # two lungs
    assert img[lung].mean() < img[~lung][img[~lung] > 0.2].mean() - 0.1  # lungs darker than the body
    assert img[:12, :12].mean() < 0.1 and img[:12, -12:].mean() < 0.1  # air beside the neck
    spine = img[30:100, 62:66].mean()
    assert spine > img[lung].mean() + 0.2  # mediastinum/spine bright
    below = img[118:, 40:90].mean()
    assert below > img[lung].mean() + 0.15  # abdomen below the diaphragm is dense


def test_same_seed_same_phantom_other_seed_other_phantom() -> None:
    patient = Patient(findings=("nodule",))
    acq = Acquisition(noise_std=0.02, foreign_objects=("button",), rotation_deg=3)
    a, b = make_phantom(patient, acq, size=64, rng=5), make_phantom(patient, acq, size=64, rng=5)
    np.testing.assert_array_equal(a.image, b.image)
    assert a.findings == b.findings
    c = make_phantom(patient, acq, size=64, rng=np.random.default_rng(6))
    assert not np.array_equal(a.image, c.image)


@pytest.mark.parametrize("kind", FINDINGS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_each_finding_changes_the_image_in_its_box(kind: str, seed: int) -> None:
    normal = render_anatomy(Patient(), size=128, rng=seed)
    sick = render_anatomy(Patient(findings=(kind,)), size=128, rng=seed)
    assert sick.abnormal and sick.labels == (kind,) and not normal.abnormal
    (finding,) = sick.findings
    x, y, w, h = finding.box
    assert x >= 0 and y >= 0 and x + w <= 128 and y + h <= 128 and w >= 2 and h >= 2
    diff = np.abs(sick.image - normal.image)
    inside = _box_mask(diff.shape, finding.box)
    assert diff[inside].mean() > 0.02
    assert diff[inside].sum() > 0.9 * diff.sum()  # the change is where the ground truth says
    # the box sits on a lung
    assert sick.lung_mask[inside].mean() > 0.3 or normal.lung_mask[inside].mean() > 0.3


def test_finding_sizes_scale_with_the_image() -> None:
    for kind in FINDINGS:
        small = render_anatomy(Patient(findings=(kind,)), size=64, rng=4).findings[0].box
        large = render_anatomy(Patient(findings=(kind,)), size=256, rng=4).findings[0].box
        assert large[2] == pytest.approx(4 * small[2], rel=0.35)
        assert large[3] == pytest.approx(4 * small[3], rel=0.35)


def test_nodule_is_a_few_pixels_wide_and_bright_at_128() -> None:
    for seed in range(10):
        normal = render_anatomy(Patient(), size=128, rng=seed)
        sick = render_anatomy(Patient(findings=("nodule",)), size=128, rng=seed)
        x, y, w, h = sick.findings[0].box
        assert 4 <= w <= 16 and 4 <= h <= 16
        assert (sick.image - normal.image)[y + h // 2, x + w // 2] > 0.08


def test_pneumothorax_rim_is_darker_and_has_no_markings() -> None:
    normal = render_anatomy(Patient(), size=128, rng=8)
    sick = render_anatomy(Patient(findings=("pneumothorax",)), size=128, rng=8)
    diff = sick.image - normal.image
    rim = ndimage.binary_erosion((diff < -0.04) & normal.lung_mask, iterations=2)
    assert rim.sum() > 30

    def roughness(img: np.ndarray) -> float:
        return float(np.abs(ndimage.laplace(img))[rim].mean())

    assert roughness(sick.image) < 0.95 * roughness(normal.image)  # no lung markings in the air


def test_effusion_is_bright_at_the_lung_base() -> None:
    normal = render_anatomy(Patient(), size=128, rng=9)
    sick = render_anatomy(Patient(findings=("effusion",)), size=128, rng=9)
    x, y, w, h = sick.findings[0].box
    assert y + h > 0.55 * 128  # at the base
    assert (sick.image - normal.image)[y : y + h, x : x + w].max() > 0.15


def test_several_findings_and_sides() -> None:
    ph = make_phantom(Patient(findings=("nodule", "effusion", "nodule")), size=64, rng=1)
    assert ph.labels == ("nodule", "effusion", "nodule") and ph.abnormal
    sides = {
        f.side for seed in range(12) for f in render_anatomy(Patient(findings=("nodule",)), size=32, rng=seed).findings
    }
    assert sides == {"left", "right"}


@pytest.mark.parametrize("offset", [-0.1, 0.1])
def test_brightness_offset_moves_the_mean(offset: float) -> None:
    anatomy = render_anatomy(Patient(), size=64, rng=2)
    base = apply_acquisition(anatomy, CLEAN, rng=0)
    shifted = apply_acquisition(anatomy, Acquisition(noise_std=0.0, brightness=offset), rng=0)
    assert float(shifted.image.mean() - base.image.mean()) == pytest.approx(offset, abs=0.02)


def test_contrast_gamma_noise_blur_and_downsampling() -> None:
    anatomy = render_anatomy(Patient(), size=64, rng=2)
    base = apply_acquisition(anatomy, CLEAN).image

    def roughness(img: np.ndarray) -> float:
        return float(np.abs(np.diff(img, axis=1)).mean())

    assert apply_acquisition(anatomy, Acquisition(noise_std=0.0, contrast=1.4)).image.std() > base.std() * 1.2
    assert apply_acquisition(anatomy, Acquisition(noise_std=0.0, gamma=1.5)).image.mean() < base.mean() - 0.05
    noisy = apply_acquisition(anatomy, Acquisition(noise_std=0.05), rng=0).image
    assert float((noisy - base).std()) == pytest.approx(0.05, rel=0.2)
    assert roughness(apply_acquisition(anatomy, Acquisition(noise_std=0.0, blur_sigma_px=1.5)).image) < roughness(base)
    binned = apply_acquisition(anatomy, Acquisition(noise_std=0.0, downsample=4)).image
    assert binned.shape == base.shape
    np.testing.assert_array_equal(binned[:4, :4], binned[0, 0])  # 4x4 blocks


def test_collimation_removes_the_apex() -> None:
    anatomy = render_anatomy(Patient(), size=128, rng=4)
    apex_row = int(np.flatnonzero(anatomy.lung_mask.any(axis=1))[0])
    assert 10 < apex_row < 40
    light = apply_acquisition(anatomy, Acquisition(noise_std=0.0, collimation_top=0.03))
    assert light.organ_fully_captured
    cut = apply_acquisition(anatomy, Acquisition(noise_std=0.0, collimation_top=0.3))
    assert not cut.organ_fully_captured
    rows = round(0.3 * 128)
    assert (cut.image[:rows] == 0.0).all()
    assert cut.lung_mask[:rows].any()  # the lung is there, the image does not show it
    assert np.abs(cut.image[rows:] - light.image[rows:]).max() < 1e-6


def test_rotation_moves_boxes_with_the_finding() -> None:
    normal = render_anatomy(Patient(), size=128, rng=0)
    sick = render_anatomy(Patient(findings=("nodule",)), size=128, rng=0)
    acq = Acquisition(noise_std=0.0, rotation_deg=20)
    rn, rs = apply_acquisition(normal, acq), apply_acquisition(sick, acq)
    assert rs.findings[0].box != sick.findings[0].box
    diff = np.abs(rs.image - rn.image)
    assert diff[_box_mask(diff.shape, rs.findings[0].box)].sum() > 0.9 * diff.sum()
    assert rn.lung_mask.sum() == pytest.approx(normal.lung_mask.sum(), rel=0.05)


def test_foreign_objects_are_bright_and_not_findings() -> None:
    anatomy = render_anatomy(Patient(), size=128, rng=1)
    for name in FOREIGN_OBJECTS:
        ph = apply_acquisition(anatomy, Acquisition(noise_std=0.0, foreign_objects=(name,)), rng=3)
        added = ph.image - apply_acquisition(anatomy, CLEAN).image
        assert (added > 0.1).sum() >= 5, name
        assert ph.image[added > 0.1].min() > 0.85
        assert not ph.abnormal and ph.foreign_objects == (name,)


def test_children_have_a_smaller_rounder_thorax_and_bigger_heart() -> None:
    def lung_share(age: float, seed: int) -> float:
        return float(render_anatomy(Patient(age_years=age), size=64, rng=seed).lung_mask.mean())

    child = np.mean([lung_share(2, s) for s in range(5)])
    adult = np.mean([lung_share(40, s) for s in range(5)])
    assert child < 0.7 * adult
    pa = render_anatomy(Patient(), size=64, rng=3, heart_magnification=1.0)
    ap = render_anatomy(Patient(), size=64, rng=3, heart_magnification=Acquisition(view="AP").heart_magnification)
    assert ap.lung_mask.sum() < pa.lung_mask.sum()  # the magnified heart hides more lung


def test_invalid_parameters_raise() -> None:
    with pytest.raises(UnknownFinding):
        Patient(findings=("cardiomegaly",))
    with pytest.raises(UnknownForeignObject):
        Acquisition(foreign_objects=("pacemaker",))
    with pytest.raises(InvalidParameter):
        Acquisition(collimation_top=0.95)
    with pytest.raises(InvalidParameter):
        Acquisition(view="LL")  # type: ignore[arg-type]
    with pytest.raises(InvalidParameter):
        Patient(age_years=-1)
    with pytest.raises(InvalidParameter):
        make_phantom(size=8)


def test_fast_enough() -> None:
    def best_of(repeats: int, number: int, size: int) -> float:
        """Return the best per-phantom CPU time of ``repeats`` batches (other processes do not count)."""
        best = float("inf")
        for r in range(repeats):
            start = time.process_time()
            for seed in range(number):
                make_phantom(Patient(findings=("nodule",)), size=size, rng=r * number + seed)
            best = min(best, (time.process_time() - start) / number)
        return best

    best_of(1, 1, 128)  # warm caches
    assert best_of(5, 10, 128) < 0.02  # ~2 ms on one laptop core
    assert best_of(2, 1, 1024) < 1.5  # ~0.15 s
