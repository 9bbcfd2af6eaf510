"""Fixtures of the DICOM tests: tiny real phantom images and their metadata."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from pipeline.dicom import StudyMeta, synthetic_study_meta
from pipeline.simulate import make_phantom

ACQUIRED_AT = datetime(2025, 3, 4, 10, 11, 12, 345678, tzinfo=UTC)


@pytest.fixture(scope="session")
def image() -> np.ndarray:
    """A 64x64 phantom, float32 in [0, 1]."""
    return make_phantom(size=64, rng=7).image


@pytest.fixture()
def study() -> StudyMeta:
    """Synthetic PHI of one study."""
    return synthetic_study_meta(11, acquired_at=ACQUIRED_AT, age_years=45.5, sex="F")
