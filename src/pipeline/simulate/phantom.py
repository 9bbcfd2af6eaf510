"""Chest-radiograph phantoms with ground truth, and the device effects of a site.

A phantom is drawn in two steps, like a real study:

1. :func:`render_anatomy` draws the patient: body outline and soft tissue, lungs, mediastinum,
   heart, spine, ribs, clavicles, diaphragm domes, lung markings, and the findings of
   :class:`Patient` (``nodule``, ``pneumothorax``, ``effusion``) with their boxes.
2. :func:`apply_acquisition` applies what the site's device and staff do to it: rotation,
   foreign objects, blur and resolution loss, brightness/contrast/gamma, noise, and collimation
   that may cut the lung apex.

:func:`make_phantom` does both. Images are attenuation-like float32 in [0, 1] (bright = dense,
as MONOCHROME2 shows them). All geometry lives in normalised coordinates (x in [-1, 1] across the
columns, y downward, same scale), so a finding covers the same share of the field at 64 px as at
2048 px, and the drawing is a handful of vectorised numpy operations per structure.

Image orientation is the standard PA display: the patient's right is on the viewer's left, so
the heart bulges to the right of the image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Literal

import numpy as np
from scipy import ndimage

FINDINGS: tuple[str, ...] = ("nodule", "pneumothorax", "effusion")
"""Findings the phantom can draw; any of them makes a study abnormal."""

FOREIGN_OBJECTS: tuple[str, ...] = ("button", "necklace", "tube", "ecg_lead")
"""Foreign objects a site may leave on the patient; they are not findings."""

Side = Literal["right", "left"]
Sex = Literal["M", "F", "O"]
View = Literal["PA", "AP"]

_AIR = 0.04  # image value outside the body
_F32 = np.float32


class PhantomError(ValueError):
    """Base class of the invalid-parameter errors of the phantom generator."""


class UnknownFinding(PhantomError):
    """A finding name that the generator cannot draw."""


class UnknownForeignObject(PhantomError):
    """A foreign-object name that the generator cannot draw."""


class InvalidParameter(PhantomError):
    """A patient or acquisition parameter out of its range."""


@dataclass(frozen=True)
class Patient:
    """Who is imaged.

    Args:
        age_years: age in years (fractions for babies); children get a smaller, rounder thorax
            relative to the field and a larger heart shadow.
        sex: ``"M"``, ``"F"`` or ``"O"`` (drawn halfway between); adult women get breast shadows.
        findings: names from :data:`FINDINGS`; empty for a normal study. A name may repeat.
    """

    age_years: float = 45.0
    sex: Sex = "M"
    findings: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not 0.0 <= self.age_years <= 130.0:
            raise InvalidParameter(f"age_years must be in [0, 130], got {self.age_years}")
        if self.sex not in ("M", "F", "O"):
            raise InvalidParameter(f"sex must be 'M', 'F' or 'O', got {self.sex!r}")
        for name in self.findings:
            if name not in FINDINGS:
                raise UnknownFinding(f"unknown finding {name!r}; known: {', '.join(FINDINGS)}")


@dataclass(frozen=True)
class Acquisition:
    """What the device and the radiographer do to the image; the defaults are a clean reference site.

    Args:
        view: ``"PA"`` or ``"AP"``; AP magnifies the heart (it is farther from the detector).
        brightness: additive offset in image units, applied after gamma and contrast.
        contrast: gain around mid-grey 0.5 (1 = unchanged).
        gamma: exponent applied to the [0, 1] image (1 = unchanged; > 1 darkens mid-tones).
        noise_std: standard deviation of additive Gaussian noise, image units.
        blur_sigma_px: Gaussian blur in output pixels (0 = none).
        downsample: detector binning factor (1 = none); the image keeps its size but loses resolution.
        collimation_top: fraction of the rows at the top that the collimator blanks, in [0, 0.9];
            enough of it cuts the lung apex ("organ not fully captured").
        collimation_fill: image value of the blanked rows (0 = black electronic shutter).
        rotation_deg: in-plane rotation of the patient, degrees counter-clockwise.
        foreign_objects: names from :data:`FOREIGN_OBJECTS`; drawn as small very bright shapes.
    """

    view: View = "PA"
    brightness: float = 0.0
    contrast: float = 1.0
    gamma: float = 1.0
    noise_std: float = 0.01
    blur_sigma_px: float = 0.0
    downsample: int = 1
    collimation_top: float = 0.0
    collimation_fill: float = 0.0
    rotation_deg: float = 0.0
    foreign_objects: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.view not in ("PA", "AP"):
            raise InvalidParameter(f"view must be 'PA' or 'AP', got {self.view!r}")
        if self.contrast <= 0 or self.gamma <= 0:
            raise InvalidParameter(f"contrast and gamma must be > 0, got {self.contrast}, {self.gamma}")
        if self.noise_std < 0 or self.blur_sigma_px < 0:
            raise InvalidParameter("noise_std and blur_sigma_px must be >= 0")
        if self.downsample < 1:
            raise InvalidParameter(f"downsample must be >= 1, got {self.downsample}")
        if not 0.0 <= self.collimation_top <= 0.9:
            raise InvalidParameter(f"collimation_top must be in [0, 0.9], got {self.collimation_top}")
        for name in self.foreign_objects:
            if name not in FOREIGN_OBJECTS:
                raise UnknownForeignObject(f"unknown foreign object {name!r}; known: {', '.join(FOREIGN_OBJECTS)}")

    @property
    def heart_magnification(self) -> float:
        """Return the linear magnification of the heart shadow relative to PA."""
        return 1.15 if self.view == "AP" else 1.0


@dataclass(frozen=True)
class Finding:
    """Ground truth of one finding.

    Args:
        kind: a name from :data:`FINDINGS`.
        side: the patient's side (``"right"`` is on the viewer's left).
        box: ``(x, y, w, h)`` in pixels: column and row of the top-left corner, width, height.
    """

    kind: str
    side: Side
    box: tuple[int, int, int, int]


@dataclass(frozen=True, eq=False)
class Phantom:
    """A drawn study and its ground truth.

    Args:
        image: (H, W) float32 in [0, 1], bright = dense.
        findings: one :class:`Finding` per drawn finding; empty for a normal study.
        lung_mask: (H, W) bool, where the lungs are (whether or not the collimator blanked them).
        organ_fully_captured: False when collimation or rotation leaves part of a lung out of the image.
        foreign_objects: names of the foreign objects drawn on it.
    """

    image: np.ndarray
    findings: tuple[Finding, ...]
    lung_mask: np.ndarray
    organ_fully_captured: bool = True
    foreign_objects: tuple[str, ...] = ()

    @property
    def labels(self) -> tuple[str, ...]:
        """Return the finding names, in drawing order."""
        return tuple(f.kind for f in self.findings)

    @property
    def abnormal(self) -> bool:
        """Return True when the study has at least one finding."""
        return bool(self.findings)


# --------------------------------------------------------------------------------------------
# anatomy


@dataclass(frozen=True)
class _Lung:
    """Shape of one lung in (u, y): u is the distance from the midline, y the row coordinate."""

    y_apex: float
    y_base: float  # level of the costophrenic angle
    u_apex: float  # lung centre line at the apex ...
    u_shift: float  # ... moves outward by this much down to the base
    half_width: float  # half width of the lung at the base
    dome_height: float
    medial: float  # mediastinal edge


@dataclass(frozen=True)
class _Anatomy:
    cx: float
    cy: float
    s: float  # thorax scale (1 = adult)
    body_half_width: float
    neck_half_width: float
    y_shoulder: float
    right: _Lung
    left: _Lung
    heart: tuple[float, float, float, float, float]  # x, y, half width, half height, tilt (rad)
    rib_curvature: float
    rib_spacing: float
    rib_phase: float
    breast: float  # density of breast shadows (0 = none)
    gastric_bubble: bool


def _shape(size: int | tuple[int, int]) -> tuple[int, int]:
    rows, cols = (size, size) if isinstance(size, int) else size
    if rows < 16 or cols < 16:
        raise InvalidParameter(f"image size must be at least 16x16, got {rows}x{cols}")
    return int(rows), int(cols)


def _grid(rows: int, cols: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Return x (1, W), y (H, 1) in normalised units and the pixel size in those units."""
    px = 2.0 / (cols - 1)
    x = ((np.arange(cols, dtype=_F32) - (cols - 1) / 2) * px)[None, :]
    y = ((np.arange(rows, dtype=_F32) - (rows - 1) / 2) * px)[:, None]
    return x, y, px


def _ramp(d: np.ndarray, eps: float) -> np.ndarray:
    """Return a soft step of width ``eps`` that is 0.5 where the signed distance ``d`` is 0."""
    return np.clip(d * _F32(1.0 / eps) + _F32(0.5), 0.0, 1.0)


def _sample_anatomy(patient: Patient, rng: np.random.Generator, magnification: float) -> _Anatomy:
    g = min(patient.age_years / 18.0, 1.0)
    s = (0.66 + 0.34 * g**0.6) * (1 + 0.03 * rng.standard_normal())
    roundness = 0.84 + 0.16 * g  # children: shorter lungs for their width
    sex_w = {"M": 1.03, "F": 0.96, "O": 1.0}[patient.sex]
    sex_h = {"M": 1.0, "F": 0.97, "O": 0.985}[patient.sex]
    ctr = 0.57 - 0.12 * g + (0.02 if patient.age_years > 65 else 0.0) + 0.025 * rng.standard_normal()
    cx = 0.025 * rng.standard_normal()
    cy = 0.06 + 0.025 * rng.standard_normal()
    inspiration = 0.035 * rng.standard_normal()

    def jitter(sd: float = 0.04) -> float:
        return 1.0 + sd * float(rng.standard_normal())

    lung_h = s * roundness * sex_h
    y_apex = cy - 0.70 * lung_h * jitter(0.03)
    lungs = []
    for y_base_off in (0.47, 0.52):  # patient right hemidiaphragm sits higher
        lungs.append(
            _Lung(
                y_apex=y_apex + 0.01 * rng.standard_normal(),
                y_base=cy + (y_base_off + inspiration) * lung_h * jitter(0.02),
                u_apex=0.34 * s * sex_w * jitter(),
                u_shift=0.08 * s * sex_w,
                half_width=0.28 * s * sex_w * jitter(),
                dome_height=0.16 * s * jitter(0.12),
                medial=0.09 * s,
            )
        )
    thorax_half = lungs[1].u_apex + lungs[1].u_shift + lungs[1].half_width
    hw = ctr * thorax_half * magnification
    heart = (
        cx + 0.07 * s,
        lungs[1].y_base - 0.21 * s * magnification,
        hw,
        0.26 * s * magnification * jitter(),
        0.35 + 0.1 * rng.standard_normal(),
    )
    return _Anatomy(
        cx=cx,
        cy=cy,
        s=s,
        body_half_width=0.92 * s * sex_w * jitter(0.05),
        neck_half_width=0.20 * s * jitter(),
        y_shoulder=y_apex - 0.10 * s,
        right=lungs[0],
        left=lungs[1],
        heart=heart,
        rib_curvature=(0.55 + 0.45 * g) * 0.9 / s,
        rib_spacing=0.125 * lung_h * jitter(0.03),
        rib_phase=float(rng.uniform(0, 1)),
        breast=0.07 * min(max(patient.age_years - 13.0, 0.0) / 5.0, 1.0) if patient.sex == "F" else 0.0,
        gastric_bubble=bool(rng.random() < 0.7),
    )


def _side_params(a: _Anatomy, x: np.ndarray) -> tuple[np.ndarray, ...]:
    """Return per-column lung parameters (1, W): the patient's left lung is on the image right."""
    on_left = x >= a.cx
    out = []
    for name in ("y_apex", "y_base", "u_apex", "u_shift", "half_width", "dome_height", "medial"):
        out.append(np.where(on_left, _F32(getattr(a.left, name)), _F32(getattr(a.right, name))).astype(_F32))
    return tuple(out)


def _lung_field(
    u: np.ndarray, y: np.ndarray, params: tuple[np.ndarray, ...], eps: float
) -> tuple[np.ndarray, np.ndarray]:
    """Return the soft lung mask and the lung depth profile, both (H, W) in [0, 1].

    ``u`` (1, W) is the distance from the midline, ``y`` (H, 1) the row coordinate; ``params``
    come from :func:`_side_params`.
    """
    y_apex, y_base, u_apex, u_shift, half_width, dome_height, medial = params
    q = (y - y_apex) / (y_base - y_apex)
    qc = np.clip(q, 0.0, 1.0)
    one_minus = 1.0 - qc
    hwid = half_width * np.sqrt(np.clip(1.0 - one_minus * one_minus, 0.0, 1.0))
    # above the apex the vertical distance bounds the lung, so it ends in a rounded cap
    e_h = np.minimum(hwid - np.abs(u - (u_apex + u_shift * qc)), y - y_apex)
    # diaphragm dome: depends on the column only; lowest at the costophrenic angle
    uc_base = u_apex + u_shift
    t = (u - (uc_base - 0.03)) / (half_width * 1.08)
    y_dome = y_base - dome_height * np.clip(1.0 - t * t, 0.0, 1.0)
    e_d = y_dome - y
    lung = _ramp(e_h, eps) * _ramp(e_d, eps) * _ramp(u - medial, 2 * eps)
    depth = lung * (0.55 + 0.45 * np.clip(e_h / (0.6 * half_width), 0.0, 1.0))
    return lung, depth


@lru_cache(maxsize=64)
def _interp_taps(n_in: int, n_out: int, taps: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Return (n_out, taps) source indices and weights of a truncated Gaussian interpolation."""
    pos = np.linspace(0, n_in - 1, n_out)
    offsets = np.arange(taps) - taps // 2
    idx = np.rint(pos)[:, None].astype(np.int64) + offsets[None, :]
    w = np.exp(-0.5 * ((pos[:, None] - idx) / 0.8) ** 2)
    w[(idx < 0) | (idx >= n_in)] = 0.0
    idx = np.clip(idx, 0, n_in - 1)
    w = (w / w.sum(axis=1, keepdims=True)).astype(_F32)
    idx.flags.writeable = False
    w.flags.writeable = False
    return idx, w


def _smooth_noise(rng: np.random.Generator, rows: int, cols: int, cells: int) -> np.ndarray:
    """Return (H, W) smooth noise of unit-ish amplitude with ``cells`` features across the width.

    A small Gaussian grid is interpolated with 5-tap Gaussian weights per axis: a few gathers
    instead of a matrix product, which a threaded BLAS would make slow on busy machines.
    """
    cells_r = max(2, round(cells * rows / cols))
    grid = rng.standard_normal((cells_r, cells), dtype=_F32)
    col_idx, col_w = _interp_taps(cells, cols)
    wide = grid[:, col_idx[:, 0]] * col_w[:, 0]
    for t in range(1, col_idx.shape[1]):
        wide += grid[:, col_idx[:, t]] * col_w[:, t]
    row_idx, row_w = _interp_taps(cells_r, rows)
    out = wide[row_idx[:, 0]] * row_w[:, 0, None]
    for t in range(1, row_idx.shape[1]):
        out += wide[row_idx[:, t]] * row_w[:, t, None]
    return out * _F32(1.6)  # the interpolation shrinks the spread


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return (0, 0, 0, 0)
    return (int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1))


def _lung_of(a: _Anatomy, side: Side) -> _Lung:
    return a.right if side == "right" else a.left


def _side_columns(a: _Anatomy, x: np.ndarray, side: Side) -> np.ndarray:
    return (x >= a.cx) if side == "left" else (x < a.cx)


def render_anatomy(
    patient: Patient,
    *,
    size: int | tuple[int, int] = 128,
    rng: np.random.Generator | int | None = None,
    heart_magnification: float = 1.0,
) -> Phantom:
    """Return the noise-free radiograph of ``patient`` and its ground truth.

    The anatomy draws from ``rng`` before any finding does, so the same seed gives the same
    patient with and without findings.

    Args:
        patient: age, sex and findings.
        size: ``rows`` (square) or ``(rows, columns)`` in pixels, at least 16.
        rng: a seeded generator, or a seed.
        heart_magnification: linear scale of the heart shadow (AP views: about 1.15).

    Returns:
        A :class:`Phantom` with an (H, W) float32 image in [0, 1].
    """
    rng = np.random.default_rng(rng)
    rows, cols = _shape(size)
    x, y, px = _grid(rows, cols)
    a = _sample_anatomy(patient, rng, heart_magnification)
    s = a.s
    eps = max(1.2 * px, 0.012)
    dx = x - _F32(a.cx)
    u = np.abs(dx)

    # body: elliptical cross-section, narrowing to the neck above the shoulders
    shoulder = 1.0 / (1.0 + np.exp(-(y - a.y_shoulder) / (0.05 * s)))
    half_w = a.neck_half_width + (a.body_half_width - a.neck_half_width) * shoulder
    rel = u / half_w
    thickness = np.sqrt(np.clip(1.0 - rel * rel, 0.0, 1.0))
    body = _ramp(half_w - u, eps)
    img = _F32(_AIR) + body * (_F32(0.58) * thickness)

    # lungs
    params = _side_params(a, x)
    lung, depth = _lung_field(u, y, params, eps)

    # heart (subtracts from the lungs it overlaps) and mediastinum
    hx, hy, hw, hh, tilt = a.heart
    ct, st = math.cos(tilt), math.sin(tilt)
    xr = (x - hx) * ct + (y - hy) * st
    yr = -(x - hx) * st + (y - hy) * ct
    r2 = (xr / hw) ** 2 + (yr / hh) ** 2
    heart = _ramp((1.0 - r2) * (0.5 * min(hw, hh)), 2 * eps)
    not_heart = 1.0 - heart
    lung *= not_heart
    depth *= not_heart
    mediastinum = _ramp(a.right.medial + 0.01 - u, 2 * eps) * np.clip((y - (a.y_shoulder - 0.1)) / (0.2 * s), 0, 1)
    knob_r2 = ((x - (a.cx + 0.11 * s)) / (0.075 * s)) ** 2 + ((y - (a.left.y_apex + 0.38 * s)) / (0.07 * s)) ** 2
    img += heart * (_F32(0.05) * np.sqrt(np.clip(1.0 - r2, 0.0, 1.0)) + _F32(0.02))
    img += _F32(0.10) * np.maximum(mediastinum, _ramp(1.0 - knob_r2, 0.3))

    # spine with vertebral bodies, visible through the mediastinum
    vert = np.cos((y - a.cy) * _F32(2 * math.pi / (0.105 * s)))
    spine = _ramp(0.055 * s - u, 2 * eps) * (_F32(0.10) + _F32(0.03) * vert)
    img += spine * body

    # ribs: posterior arcs (convex upward) and fainter anterior ribs (running down medially)
    cage = _ramp(params[2] + params[3] + params[4] + 0.05 * s - u, 3 * eps) * _ramp(u - 0.03 * s, 2 * eps)
    v = y - _F32(a.rib_curvature) * (u - _F32(0.22 * s)) ** 2 - _F32(a.right.y_apex - 0.08 * s)
    ph = v / _F32(a.rib_spacing) + _F32(a.rib_phase)
    in_range = _ramp(ph, 0.6) * _ramp(10.5 - ph, 0.6)
    posterior = _ramp(np.cos(ph * _F32(2 * math.pi)) - 0.35, 0.5) * in_range
    ph2 = (y + _F32(0.55) * u - _F32(a.right.y_apex + 0.1 * s)) / _F32(1.1 * a.rib_spacing)
    anterior = _ramp(np.cos(ph2 * _F32(2 * math.pi)) - 0.5, 0.5) * _ramp(ph2, 0.5) * _ramp(7.0 - ph2, 0.5)
    anterior *= _ramp(u - 0.12 * s, 4 * eps)
    img += cage * (_F32(0.075) * posterior + _F32(0.035) * anterior)

    # clavicles: from the sternal end up and out towards the shoulders
    y_clav = _F32(a.right.y_apex + 0.13 * s) - _F32(0.28) * (u - _F32(0.05 * s))
    clav = _ramp(0.028 * s - np.abs(y - y_clav), eps) * _ramp(u - 0.04 * s, eps) * _ramp(0.58 * s - u, 4 * eps)
    img += _F32(0.11) * clav

    if a.breast > 0:
        br2 = ((u - 0.47 * s) / (0.3 * s)) ** 2 + ((y - (a.left.y_base - 0.06 * s)) / (0.2 * s)) ** 2
        img += _F32(a.breast) * _ramp(1.0 - br2, 0.3)
    if a.gastric_bubble:
        gb2 = ((x - (a.cx + 0.33 * s)) / (0.09 * s)) ** 2 + ((y - (a.left.y_base + 0.09 * s)) / (0.055 * s)) ** 2
        img -= _F32(0.09) * _ramp(1.0 - gb2, 0.4)

    # lung markings: vessel-like ridges of smooth noise, densest near the hila
    n1 = _smooth_noise(rng, rows, cols, 22)
    n2 = _smooth_noise(rng, rows, cols, 9)
    n3 = _smooth_noise(rng, rows, cols, 48)
    ridge = np.clip(1.0 - np.abs(n1) * _F32(2.2), 0.0, 1.0) ** 2
    ridge += _F32(0.5) * np.clip(1.0 - np.abs(n3) * _F32(3.0), 0.0, 1.0) ** 2  # finer branches
    hilum = np.exp(-((u - 0.16 * s) ** 2 + (y - (a.cy - 0.02 * s)) ** 2) / (0.18 * s * s))
    markings = ridge * (_F32(0.05) + _F32(0.08) * hilum) + _F32(0.05) * hilum
    soft_texture = _F32(0.012) * n2

    findings: list[Finding] = []
    lung_dark = _F32(0.30) * depth
    for kind in patient.findings:
        side: Side = "right" if rng.random() < 0.5 else "left"
        if kind == "nodule":
            findings.append(_draw_nodule(img, lung, a, side, x, y, px, rng))
        elif kind == "pneumothorax":
            box = _draw_pneumothorax(img, lung, lung_dark, markings, a, side, x, y, u, params, eps, px, rng)
            findings.append(Finding("pneumothorax", side, box))
        else:
            box = _draw_effusion(img, lung, lung_dark, markings, a, side, x, y, u, params, eps, rng)
            findings.append(Finding("effusion", side, box))

    img -= lung_dark
    img += markings * lung
    img += soft_texture * body
    np.clip(img, 0.0, 1.0, out=img)
    lung_mask = lung > 0.5
    captured = not (lung_mask[0].any() or lung_mask[-1].any() or lung_mask[:, 0].any() or lung_mask[:, -1].any())
    return Phantom(
        image=img.astype(_F32, copy=False),
        findings=tuple(findings),
        lung_mask=lung_mask,
        organ_fully_captured=captured,
    )


def _draw_nodule(
    img: np.ndarray,
    lung: np.ndarray,
    a: _Anatomy,
    side: Side,
    x: np.ndarray,
    y: np.ndarray,
    px: float,
    rng: np.random.Generator,
) -> Finding:
    lu = _lung_of(a, side)
    sign = 1.0 if side == "left" else -1.0
    radius = float(rng.uniform(0.045, 0.09)) * a.s**0.5
    amp = float(rng.uniform(0.13, 0.26))
    rows, cols = img.shape
    cx = cy = 0.0
    for _ in range(30):
        q = float(rng.uniform(0.18, 0.88))
        hwid = lu.half_width * math.sqrt(max(1.0 - (1.0 - q) ** 2, 0.0))
        uc = lu.u_apex + lu.u_shift * q + float(rng.uniform(-0.65, 0.65)) * hwid
        cx = a.cx + sign * uc
        cy = lu.y_apex + q * (lu.y_base - lu.y_apex)
        r = min(max(round((cy - float(y[0, 0])) / px), 0), rows - 1)
        c = min(max(round((cx - float(x[0, 0])) / px), 0), cols - 1)
        if lung[r, c] > 0.9:
            break
    d2 = ((x - cx) ** 2 + (y - cy) ** 2) / _F32(radius * radius)
    blob = np.sqrt(np.clip(1.0 - d2, 0.0, 1.0)) + _F32(0.25) * _ramp(1.0 - d2, 0.5)
    img += _F32(amp / 1.25) * blob
    x0 = (cx - radius - float(x[0, 0])) / px
    y0 = (cy - radius - float(y[0, 0])) / px
    c0, r0 = max(math.floor(x0), 0), max(math.floor(y0), 0)
    c1 = min(math.ceil(x0 + 2 * radius / px), cols)
    r1 = min(math.ceil(y0 + 2 * radius / px), rows)
    return Finding("nodule", side, (c0, r0, max(c1 - c0, 1), max(r1 - r0, 1)))


def _draw_pneumothorax(
    img: np.ndarray,
    lung: np.ndarray,
    lung_dark: np.ndarray,
    markings: np.ndarray,
    a: _Anatomy,
    side: Side,
    x: np.ndarray,
    y: np.ndarray,
    u: np.ndarray,
    params: tuple[np.ndarray, ...],
    eps: float,
    px: float,
    rng: np.random.Generator,
) -> tuple[int, int, int, int]:
    """Shrink the lung towards its hilum; the rim it leaves is air without markings."""
    lu = _lung_of(a, side)
    k = 1.0 - float(rng.uniform(0.12, 0.3))  # linear size of the collapsed lung
    u_h = lu.medial + 0.02 * a.s
    y_h = lu.y_apex + 0.85 * (lu.y_base - lu.y_apex)
    cols_side = _side_columns(a, x, side)
    line_eps = max(1.5 * px, 0.008)
    collapsed, _ = _lung_field(u_h + (u - u_h) / k, y_h + (y - y_h) / k, params, line_eps)
    collapsed *= cols_side
    own = lung * cols_side
    rim = own * (1.0 - collapsed)
    pleural_line = _F32(4.0) * collapsed * (1.0 - collapsed) * own
    markings *= 1.0 - rim
    lung_dark += rim * _F32(0.07)
    img += _F32(0.08) * pleural_line + _F32(0.02) * collapsed * own
    return _bbox((own > 0.5) & (collapsed < 0.5))


def _draw_effusion(
    img: np.ndarray,
    lung: np.ndarray,
    lung_dark: np.ndarray,
    markings: np.ndarray,
    a: _Anatomy,
    side: Side,
    x: np.ndarray,
    y: np.ndarray,
    u: np.ndarray,
    params: tuple[np.ndarray, ...],
    eps: float,
    rng: np.random.Generator,
) -> tuple[int, int, int, int]:
    """Fill the lung base with fluid whose meniscus climbs the lateral chest wall."""
    lu = _lung_of(a, side)
    height = float(rng.uniform(0.22, 0.5)) * a.s
    u_lat = lu.u_apex + lu.u_shift + lu.half_width
    t = np.clip((u - lu.medial) / (u_lat - lu.medial), 0.0, 1.0)
    y_fluid = _F32(lu.y_base) - _F32(height) * (_F32(0.3) + _F32(0.7) * t * t)
    cols_side = _side_columns(a, x, side)
    fluid = _ramp(y - y_fluid, max(2 * eps, 0.03 * a.s)) * lung * cols_side
    markings *= 1.0 - fluid
    lung_dark *= 1.0 - _F32(0.9) * fluid
    img += _F32(0.04) * fluid
    return _bbox((y > y_fluid) & (lung * cols_side > 0.5))


# --------------------------------------------------------------------------------------------
# acquisition


def _stamp(img: np.ndarray, rr: np.ndarray, cc: np.ndarray, radius_px: float, value: float) -> None:
    """Set discs of ``radius_px`` around the points (rr, cc) to at least ``value``, in place."""
    r = max(radius_px, 0.5)
    k = math.ceil(r)
    oy, ox = np.mgrid[-k : k + 1, -k : k + 1]
    keep = oy * oy + ox * ox <= r * r + 0.25
    oy, ox = oy[keep], ox[keep]
    rows, cols = img.shape
    ri = np.clip(np.rint(rr)[:, None].astype(np.int64) + oy[None, :], 0, rows - 1).ravel()
    ci = np.clip(np.rint(cc)[:, None].astype(np.int64) + ox[None, :], 0, cols - 1).ravel()
    img[ri, ci] = np.maximum(img[ri, ci], _F32(value))


def _curve(points: np.ndarray, step_px: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Return densely resampled (rows, cols) along a polyline given as (N, 2) [row, col]."""
    seg = np.diff(points, axis=0)
    length = np.hypot(seg[:, 0], seg[:, 1])
    cum = np.concatenate([[0.0], np.cumsum(length)])
    t = np.linspace(0.0, cum[-1], max(int(cum[-1] / step_px), 2))
    return np.interp(t, cum, points[:, 0]), np.interp(t, cum, points[:, 1])


def _draw_foreign_object(img: np.ndarray, lung_mask: np.ndarray, name: str, rng: np.random.Generator) -> None:
    rows, cols = img.shape
    scale = cols / 128.0  # sizes below are in pixels of a 128-px image
    box = _bbox(lung_mask)
    if box[2] == 0:
        box = (cols // 6, rows // 6, 2 * cols // 3, 2 * rows // 3)
    bx, by, bw, bh = box
    mid = bx + bw / 2 + rng.normal(0, 0.02 * cols)
    if name == "button":
        n = int(rng.integers(2, 5))
        rr = by + bh * (0.15 + 0.22 * np.arange(n)) + rng.normal(0, 0.01 * rows)
        cc = np.full(n, mid + rng.normal(0, 0.03 * cols))
        _stamp(img, rr, cc, 1.6 * scale, 0.97)
    elif name == "necklace":
        t = np.linspace(-math.pi / 2, math.pi / 2, 60)
        top = by - 0.06 * rows
        depth = bh * rng.uniform(0.25, 0.45)
        pts = np.stack([top + depth * np.cos(t), mid + 0.16 * cols * np.sin(t)], axis=1)
        rr, cc = _curve(pts)
        _stamp(img, rr, cc, 0.6 * scale, 0.95)
        _stamp(img, np.array([top + depth + 1.5 * scale]), np.array([mid]), 2.2 * scale, 1.0)
    elif name == "tube":
        end_row = by + bh * rng.uniform(0.35, 1.1)
        pts = np.array(
            [
                [0.0, mid],
                [by + 0.3 * bh, mid + rng.normal(0, 0.03 * cols)],
                [end_row, mid + rng.uniform(0.0, 0.12) * cols],
            ]
        )
        rr, cc = _curve(pts)
        _stamp(img, rr, cc, 0.8 * scale, 0.9)
    elif name == "ecg_lead":
        n = int(rng.integers(2, 5))
        for _ in range(n):
            r0 = by + bh * rng.uniform(0.0, 0.9)
            c0 = bx + bw * rng.uniform(0.0, 1.0)
            _stamp(img, np.array([r0]), np.array([c0]), 2.5 * scale, 0.93)
            edge_c = 0.0 if c0 < cols / 2 else cols - 1.0
            pts = np.array([[r0, c0], [r0 + rng.uniform(-0.1, 0.2) * rows, (c0 + edge_c) / 2], [r0, edge_c]])
            rr, cc = _curve(pts)
            _stamp(img, rr, cc, 0.4 * scale, 0.9)


def _rotate_box(box: tuple[int, int, int, int], angle_deg: float, rows: int, cols: int) -> tuple[int, int, int, int]:
    """Return the bounding box of ``box`` after ``ndimage.rotate(..., angle_deg, reshape=False)``."""
    x, y, w, h = box
    cr, cc = (rows - 1) / 2, (cols - 1) / 2
    th = math.radians(angle_deg)
    c, s = math.cos(th), math.sin(th)
    xs, ys = [], []
    for px_, py_ in ((x, y), (x + w, y), (x, y + h), (x + w, y + h)):
        dx, dy = px_ - cc, py_ - cr
        # ndimage.rotate turns the picture counter-clockwise as displayed (rows downward)
        xs.append(cc + c * dx + s * dy)
        ys.append(cr - s * dx + c * dy)
    x0, y0 = max(math.floor(min(xs)), 0), max(math.floor(min(ys)), 0)
    x1, y1 = min(math.ceil(max(xs)), cols), min(math.ceil(max(ys)), rows)
    return (x0, y0, max(x1 - x0, 0), max(y1 - y0, 0))


def apply_acquisition(
    phantom: Phantom, acquisition: Acquisition, *, rng: np.random.Generator | int | None = None
) -> Phantom:
    """Return ``phantom`` as the site's device and staff would record it.

    Steps, in order: rotation, foreign objects, detector binning and blur, gamma, contrast and
    brightness, additive noise, clipping to [0, 1], collimation. ``acquisition.view`` is not
    applied here: the heart magnification of AP views is part of :func:`render_anatomy`.

    Args:
        phantom: the output of :func:`render_anatomy`.
        acquisition: the site's effects.
        rng: a seeded generator, or a seed (placement of foreign objects, noise).

    Returns:
        A new :class:`Phantom`; boxes and lung mask follow the rotation, and
        ``organ_fully_captured`` is False when a lung is cut.
    """
    rng = np.random.default_rng(rng)
    acq = acquisition
    img = phantom.image.astype(_F32, copy=True)
    lung_mask = phantom.lung_mask
    findings = phantom.findings
    rows, cols = img.shape
    captured = phantom.organ_fully_captured

    if acq.rotation_deg:
        img = ndimage.rotate(img, acq.rotation_deg, reshape=False, order=1, mode="constant", cval=_AIR)
        lung_mask = ndimage.rotate(lung_mask.astype(np.uint8), acq.rotation_deg, reshape=False, order=0) > 0
        findings = tuple(replace(f, box=_rotate_box(f.box, acq.rotation_deg, rows, cols)) for f in findings)
        captured = captured and not (
            lung_mask[0].any() or lung_mask[-1].any() or lung_mask[:, 0].any() or lung_mask[:, -1].any()
        )

    for name in acq.foreign_objects:
        _draw_foreign_object(img, lung_mask, name, rng)

    if acq.downsample > 1:
        d = acq.downsample
        pr, pc = (-rows) % d, (-cols) % d
        padded = np.pad(img, ((0, pr), (0, pc)), mode="edge")
        low = padded.reshape(padded.shape[0] // d, d, padded.shape[1] // d, d).mean(axis=(1, 3))
        img = np.repeat(np.repeat(low, d, axis=0), d, axis=1)[:rows, :cols].astype(_F32)
    if acq.blur_sigma_px > 0:
        img = ndimage.gaussian_filter(img, acq.blur_sigma_px, mode="nearest")

    if acq.gamma != 1.0:
        np.clip(img, 0.0, 1.0, out=img)
        np.power(img, _F32(acq.gamma), out=img)
    if acq.contrast != 1.0 or acq.brightness != 0.0:
        img = (img - _F32(0.5)) * _F32(acq.contrast) + _F32(0.5 + acq.brightness)
    if acq.noise_std > 0:
        img += rng.standard_normal(img.shape, dtype=_F32) * _F32(acq.noise_std)
    np.clip(img, 0.0, 1.0, out=img)

    cut = round(acq.collimation_top * rows)
    if cut:
        img[:cut] = acq.collimation_fill
        captured = captured and not lung_mask[:cut].any()

    return Phantom(
        image=img.astype(_F32, copy=False),
        findings=findings,
        lung_mask=lung_mask,
        organ_fully_captured=captured,
        foreign_objects=phantom.foreign_objects + acq.foreign_objects,
    )


def make_phantom(
    patient: Patient | None = None,
    acquisition: Acquisition | None = None,
    *,
    size: int | tuple[int, int] = 128,
    rng: np.random.Generator | int | None = None,
) -> Phantom:
    """Return a phantom of ``patient`` recorded with ``acquisition``.

    Args:
        patient: who is imaged; default a 45-year-old man with no finding.
        acquisition: the site's device effects; default a clean PA reference site.
        size: ``rows`` (square) or ``(rows, columns)`` in pixels, at least 16.
        rng: a seeded generator, or a seed; the same seed gives the same phantom.

    Returns:
        A :class:`Phantom` with an (H, W) float32 image in [0, 1].
    """
    rng = np.random.default_rng(rng)
    patient = patient or Patient()
    acquisition = acquisition or Acquisition()
    anatomy = render_anatomy(patient, size=size, rng=rng, heart_magnification=acquisition.heart_magnification)
    return apply_acquisition(anatomy, acquisition, rng=rng)
