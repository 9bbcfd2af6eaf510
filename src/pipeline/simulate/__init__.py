"""Synthetic chest radiographs with ground truth, and the device effects of simulated sites."""

from __future__ import annotations

from pipeline.simulate.phantom import (
    FINDINGS,
    FOREIGN_OBJECTS,
    Acquisition,
    Finding,
    InvalidParameter,
    Patient,
    Phantom,
    PhantomError,
    UnknownFinding,
    UnknownForeignObject,
    apply_acquisition,
    make_phantom,
    render_anatomy,
)

__all__ = [
    "FINDINGS",
    "FOREIGN_OBJECTS",
    "Acquisition",
    "Finding",
    "InvalidParameter",
    "Patient",
    "Phantom",
    "PhantomError",
    "UnknownFinding",
    "UnknownForeignObject",
    "apply_acquisition",
    "make_phantom",
    "render_anatomy",
]
