"""The drift section of the monitoring report, rendered from hand-built drift results."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from pipeline.monitor.drift import DriftRun, FeatureDrift, SiteDrift
from pipeline.reports.monitoring import _drift_section

IMAGE = "data:image/png;base64,"


def feature(site: str, name: str, group: str, distance: float, *, drifted: bool, **extra: Any) -> FeatureDrift:
    return FeatureDrift(site, name, group, distance, 0.2, 1e-6 if drifted else 0.4, drifted=drifted, **extra)


def site(name: str, features: tuple[FeatureDrift, ...], **extra: Any) -> SiteDrift:
    base: dict[str, Any] = {
        "reference": "own",
        "reference_days": 14,
        "reference_studies": 2800,
        "window_studies": 200,
        "prevalence_reference": 0.25,
        "prevalence_window": 0.25,
        "expected_auroc_reference": 0.92,
        "expected_auroc_window": 0.91,
        "expected_sensitivity_window": 0.85,
        "expected_specificity_window": 0.88,
        "ppv": 0.7,
        "npv": 0.95,
    }
    return SiteDrift(site=name, features=features, **(base | extra))


def run(*sites: SiteDrift) -> DriftRun:
    return DriftRun({s.site: s for s in sites}, pd.DataFrame(), (), (), tuple(s.site for s in sites))


def test_covariate_shift_names_site_features_and_samples() -> None:
    rng = np.random.default_rng(0)
    odd = "a<b>"
    shifted = site(
        odd,
        (
            feature(odd, "img_mean", "image", 0.9, drifted=True, cusum=7.5),
            feature(odd, "manufacturer", "tags", 0.3, drifted=True),
            feature(odd, "kvp", "tags", 0.05, drifted=False),
        ),
        shift="covariate",
        samples=("s-001", "s-002"),
        values={
            "img_mean": (rng.normal(0.4, 0.05, 500), rng.normal(0.5, 0.05, 200)),
            "manufacturer": (
                np.array(["GE", "Siemens"] * 250, dtype=object),
                np.array(["GE", "Siemens", "Acme"] * 60 + ["Acme"] * 20, dtype=object),
            ),
        },
    )
    quiet = site("b", (feature("b", "img_mean", "image", 0.05, drifted=False),))

    page = "\n".join(_drift_section(run(shifted, quiet), "2024-01-15 00:00 to 2024-01-16 00:00 UTC"))

    assert "Drift and expected performance" in page
    assert "a&lt;b&gt;: covariate shift" in page and odd not in page
    assert "Relabel studies from this site" in page
    assert "img_mean" in page and "manufacturer" in page
    assert page.count(IMAGE) == 1 + 2  # heatmap + one per values entry
    assert "<li>s-001</li>" in page and "<li>s-002</li>" in page
    assert "pseudonymous ids" in page


def test_prevalence_shift_shows_ppv_npv_and_threshold_advice() -> None:
    rng = np.random.default_rng(1)
    shifted = site(
        "c",
        (feature("c", "prob_abnormal", "predictions", 0.5, drifted=True, explained_by_prevalence=True),),
        shift="prevalence",
        prevalence_window=0.45,
        ppv=0.81,
        npv=0.8765,
        values={"prob_abnormal": (rng.beta(2, 5, 400), rng.beta(3, 4, 200))},
    )

    page = "\n".join(_drift_section(run(shifted)))

    assert "c: prevalence shift" in page
    assert "threshold" in page
    assert "PPV / NPV" in page and "0.81 / 0.8765" in page
    assert "25.0% → 45.0%" in page
    assert page.count(IMAGE) == 2
